# Declared here, set by chorus.auto.tfvars.json, which `chorus regions render
# regions/global.toml --out terraform/envs/global` writes. Do not edit that file by hand:
# edit the region file and render again (a test fails when the two differ).

variable "deployment" {
  description = "The region file's provision.name."
  type        = string
}

variable "domain" {
  description = "The region file's provision.domain; its Route 53 hosted zone must exist."
  type        = string
}

variable "image" {
  description = "The Chorus container image (provision.image)."
  type        = string
}

variable "regions_toml" {
  description = "The region file itself, written onto every edge."
  type        = string
}

variable "regions" {
  description = "Every region as rendered from the region file."
  type = map(object({
    cloud_region    = string
    residency       = string
    vpc_cidr        = string
    availability_zones = list(string)
    public_subnets  = list(string)
    private_subnets = list(string)
    cores = list(object({
      name        = string
      private_ip  = string
      subnet      = number
      quic_port   = number
      ops_port    = number
      server_name = string
    }))
    core_machines = object({ instance_type = string, gpu = string, volume_gb = number })
    edge_machines = object({ instance_type = string, min = number, max = number })
    edge_port     = number
    redis         = object({ node_type = string, replicas = number })
    database      = object({ instance_class = string, storage_gb = number, multi_az = bool })
    failover      = list(string)
    peer_cidrs    = list(string)
  }))
}
