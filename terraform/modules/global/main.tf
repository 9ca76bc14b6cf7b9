locals {
  tags = { "chorus:deployment" = var.deployment }
}

# ---- Anycast ----------------------------------------------------------------------------
# Two static anycast addresses announced from every AWS edge location; a user's packets enter
# AWS's network at the nearest one and go to the closest healthy region.

resource "aws_globalaccelerator_accelerator" "this" {
  #checkov:skip=CKV_AWS_75:Each region's load-balancer access logs and VPC flow logs record every connection in its own residency zone; accelerator flow logs would copy them into one bucket outside those zones.
  name            = "${var.deployment}-api"
  ip_address_type = "IPV4"
  enabled         = true
  tags            = local.tags
}

resource "aws_globalaccelerator_listener" "https" {
  accelerator_arn = aws_globalaccelerator_accelerator.this.id
  protocol        = "TCP"
  # A client keeps reaching the same region while it streams and resumes.
  client_affinity = "SOURCE_IP"
  port_range {
    from_port = 443
    to_port   = 443
  }
}

resource "aws_globalaccelerator_endpoint_group" "region" {
  for_each                      = var.regions
  listener_arn                  = aws_globalaccelerator_listener.https.id
  endpoint_group_region         = each.value.cloud_region
  traffic_dial_percentage       = 100
  health_check_protocol         = "HTTP"
  health_check_path             = "/readyz"
  health_check_interval_seconds = var.health_check_interval
  threshold_count               = 2
  # For load-balancer endpoints the accelerator follows the target group's health (the
  # edges' /readyz); the settings above apply to instance endpoints.
  endpoint_configuration {
    endpoint_id                    = each.value.lb_arn
    weight                         = 100
    client_ip_preservation_enabled = true
  }
}

# ---- DNS --------------------------------------------------------------------------------

resource "aws_route53_record" "api" {
  zone_id = var.zone_id
  name    = "api.${var.domain}"
  type    = "A"
  alias {
    name                   = aws_globalaccelerator_accelerator.this.dns_name
    zone_id                = aws_globalaccelerator_accelerator.this.hosted_zone_id
    evaluate_target_health = true
  }
}

# direct.<domain>: latency-based records, the fallback path for clients or networks that do
# not reach the anycast addresses.
resource "aws_route53_record" "latency" {
  #checkov:skip=CKV2_AWS_23:The alias target is the region module's load balancer, passed in by ARN and name; the check cannot follow it across modules.
  for_each       = var.regions
  zone_id        = var.zone_id
  name           = "direct.${var.domain}"
  type           = "A"
  set_identifier = each.key
  latency_routing_policy {
    region = each.value.cloud_region
  }
  alias {
    name                   = each.value.lb_dns_name
    zone_id                = each.value.lb_zone_id
    evaluate_target_health = true
  }
}

# <region>.<domain>: the region itself while it is healthy, else the first region of its
# failover order (ascending RTT in the region file, as the edges fail over).
resource "aws_route53_record" "primary" {
  #checkov:skip=CKV2_AWS_23:The alias target is the region module's load balancer, passed in by ARN and name; the check cannot follow it across modules.
  for_each       = var.regions
  zone_id        = var.zone_id
  name           = "${each.key}.${var.domain}"
  type           = "A"
  set_identifier = "${each.key}-primary"
  failover_routing_policy {
    type = "PRIMARY"
  }
  alias {
    name                   = each.value.lb_dns_name
    zone_id                = each.value.lb_zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "secondary" {
  #checkov:skip=CKV2_AWS_23:The alias target is the region module's load balancer, passed in by ARN and name; the check cannot follow it across modules.
  for_each       = { for k, r in var.regions : k => r if length(r.failover) > 0 }
  zone_id        = var.zone_id
  name           = "${each.key}.${var.domain}"
  type           = "A"
  set_identifier = "${each.key}-secondary"
  failover_routing_policy {
    type = "SECONDARY"
  }
  alias {
    name                   = var.regions[each.value.failover[0]].lb_dns_name
    zone_id                = var.regions[each.value.failover[0]].lb_zone_id
    evaluate_target_health = true
  }
}
