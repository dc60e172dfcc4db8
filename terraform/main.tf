locals {
  # Prefix of every resource name, e.g. "cairn-production".
  name = "${var.name}-${var.environment}"

  tags = merge(
    {
      Application = "cairn"
      Environment = var.environment
      ManagedBy   = "terraform"
    },
    var.tags,
  )

  image = var.container_image

  # The dimension value the queue-depth publisher must use (see autoscaling.tf).
  metrics_deployment = local.name
}

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}
