//! What a region file says about provisioning (`[provision]` and `[region.provision]`), its
//! validation, and the Terraform variables rendered from it (`chorus regions render`).
//!
//! The region file stays the one source of truth: the edges route with it, `chorus up
//! --regions` runs it on one machine, and Terraform provisions from the variables rendered
//! here (`terraform/envs/<name>/chorus.auto.tfvars.json`), which carry the file itself for the
//! edges to read. A test renders every shipped file and compares it with the committed env.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::regions::{Region, RegionError, RegionFile};

/// The name of the rendered variables file inside an env directory.
pub const TFVARS_FILE: &str = "chorus.auto.tfvars.json";

/// Subnets are `cidrsubnet(vpc_cidr, SUBNET_BITS, i)`: public ones at `i` in `0..azs`, private
/// ones (cores, edges, Redis, PostgreSQL) at `PRIVATE_BASE + i`.
pub const SUBNET_BITS: u8 = 4;
pub const PRIVATE_BASE: u32 = 8;

/// The file-wide `[provision]` table: the deployment as a whole.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Prefix of every resource name; 1–12 of a–z, 0–9, '-'.
    pub name: String,
    /// The public DNS name users reach (`api.<domain>` is the anycast name); its Route 53
    /// hosted zone must exist.
    pub domain: String,
    /// The container image every node runs (the `Dockerfile` at the repository root).
    pub image: String,
    /// The cloud; `aws` is the one with modules today.
    #[serde(default = "default_cloud")]
    pub cloud: String,
}

fn default_cloud() -> String {
    "aws".into()
}

/// A region's `[region.provision]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionProvision {
    /// The provider's region, e.g. `eu-west-1`.
    pub cloud_region: String,
    /// The data-residency zone (e.g. `eu`), tagged on every resource. A conversation is stored
    /// only in its home region (a core elsewhere answers it single-turn and stores nothing), so
    /// this is where the region's conversations live.
    pub residency: String,
    /// The region's private IPv4 range, /16 to /20; regions must not overlap (their VPCs are
    /// peered so edges can fail over to other regions' cores).
    pub vpc_cidr: String,
    /// Availability zones to spread over: 2 or 3.
    #[serde(default = "default_azs")]
    pub availability_zones: u8,
    /// Which zones, by letter (`["a", "c"]`); the first `availability_zones` letters by default.
    /// Subnet `i` (and so a core's address) is in zone `i`, so this is pinned, not looked up.
    #[serde(default)]
    pub zones: Option<Vec<String>>,
    #[serde(default)]
    pub core: CoreMachines,
    #[serde(default)]
    pub edge: EdgeMachines,
    #[serde(default)]
    pub redis: RedisSize,
    #[serde(default)]
    pub database: DatabaseSize,
}

fn default_azs() -> u8 {
    2
}

/// The cores' machines. There is one machine per `[[region.core]]` entry (a self-healing
/// group of one, holding the core's fixed private address): cores have names the rendezvous
/// hash uses, so their number changes by editing the file, not by an autoscaler.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoreMachines {
    pub instance_type: String,
    /// The accelerator the instance type carries: `none`, `t4`, `a10g`, `l4`, `l40s`, `a100`,
    /// `h100`.
    pub gpu: String,
    /// Root volume (the model cache lives there), GiB.
    pub volume_gb: u32,
}

impl Default for CoreMachines {
    fn default() -> Self {
        Self { instance_type: "g6.xlarge".into(), gpu: "l4".into(), volume_gb: 100 }
    }
}

/// The edges' autoscaling group (edges are stateless: their shared state is in Redis).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeMachines {
    pub instance_type: String,
    pub min: u32,
    pub max: u32,
}

impl Default for EdgeMachines {
    fn default() -> Self {
        Self { instance_type: "c7i.large".into(), min: 2, max: 6 }
    }
}

/// ElastiCache Redis: the hot tier, the filters' counters, idempotency and resume buffers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSize {
    pub node_type: String,
    /// Read replicas beside the primary (1–5), in other zones; one takes over automatically.
    pub replicas: u32,
}

impl Default for RedisSize {
    fn default() -> Self {
        Self { node_type: "cache.r7g.large".into(), replicas: 1 }
    }
}

/// RDS PostgreSQL: the durable tier.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSize {
    pub instance_class: String,
    pub storage_gb: u32,
    pub multi_az: bool,
}

