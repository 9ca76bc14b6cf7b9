//! The core's configuration (TOML). Every field has a default, so an empty file (or none) runs
//! a local core with both fleets on the default model; see `core/server/README.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_proto::Tier;
use chorus_sched::TierConfig;
use serde::{Deserialize, Serialize};

use crate::tls::TlsFiles;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// This core's name in logs, metrics and the `Welcome` frame.
    pub core_id: String,
    /// The region it serves.
    pub region: String,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address for `/metrics`, `/healthz` and `/readyz`.
    pub http: SocketAddr,
    /// Certificates. Without them the core refuses to start (there is no plaintext mode).
    pub tls: Option<TlsFiles>,
    /// Largest frame accepted or sent, bytes.
    pub max_frame: u32,
    /// Milliseconds between load reports on each connection's control stream.
    pub load_report_ms: u64,
    /// `/readyz` turns false when work is in flight and no engine step completed for this long.
    pub stall_secs: u64,
    /// On SIGTERM: how long in-flight requests may run before they are ended.
    pub drain_secs: u64,
    /// How long an edge has to send its `Hello` or a request stream its `Generate`.
    pub handshake_timeout_ms: u64,
    /// Compute threads per model.
    pub threads: usize,
    /// The model fleets by name.
    pub fleets: BTreeMap<String, FleetConfig>,
    /// Which fleet serves which tier, and what happens when it is full.
    pub router: RouterConfig,
    /// Per-tier overrides of the scheduling limits (DESIGN §6 defaults).
    pub tiers: BTreeMap<String, TierOverride>,
    /// The post-generation safety gate.
    pub post_safety: PostSafetyConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        let fleet = FleetConfig::default();
        Self {
            core_id: "core-1".into(),
            region: "local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            http: SocketAddr::from(([127, 0, 0, 1], 9464)),
            tls: None,
            max_frame: chorus_proto::DEFAULT_MAX_FRAME,
            load_report_ms: 250,
            stall_secs: 10,
            drain_secs: 30,
            handshake_timeout_ms: 10_000,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            fleets: BTreeMap::from([("mini".to_string(), fleet.clone()), ("flagship".to_string(), fleet)]),
            router: RouterConfig::default(),
            tiers: BTreeMap::new(),
            post_safety: PostSafetyConfig::default(),
        }
    }
}

/// One model fleet: a model and its own scheduler.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// A known model name (fetched and verified on first use) or a GGUF path. Fleets naming
    /// the same model share one loaded copy.
    pub model: String,
    /// KV cache capacity, tokens.
    pub kv_tokens: usize,
    /// Sequences decoding at once.
    pub max_running: usize,
    /// Tokens per engine step.
    pub max_step_tokens: usize,
    /// Reuse KV of identical prompt prefixes (per tenant).
    pub prefix_cache: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        let s = chorus_engine::serve::ServeOptions::default();
        Self {
            model: chorus_engine::model_store::DEFAULT_MODEL.into(),
            kv_tokens: s.kv_tokens,
            max_running: s.max_running,
            max_step_tokens: s.max_step_tokens,
            prefix_cache: true,
        }
    }
}

/// Tier → fleet, and overflow.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Tier name → fleet name.
    pub routes: BTreeMap<String, String>,
    /// Per fleet: requests waiting to start past which tiers with a `downgrade` entry go,
    /// visibly, to their downgrade fleet (when that fleet is itself below its threshold).
    pub degrade_at: BTreeMap<String, u32>,
    /// Per fleet: requests waiting past which new requests are refused `over_capacity`.
    pub reject_at: BTreeMap<String, u32>,
    /// Tier name → the fleet it may be downgraded to.
    pub downgrade: BTreeMap<String, String>,
    /// `retry_after_ms` sent with `over_capacity`.
    pub retry_after_ms: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Self {
            routes: m(&[("free", "mini"), ("team", "mini"), ("plus", "flagship"), ("enterprise", "flagship")]),
            degrade_at: BTreeMap::from([("flagship".into(), 32), ("mini".into(), 64)]),
            reject_at: BTreeMap::from([("flagship".into(), 128), ("mini".into(), 256)]),
            downgrade: m(&[("plus", "mini")]),
            retry_after_ms: 2000,
        }
    }
}

/// Overrides of one tier's scheduling limits; unset fields keep the DESIGN §6 default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TierOverride {
    pub weight: Option<u32>,
    pub max_input_tokens: Option<usize>,
    pub max_queued_requests: Option<usize>,
    pub max_queued_tokens: Option<usize>,
    pub queue_deadline_ms: Option<u64>,
    pub prefill_chunk: Option<usize>,
}

/// The post-generation safety gate.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostSafetyConfig {
    pub enabled: bool,
    /// Categories of the shared rule set (the edge presafety filter's) that end an answer.
    pub categories: Vec<String>,
    /// Extra phrases that end an answer, matched on the normalised text (case, accents,
    /// homoglyphs, leetspeak and spacing folded the same way as the rules see them).
    pub deny: Vec<String>,
    /// The sliding window of recent output checked after each token, bytes.
    pub window_bytes: usize,
}

impl Default for PostSafetyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            categories: ["weapons", "malware", "fraud", "drugs", "self_harm", "violence", "hate", "sexual_minors"]
                .map(String::from)
                .to_vec(),
            deny: Vec::new(),
            window_bytes: 1024,
        }
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Parse { path: PathBuf, why: String },
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), why: why.into() }
}

