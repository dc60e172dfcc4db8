# PostgreSQL 16 on RDS: Cairn's only backing service (queue, runs, checkpoints,
# events, dead letters, schedules, heartbeats and the app's own data).

resource "aws_db_subnet_group" "this" {
  name       = local.name
  subnet_ids = local.private_subnet_ids

  tags = {
    Name = local.name
  }
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${local.name}-pg16-"
  family      = "postgres16"
  description = "Cairn PostgreSQL 16"

  # TLS only. DATABASE_URL says sslmode=require (see secrets.tf).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Log statements slower than a second; Cairn's own queries are short.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# The password comes from Secrets Manager's generator (or var.db_password) as an
# ephemeral value and is sent through write-only arguments: it is in neither the
# plan nor the state. The same apply writes it into the DATABASE_URL secret
# (secrets.tf). Alphanumeric only, so it needs no escaping inside the URL.
ephemeral "aws_secretsmanager_random_password" "db" {
  count    = var.generate_db_password ? 1 : 0
  provider = aws.ephemeral

  password_length     = 40
  exclude_punctuation = true
  include_space       = false
}

locals {
  db_password = var.generate_db_password ? ephemeral.aws_secretsmanager_random_password.db[0].random_password : var.db_password
}

resource "aws_db_instance" "this" {
  identifier = local.name

  engine                      = "postgres"
  engine_version              = var.db_engine_version
  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false
  instance_class              = var.db_instance_class
  parameter_group_name        = aws_db_parameter_group.this.name

  db_name             = local.db_name
  username            = local.db_username
  password_wo         = local.db_password
  password_wo_version = var.db_password_version
  port                = 5432

  storage_type          = "gp3"
  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_encrypted     = true
  kms_key_id            = var.db_kms_key_arn

  multi_az               = var.db_multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = var.db_backup_window
  maintenance_window        = var.db_maintenance_window
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = var.db_deletion_protection
  skip_final_snapshot       = var.db_skip_final_snapshot
  final_snapshot_identifier = var.db_skip_final_snapshot ? null : "${local.name}-final"

  performance_insights_enabled          = var.db_performance_insights
  performance_insights_retention_period = var.db_performance_insights ? 7 : null
  performance_insights_kms_key_id       = var.db_performance_insights ? var.db_kms_key_arn : null

  enabled_cloudwatch_logs_exports = keys(aws_cloudwatch_log_group.rds)

  apply_immediately = false

  tags = {
    Name = local.name
  }
}
