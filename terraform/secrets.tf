# DATABASE_URL for the services, in Secrets Manager. ECS injects it into the
# containers as the DATABASE_URL environment variable (the `secrets` of each
# container definition), so it is never part of a task definition.

locals {
  db_name     = "cairn"
  db_username = "cairn"
}

resource "aws_secretsmanager_secret" "database_url" {
  name                    = "${local.name}/database-url"
  description             = "DATABASE_URL for Cairn (${local.name}): postgres://user:password@host:port/db?sslmode=require"
  recovery_window_in_days = var.secret_recovery_window_days
  kms_key_id              = var.db_kms_key_arn
}

# Written once per db_password_version, in the same apply as the database password.
# sslmode=require: TLS is enforced by the server (rds.force_ssl); `require` does not
# verify the certificate, as the image carries no RDS CA bundle.
resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id                = aws_secretsmanager_secret.database_url.id
  secret_string_wo         = "postgres://${local.db_username}:${local.db_password}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${local.db_name}?sslmode=require"
  secret_string_wo_version = var.db_password_version
}