impl CoreConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), why: e.to_string() })?;
        let cfg: Self =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.into(), why: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross-references and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fleets.is_empty() {
            return Err(invalid("fleets", "at least one fleet is needed"));
        }
        if self.max_frame < 1024 || self.max_frame > chorus_proto::MAX_FRAME_CEILING {
            return Err(invalid("max_frame", format!("must be in 1024..={}", chorus_proto::MAX_FRAME_CEILING)));
        }
        if self.load_report_ms == 0 || self.stall_secs == 0 || self.handshake_timeout_ms == 0 {
            return Err(invalid("load_report_ms / stall_secs / handshake_timeout_ms", "must be positive"));
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(invalid("threads", "must be in 1..=256"));
        }
        for t in Tier::ALL {
            let f = self
                .router
                .routes
                .get(t.as_str())
                .ok_or_else(|| invalid("router.routes", format!("no fleet for tier {t}")))?;
            if !self.fleets.contains_key(f) {
                return Err(invalid(format!("router.routes.{t}"), format!("no fleet named {f:?}")));
            }
        }
        let tier_key =
            |field: &str, k: &str| k.parse::<Tier>().map(|_| ()).map_err(|e| invalid(format!("{field}.{k}"), e));
        for k in self.router.routes.keys().chain(self.tiers.keys()) {
            tier_key("tiers", k)?;
        }
        for (t, f) in &self.router.downgrade {
            tier_key("router.downgrade", t)?;
            if !self.fleets.contains_key(f) {
                return Err(invalid(format!("router.downgrade.{t}"), format!("no fleet named {f:?}")));
            }
        }
        for (field, m) in [("router.degrade_at", &self.router.degrade_at), ("router.reject_at", &self.router.reject_at)]
        {
            if let Some(k) = m.keys().find(|k| !self.fleets.contains_key(*k)) {
                return Err(invalid(format!("{field}.{k}"), "no such fleet"));
            }
        }
        for (name, f) in &self.fleets {
            if f.kv_tokens == 0 || f.max_running == 0 || f.max_step_tokens == 0 {
                return Err(invalid(
                    format!("fleets.{name}"),
                    "kv_tokens, max_running and max_step_tokens must be positive",
                ));
            }
        }
        let known: Vec<&str> = chorus_presafety_rules::Category::ALL.iter().map(|c| c.as_str()).collect();
        for c in &self.post_safety.categories {
            if !known.contains(&c.as_str()) {
                return Err(invalid(
                    "post_safety.categories",
                    format!("unknown category {c:?}; known: {}", known.join(", ")),
                ));
            }
        }
        if self.post_safety.window_bytes < 64 || self.post_safety.window_bytes > 64 * 1024 {
            return Err(invalid("post_safety.window_bytes", "must be in 64..=65536"));
        }
        Ok(())
    }

    /// The scheduling limits of every tier, DESIGN §6 defaults with this file's overrides.
    pub fn tier_configs(&self) -> [TierConfig; 4] {
        chorus_sched::Tier::ALL.map(|t| {
            let mut c = TierConfig::default_for(t);
            if let Some(o) = self.tiers.get(t.as_str()) {
                c.weight = o.weight.unwrap_or(c.weight);
                c.max_input_tokens = o.max_input_tokens.unwrap_or(c.max_input_tokens);
                c.max_queued_requests = o.max_queued_requests.unwrap_or(c.max_queued_requests);
                c.max_queued_tokens = o.max_queued_tokens.unwrap_or(c.max_queued_tokens);
                c.queue_deadline_ms = o.queue_deadline_ms.unwrap_or(c.queue_deadline_ms);
                c.prefill_chunk = o.prefill_chunk.unwrap_or(c.prefill_chunk);
            }
            c
        })
    }
}

/// The scheduler's tier for a wire tier.
pub fn sched_tier(t: Tier) -> chorus_sched::Tier {
    chorus_sched::Tier::ALL[t.index()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        CoreConfig::default().validate().unwrap();
        let c: CoreConfig = toml::from_str("").unwrap();
        assert_eq!(c, CoreConfig::default());
    }

    #[test]
    fn bad_references_name_the_field() {
        let c: CoreConfig = toml::from_str(
            "[router.routes]\nfree = \"mini\"\nteam = \"mini\"\nplus = \"huge\"\nenterprise = \"flagship\"",
        )
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("router.routes.plus"));
        let c: CoreConfig = toml::from_str("[post_safety]\ncategories = [\"nope\"]").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("post_safety.categories"));
        let c: CoreConfig = toml::from_str("[tiers.gold]\nweight = 3").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("tiers.gold"));
        assert!(toml::from_str::<CoreConfig>("listen_port = 3").is_err());
    }

    /// The wire tier and the scheduler's tier are separate types (the scheduler may not depend
    /// on a wire crate, and the edge may not depend on the scheduler); they must stay in step.
    #[test]
    fn wire_and_scheduler_tiers_line_up() {
        for t in Tier::ALL {
            assert_eq!(sched_tier(t).as_str(), t.as_str());
        }
        assert_eq!(Tier::ALL.len(), chorus_sched::Tier::ALL.len());
    }

    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").unwrap() + 8;
        let end = start + readme[start..].find("```").unwrap();
        let c: CoreConfig = toml::from_str(&readme[start..end]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.tls.unwrap().ca, PathBuf::from("certs/ca.pem"));
    }

    #[test]
    fn tier_overrides_keep_other_defaults() {
        let c: CoreConfig = toml::from_str("[tiers.plus]\nmax_input_tokens = 100").unwrap();
        let t = c.tier_configs();
        assert_eq!(t[2].max_input_tokens, 100);
        assert_eq!(t[2].weight, 4);
        assert_eq!(t[0].max_input_tokens, 4096);
    }
}
