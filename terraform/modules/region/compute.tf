# The nodes. Every node runs the Chorus image under systemd (templates/*.sh.tftpl):
#   - cores: one self-healing group of one per [[region.core]] entry. The core's fixed private
#     address (the one the region file lists, so the edges' rendezvous hash finds it) is an
#     elastic network interface the instance attaches at boot.
#   - edges: an autoscaling group behind the network load balancer; stateless (their shared
#     state is in Redis), scaled on CPU.

data "aws_ssm_parameter" "ami_gpu" {
  name = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
}

data "aws_ssm_parameter" "ami_cpu" {
  name = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
}

locals {
  core_ami = var.core_machines.gpu == "none" ? nonsensitive(data.aws_ssm_parameter.ami_cpu.value) : nonsensitive(data.aws_ssm_parameter.ami_gpu.value)
  edge_ami = nonsensitive(data.aws_ssm_parameter.ami_cpu.value)
  cores    = { for c in var.cores : c.name => c }
  redis_url_host = aws_elasticache_replication_group.this.primary_endpoint_address
}

resource "aws_cloudwatch_log_group" "nodes" {
  name              = "/chorus/${local.prefix}/nodes"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

# ---- IAM --------------------------------------------------------------------------------

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "core" {
  name_prefix        = "${local.prefix}-core-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

resource "aws_iam_role" "edge" {
  name_prefix        = "${local.prefix}-edge-"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = { core = aws_iam_role.core.name, edge = aws_iam_role.edge.name }
  role       = each.value
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "core" {
  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.mtls.arn, aws_secretsmanager_secret.redis.arn, aws_db_instance.this.master_user_secret[0].secret_arn]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.nodes.arn}:*"]
  }
  statement {
    sid       = "OwnAddress"
    actions   = ["ec2:AttachNetworkInterface"]
    resources = concat([for n in aws_network_interface.core : n.arn], ["arn:${local.partition}:ec2:${data.aws_region.current.name}:${local.account}:instance/*"])
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/chorus:region"
      values   = [var.name]
    }
  }
  statement {
    sid       = "DescribeAddress"
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "core" {
  role   = aws_iam_role.core.id
  policy = data.aws_iam_policy_document.core.json
}

data "aws_iam_policy_document" "edge" {
  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.mtls.arn, aws_secretsmanager_secret.redis.arn, aws_secretsmanager_secret.filter_keys.arn]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
  statement {
    sid       = "FilterList"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.filters.arn]
  }
  statement {
    sid       = "FilterRead"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.filters.arn}/*"]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.nodes.arn}:*"]
  }
}

resource "aws_iam_role_policy" "edge" {
  role   = aws_iam_role.edge.id
  policy = data.aws_iam_policy_document.edge.json
}

resource "aws_iam_instance_profile" "core" {
  name_prefix = "${local.prefix}-core-"
  role        = aws_iam_role.core.name
  tags        = local.tags
}

resource "aws_iam_instance_profile" "edge" {
  name_prefix = "${local.prefix}-edge-"
  role        = aws_iam_role.edge.name
  tags        = local.tags
}

# ---- Cores ------------------------------------------------------------------------------

resource "aws_network_interface" "core" {
  for_each        = local.cores
  subnet_id       = aws_subnet.private[each.value.subnet].id
  private_ips     = [each.value.private_ip]
  security_groups = [aws_security_group.core.id]
  tags            = merge(local.tags, { Name = "${local.prefix}-${each.key}", "chorus:core" = each.key })
}

resource "aws_launch_template" "core" {
  for_each               = local.cores
  name_prefix            = "${local.prefix}-${each.key}-"
  image_id               = local.core_ami
  instance_type          = var.core_machines.instance_type
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.core.id]
  ebs_optimized          = true
  iam_instance_profile {
    arn = aws_iam_instance_profile.core.arn
  }
  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }
  monitoring {
    enabled = true
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.core_machines.volume_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.this.arn
      delete_on_termination = true
    }
  }
  user_data = base64encode(templatefile("${path.module}/templates/core.sh.tftpl", {
    image        = var.image
    region       = var.name
    core         = each.value
    eni          = aws_network_interface.core[each.key].id
    gpu          = var.core_machines.gpu
    aws_region   = data.aws_region.current.name
    log_group    = aws_cloudwatch_log_group.nodes.name
    mtls_secret  = aws_secretsmanager_secret.mtls.arn
    redis_secret = aws_secretsmanager_secret.redis.arn
    redis_host   = local.redis_url_host
    db_secret    = aws_db_instance.this.master_user_secret[0].secret_arn
    db_host      = aws_db_instance.this.address
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-${each.key}", "chorus:core" = each.key })
  }
  tags = local.tags
}

resource "aws_autoscaling_group" "core" {
  for_each                  = local.cores
  name_prefix               = "${local.prefix}-${each.key}-"
  min_size                  = 1
  max_size                  = 1
  desired_capacity          = 1
  vpc_zone_identifier       = [aws_subnet.private[each.value.subnet].id]
  health_check_type         = "EC2"
  health_check_grace_period = 600
  launch_template {
    id      = aws_launch_template.core[each.key].id
    version = aws_launch_template.core[each.key].latest_version
  }
  # A new launch template (a new image or model) replaces the core; it drains first
  # (SIGTERM: `drain_secs`), and the edges move its conversations to its siblings meanwhile.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }
  dynamic "tag" {
    for_each = merge(local.tags, { "chorus:core" = each.key })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

# ---- Edges ------------------------------------------------------------------------------

resource "aws_launch_template" "edge" {
  name_prefix            = "${local.prefix}-edge-"
  image_id               = local.edge_ami
  instance_type          = var.edge_machines.instance_type
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.edge.id]
  ebs_optimized          = true
  iam_instance_profile {
    arn = aws_iam_instance_profile.edge.arn
  }
  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }
  monitoring {
    enabled = true
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = 30
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.this.arn
      delete_on_termination = true
    }
  }
  user_data = base64encode(templatefile("${path.module}/templates/edge.sh.tftpl", {
    image          = var.image
    region         = var.name
    edge_port      = var.edge_port
    regions_toml   = var.regions_toml
    aws_region     = data.aws_region.current.name
    log_group      = aws_cloudwatch_log_group.nodes.name
    mtls_secret    = aws_secretsmanager_secret.mtls.arn
    redis_secret   = aws_secretsmanager_secret.redis.arn
    redis_host     = local.redis_url_host
    keys_secret    = aws_secretsmanager_secret.filter_keys.arn
    filters_bucket = aws_s3_bucket.filters.id
    poll_secs      = var.filter_poll_secs
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-edge" })
  }
  tags = local.tags
}

resource "aws_autoscaling_group" "edge" {
  name_prefix               = "${local.prefix}-edge-"
  min_size                  = var.edge_machines.min
  max_size                  = var.edge_machines.max
  vpc_zone_identifier       = aws_subnet.private[*].id
  target_group_arns         = [aws_lb_target_group.edge.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 120
  launch_template {
    id      = aws_launch_template.edge.id
    version = aws_launch_template.edge.latest_version
  }
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 90
    }
  }
  dynamic "tag" {
    for_each = local.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

resource "aws_autoscaling_policy" "edge_cpu" {
  name                   = "${local.prefix}-edge-cpu"
  autoscaling_group_name = aws_autoscaling_group.edge.name
  policy_type            = "TargetTrackingScaling"
  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
    target_value = 55
  }
}

# ---- Load balancer ----------------------------------------------------------------------

resource "aws_lb" "edge" {
  name                             = substr("${local.prefix}-edge", 0, 32)
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = aws_subnet.public[*].id
  security_groups                  = [aws_security_group.lb.id]
  enable_deletion_protection       = true
  enable_cross_zone_load_balancing = true
  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "lb"
    enabled = true
  }
  tags       = local.tags
  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_lb_target_group" "edge" {
  name_prefix          = "edge-"
  port                 = var.edge_port
  protocol             = "TCP"
  vpc_id               = aws_vpc.this.id
  deregistration_delay = 60
  # Edges answer /readyz 200 once a core is reachable; the accelerator's and DNS's health
  # follow this group's.
  health_check {
    protocol            = "HTTP"
    path                = "/readyz"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_acm_certificate" "edge" {
  domain_name               = var.domain
  subject_alternative_names = ["api.${var.domain}", "${var.name}.${var.domain}"]
  validation_method         = "DNS"
  tags                      = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "validation" {
  for_each = { for o in aws_acm_certificate.edge.domain_validation_options : o.domain_name => o }
  # Every region's certificate asks for the same records for the shared names.
  allow_overwrite = true
  zone_id         = var.zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
}

resource "aws_acm_certificate_validation" "edge" {
  certificate_arn         = aws_acm_certificate.edge.arn
  validation_record_fqdns = [for r in aws_route53_record.validation : r.fqdn]
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.edge.arn
  port              = 443
  protocol          = "TLS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = aws_acm_certificate_validation.edge.certificate_arn
  alpn_policy       = "HTTP1Only"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.edge.arn
  }
  tags = local.tags
}
