# ---------------------------------------------------------------------------------
# Naming and placement

variable "name" {
  description = "Short name prefixed to every resource (with the environment: \"cairn-production\")."
  type        = string
  default     = "cairn"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name))
    error_message = "name must be 2-12 lowercase letters, digits or hyphens, starting with a letter (ALB and target group names are limited to 32 characters)."
  }
}

variable "environment" {
  description = "Environment name, part of every resource name and tag (production, staging, ...)."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.environment))
    error_message = "environment must be 2-12 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Extra tags for every resource (merged into the provider's default_tags)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------
# Network: bring your own VPC, or leave vpc_id null to create one

variable "vpc_id" {
  description = "Existing VPC to deploy into. null creates a VPC with public and private subnets across az_count zones."
  type        = string
  default     = null
}

variable "public_subnet_ids" {
  description = "With vpc_id: at least two public subnets (different zones) for the load balancer. Ignored when the VPC is created here."
  type        = list(string)
  default     = []

  validation {
    condition     = var.vpc_id == null || length(var.public_subnet_ids) >= 2
    error_message = "With an existing vpc_id, give at least two public_subnet_ids in different availability zones."
  }
}

variable "private_subnet_ids" {
  description = "With vpc_id: at least two private subnets (different zones, with outbound internet through NAT) for the tasks and the database. Ignored when the VPC is created here."
  type        = list(string)
  default     = []

  validation {
    condition     = var.vpc_id == null || length(var.private_subnet_ids) >= 2
    error_message = "With an existing vpc_id, give at least two private_subnet_ids in different availability zones."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC created when vpc_id is null; split into /20 subnets (for a /16)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "az_count" {
  description = "Availability zones used by a VPC created here (one public and one private subnet in each)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be between 2 and 4 (RDS and the ALB need at least two zones)."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; outbound traffic fails with that zone) instead of one per zone. Only for a VPC created here."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------------
# Image

variable "container_image" {
  description = "Image with the cairn and ctl binaries, built from the repository's Dockerfile, pinned by tag or digest, e.g. \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/cairn-production:1.4.2\" (see the ecr_repository_url output)."
  type        = string

  validation {
    condition     = length(trimspace(var.container_image)) > 0
    error_message = "container_image must name an image."
  }
}

variable "create_ecr_repository" {
  description = "Create a private ECR repository (immutable tags, scan on push) to push the image to."
  type        = bool
  default     = true
}

variable "cpu_architecture" {
  description = "CPU architecture of the Fargate tasks: X86_64 or ARM64. The image must be built for it."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

# ---------------------------------------------------------------------------------
# Services

variable "rust_log" {
  description = "RUST_LOG filter for every service (tracing-subscriber syntax)."
  type        = string
  default     = "info"
}

variable "otel_collector_image" {
  description = "AWS Distro for OpenTelemetry collector image run beside each api container to publish the queue depth to CloudWatch (queue_metric.tf); pin a tag or digest you have vetted."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0"
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the services' logs."
  type        = number
  default     = 30
}

variable "migrate_on_start" {
  description = "Let every api/worker/scheduler task apply migrations as it starts (safe: the migrators take an advisory lock). false sets CAIRN_NO_MIGRATE=true, and your deploy must run the migrate task (see the migrate_command output) before updating the services."
  type        = bool
  default     = true
}

variable "enable_execute_command" {
  description = "Allow `aws ecs execute-command` into the tasks (e.g. to run ctl inside the VPC)."
  type        = bool
  default     = false
}

variable "api_cpu" {
  description = "Fargate CPU units for each api task (1024 = 1 vCPU)."
  type        = number
  default     = 512
}

variable "api_memory" {
  description = "Fargate memory (MiB) for each api task."
  type        = number
  default     = 1024
}

variable "api_desired_count" {
  description = "Number of api tasks."
  type        = number
  default     = 2
}

variable "api_db_pool" {
  description = "CAIRN_DB_POOL for each api task: its pool's connections; it opens up to as many again for writing submitted runs."
  type        = number
  default     = 10
}

variable "worker_cpu" {
  description = "Fargate CPU units for each worker task."
  type        = number
  default     = 1024
}

variable "worker_memory" {
  description = "Fargate memory (MiB) for each worker task."
  type        = number
  default     = 2048
}

variable "worker_min_count" {
  description = "Fewest worker tasks (also the count before autoscaling acts)."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_min_count >= 1
    error_message = "worker_min_count must be at least 1 (queue depth per worker divides by the running count)."
  }
}

variable "worker_max_count" {
  description = "Most worker tasks autoscaling may run. Mind the database: each holds worker_db_pool connections, plus one to listen for new runs and one to fetch them."
  type        = number
  default     = 10
}

variable "worker_concurrency" {
  description = "CAIRN_CONCURRENCY: runs each worker task advances at once."
  type        = number
  default     = 128
}

variable "worker_db_pool" {
  description = "CAIRN_DB_POOL for each worker task."
  type        = number
  default     = 10
}

variable "worker_lease" {
  description = "CAIRN_LEASE: how long a worker owns a run without renewing (humantime, e.g. \"30s\")."
  type        = string
  default     = "30s"
}

variable "worker_shutdown_grace_seconds" {
  description = "CAIRN_SHUTDOWN_GRACE in seconds: on SIGTERM, how long running steps may finish before their runs are handed back. ECS waits 10 s longer before SIGKILL (stopTimeout, at most 120)."
  type        = number
  default     = 20

  validation {
    condition     = var.worker_shutdown_grace_seconds >= 1 && var.worker_shutdown_grace_seconds <= 110
    error_message = "worker_shutdown_grace_seconds must be 1-110 (Fargate's stopTimeout is at most 120 s)."
  }
}

variable "worker_egress_allow" {
  description = "Hosts, IP addresses or CIDRs (each with an optional :port) that http steps may reach besides public addresses: the deployment's own internal services, e.g. [\"10.0.12.0/24\", \"agent.internal:8443\"]. Set as CAIRN_EGRESS_ALLOW on the workers. Empty: public addresses only."
  type        = list(string)
  default     = []
}

variable "worker_template_env" {
  description = "Non-secret variables that workflow templates may read as env.NAME (set on the worker tasks and listed in CAIRN_TEMPLATE_ENV), e.g. { NOTIFY_URL = \"https://...\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.worker_template_env) : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && !startswith(k, "CAIRN_") && k != "DATABASE_URL"])
    error_message = "worker_template_env names must be UPPER_SNAKE_CASE and must not be DATABASE_URL or start with CAIRN_."
  }
}

variable "enable_scheduler" {
  description = "Run `cairn scheduler` (cron -> runs: workflow files' [[schedules]] and schedules made through the API; and the reaper that deletes finished runs past their retention window, docs/OPERATIONS.md). Without it no schedule fires and nothing is deleted."
  type        = bool
  default     = true
}

variable "scheduler_desired_count" {
  description = "Number of scheduler tasks when enabled (each tick fires once however many run; two survive a task loss)."
  type        = number
  default     = 2
}

variable "scheduler_cpu" {
  description = "Fargate CPU units for each scheduler task."
  type        = number
  default     = 256
}

variable "scheduler_memory" {
  description = "Fargate memory (MiB) for each scheduler task."
  type        = number
  default     = 512
}

variable "scheduler_db_pool" {
  description = "Database connections each scheduler task may hold (CAIRN_DB_POOL)."
  type        = number
  default     = 4
}

# ---------------------------------------------------------------------------------
# Worker autoscaling

variable "worker_queue_depth_per_task_target" {
  description = "Target of the worker scaling policy: queued runs (Cairn/QueueDepth) per running worker task."
  type        = number
  default     = 32
}

variable "worker_cpu_target" {
  description = "Second, fallback target of the worker scaling policy: average CPU utilisation (%) of the worker service. Scale-in happens only when both policies agree."
  type        = number
  default     = 70
}

# ---------------------------------------------------------------------------------
# Load balancer

variable "acm_certificate_arn" {
  description = "ARN of the ACM certificate (same region) for the HTTPS listener."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-zA-Z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.acm_certificate_arn))
    error_message = "acm_certificate_arn must be an ACM certificate ARN."
  }
}

