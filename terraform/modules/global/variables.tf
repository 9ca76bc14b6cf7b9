# The global front door: one anycast accelerator for every region's edges, and Route 53
# records as the DNS fallback path. Use the aws provider in us-west-2 (Global Accelerator's
# API region); Route 53 is global.

variable "deployment" {
  description = "Prefix of every resource name."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,11}$", var.deployment))
    error_message = "deployment: 1 to 12 of a-z, 0-9 and '-'."
  }
}

variable "domain" {
  description = "The public name; api.<domain> is the anycast name, <region>.<domain> a region's own."
  type        = string
}

variable "zone_id" {
  description = "The Route 53 hosted zone of var.domain."
  type        = string
}

variable "regions" {
  description = "Every region: its cloud region, its edges' load balancer, and its failover order (the region file's RTT table)."
  type = map(object({
    cloud_region = string
    lb_arn       = string
    lb_dns_name  = string
    lb_zone_id   = string
    failover     = list(string)
  }))
  validation {
    condition     = length(var.regions) >= 1 && alltrue([for k, r in var.regions : alltrue([for f in r.failover : contains(keys(var.regions), f) && f != k])])
    error_message = "regions: at least one; each failover entry names another region of the map."
  }
}

variable "health_check_interval" {
  description = "Seconds between the accelerator's health checks of a region (10 or 30)."
  type        = number
  default     = 10
  validation {
    condition     = contains([10, 30], var.health_check_interval)
    error_message = "health_check_interval: 10 or 30."
  }
}
