# Offline checks of the configuration: `terraform test` with a mocked AWS provider
# (no credentials, no AWS calls). Run from terraform/:
#
#   terraform init -backend=false && terraform test
#
# The environment-variable lists below are copied from `cairn <subcommand> --help`
# ([env: NAME=] notes) plus RUST_LOG; update them with the binary.

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = {
      names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    }
  }

  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }

  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }

  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }

  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }

  # The provider still validates arguments, so ARNs fed into other resources must
  # look like ARNs.
  mock_resource "aws_secretsmanager_secret" {
    defaults = {
      arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cairn-production/database-url-AbCdEf"
    }
  }

  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/cairn-production-mock"
    }
  }

  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/cairn-production/0123456789abcdef"
      dns_name = "cairn-production-123456789.eu-west-1.elb.amazonaws.com"
    }
  }

  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/cairn-production-api/0123456789abcdef"
    }
  }

  mock_resource "aws_ecs_cluster" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/cairn-production"
    }
  }

  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/cairn-production-mock:1"
    }
  }
}

# Mock providers cannot serve ephemeral resources (Terraform 1.11: "No ephemeral
# resource types in mock providers"). The password generator therefore uses its own
# provider configuration, aws.ephemeral: here a real provider with fake credentials
# that is never called, as these runs bring their own password (the generated path
# is covered by `terraform validate` only).
provider "aws" {
  alias                       = "ephemeral"
  region                      = "eu-west-1"
  access_key                  = "test-not-a-key"
  secret_key                  = "test-not-a-secret"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}

variables {
  container_image      = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cairn-production:1.0.0"
  acm_certificate_arn  = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
  generate_db_password = false
  db_password          = "TestOnlyNotARealPassw0rd"
}

