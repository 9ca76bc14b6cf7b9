# Security groups admit only what the design needs:
#   internet --443/tcp--> load balancer --edge_port/tcp--> edges
#   edges (this region and, over the peerings, the others) --quic/udp, ops/tcp--> cores
#   edges, cores --6379/tcp--> Redis;  cores --5432/tcp--> PostgreSQL
#   nodes --443/tcp--> AWS APIs, the image registry and the model package (through the NAT)

locals {
  quic_ports = distinct([for c in var.cores : c.quic_port])
  ops_ports  = distinct([for c in var.cores : c.ops_port])
}

resource "aws_security_group" "lb" {
  name_prefix = "${local.prefix}-lb-"
  description = "Chorus ${var.name}: the edges' network load balancer"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_https" {
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from users (anycast and DNS)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "lb_edges" {
  security_group_id            = aws_security_group.lb.id
  description                  = "To the edges' HTTP listener and health checks"
  ip_protocol                  = "tcp"
  from_port                    = var.edge_port
  to_port                      = var.edge_port
  referenced_security_group_id = aws_security_group.edge.id
}

resource "aws_security_group" "edge" {
  name_prefix = "${local.prefix}-edge-"
  description = "Chorus ${var.name}: edges"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "edge_from_lb" {
  security_group_id            = aws_security_group.edge.id
  description                  = "HTTP from the load balancer (TLS ends there)"
  ip_protocol                  = "tcp"
  from_port                    = var.edge_port
  to_port                      = var.edge_port
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_vpc_security_group_egress_rule" "edge_quic" {
  for_each          = { for pair in setproduct(local.core_clients, local.quic_ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.edge.id
  description       = "QUIC (mutual TLS) to cores in this and peered regions"
  ip_protocol       = "udp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_egress_rule" "edge_ops" {
  for_each          = { for pair in setproduct(local.core_clients, local.ops_ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.edge.id
  description       = "Cores' /readyz in this and peered regions"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_egress_rule" "edge_redis" {
  security_group_id            = aws_security_group.edge.id
  description                  = "Redis: counters, idempotency, resume buffers"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_vpc_security_group_egress_rule" "edge_https" {
  security_group_id = aws_security_group.edge.id
  description       = "AWS APIs (S3, Secrets Manager) and the image registry"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_security_group" "core" {
  name_prefix = "${local.prefix}-core-"
  description = "Chorus ${var.name}: cores"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "core_quic" {
  for_each          = { for pair in setproduct(local.core_clients, local.quic_ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.core.id
  description       = "QUIC (mutual TLS) from edges in this and peered regions"
  ip_protocol       = "udp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_ingress_rule" "core_ops" {
  for_each          = { for pair in setproduct(local.core_clients, local.ops_ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.core.id
  description       = "/readyz and /metrics from edges and monitoring"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_egress_rule" "core_redis" {
  security_group_id            = aws_security_group.core.id
  description                  = "Redis: the hot tier and the feedback stream"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_vpc_security_group_egress_rule" "core_db" {
  security_group_id            = aws_security_group.core.id
  description                  = "PostgreSQL: the durable tier"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_egress_rule" "core_https" {
  security_group_id = aws_security_group.core.id
  description       = "AWS APIs, the image registry and the model package"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "core_peer_quic" {
  for_each          = { for pair in setproduct(var.peer_cidrs, local.quic_ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.core.id
  description       = "QUIC to home-region cores for conversations homed elsewhere"
  ip_protocol       = "udp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_security_group" "redis" {
  name_prefix = "${local.prefix}-redis-"
  description = "Chorus ${var.name}: ElastiCache Redis"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from" {
  for_each                     = { edge = aws_security_group.edge.id, core = aws_security_group.core.id }
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from ${each.key}s"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
}

resource "aws_security_group" "db" {
  name_prefix = "${local.prefix}-db-"
  description = "Chorus ${var.name}: RDS PostgreSQL"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "db_from_cores" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from cores"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.core.id
}
