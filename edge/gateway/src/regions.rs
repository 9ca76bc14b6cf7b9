//! Region files (`regions/*.toml`): which regions exist, the cores (and edge) in each, and the
//! round-trip times between regions that decide the failover order. The schema is documented
//! in `regions/README.md`; a test there validates every shipped file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::provision::{self, Deployment, RegionProvision};

/// Why a region file was refused. Every variant names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("{path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("{path}: {field}: {why}")]
    Invalid { path: PathBuf, field: String, why: String },
}

/// Most regions in one file, and most cores in one region.
pub const MAX_REGIONS: usize = 64;
pub const MAX_CORES_PER_REGION: usize = 256;

/// A whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionFile {
    /// What Terraform needs for the deployment as a whole (`chorus regions render`); files for
    /// one machine leave it out.
    #[serde(default)]
    pub provision: Option<Deployment>,
    #[serde(rename = "region")]
    pub regions: Vec<Region>,
}

/// One region.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Lower-case letters, digits and `-`.
    pub name: String,
    /// The edge serving this region's users (used by `chorus up --regions` and Terraform).
    #[serde(default)]
    pub edge: Option<EdgeSite>,
    /// The region's cores; at least one.
    #[serde(rename = "core")]
    pub cores: Vec<CoreSite>,
    /// Measured round-trip time from this region to others, in milliseconds. The failover
    /// order from this region is the others by ascending RTT (unlisted ones last, by name).
    #[serde(default)]
    pub rtt_ms: BTreeMap<String, u32>,
    /// Machines, sizes and placement for Terraform; required in a file with `[provision]`.
    #[serde(default)]
    pub provision: Option<RegionProvision>,
}

/// Where a region's edge listens.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeSite {
    pub listen: SocketAddr,
}

/// One core.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoreSite {
    /// Unique in the file; the rendezvous hash uses it, so renaming a core moves its
    /// conversations.
    pub name: String,
    /// The core's QUIC address.
    pub quic: SocketAddr,
    /// The core's operations HTTP address (`/readyz`); optional.
    #[serde(default)]
    pub ops: Option<SocketAddr>,
    /// The name its certificate carries.
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

fn default_server_name() -> String {
    "localhost".into()
}

fn valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl RegionFile {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, RegionError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| RegionError::Read { path: path.into(), why: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// Parses and validates text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RegionError> {
        if text.len() > 1 << 20 {
            return Err(RegionError::Parse { path: path.into(), why: "over 1 MiB".into() });
        }
        let file: RegionFile =
            toml::from_str(text).map_err(|e| RegionError::Parse { path: path.into(), why: e.to_string() })?;
        file.validate(path)?;
        Ok(file)
    }

    pub fn validate(&self, path: &Path) -> Result<(), RegionError> {
        let bad = |field: String, why: String| RegionError::Invalid { path: path.into(), field, why };
        if self.regions.is_empty() {
            return Err(bad("region".into(), "at least one region is needed".into()));
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(bad("region".into(), format!("{} regions; the limit is {MAX_REGIONS}", self.regions.len())));
        }
        let names: BTreeSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        if names.len() != self.regions.len() {
            return Err(bad("region.name".into(), "region names must be unique".into()));
        }
        let mut core_names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            if !valid_name(&r.name) {
                return Err(bad(
                    format!("region[{i}].name"),
                    format!("{:?}: use 1 to 63 lower-case letters, digits and '-'", r.name),
                ));
            }
            if r.cores.is_empty() || r.cores.len() > MAX_CORES_PER_REGION {
                return Err(bad(
                    format!("region[{i}].core"),
                    format!("{} cores; a region needs 1 to {MAX_CORES_PER_REGION}", r.cores.len()),
                ));
            }
            for (j, c) in r.cores.iter().enumerate() {
                if !valid_name(&c.name) {
                    return Err(bad(
                        format!("region[{i}].core[{j}].name"),
                        format!("{:?}: use 1 to 63 lower-case letters, digits and '-'", c.name),
                    ));
                }
                if !core_names.insert(c.name.as_str()) {
                    return Err(bad(format!("region[{i}].core[{j}].name"), format!("`{}` is used twice", c.name)));
                }
                if !addrs.insert(c.quic) {
                    return Err(bad(format!("region[{i}].core[{j}].quic"), format!("{} is used twice", c.quic)));
                }
                if c.server_name.is_empty() || c.server_name.len() > 253 {
                    return Err(bad(format!("region[{i}].core[{j}].server_name"), "1 to 253 bytes".into()));
                }
            }
            for other in r.rtt_ms.keys() {
                if !names.contains(other.as_str()) || other == &r.name {
                    return Err(bad(
                        format!("region[{i}].rtt_ms.{other}"),
                        "names no other region of this file".into(),
                    ));
                }
            }
        }
        provision::validate(self, path)
    }

    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Regions in the order an edge in `home` tries them: `home` first, then by ascending RTT
    /// from `home`, unlisted ones last by name.
    pub fn failover_order(&self, home: &str) -> Vec<&Region> {
        let rtt = self.region(home).map(|r| r.rtt_ms.clone()).unwrap_or_default();
        let mut out: Vec<&Region> = self.regions.iter().collect();
        out.sort_by(|a, b| {
            let key = |r: &Region| (r.name != home, rtt.get(&r.name).copied().unwrap_or(u32::MAX), r.name.clone());
            key(a).cmp(&key(b))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[region]]
name = "eu-west"
edge = { listen = "127.0.0.1:8080" }
rtt_ms = { us-east = 80, ap-south = 140 }
[[region.core]]
name = "eu-west-1"
quic = "127.0.0.1:7443"
ops = "127.0.0.1:9464"

[[region]]
name = "us-east"
rtt_ms = { eu-west = 80 }
[[region.core]]
name = "us-east-1"
quic = "127.0.0.1:7444"

[[region]]
name = "ap-south"
[[region.core]]
name = "ap-south-1"
quic = "127.0.0.1:7445"
"#;

    #[test]
    fn failover_follows_rtt_from_home() {
        let f = RegionFile::parse(TWO, Path::new("t.toml")).unwrap();
        let order: Vec<&str> = f.failover_order("eu-west").iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["eu-west", "us-east", "ap-south"]);
        let order: Vec<&str> = f.failover_order("ap-south").iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["ap-south", "eu-west", "us-east"]);
    }

    #[test]
    fn errors_name_the_field() {
        let dup = TWO.replace("us-east-1", "eu-west-1");
        let e = RegionFile::parse(&dup, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("region[1].core[0].name") && e.contains("used twice"), "{e}");
        let rtt = TWO.replace("us-east = 80, ap-south", "mars = 80, ap-south");
        let e = RegionFile::parse(&rtt, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("rtt_ms.mars"), "{e}");
        let e = RegionFile::parse("[[region]]\nname = \"Bad Name\"\ncore = []", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("region[0].name"), "{e}");
        let e = RegionFile::parse("[[region]]\nname = \"a\"\ncolour = 1", Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn every_shipped_region_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../regions");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                RegionFile::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2, "regions/ holds the shipped files");
    }
}
