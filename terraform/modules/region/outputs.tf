output "vpc_id" {
  description = "The region's VPC (the peering module connects them)."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "The region's VPC range."
  value       = aws_vpc.this.cidr_block
}

output "private_route_table_ids" {
  description = "Route tables of the private subnets; the peering module adds routes to them."
  value       = aws_route_table.private[*].id
}

output "lb_arn" {
  description = "The edges' network load balancer: the accelerator's endpoint for this region."
  value       = aws_lb.edge.arn
}

output "lb_dns_name" {
  description = "The load balancer's DNS name (the latency and failover records alias it)."
  value       = aws_lb.edge.dns_name
}

output "lb_zone_id" {
  description = "The load balancer's hosted zone, for alias records."
  value       = aws_lb.edge.zone_id
}

output "filters_bucket" {
  description = "Publish signed filters to s3://<this>/filters/ (name.wasm with name.wasm.sig); edges sync them."
  value       = aws_s3_bucket.filters.id
}

output "mtls_secret_arn" {
  description = "Put the region's mTLS material here (JSON: ca, core_cert, core_key, edge_cert, edge_key)."
  value       = aws_secretsmanager_secret.mtls.arn
}

output "filter_keys_secret_arn" {
  description = "Put the trusted filter-signing public keys here (chorus filter keygen .pub lines)."
  value       = aws_secretsmanager_secret.filter_keys.arn
}

output "redis_endpoint" {
  description = "ElastiCache primary endpoint (TLS, auth token in Secrets Manager)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "database_endpoint" {
  description = "RDS PostgreSQL endpoint (TLS required; the master secret is managed by RDS)."
  value       = aws_db_instance.this.address
}

output "core_addresses" {
  description = "Each core's fixed private address, as the region file lists it."
  value       = { for k, n in aws_network_interface.core : k => n.private_ip }
}

output "core_groups" {
  description = "Each core's autoscaling group (start an instance refresh to roll a new image or model)."
  value       = { for k, g in aws_autoscaling_group.core : k => g.name }
}

output "edge_group" {
  description = "The edges' autoscaling group."
  value       = aws_autoscaling_group.edge.name
}

output "log_group" {
  description = "CloudWatch log group of every node's JSON logs."
  value       = aws_cloudwatch_log_group.nodes.name
}