run "defaults_create_a_vpc_and_the_services" {
  command = apply

  assert {
    condition     = length(aws_vpc.this) == 1 && length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "A VPC with two public and two private subnets is created when vpc_id is null."
  }

  assert {
    condition     = length(aws_nat_gateway.this) == 2
    error_message = "One NAT gateway per zone by default."
  }

  assert {
    condition     = length(aws_ecs_service.scheduler) == 1 && jsondecode(aws_ecs_task_definition.scheduler[0].container_definitions)[0].command == ["scheduler"]
    error_message = "The scheduler runs by default, as `cairn scheduler`."
  }

  assert {
    condition = alltrue([
      for e in jsondecode(aws_ecs_task_definition.scheduler[0].container_definitions)[0].environment :
      contains(["RUST_LOG", "CAIRN_LOG_JSON", "CAIRN_DB_POOL", "CAIRN_NO_MIGRATE", "CAIRN_WORKFLOWS_DIR", "CAIRN_SCHEDULER_POLL"], e.name)
    ]) && contains(jsondecode(aws_ecs_task_definition.scheduler[0].container_definitions)[0].environment, { name = "CAIRN_WORKFLOWS_DIR", value = "/app/workflows" })
    error_message = "The scheduler task reads the workflow files and sets only variables `cairn scheduler --help` lists."
  }

  assert {
    condition     = aws_db_instance.this.engine == "postgres" && startswith(aws_db_instance.this.engine_version, "16")
    error_message = "RDS runs PostgreSQL 16."
  }

  assert {
    condition     = aws_db_instance.this.storage_encrypted && aws_db_instance.this.multi_az && aws_db_instance.this.backup_retention_period == 14
    error_message = "RDS is encrypted, multi-AZ and backed up by default."
  }

  assert {
    condition     = !aws_db_instance.this.publicly_accessible && aws_db_instance.this.deletion_protection
    error_message = "RDS is private and protected from deletion."
  }

  assert {
    condition     = aws_lb_target_group.api.health_check[0].path == "/readyz" && aws_lb_target_group.api.port == 8080
    error_message = "The target group checks /readyz on the api port."
  }

  assert {
    condition     = aws_lb_listener.https.protocol == "HTTPS" && aws_lb_listener.https.certificate_arn == var.acm_certificate_arn
    error_message = "The HTTPS listener uses the given certificate."
  }

  assert {
    condition = (
      aws_lb_listener.http_redirect.port == 80 &&
      aws_lb_listener.http_redirect.default_action[0].type == "redirect" &&
      aws_lb_listener.http_redirect.default_action[0].redirect[0].protocol == "HTTPS" &&
      aws_lb_listener.http_redirect.default_action[0].redirect[0].status_code == "HTTP_301"
    )
    error_message = "HTTP redirects to HTTPS."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.api.container_definitions)[0].command == ["api"]
    error_message = "The api task runs `cairn api`."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].command == ["worker"]
    error_message = "The worker task runs `cairn worker`."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.migrate.container_definitions)[0].command == ["migrate"]
    error_message = "The migrate task runs `cairn migrate`."
  }

  assert {
    condition     = [for s in jsondecode(aws_ecs_task_definition.api.container_definitions)[0].secrets : s.name] == ["DATABASE_URL"]
    error_message = "Without webhook_secret_arn the api gets only DATABASE_URL (its webhook answers 503)."
  }

  assert {
    condition = alltrue([
      for e in jsondecode(aws_ecs_task_definition.api.container_definitions)[0].environment :
      contains(["RUST_LOG", "CAIRN_LOG_JSON", "CAIRN_DB_POOL", "CAIRN_NO_MIGRATE", "CAIRN_WORKFLOWS_DIR", "CAIRN_LISTEN", "CAIRN_LLM_PRICES", "CAIRN_COOKIE_SECURE", "CAIRN_TRUST_FORWARDED_FOR", "CAIRN_METRICS_LISTEN"], e.name)
    ])
    error_message = "The api task sets only variables `cairn api --help` lists."
  }

  assert {
    condition     = contains([for e in jsondecode(aws_ecs_task_definition.api.container_definitions)[0].environment : "${e.name}=${e.value}"], "CAIRN_COOKIE_SECURE=true")
    error_message = "Behind the ALB's HTTPS listener the api marks its session cookie Secure (and sends HSTS)."
  }

  assert {
    condition = alltrue([
      for e in jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].environment :
      contains(["RUST_LOG", "CAIRN_LOG_JSON", "CAIRN_DB_POOL", "CAIRN_NO_MIGRATE", "CAIRN_CONCURRENCY", "CAIRN_LEASE", "CAIRN_POLL_INTERVAL", "CAIRN_SHUTDOWN_GRACE", "CAIRN_TEMPLATE_ENV", "CAIRN_LLM_BASE_URL", "CAIRN_LLM_MODEL"], e.name)
    ])
    error_message = "The worker task sets only variables `cairn worker --help` lists."
  }

  assert {
    condition = alltrue([
      for e in jsondecode(aws_ecs_task_definition.migrate.container_definitions)[0].environment :
      contains(["RUST_LOG", "CAIRN_LOG_JSON", "CAIRN_DB_POOL", "CAIRN_NO_MIGRATE"], e.name)
    ])
    error_message = "The migrate task sets only variables `cairn migrate --help` lists."
  }

  assert {
    condition = alltrue([
      for td in [aws_ecs_task_definition.api, aws_ecs_task_definition.worker, aws_ecs_task_definition.migrate] :
      jsondecode(td.container_definitions)[0].secrets == [{ name = "DATABASE_URL", valueFrom = aws_secretsmanager_secret.database_url.arn }]
    ])
    error_message = "DATABASE_URL comes from Secrets Manager in every task."
  }

  assert {
    condition     = jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].stopTimeout == 30
    error_message = "Workers get their shutdown grace plus 10 s before SIGKILL."
  }

  assert {
    condition = contains([
      for m in aws_appautoscaling_policy.worker_queue_depth.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics :
      "${m.metric_stat[0].metric[0].namespace}/${m.metric_stat[0].metric[0].metric_name}" if length(m.metric_stat) > 0
    ], "Cairn/QueueDepth")
    error_message = "Workers scale on Cairn/QueueDepth."
  }

  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.api.container_definitions)[1].name == "queue-metric" &&
      !jsondecode(aws_ecs_task_definition.api.container_definitions)[1].essential &&
      strcontains(jsondecode(aws_ecs_task_definition.api.container_definitions)[1].environment[0].value, "cairn_queue_depth") &&
      strcontains(jsondecode(aws_ecs_task_definition.api.container_definitions)[1].environment[0].value, "\"namespace\": \"Cairn\"") &&
      contains(jsondecode(aws_ecs_task_definition.api.container_definitions)[0].environment, { name = "CAIRN_METRICS_LISTEN", value = "127.0.0.1:9464" })
    )
    error_message = "A collector beside the api scrapes its metrics listener and publishes to the Cairn namespace."
  }

  assert {
    condition     = aws_appautoscaling_target.worker.min_capacity == 2 && aws_appautoscaling_target.worker.max_capacity == 10
    error_message = "Worker scaling bounds come from the variables."
  }
}