impl Default for DatabaseSize {
    fn default() -> Self {
        Self { instance_class: "db.r6g.large".into(), storage_gb: 100, multi_az: true }
    }
}

/// The accelerator each GPU instance family carries, to catch a `gpu` that does not match.
const GPU_FAMILIES: &[(&str, &str)] =
    &[("g4dn", "t4"), ("g5", "a10g"), ("g6", "l4"), ("g6e", "l40s"), ("p4d", "a100"), ("p4de", "a100"), ("p5", "h100")];
const GPUS: &[&str] = &["none", "t4", "a10g", "l4", "l40s", "a100", "h100"];

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    pub fn parse(s: &str) -> Option<Net> {
        let (a, p) = s.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        (prefix <= 32).then_some(Net { addr, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) }
    }

    pub fn is_aligned(&self) -> bool {
        u32::from(self.addr) & !self.mask() == 0
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// Terraform's `cidrsubnet(self, bits, index)`.
    pub fn subnet(&self, bits: u8, index: u32) -> Net {
        let prefix = self.prefix + bits;
        Net { addr: Ipv4Addr::from(u32::from(self.addr) | (index << (32 - prefix))), prefix }
    }

    fn is_private(&self) -> bool {
        [
            Net { addr: Ipv4Addr::new(10, 0, 0, 0), prefix: 8 },
            Net { addr: Ipv4Addr::new(172, 16, 0, 0), prefix: 12 },
            Net { addr: Ipv4Addr::new(192, 168, 0, 0), prefix: 16 },
        ]
        .iter()
        .any(|p| p.prefix <= self.prefix && p.contains(self.addr))
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn name_ok(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn cloud_region_ok(s: &str) -> bool {
    // e.g. eu-west-1, us-gov-west-1, ap-southeast-2
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 32
        && (3..=4).contains(&parts.len())
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

fn domain_ok(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn instance_type_ok(s: &str, prefix: &str) -> bool {
    let body = s.strip_prefix(prefix).unwrap_or(s);
    let Some((family, size)) = body.split_once('.') else { return false };
    s.len() <= 40
        && (prefix.is_empty() || s.starts_with(prefix))
        && !family.is_empty()
        && !size.is_empty()
        && family.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && size.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl RegionProvision {
    /// The zone letters in use.
    pub fn zone_letters(&self) -> Vec<String> {
        match &self.zones {
            Some(z) => z.clone(),
            None => ["a", "b", "c"].iter().take(usize::from(self.availability_zones)).map(|s| s.to_string()).collect(),
        }
    }
}

/// The private subnets of a region, in availability-zone order.
pub fn private_subnets(vpc: &Net, azs: u8) -> Vec<Net> {
    (0..u32::from(azs)).map(|i| vpc.subnet(SUBNET_BITS, PRIVATE_BASE + i)).collect()
}

/// The public subnets (the load balancer's) of a region.
pub fn public_subnets(vpc: &Net, azs: u8) -> Vec<Net> {
    (0..u32::from(azs)).map(|i| vpc.subnet(SUBNET_BITS, i)).collect()
}

/// Checks the provisioning tables of a file whose plain fields are already valid.
pub(crate) fn validate(file: &RegionFile, path: &Path) -> Result<(), RegionError> {
    let bad = |field: String, why: String| RegionError::Invalid { path: path.into(), field, why };
    let provisioned = file.regions.iter().filter(|r| r.provision.is_some()).count();
    let Some(dep) = &file.provision else {
        return match file.regions.iter().position(|r| r.provision.is_some()) {
            Some(i) => Err(bad(
                format!("region[{i}].provision"),
                "a region is provisioned but the file has no [provision] table".into(),
            )),
            None => Ok(()),
        };
    };
    if !name_ok(&dep.name, 12) {
        return Err(bad("provision.name".into(), format!("{:?}: use 1 to 12 of a-z, 0-9 and '-'", dep.name)));
    }
    if !domain_ok(&dep.domain) {
        return Err(bad("provision.domain".into(), format!("{:?} is not a lower-case DNS name", dep.domain)));
    }
    if dep.image.is_empty() || dep.image.len() > 255 || dep.image.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
        return Err(bad("provision.image".into(), "1 to 255 bytes, no whitespace".into()));
    }
    if dep.cloud != "aws" {
        return Err(bad("provision.cloud".into(), format!("{:?}: only \"aws\" has modules", dep.cloud)));
    }
    if provisioned != file.regions.len() {
        let i = file.regions.iter().position(|r| r.provision.is_none()).unwrap_or(0);
        return Err(bad(
            format!("region[{i}].provision"),
            "missing: every region of a provisioned file needs one".into(),
        ));
    }
    let mut nets: Vec<(usize, Net)> = Vec::new();
    for (i, r) in file.regions.iter().enumerate() {
        let Some(p) = &r.provision else { continue };
        let f = |s: &str| format!("region[{i}].provision.{s}");
        if r.name.len() > 20 {
            return Err(bad(
                format!("region[{i}].name"),
                "at most 20 bytes in a provisioned file (resource names)".into(),
            ));
        }
        if !cloud_region_ok(&p.cloud_region) {
            return Err(bad(
                f("cloud_region"),
                format!("{:?} is not a cloud region like \"eu-west-1\"", p.cloud_region),
            ));
        }
        if !name_ok(&p.residency, 16) {
            return Err(bad(f("residency"), format!("{:?}: use 1 to 16 of a-z, 0-9 and '-'", p.residency)));
        }
        let net = Net::parse(&p.vpc_cidr)
            .filter(|n| (16..=20).contains(&n.prefix) && n.is_aligned() && n.is_private())
            .ok_or_else(|| {
                bad(f("vpc_cidr"), format!("{:?}: a private, aligned IPv4 network from /16 to /20", p.vpc_cidr))
            })?;
        if let Some((j, _)) = nets.iter().find(|(_, n)| n.overlaps(&net)) {
            return Err(bad(f("vpc_cidr"), format!("{net} overlaps region[{j}]'s; peered VPCs need disjoint ranges")));
        }
        nets.push((i, net));
        if !(2..=3).contains(&p.availability_zones) {
            return Err(bad(f("availability_zones"), format!("{}: 2 or 3", p.availability_zones)));
        }
        let letters = p.zone_letters();
        if letters.len() != usize::from(p.availability_zones)
            || letters.iter().any(|l| l.len() != 1 || !l.bytes().all(|b| b.is_ascii_lowercase()))
            || letters.iter().collect::<std::collections::BTreeSet<_>>().len() != letters.len()
        {
            return Err(bad(
                f("zones"),
                format!("{letters:?}: {} distinct zone letters, e.g. [\"a\", \"b\"]", p.availability_zones),
            ));
        }
        if !instance_type_ok(&p.core.instance_type, "") {
            return Err(bad(f("core.instance_type"), format!("{:?} is not an instance type", p.core.instance_type)));
        }
        if !GPUS.contains(&p.core.gpu.as_str()) {
            return Err(bad(f("core.gpu"), format!("{:?}: one of {}", p.core.gpu, GPUS.join(", "))));
        }
        let family = p.core.instance_type.split('.').next().unwrap_or_default();
        let carried = GPU_FAMILIES.iter().find(|(fam, _)| *fam == family).map(|(_, g)| *g).unwrap_or("none");
        if carried != p.core.gpu {
            return Err(bad(
                f("core.gpu"),
                format!(
                    "{:?} does not match instance type {} (which carries {carried})",
                    p.core.gpu, p.core.instance_type
                ),
            ));
        }
        if !(30..=4096).contains(&p.core.volume_gb) {
            return Err(bad(f("core.volume_gb"), format!("{}: 30 to 4096", p.core.volume_gb)));
        }
        if !instance_type_ok(&p.edge.instance_type, "") {
            return Err(bad(f("edge.instance_type"), format!("{:?} is not an instance type", p.edge.instance_type)));
        }
        if p.edge.min == 0 || p.edge.min > p.edge.max || p.edge.max > 100 {
            return Err(bad(f("edge"), format!("min {} / max {}: 1 <= min <= max <= 100", p.edge.min, p.edge.max)));
        }
        if !instance_type_ok(&p.redis.node_type, "cache.") {
            return Err(bad(f("redis.node_type"), format!("{:?} is not a cache node type", p.redis.node_type)));
        }
        if !(1..=5).contains(&p.redis.replicas) {
            return Err(bad(
                f("redis.replicas"),
                format!("{}: 1 to 5 (a replica in another zone is the failover)", p.redis.replicas),
            ));
        }
        if !instance_type_ok(&p.database.instance_class, "db.") {
            return Err(bad(
                f("database.instance_class"),
                format!("{:?} is not a DB instance class", p.database.instance_class),
            ));
        }
        if !(20..=65_536).contains(&p.database.storage_gb) {
            return Err(bad(f("database.storage_gb"), format!("{}: 20 to 65536", p.database.storage_gb)));
        }
        if r.edge.is_none() {
            return Err(bad(format!("region[{i}].edge"), "a provisioned region needs `edge = { listen = … }`".into()));
        }
        let subnets = private_subnets(&net, p.availability_zones);
        for (j, c) in r.cores.iter().enumerate() {
            let field = format!("region[{i}].core[{j}].quic");
            let IpAddr::V4(ip) = c.quic.ip() else { return Err(bad(field, "an IPv4 address in the VPC".into())) };
            subnet_of(&subnets, ip).ok_or_else(|| {
                let list: Vec<String> = subnets.iter().map(Net::to_string).collect();
                bad(field, format!("{ip} is not a usable address of the private subnets {}", list.join(", ")))
            })?;
            match c.ops {
                Some(ops) if ops.ip() == c.quic.ip() => {}
                Some(_) => {
                    return Err(bad(format!("region[{i}].core[{j}].ops"), "must share the QUIC address's IP".into()));
                }
                None => {
                    return Err(bad(
                        format!("region[{i}].core[{j}].ops"),
                        "needed in a provisioned region (health checks)".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Which private subnet holds `ip`, skipping the five addresses AWS reserves in each.
fn subnet_of(subnets: &[Net], ip: Ipv4Addr) -> Option<usize> {
    subnets.iter().position(|s| {
        let size = 1u32 << (32 - s.prefix);
        s.contains(ip) && (4..size - 1).contains(&(u32::from(ip) - u32::from(s.addr)))
    })
}

/// Why a file cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("{0}: no [provision] table: this file describes a topology for one machine")]
    NotProvisioned(String),
    #[error("{path}: {why}")]
    Write { path: String, why: String },
}

/// The rendered variables of one env (`terraform/envs/<name>/variables.tf` declares them).
#[derive(Debug, Serialize)]
pub struct TfVars {
    pub deployment: String,
    pub domain: String,
    pub image: String,
    /// The region file as every edge reads it.
    pub regions_toml: String,
    pub regions: BTreeMap<String, TfRegion>,
}

#[derive(Debug, Serialize)]
pub struct TfRegion {
    pub cloud_region: String,
    pub residency: String,
    pub vpc_cidr: String,
    /// Zone names; subnet `i` is in zone `i`.
    pub availability_zones: Vec<String>,
    pub public_subnets: Vec<String>,
    pub private_subnets: Vec<String>,
    pub cores: Vec<TfCore>,
    pub core_machines: CoreMachines,
    pub edge_machines: EdgeMachines,
    pub edge_port: u16,
    pub redis: RedisSize,
    pub database: DatabaseSize,
    /// The other regions in the order this region's edges try them (ascending RTT).
    pub failover: Vec<String>,
    /// The CIDRs of every other region's VPC (peered; their edges reach this region's cores).
    pub peer_cidrs: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TfCore {
    pub name: String,
    pub private_ip: String,
    /// Index into `private_subnets` (and so the availability zone).
    pub subnet: usize,
    pub quic_port: u16,
    pub ops_port: u16,
    pub server_name: String,
}

/// The Terraform variables for a provisioned file.
pub fn render(file: &RegionFile, text: &str, path: &Path) -> Result<TfVars, RenderError> {
    let Some(dep) = &file.provision else { return Err(RenderError::NotProvisioned(path.display().to_string())) };
    let mut regions = BTreeMap::new();
    for r in &file.regions {
        let p = r.provision.as_ref().expect("validated: every region is provisioned");
        let net = Net::parse(&p.vpc_cidr).expect("validated");
        let private = private_subnets(&net, p.availability_zones);
        let cores = r
            .cores
            .iter()
            .map(|c| {
                let IpAddr::V4(ip) = c.quic.ip() else { unreachable!("validated: IPv4") };
                TfCore {
                    name: c.name.clone(),
                    private_ip: ip.to_string(),
                    subnet: subnet_of(&private, ip).expect("validated"),
                    quic_port: c.quic.port(),
                    ops_port: c.ops.map(|o| o.port()).expect("validated"),
                    server_name: c.server_name.clone(),
                }
            })
            .collect();
        regions.insert(
            r.name.clone(),
            TfRegion {
                cloud_region: p.cloud_region.clone(),
                residency: p.residency.clone(),
                vpc_cidr: net.to_string(),
                availability_zones: p.zone_letters().iter().map(|l| format!("{}{l}", p.cloud_region)).collect(),
                public_subnets: public_subnets(&net, p.availability_zones).iter().map(Net::to_string).collect(),
                private_subnets: private.iter().map(Net::to_string).collect(),
                cores,
                core_machines: p.core.clone(),
                edge_machines: p.edge.clone(),
                edge_port: r.edge.as_ref().map(|e| e.listen.port()).expect("validated"),
                redis: p.redis.clone(),
                database: p.database.clone(),
                failover: file.failover_order(&r.name).iter().skip(1).map(|o| o.name.clone()).collect(),
                peer_cidrs: peers(file, r),
            },
        );
    }
    Ok(TfVars {
        deployment: dep.name.clone(),
        domain: dep.domain.clone(),
        image: dep.image.clone(),
        regions_toml: text.to_string(),
        regions,
    })
}

fn peers(file: &RegionFile, me: &Region) -> Vec<String> {
    file.regions
        .iter()
        .filter(|o| o.name != me.name)
        .filter_map(|o| o.provision.as_ref().map(|p| p.vpc_cidr.clone()))
        .collect()
}

impl TfVars {
    /// The bytes of `chorus.auto.tfvars.json`: stable key order, two-space indent, a final
    /// newline, so a committed env can be compared byte for byte.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plain data serializes");
        s.push('\n');
        s
    }
}

/// Loads `path`, renders it, and returns the bytes of its variables file.
pub fn render_file(path: &Path) -> Result<String, RenderError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| RegionError::Read { path: path.into(), why: e.to_string() })?;
    let file = RegionFile::parse(&text, path)?;
    Ok(render(&file, &text, path)?.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBAL: &str = r#"
[provision]
name = "chorus"
domain = "chat.example.com"
image = "registry.example.com/chorus:0.4.0"

[[region]]
name = "eu-west"
edge = { listen = "0.0.0.0:8080" }
rtt_ms = { us-east = 80 }
[region.provision]
cloud_region = "eu-west-1"
residency = "eu"
vpc_cidr = "10.20.0.0/16"
[[region.core]]
name = "eu-west-1"
quic = "10.20.128.10:7443"
ops = "10.20.128.10:9464"

[[region]]
name = "us-east"
edge = { listen = "0.0.0.0:8080" }
rtt_ms = { eu-west = 80 }
[region.provision]
cloud_region = "us-east-1"
residency = "us"
vpc_cidr = "10.21.0.0/16"
core = { instance_type = "g5.2xlarge", gpu = "a10g" }
[[region.core]]
name = "us-east-1"
quic = "10.21.144.10:7443"
ops = "10.21.144.10:9464"
"#;

    fn err(text: &str) -> String {
        RegionFile::parse(text, Path::new("t.toml")).unwrap_err().to_string()
    }

    #[test]
    fn cidr_arithmetic_matches_terraform() {
        let vpc = Net::parse("10.20.0.0/16").unwrap();
        assert_eq!(vpc.subnet(4, 0).to_string(), "10.20.0.0/20");
        assert_eq!(vpc.subnet(4, 8).to_string(), "10.20.128.0/20");
        assert_eq!(vpc.subnet(4, 9).to_string(), "10.20.144.0/20");
        let small = Net::parse("172.16.16.0/20").unwrap();
        assert_eq!(small.subnet(4, 9).to_string(), "172.16.25.0/24");
        assert!(!Net::parse("10.20.1.0/16").unwrap().is_aligned());
        let private = private_subnets(&vpc, 2);
        assert_eq!(subnet_of(&private, "10.20.144.10".parse().unwrap()), Some(1));
        assert_eq!(subnet_of(&private, "10.20.128.1".parse().unwrap()), None, "AWS reserves .1 to .3");
        assert_eq!(subnet_of(&private, "10.20.143.255".parse().unwrap()), None, "broadcast");
        assert_eq!(subnet_of(&private, "10.20.1.10".parse().unwrap()), None, "public subnet");
    }

    #[test]
    fn renders_the_variables() {
        let f = RegionFile::parse(GLOBAL, Path::new("t.toml")).unwrap();
        let v = render(&f, GLOBAL, Path::new("t.toml")).unwrap();
        let eu = &v.regions["eu-west"];
        assert_eq!(eu.private_subnets, ["10.20.128.0/20", "10.20.144.0/20"]);
        assert_eq!(eu.availability_zones, ["eu-west-1a", "eu-west-1b"]);
        assert_eq!(eu.cores[0].subnet, 0);
        assert_eq!(v.regions["us-east"].cores[0].subnet, 1);
        assert_eq!(eu.failover, ["us-east"]);
        assert_eq!(eu.peer_cidrs, ["10.21.0.0/16"]);
        assert_eq!(eu.edge_machines, EdgeMachines::default());
        assert_eq!(v.regions_toml, GLOBAL);
        let json = v.to_json();
        assert!(json.ends_with("}\n"));
        assert_eq!(json, render(&f, GLOBAL, Path::new("t.toml")).unwrap().to_json(), "stable bytes");
    }

    #[test]
    fn local_files_are_not_rendered() {
        let text = "[[region]]\nname = \"local\"\n[[region.core]]\nname = \"c\"\nquic = \"127.0.0.1:7443\"\n";
        let f = RegionFile::parse(text, Path::new("local.toml")).unwrap();
        assert!(matches!(render(&f, text, Path::new("local.toml")), Err(RenderError::NotProvisioned(_))));
    }

    #[test]
    fn provisioning_errors_name_the_field() {
        let cases = [
            (GLOBAL.replace("10.21.0.0/16", "10.20.0.0/16"), "region[1].provision.vpc_cidr", "overlaps"),
            (GLOBAL.replace("10.21.0.0/16", "8.8.0.0/16"), "region[1].provision.vpc_cidr", "private"),
            (GLOBAL.replace("10.21.0.0/16", "10.21.0.0/12"), "region[1].provision.vpc_cidr", "/16 to /20"),
            (GLOBAL.replace("gpu = \"a10g\"", "gpu = \"h100\""), "region[1].provision.core.gpu", "carries a10g"),
            (GLOBAL.replace("10.21.144.10:7443", "10.21.1.10:7443"), "region[1].core[0].quic", "private subnets"),
            (
                GLOBAL.replace("ops = \"10.21.144.10:9464\"", "ops = \"10.21.144.11:9464\""),
                "region[1].core[0].ops",
                "IP",
            ),
            (
                GLOBAL.replace("eu-west-1\"\nresidency", "Europe\"\nresidency"),
                "region[0].provision.cloud_region",
                "cloud region",
            ),
            (GLOBAL.replace("chat.example.com", "Chat Example"), "provision.domain", "DNS"),
            (GLOBAL.replace("name = \"chorus\"", "name = \"a-very-long-deployment\""), "provision.name", "12"),
            (
                GLOBAL
                    .replace("vpc_cidr = \"10.20.0.0/16\"", "vpc_cidr = \"10.20.0.0/16\"\nedge = { min = 3, max = 2 }"),
                "region[0].provision.edge",
                "min",
            ),
            (GLOBAL.replace("[provision]\n", "[unused]\n"), "unused", "unknown field"),
            (
                GLOBAL.replace("vpc_cidr = \"10.20.0.0/16\"", "vpc_cidr = \"10.20.0.0/16\"\nzones = [\"a\", \"a\"]"),
                "region[0].provision.zones",
                "distinct",
            ),
            (
                GLOBAL.replace("vpc_cidr = \"10.20.0.0/16\"", "vpc_cidr = \"10.20.0.0/16\"\nredis = { replicas = 0 }"),
                "region[0].provision.redis.replicas",
                "1 to 5",
            ),
        ];
        for (text, field, why) in cases {
            let e = err(&text);
            assert!(e.contains(field) && e.contains(why), "want {field} / {why}, got: {e}");
        }
        let only_region = GLOBAL.replace("[provision]\nname = \"chorus\"\ndomain = \"chat.example.com\"\nimage = \"registry.example.com/chorus:0.4.0\"\n", "");
        assert!(err(&only_region).contains("region[0].provision"), "{}", err(&only_region));
        let start = GLOBAL.find("[region.provision]\ncloud_region = \"us-east-1\"").unwrap();
        let end = GLOBAL[start..].find("[[region.core]]").unwrap() + start;
        let one_missing = format!("{}{}", &GLOBAL[..start], &GLOBAL[end..]);
        let e = err(&one_missing);
        assert!(e.contains("region[1].provision") && e.contains("missing"), "{e}");
    }
}
