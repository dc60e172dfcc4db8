output "api_url" {
  description = "HTTPS URL of the API on the load balancer's DNS name (point your domain at it with an alias record)."
  value       = "https://${aws_lb.this.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer, for a Route 53 alias record."
  value       = aws_lb.this.zone_id
}

output "ecr_repository_url" {
  description = "Repository to push the image to (null when create_ecr_repository is false)."
  value       = var.create_ecr_repository ? aws_ecr_repository.cairn[0].repository_url : null
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "service_names" {
  description = "ECS service names, by role."
  value = {
    api       = aws_ecs_service.api.name
    worker    = aws_ecs_service.worker.name
    scheduler = var.enable_scheduler ? aws_ecs_service.scheduler[0].name : null
  }
}

output "migrate_task_definition_arn" {
  description = "Task definition running `cairn migrate`."
  value       = aws_ecs_task_definition.migrate.arn
}

output "migrate_command" {
  description = "AWS CLI call that runs `cairn migrate` once in the VPC (wait for the task to stop and check its exit code)."
  value = join(" ", [
    "aws ecs run-task",
    "--region ${data.aws_region.current.name}",
    "--cluster ${aws_ecs_cluster.this.name}",
    "--task-definition ${aws_ecs_task_definition.migrate.family}",
    "--launch-type FARGATE",
    "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", local.private_subnet_ids)}],securityGroups=[${aws_security_group.worker.id}],assignPublicIp=DISABLED}'",
  ])
}

output "database_address" {
  description = "Hostname of the RDS instance (reachable from the private subnets only)."
  value       = aws_db_instance.this.address
}

output "database_url_secret_arn" {
  description = "Secrets Manager secret holding DATABASE_URL."
  value       = aws_secretsmanager_secret.database_url.arn
}

output "log_groups" {
  description = "CloudWatch log groups, by service."
  value       = { for k, g in aws_cloudwatch_log_group.service : k => g.name }
}

output "queue_metric" {
  description = "The metric the worker autoscaling policy reads, published by the collector in the api task (queue_metric.tf)."
  value = {
    namespace  = local.queue_metric_namespace
    name       = local.queue_metric_name
    dimensions = { Deployment = local.metrics_deployment }
  }
}

output "vpc_id" {
  description = "VPC the services run in."
  value       = local.vpc_id
}

output "private_subnet_ids" {
  description = "Subnets of the tasks and the database."
  value       = local.private_subnet_ids
}
