output "api" {
  description = "The anycast name and addresses users reach."
  value       = { name = module.global.api_name, ips = module.global.anycast_ips }
}

output "regions" {
  description = "Per region: its own DNS name, filter bucket, secrets to fill, data endpoints, core addresses and groups."
  value = { for k, m in local.lbs : k => {
    name               = module.global.region_names[k]
    filters_bucket     = m.filters_bucket
    mtls_secret        = m.mtls_secret_arn
    filter_keys_secret = m.filter_keys_secret_arn
    redis              = m.redis_endpoint
    database           = m.database_endpoint
    cores              = m.core_addresses
    core_groups        = m.core_groups
    edge_group         = m.edge_group
    logs               = m.log_group
  } }
}