run "existing_vpc_no_scheduler_and_template_env" {
  command = apply

  variables {
    vpc_id              = "vpc-0123456789abcdef0"
    public_subnet_ids   = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    private_subnet_ids  = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
    enable_scheduler    = false
    migrate_on_start    = false
    worker_template_env = { NOTIFY_URL = "https://hooks.example.com/cairn" }
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_nat_gateway.this) == 0
    error_message = "No network is created when vpc_id is given."
  }

  assert {
    condition     = tolist(aws_ecs_service.worker.network_configuration[0].subnets) == tolist(toset(var.private_subnet_ids))
    error_message = "Tasks run in the given private subnets."
  }

  assert {
    condition     = length(aws_ecs_service.scheduler) == 0 && length(aws_ecs_task_definition.scheduler) == 0
    error_message = "enable_scheduler = false creates no scheduler."
  }

  assert {
    condition = contains(
      jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].environment,
      { name = "CAIRN_TEMPLATE_ENV", value = "NOTIFY_URL" }
    )
    error_message = "Template variables are listed in CAIRN_TEMPLATE_ENV."
  }

  assert {
    condition = contains(
      jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].environment,
      { name = "NOTIFY_URL", value = "https://hooks.example.com/cairn" }
    )
    error_message = "Template variables are set on the worker."
  }

  assert {
    condition = alltrue([
      for td in [aws_ecs_task_definition.api, aws_ecs_task_definition.worker] :
      contains(jsondecode(td.container_definitions)[0].environment, { name = "CAIRN_NO_MIGRATE", value = "true" })
    ])
    error_message = "migrate_on_start = false sets CAIRN_NO_MIGRATE=true."
  }
}

run "webhook_and_llm_settings_reach_their_services" {
  command = apply

  variables {
    webhook_secret_arn     = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cairn/webhook-AbCdEf"
    llm_api_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cairn/llm-key-AbCdEf"
    llm_base_url           = "https://api.openai.com/v1"
    llm_prices             = "gpt-4o-mini=0.15/0.60"
  }

  assert {
    condition = contains(
      jsondecode(aws_ecs_task_definition.api.container_definitions)[0].secrets,
      { name = "CAIRN_WEBHOOK_SECRET", valueFrom = var.webhook_secret_arn }
    )
    error_message = "The api gets CAIRN_WEBHOOK_SECRET from the given secret."
  }

  assert {
    condition = contains(
      jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].secrets,
      { name = "CAIRN_LLM_API_KEY", valueFrom = var.llm_api_key_secret_arn }
    )
    error_message = "The workers get CAIRN_LLM_API_KEY from the given secret."
  }

  assert {
    condition = contains(
      jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].secrets,
      { name = "CAIRN_WEBHOOK_SECRET", valueFrom = var.webhook_secret_arn }
    )
    error_message = "The workers get CAIRN_WEBHOOK_SECRET too, to derive the delivery keys they hand to agents."
  }

  assert {
    condition = alltrue([
      for e in [
        { name = "CAIRN_LLM_BASE_URL", value = "https://api.openai.com/v1" },
        { name = "CAIRN_LLM_MODEL", value = "gpt-4o-mini" },
      ] : contains(jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].environment, e)
    ])
    error_message = "The workers get the model server's base URL and model."
  }

  assert {
    condition = contains(
      jsondecode(aws_ecs_task_definition.api.container_definitions)[0].environment,
      { name = "CAIRN_LLM_PRICES", value = "gpt-4o-mini=0.15/0.60" }
    )
    error_message = "The api gets the LLM prices."
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_ecs_task_definition.migrate.container_definitions)[0].secrets :
      s.name == "DATABASE_URL"
    ])
    error_message = "Only the services that use a secret get it."
  }
}

run "existing_vpc_requires_subnets" {
  command = plan

  variables {
    vpc_id = "vpc-0123456789abcdef0"
  }

  expect_failures = [
    var.public_subnet_ids,
    var.private_subnet_ids,
  ]
}

run "certificate_must_be_an_acm_arn" {
  command = plan

  variables {
    acm_certificate_arn = "not-an-arn"
  }

  expect_failures = [
    var.acm_certificate_arn,
  ]
}

run "own_password_must_be_given_and_url_safe" {
  command = plan

  variables {
    db_password = "has/slash@and:colon"
  }

  expect_failures = [
    var.db_password,
  ]
}