variable "alb_ingress_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach the load balancer on ports 80 and 443."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "alb_idle_timeout" {
  description = "Seconds the load balancer keeps an idle connection open; long enough for the dashboard's Server-Sent Events stream between events."
  type        = number
  default     = 300
}

variable "alb_deletion_protection" {
  description = "Protect the load balancer from deletion."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------
# Database

variable "db_engine_version" {
  description = "PostgreSQL version for RDS: a major version (\"16\") lets RDS pick and upgrade the minor version."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^16(\\.[0-9]+)?$", var.db_engine_version))
    error_message = "db_engine_version must be PostgreSQL 16 (\"16\" or \"16.x\"); the parameter group family is postgres16."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB (gp3)."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage" {
  description = "Upper bound in GiB for storage autoscaling (0 turns it off)."
  type        = number
  default     = 200
}

variable "db_multi_az" {
  description = "Keep a synchronous standby in another zone, with automatic failover."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window), 1-35."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be 1-35: backups stay on in production."
  }
}

variable "db_backup_window" {
  description = "Daily UTC window for automated backups (must not overlap the maintenance window)."
  type        = string
  default     = "02:00-03:00"
}

variable "db_maintenance_window" {
  description = "Weekly UTC maintenance window."
  type        = string
  default     = "sun:03:30-sun:04:30"
}

