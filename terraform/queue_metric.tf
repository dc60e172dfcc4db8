# The publisher of the queue depth the worker autoscaling policy reads (autoscaling.tf),
# with no code of Cairn's: an AWS Distro for OpenTelemetry collector runs beside each
# api container (ecs.tf) and
#
#   1. scrapes the api's own metrics listener (CAIRN_METRICS_LISTEN, on loopback: the
#      containers of a task share it; nothing outside the task reaches it) every 30 s,
#      keeping `cairn_queue_depth` (queued runs per workflow) only;
#   2. sums it over workflows into one series named QueueDepth, with the dimension
#      Deployment = "<name>-<environment>";
#   3. writes it to CloudWatch Logs in the embedded metric format (the awsemf exporter),
#      from which CloudWatch makes the metric Cairn/QueueDepth.
#
# Every api task publishes the same value (each reads the same database), so the
# policy's Average over a minute is the queue depth whatever the number of api tasks.

locals {
  # Where the api serves /metrics apart from its main listener.
  api_metrics_addr = "127.0.0.1:9464"

  queue_metric_collector_config = {
    receivers = {
      prometheus = {
        config = {
          scrape_configs = [
            {
              job_name        = "cairn-api"
              scrape_interval = "30s"
              static_configs  = [{ targets = [local.api_metrics_addr] }]
              metric_relabel_configs = [
                {
                  source_labels = ["__name__"]
                  regex         = "cairn_queue_depth"
                  action        = "keep"
                },
              ]
            },
          ]
        }
      }
    }

    processors = {
      # The task's id, for the log stream's name.
      resourcedetection = {
        detectors = ["env", "ecs"]
      }
      metricstransform = {
        transforms = [
          {
            include  = "cairn_queue_depth"
            action   = "update"
            new_name = local.queue_metric_name
            operations = [
              { action = "aggregate_labels", label_set = [], aggregation_type = "sum" },
              { action = "add_label", new_label = "Deployment", new_value = local.metrics_deployment },
            ]
          },
        ]
      }
    }

    exporters = {
      awsemf = {
        namespace               = local.queue_metric_namespace
        region                  = data.aws_region.current.name
        log_group_name          = aws_cloudwatch_log_group.queue_metric.name
        log_stream_name         = "{TaskId}"
        dimension_rollup_option = "NoDimensionRollup"
        metric_declarations = [
          {
            dimensions            = [["Deployment"]]
            metric_name_selectors = [local.queue_metric_name]
          },
        ]
        metric_descriptors = [
          { metric_name = local.queue_metric_name, unit = "Count", overwrite = true },
        ]
      }
    }

    service = {
      pipelines = {
        metrics = {
          receivers  = ["prometheus"]
          processors = ["resourcedetection", "metricstransform"]
          exporters  = ["awsemf"]
        }
      }
    }
  }

  # The collector's container in the api task definition.
  queue_metric_container = {
    name              = "queue-metric"
    image             = var.otel_collector_image
    essential         = false
    command           = ["--config=env:AOT_CONFIG_CONTENT"]
    memoryReservation = 64
    environment = [
      { name = "AOT_CONFIG_CONTENT", value = yamlencode(local.queue_metric_collector_config) },
    ]
    dependsOn = [{ containerName = "api", condition = "START" }]

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.service["api"].name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "queue-metric"
      }
    }
  }
}

# The embedded-metric-format events the collector writes; CloudWatch extracts the
# metric from them, so they need not be kept long.
resource "aws_cloudwatch_log_group" "queue_metric" {
  name              = "/ecs/${local.name}/queue-metric"
  retention_in_days = 1
}
