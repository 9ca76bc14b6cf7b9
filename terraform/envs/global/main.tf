# The three-region deployment of regions/global.toml. Providers cannot be chosen by for_each,
# so each region has its own provider and module block; a test checks there is one for every
# region the rendered variables name, with the matching provider.

data "aws_route53_zone" "this" {
  provider = aws.global
  name     = var.domain
}

provider "aws" {
  alias  = "global"
  region = "us-west-2"
}

provider "aws" {
  alias  = "eu_west"
  region = var.regions["eu-west"].cloud_region
}

provider "aws" {
  alias  = "us_east"
  region = var.regions["us-east"].cloud_region
}

provider "aws" {
  alias  = "ap_south"
  region = var.regions["ap-south"].cloud_region
}

module "region_eu_west" {
  source          = "../../modules/region"
  providers       = { aws = aws.eu_west }
  deployment      = var.deployment
  name            = "eu-west"
  residency       = var.regions["eu-west"].residency
  domain          = var.domain
  zone_id         = data.aws_route53_zone.this.zone_id
  image           = var.image
  regions_toml    = var.regions_toml
  vpc_cidr        = var.regions["eu-west"].vpc_cidr
  availability_zones = var.regions["eu-west"].availability_zones
  public_subnets  = var.regions["eu-west"].public_subnets
  private_subnets = var.regions["eu-west"].private_subnets
  cores           = var.regions["eu-west"].cores
  core_machines   = var.regions["eu-west"].core_machines
  edge_machines   = var.regions["eu-west"].edge_machines
  edge_port       = var.regions["eu-west"].edge_port
  redis           = var.regions["eu-west"].redis
  database        = var.regions["eu-west"].database
  peer_cidrs      = var.regions["eu-west"].peer_cidrs
}

module "region_us_east" {
  source          = "../../modules/region"
  providers       = { aws = aws.us_east }
  deployment      = var.deployment
  name            = "us-east"
  residency       = var.regions["us-east"].residency
  domain          = var.domain
  zone_id         = data.aws_route53_zone.this.zone_id
  image           = var.image
  regions_toml    = var.regions_toml
  vpc_cidr        = var.regions["us-east"].vpc_cidr
  availability_zones = var.regions["us-east"].availability_zones
  public_subnets  = var.regions["us-east"].public_subnets
  private_subnets = var.regions["us-east"].private_subnets
  cores           = var.regions["us-east"].cores
  core_machines   = var.regions["us-east"].core_machines
  edge_machines   = var.regions["us-east"].edge_machines
  edge_port       = var.regions["us-east"].edge_port
  redis           = var.regions["us-east"].redis
  database        = var.regions["us-east"].database
  peer_cidrs      = var.regions["us-east"].peer_cidrs
}

module "region_ap_south" {
  source          = "../../modules/region"
  providers       = { aws = aws.ap_south }
  deployment      = var.deployment
  name            = "ap-south"
  residency       = var.regions["ap-south"].residency
  domain          = var.domain
  zone_id         = data.aws_route53_zone.this.zone_id
  image           = var.image
  regions_toml    = var.regions_toml
  vpc_cidr        = var.regions["ap-south"].vpc_cidr
  availability_zones = var.regions["ap-south"].availability_zones
  public_subnets  = var.regions["ap-south"].public_subnets
  private_subnets = var.regions["ap-south"].private_subnets
  cores           = var.regions["ap-south"].cores
  core_machines   = var.regions["ap-south"].core_machines
  edge_machines   = var.regions["ap-south"].edge_machines
  edge_port       = var.regions["ap-south"].edge_port
  redis           = var.regions["ap-south"].redis
  database        = var.regions["ap-south"].database
  peer_cidrs      = var.regions["ap-south"].peer_cidrs
}

# Every pair of regions is peered: edges fail over to any region's cores.
module "peer_eu_west_us_east" {
  source    = "../../modules/peering"
  providers = { aws.requester = aws.eu_west, aws.accepter = aws.us_east }
  name      = "${var.deployment}-eu-west-us-east"
  requester = { vpc_id = module.region_eu_west.vpc_id, vpc_cidr = module.region_eu_west.vpc_cidr, route_table_ids = module.region_eu_west.private_route_table_ids }
  accepter  = { vpc_id = module.region_us_east.vpc_id, vpc_cidr = module.region_us_east.vpc_cidr, route_table_ids = module.region_us_east.private_route_table_ids, cloud_region = var.regions["us-east"].cloud_region }
  tags      = { "chorus:deployment" = var.deployment }
}

module "peer_eu_west_ap_south" {
  source    = "../../modules/peering"
  providers = { aws.requester = aws.eu_west, aws.accepter = aws.ap_south }
  name      = "${var.deployment}-eu-west-ap-south"
  requester = { vpc_id = module.region_eu_west.vpc_id, vpc_cidr = module.region_eu_west.vpc_cidr, route_table_ids = module.region_eu_west.private_route_table_ids }
  accepter  = { vpc_id = module.region_ap_south.vpc_id, vpc_cidr = module.region_ap_south.vpc_cidr, route_table_ids = module.region_ap_south.private_route_table_ids, cloud_region = var.regions["ap-south"].cloud_region }
  tags      = { "chorus:deployment" = var.deployment }
}

module "peer_us_east_ap_south" {
  source    = "../../modules/peering"
  providers = { aws.requester = aws.us_east, aws.accepter = aws.ap_south }
  name      = "${var.deployment}-us-east-ap-south"
  requester = { vpc_id = module.region_us_east.vpc_id, vpc_cidr = module.region_us_east.vpc_cidr, route_table_ids = module.region_us_east.private_route_table_ids }
  accepter  = { vpc_id = module.region_ap_south.vpc_id, vpc_cidr = module.region_ap_south.vpc_cidr, route_table_ids = module.region_ap_south.private_route_table_ids, cloud_region = var.regions["ap-south"].cloud_region }
  tags      = { "chorus:deployment" = var.deployment }
}

locals {
  lbs = {
    "eu-west"  = module.region_eu_west
    "us-east"  = module.region_us_east
    "ap-south" = module.region_ap_south
  }
}

module "global" {
  source     = "../../modules/global"
  providers  = { aws = aws.global }
  deployment = var.deployment
  domain     = var.domain
  zone_id    = data.aws_route53_zone.this.zone_id
  regions = { for k, m in local.lbs : k => {
    cloud_region = var.regions[k].cloud_region
    lb_arn       = m.lb_arn
    lb_dns_name  = m.lb_dns_name
    lb_zone_id   = m.lb_zone_id
    failover     = var.regions[k].failover
  } }
}
