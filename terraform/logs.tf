# One CloudWatch log group per service. The services log JSON lines
# (CAIRN_LOG_JSON=true), so Logs Insights can query their fields.

locals {
  log_groups = toset(["api", "worker", "scheduler", "migrate"])
}

resource "aws_cloudwatch_log_group" "service" {
  for_each = local.log_groups

  name              = "/ecs/${local.name}/${each.key}"
  retention_in_days = var.log_retention_days
}

# RDS would create these itself, with no expiry; created here first so the same
# retention applies.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${local.name}/${each.key}"
  retention_in_days = var.log_retention_days
}
