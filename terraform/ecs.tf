# ECS on Fargate: `cairn api` behind the load balancer, `cairn worker` scaled on queue
# depth, `cairn scheduler` when enabled, and a `cairn migrate` task to run on deploy.
# All of them are the same image; the subcommand is the container's command.
#
# Every environment variable below is one the binary reads (`cairn <subcommand>
# --help`), or RUST_LOG, or a name listed in the worker's CAIRN_TEMPLATE_ENV.

locals {
  api_port = 8080

  database_secret = [
    {
      name      = "DATABASE_URL"
      valueFrom = aws_secretsmanager_secret.database_url.arn
    },
  ]

  # Secrets the operator keeps in Secrets Manager, injected when their ARN is given.
  api_secrets = concat(
    local.database_secret,
    var.webhook_secret_arn == null ? [] : [
      { name = "CAIRN_WEBHOOK_SECRET", valueFrom = var.webhook_secret_arn },
    ],
  )

  # Workers derive the per-delivery webhook keys they hand to agents from the same
  # secret the api checks deliveries with.
  worker_secrets = concat(
    local.database_secret,
    var.llm_api_key_secret_arn == null ? [] : [
      { name = "CAIRN_LLM_API_KEY", valueFrom = var.llm_api_key_secret_arn },
    ],
    var.webhook_secret_arn == null ? [] : [
      { name = "CAIRN_WEBHOOK_SECRET", valueFrom = var.webhook_secret_arn },
    ],
  )

  readable_secrets = compact([
    aws_secretsmanager_secret.database_url.arn,
    var.webhook_secret_arn,
    var.llm_api_key_secret_arn,
  ])

  common_environment = concat(
    [
      { name = "RUST_LOG", value = var.rust_log },
      { name = "CAIRN_LOG_JSON", value = "true" },
    ],
    var.migrate_on_start ? [] : [{ name = "CAIRN_NO_MIGRATE", value = "true" }],
  )

  api_environment = concat(
    local.common_environment,
    [
      { name = "CAIRN_LISTEN", value = "0.0.0.0:${local.api_port}" },
      { name = "CAIRN_WORKFLOWS_DIR", value = "/app/workflows" },
      { name = "CAIRN_DB_POOL", value = tostring(var.api_db_pool) },
      # Browsers reach the api only through the ALB's HTTPS listener: Secure session
      # cookies, and Strict-Transport-Security on every answer.
      { name = "CAIRN_COOKIE_SECURE", value = "true" },
      # The ALB appends the client's address to X-Forwarded-For: sign-in limits count
      # per client, not per load balancer node.
      { name = "CAIRN_TRUST_FORWARDED_FOR", value = "true" },
      # /metrics on loopback, for the queue-depth collector beside it (queue_metric.tf);
      # the load balancer's listener no longer serves it.
      { name = "CAIRN_METRICS_LISTEN", value = local.api_metrics_addr },
    ],
    var.llm_prices == "" ? [] : [{ name = "CAIRN_LLM_PRICES", value = var.llm_prices }],
  )

  worker_environment = concat(
    local.common_environment,
    [
      { name = "CAIRN_DB_POOL", value = tostring(var.worker_db_pool) },
      { name = "CAIRN_CONCURRENCY", value = tostring(var.worker_concurrency) },
      { name = "CAIRN_LEASE", value = var.worker_lease },
      { name = "CAIRN_SHUTDOWN_GRACE", value = "${var.worker_shutdown_grace_seconds}s" },
    ],
    length(var.worker_egress_allow) == 0 ? [] : [
      { name = "CAIRN_EGRESS_ALLOW", value = join(",", var.worker_egress_allow) },
    ],
    var.llm_base_url == "" ? [] : [
      { name = "CAIRN_LLM_BASE_URL", value = var.llm_base_url },
      { name = "CAIRN_LLM_MODEL", value = var.llm_model },
    ],
    length(var.worker_template_env) == 0 ? [] : [
      { name = "CAIRN_TEMPLATE_ENV", value = join(",", sort(keys(var.worker_template_env))) },
    ],
    [for k in sort(keys(var.worker_template_env)) : { name = k, value = var.worker_template_env[k] }],
  )

  # `cairn scheduler --help`: it syncs the workflow files' [[schedules]] on start, so it
  # reads the same files as the api.
  scheduler_environment = concat(local.common_environment, [
    { name = "CAIRN_WORKFLOWS_DIR", value = "/app/workflows" },
    { name = "CAIRN_DB_POOL", value = tostring(var.scheduler_db_pool) },
  ])

  migrate_environment = [
    { name = "RUST_LOG", value = var.rust_log },
    { name = "CAIRN_LOG_JSON", value = "true" },
  ]

  # ECS Exec needs a writable root file system for its agent.
  readonly_root = !var.enable_execute_command

  task_subnets = local.private_subnet_ids
}

