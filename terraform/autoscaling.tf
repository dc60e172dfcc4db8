# Worker autoscaling on queue depth.
#
# The collector beside each api container (queue_metric.tf) publishes, every 30 s:
#   namespace  Cairn
#   metric     QueueDepth  (unit Count): queued runs, summed over workflows
#   dimension  Deployment = "<name>-<environment>" (the queue_metric output)
#
# The policy tracks queued runs per running worker task:
#   QueueDepth / ECS/ContainerInsights RunningTaskCount (this service)
# so adding workers lowers the tracked value, as target tracking requires.

locals {
  queue_metric_namespace = "Cairn"
  queue_metric_name      = "QueueDepth"
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.worker.name}"
  min_capacity       = var.worker_min_count
  max_capacity       = var.worker_max_count
}

resource "aws_appautoscaling_policy" "worker_queue_depth" {
  name               = "${local.name}-worker-queue-depth"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.worker.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.worker_queue_depth_per_task_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      metrics {
        id          = "queue"
        label       = "Queued runs"
        return_data = false

        metric_stat {
          # No unit filter: a datapoint published without its unit still counts.
          stat = "Average"

          metric {
            namespace   = local.queue_metric_namespace
            metric_name = local.queue_metric_name

            dimensions {
              name  = "Deployment"
              value = local.metrics_deployment
            }
          }
        }
      }

      metrics {
        id          = "workers"
        label       = "Running worker tasks"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"

            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }

            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.worker.name
            }
          }
        }
      }

      metrics {
        id          = "per_worker"
        label       = "Queued runs per worker task"
        expression  = "queue / workers" # workers >= worker_min_count >= 1
        return_data = true
      }
    }
  }
}

# A guard when steps are CPU-bound, and the fallback should the queue metric stop.
resource "aws_appautoscaling_policy" "worker_cpu" {
  name               = "${local.name}-worker-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.worker.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.worker_cpu_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