variable "db_deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
  default     = true
}

variable "db_skip_final_snapshot" {
  description = "Skip the final snapshot when the database is destroyed (only for throwaway environments)."
  type        = bool
  default     = false
}

variable "db_kms_key_arn" {
  description = "Customer-managed KMS key for the database storage, Performance Insights and the DATABASE_URL secret; null uses the AWS-managed keys. Encrypted either way."
  type        = string
  default     = null
}

variable "db_performance_insights" {
  description = "Turn on Performance Insights (7 days retention, free tier)."
  type        = bool
  default     = true
}

variable "generate_db_password" {
  description = "Generate the database password (Secrets Manager's GetRandomPassword). false uses var.db_password instead."
  type        = bool
  default     = true
}

variable "db_password" {
  description = "Database password when generate_db_password is false (e.g. to keep an existing one): 16-128 letters and digits, so it fits in DATABASE_URL unescaped. Ephemeral: kept out of plan and state."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.generate_db_password || (var.db_password != null && can(regex("^[A-Za-z0-9]{16,128}$", coalesce(var.db_password, "-"))))
    error_message = "With generate_db_password = false, db_password must be 16-128 letters and digits."
  }
}

variable "db_password_version" {
  description = "Bump to generate a new database password: the DB instance and the DATABASE_URL secret get it in the same apply; then restart the services (force a new deployment) to pick it up."
  type        = number
  default     = 1
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can still be restored (0 deletes at once)."
  type        = number
  default     = 7
}

variable "webhook_secret_arn" {
  description = "Secrets Manager secret (ARN) holding CAIRN_WEBHOOK_SECRET, from which the per-delivery keys of POST /api/webhooks/agent-result are derived, injected into the api (which checks deliveries) and the workers (which hand each agent its key). Without it the webhook answers 503. The secret's KMS key, if not AWS-managed, must let the execution role decrypt."
  type        = string
  default     = null
}

variable "llm_api_key_secret_arn" {
  description = "Secrets Manager secret (ARN) holding CAIRN_LLM_API_KEY, the bearer token `llm` steps send to the model server, injected into the workers."
  type        = string
  default     = null
}

variable "llm_base_url" {
  description = "CAIRN_LLM_BASE_URL for the workers: an OpenAI-compatible API base (e.g. https://api.openai.com/v1). Empty: `llm` steps fail."
  type        = string
  default     = ""
}

variable "llm_model" {
  description = "CAIRN_LLM_MODEL for the workers (set with llm_base_url): the model `llm` steps use unless they name one."
  type        = string
  default     = "gpt-4o-mini"
}

variable "llm_prices" {
  description = "CAIRN_LLM_PRICES for the api: USD per million tokens for billing estimates, `model=prompt/completion,...` (e.g. gpt-4o-mini=0.15/0.60). Empty: no estimates."
  type        = string
  default     = ""
}
