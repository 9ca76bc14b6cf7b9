output "anycast_ips" {
  description = "The accelerator's two static anycast addresses."
  value       = flatten(aws_globalaccelerator_accelerator.this.ip_sets[*].ip_addresses)
}

output "api_name" {
  description = "The name users and SDKs use: anycast to the nearest healthy region."
  value       = "api.${var.domain}"
}

output "region_names" {
  description = "Each region's own name (with DNS failover to its nearest neighbour)."
  value       = { for k, r in aws_route53_record.primary : k => r.name }
}
