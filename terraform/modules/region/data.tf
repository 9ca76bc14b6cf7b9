# The region's state: ElastiCache Redis (hot tier, counters, idempotency, resume buffers), RDS
# PostgreSQL (the durable tier, written first), Secrets Manager (mTLS material, filter keys,
# the Redis token) and the S3 bucket edges poll for signed filter artifacts.

# ---- Redis ------------------------------------------------------------------------------

resource "aws_elasticache_subnet_group" "this" {
  name       = "${local.prefix}-redis"
  subnet_ids = aws_subnet.private[*].id
  tags       = local.tags
}

resource "random_password" "redis" {
  length  = 64
  special = false
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id       = "${local.prefix}-redis"
  description                = "Chorus ${var.name}: hot tier, counters, idempotency, resume buffers"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis.node_type
  num_cache_clusters         = 1 + var.redis.replicas
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.redis.id]
  automatic_failover_enabled = true
  multi_az_enabled           = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result
  auto_minor_version_upgrade = true
  snapshot_retention_limit   = 1
  apply_immediately          = false
  tags                       = local.tags
}

# ---- PostgreSQL -------------------------------------------------------------------------

resource "aws_db_subnet_group" "this" {
  name       = "${local.prefix}-db"
  subnet_ids = aws_subnet.private[*].id
  tags       = local.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${local.prefix}-pg16-"
  family      = "postgres16"
  description = "Chorus ${var.name}: TLS only, slow and DDL statements logged"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  tags = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name_prefix        = "${local.prefix}-rdsmon-"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier                            = "${local.prefix}-durable"
  engine                                = "postgres"
  engine_version                        = "16"
  instance_class                        = var.database.instance_class
  allocated_storage                     = var.database.storage_gb
  max_allocated_storage                 = var.database.storage_gb * 4
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = aws_kms_key.this.arn
  db_name                               = "chorus"
  username                              = "chorus"
  manage_master_user_password           = true
  master_user_secret_kms_key_id         = aws_kms_key.this.arn
  multi_az                              = var.database.multi_az
  db_subnet_group_name                  = aws_db_subnet_group.this.name
  vpc_security_group_ids                = [aws_security_group.db.id]
  parameter_group_name                  = aws_db_parameter_group.this.name
  publicly_accessible                   = false
  deletion_protection                   = true
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${local.prefix}-durable-final"
  backup_retention_period               = 14
  copy_tags_to_snapshot                 = true
  auto_minor_version_upgrade            = true
  iam_database_authentication_enabled   = true
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  tags                                  = local.tags
}

# ---- Secrets ----------------------------------------------------------------------------
# Terraform creates the containers; operators put the values (terraform/README.md), so private
# keys never pass through Terraform state. The Redis token is generated here and is in state:
# keep the state in an encrypted backend.

resource "aws_secretsmanager_secret" "mtls" {
  #checkov:skip=CKV2_AWS_57:Certificates are rotated by re-minting and putting a new version (README: rotating certificates), not by a Lambda.
  name_prefix = "${local.prefix}/mtls-"
  description = "Chorus ${var.name}: the region CA and the core and edge certificates and keys (JSON: ca, core_cert, core_key, edge_cert, edge_key)"
  kms_key_id  = aws_kms_key.this.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret" "filter_keys" {
  #checkov:skip=CKV2_AWS_57:Public keys are not secret material to rotate; a new trusted key is a new version.
  name_prefix = "${local.prefix}/filter-keys-"
  description = "Chorus ${var.name}: trusted filter-signing public keys (chorus filter keygen .pub lines)"
  kms_key_id  = aws_kms_key.this.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret" "redis" {
  #checkov:skip=CKV2_AWS_57:ElastiCache auth tokens rotate through modify-replication-group (ROTATE then SET), driven by Terraform, not a Lambda.
  name_prefix = "${local.prefix}/redis-"
  description = "Chorus ${var.name}: the ElastiCache auth token"
  kms_key_id  = aws_kms_key.this.arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "redis" {
  secret_id     = aws_secretsmanager_secret.redis.id
  secret_string = random_password.redis.result
}

# ---- Buckets ----------------------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_144:Access logs stay in their region (data residency); they are not replicated.
  #checkov:skip=CKV_AWS_18:This is the access-log bucket itself; logging it into itself would loop.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events from the log bucket.
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to buckets with S3-managed (AES256) encryption.
  bucket_prefix = "${local.prefix}-logs-"
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

# S3 server access logs can only be delivered to a bucket encrypted with S3-managed keys.
resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs_bucket.json
}

data "aws_iam_policy_document" "logs_bucket" {
  statement {
    sid       = "LoadBalancerLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/lb/*"]
    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
  statement {
    sid       = "LoadBalancerLogsAcl"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.logs.arn]
    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }
  }
  statement {
    sid       = "AccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/s3/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# Signed filter artifacts (.wasm + .sig): CI publishes, edges sync every filter_poll_secs and
# hot-load what verifies against the trusted keys. Versioned, so a bad filter rolls back by
# restoring the previous object versions.
resource "aws_s3_bucket" "filters" {
  #checkov:skip=CKV_AWS_144:Artifacts are signed and re-publishable from CI into every region; replication would copy them across residency zones for no gain.
  #checkov:skip=CKV2_AWS_62:Edges poll the bucket; no event consumer exists.
  bucket_prefix = "${local.prefix}-filters-"
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "filters" {
  bucket                  = aws_s3_bucket.filters.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "filters" {
  bucket = aws_s3_bucket.filters.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "filters" {
  bucket = aws_s3_bucket.filters.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "filters" {
  bucket = aws_s3_bucket.filters.id
  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days       = 90
      newer_noncurrent_versions = 10
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_logging" "filters" {
  bucket        = aws_s3_bucket.filters.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/filters/"
}

resource "aws_s3_bucket_policy" "filters" {
  bucket = aws_s3_bucket.filters.id
  policy = data.aws_iam_policy_document.filters_bucket.json
}

data "aws_iam_policy_document" "filters_bucket" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.filters.arn, "${aws_s3_bucket.filters.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}