resource "aws_ecs_cluster" "this" {
  name = local.name

  # Container Insights also provides RunningTaskCount, which the worker scaling
  # policy divides the queue depth by (autoscaling.tf).
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# ---------------------------------------------------------------------------------
# IAM

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# Used by ECS itself: pull the image, write logs, read DATABASE_URL.
resource "aws_iam_role" "execution" {
  name               = "${local.name}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.readable_secrets
  }

  dynamic "statement" {
    for_each = var.db_kms_key_arn == null ? [] : [var.db_kms_key_arn]

    content {
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "read-database-url"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

# Used by the Cairn processes, which need no AWS API, and by the queue-depth collector
# beside the api (queue_metric.tf), which writes to its own log group only.
resource "aws_iam_role" "task" {
  name               = "${local.name}-ecs-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "PublishQueueDepth"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_group.queue_metric.arn, "${aws_cloudwatch_log_group.queue_metric.arn}:*"]
  }

  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []

    content {
      sid = "EcsExec"
      actions = [
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
      ]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "cairn-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# ---------------------------------------------------------------------------------
# Task definitions

resource "aws_ecs_task_definition" "api" {
  family                   = "${local.name}-api"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.api_cpu)
  memory                   = tostring(var.api_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name                   = "api"
      image                  = local.image
      essential              = true
      command                = ["api"]
      environment            = local.api_environment
      secrets                = local.api_secrets
      readonlyRootFilesystem = local.readonly_root
      linuxParameters        = { initProcessEnabled = true }
      stopTimeout            = 30

      portMappings = [
        {
          name          = "http"
          containerPort = local.api_port
          protocol      = "tcp"
        },
      ]

      # Liveness only; the load balancer checks /readyz (database reachable).
      healthCheck = {
        command     = ["CMD", "/usr/local/bin/cairn-healthcheck", tostring(local.api_port), "/healthz"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["api"].name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "api"
        }
      }
    },
    local.queue_metric_container,
  ])
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${local.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.worker_cpu)
  memory                   = tostring(var.worker_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name                   = "worker"
      image                  = local.image
      essential              = true
      command                = ["worker"]
      environment            = local.worker_environment
      secrets                = local.worker_secrets
      readonlyRootFilesystem = local.readonly_root
      linuxParameters        = { initProcessEnabled = true }
      # SIGTERM starts the drain (CAIRN_SHUTDOWN_GRACE); SIGKILL follows this later.
      stopTimeout = var.worker_shutdown_grace_seconds + 10

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["worker"].name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "worker"
        }
      }
    },
  ])
}

resource "aws_ecs_task_definition" "scheduler" {
  count = var.enable_scheduler ? 1 : 0

  family                   = "${local.name}-scheduler"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.scheduler_cpu)
  memory                   = tostring(var.scheduler_memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name                   = "scheduler"
      image                  = local.image
      essential              = true
      command                = ["scheduler"]
      environment            = local.scheduler_environment
      secrets                = local.database_secret
      readonlyRootFilesystem = local.readonly_root
      linuxParameters        = { initProcessEnabled = true }
      stopTimeout            = 30

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["scheduler"].name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "scheduler"
        }
      }
    },
  ])
}

# Not a service: run it once per deploy, before updating the services, when
# migrate_on_start is false (the migrate_command output has the CLI call).
resource "aws_ecs_task_definition" "migrate" {
  family                   = "${local.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = "256"
  memory                   = "512"
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name                   = "migrate"
      image                  = local.image
      essential              = true
      command                = ["migrate"]
      environment            = local.migrate_environment
      secrets                = local.database_secret
      readonlyRootFilesystem = local.readonly_root
      linuxParameters        = { initProcessEnabled = true }

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["migrate"].name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "migrate"
        }
      }
    },
  ])
}

# ---------------------------------------------------------------------------------
# Services

resource "aws_ecs_service" "api" {
  name                   = "api"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.api.arn
  desired_count          = var.api_desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  enable_ecs_managed_tags            = true
  health_check_grace_period_seconds  = 60
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.task_subnets
    security_groups  = [aws_security_group.api.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = "api"
    container_port   = local.api_port
  }

  depends_on = [
    aws_lb_listener.https,
    aws_iam_role_policy.execution_secrets,
    aws_secretsmanager_secret_version.database_url,
  ]
}

resource "aws_ecs_service" "worker" {
  name                   = "worker"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.worker.arn
  desired_count          = var.worker_min_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  enable_ecs_managed_tags            = true
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.task_subnets
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  # Autoscaling owns the count once the service exists.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [
    aws_iam_role_policy.execution_secrets,
    aws_secretsmanager_secret_version.database_url,
  ]
}

resource "aws_ecs_service" "scheduler" {
  count = var.enable_scheduler ? 1 : 0

  name                   = "scheduler"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.scheduler[0].arn
  desired_count          = var.scheduler_desired_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = var.enable_execute_command
  propagate_tags         = "SERVICE"

  enable_ecs_managed_tags            = true
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = local.task_subnets
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  depends_on = [
    aws_iam_role_policy.execution_secrets,
    aws_secretsmanager_secret_version.database_url,
  ]
}
