# Two regions' VPCs, peered across cloud regions, so an edge can fail over to another region's
# cores and a core can reach a conversation's home region.

variable "name" {
  description = "A label for the peering, e.g. chorus-eu-west-us-east."
  type        = string
}

variable "requester" {
  description = "The requesting side: its VPC, range and private route tables."
  type = object({
    vpc_id          = string
    vpc_cidr        = string
    route_table_ids = list(string)
  })
}

variable "accepter" {
  description = "The accepting side: its VPC, range, private route tables and cloud region."
  type = object({
    vpc_id          = string
    vpc_cidr        = string
    route_table_ids = list(string)
    cloud_region    = string
  })
}

variable "tags" {
  description = "Tags for both sides of the connection."
  type        = map(string)
  default     = {}
}
