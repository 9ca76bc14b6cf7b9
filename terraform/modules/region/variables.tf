# Inputs of one Chorus region. The env passes them from the variables `chorus regions render`
# writes (terraform/envs/<name>/chorus.auto.tfvars.json), so the region file stays the one
# source of truth; the validations here repeat the renderer's for hand-written callers.

variable "deployment" {
  description = "Prefix of every resource name (the region file's provision.name)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,11}$", var.deployment))
    error_message = "deployment: 1 to 12 of a-z, 0-9 and '-'."
  }
}

variable "name" {
  description = "The Chorus region's name (region.name), e.g. eu-west."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,19}$", var.name))
    error_message = "name: 1 to 20 of a-z, 0-9 and '-'."
  }
}

variable "residency" {
  description = "Data-residency zone, tagged on every resource (chorus:residency)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,15}$", var.residency))
    error_message = "residency: 1 to 16 of a-z, 0-9 and '-'."
  }
}

variable "domain" {
  description = "The public DNS name; the edges' certificate covers it, api.<domain> and <name>.<domain>."
  type        = string
}

variable "zone_id" {
  description = "The Route 53 hosted zone of var.domain (certificate validation records)."
  type        = string
}

variable "image" {
  description = "The Chorus container image every node runs."
  type        = string
  validation {
    condition     = length(var.image) > 0 && !can(regex("\\s", var.image))
    error_message = "image: a non-empty image reference without whitespace."
  }
}

variable "regions_toml" {
  description = "The region file, written onto every edge as /etc/chorus/regions.toml."
  type        = string
}

variable "vpc_cidr" {
  description = "The region's private IPv4 range (/16 to /20)."
  type        = string
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr: an IPv4 network from /16 to /20."
  }
}

variable "availability_zones" {
  description = "The zones to spread over, by name (e.g. eu-west-1a); public_subnets[i] and private_subnets[i] are in zone i."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones: 2 or 3 distinct zone names."
  }
}

variable "public_subnets" {
  description = "The load balancer's subnets, one per availability zone (cidrsubnet(vpc_cidr, 4, i))."
  type        = list(string)
  validation {
    condition     = length(var.public_subnets) >= 2 && length(var.public_subnets) <= 3
    error_message = "public_subnets: 2 or 3, one per availability zone."
  }
}

variable "private_subnets" {
  description = "The nodes' and data stores' subnets, one per availability zone (cidrsubnet(vpc_cidr, 4, 8 + i))."
  type        = list(string)
  validation {
    condition     = length(var.private_subnets) >= 2 && length(var.private_subnets) <= 3
    error_message = "private_subnets: 2 or 3, one per availability zone."
  }
}

variable "cores" {
  description = "One entry per [[region.core]]: a fixed private address in a private subnet (by index) and its ports."
  type = list(object({
    name        = string
    private_ip  = string
    subnet      = number
    quic_port   = number
    ops_port    = number
    server_name = string
  }))
  validation {
    condition     = length(var.cores) >= 1 && alltrue([for c in var.cores : c.quic_port > 0 && c.quic_port < 65536 && c.ops_port > 0 && c.ops_port < 65536 && c.subnet >= 0])
    error_message = "cores: at least one, with ports 1 to 65535 and a subnet index."
  }
}

variable "core_machines" {
  description = "The cores' instance type, accelerator (none, t4, a10g, l4, l40s, a100, h100) and root volume in GiB."
  type = object({
    instance_type = string
    gpu           = string
    volume_gb     = number
  })
  validation {
    condition     = contains(["none", "t4", "a10g", "l4", "l40s", "a100", "h100"], var.core_machines.gpu) && var.core_machines.volume_gb >= 30
    error_message = "core_machines: gpu one of none, t4, a10g, l4, l40s, a100, h100; volume_gb at least 30."
  }
}

variable "edge_machines" {
  description = "The edges' instance type and autoscaling bounds."
  type = object({
    instance_type = string
    min           = number
    max           = number
  })
  validation {
    condition     = var.edge_machines.min >= 1 && var.edge_machines.min <= var.edge_machines.max && var.edge_machines.max <= 100
    error_message = "edge_machines: 1 <= min <= max <= 100."
  }
}

variable "edge_port" {
  description = "The port the edge's HTTP listener binds (the load balancer's target port)."
  type        = number
  validation {
    condition     = var.edge_port > 0 && var.edge_port < 65536
    error_message = "edge_port: 1 to 65535."
  }
}

variable "redis" {
  description = "ElastiCache Redis: node type and read replicas (1 to 5; a replica in another zone takes over automatically)."
  type = object({
    node_type = string
    replicas  = number
  })
  validation {
    condition     = startswith(var.redis.node_type, "cache.") && var.redis.replicas >= 1 && var.redis.replicas <= 5
    error_message = "redis: node_type cache.*, replicas 1 to 5."
  }
}

variable "database" {
  description = "RDS PostgreSQL: instance class, storage in GiB, multi-AZ."
  type = object({
    instance_class = string
    storage_gb     = number
    multi_az       = bool
  })
  validation {
    condition     = startswith(var.database.instance_class, "db.") && var.database.storage_gb >= 20
    error_message = "database: instance_class db.*, storage_gb at least 20."
  }
}

variable "peer_cidrs" {
  description = "Other regions' VPC ranges: their edges fail over to this region's cores over the peering."
  type        = list(string)
  default     = []
}

variable "filter_poll_secs" {
  description = "How often edges sync signed filter artifacts from the bucket."
  type        = number
  default     = 30
  validation {
    condition     = var.filter_poll_secs >= 5 && var.filter_poll_secs <= 3600
    error_message = "filter_poll_secs: 5 to 3600."
  }
}

variable "log_retention_days" {
  description = "Retention of the VPC flow logs and node logs."
  type        = number
  default     = 365
  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: a CloudWatch retention of at least a year (365, 400, 545, 731, …)."
  }
}
