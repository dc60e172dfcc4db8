# Internet-facing Application Load Balancer in front of `cairn api`: HTTPS with the
# given ACM certificate, HTTP redirected to HTTPS. The api serves the dashboard at `/`
# as well, so both are behind it.

resource "aws_lb" "this" {
  name               = local.name
  load_balancer_type = "application"
  internal           = false
  subnets            = local.public_subnet_ids
  security_groups    = [aws_security_group.alb.id]

  idle_timeout               = var.alb_idle_timeout
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
}

resource "aws_lb_target_group" "api" {
  name        = "${local.name}-api"
  vpc_id      = local.vpc_id
  target_type = "ip" # awsvpc tasks register by IP
  protocol    = "HTTP"
  port        = local.api_port

  # Long enough for in-flight requests; SSE clients reconnect to another task.
  deregistration_delay = 30

  # /readyz answers 200 only when the database answers too.
  health_check {
    path                = "/readyz"
    protocol            = "HTTP"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.alb_ssl_policy
  certificate_arn   = var.acm_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}
