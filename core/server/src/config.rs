//! The core's configuration (TOML). Every field has a default, so an empty file (or none) runs
//! a local core with both fleets on the default model; see `core/server/README.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_proto::Tier;
use chorus_sched::TierConfig;
use serde::{Deserialize, Serialize};

use chorus_proto::tls::TlsFiles;

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
    /// Milliseconds an engine may have work waiting and complete no step before the core is
    /// not ready (a hung engine answers nothing, but looks alive); ready again at its next step.
    pub engine_stall_ms: u64,
    /// Milliseconds `/readyz` stays false after an engine loop restarted (a panic or a failed
    /// step), so edges route new work elsewhere while the fleet proves itself again.
    pub engine_restart_holddown_ms: u64,
    /// On SIGTERM: how long in-flight requests may run before they are ended.
    pub drain_secs: u64,
    /// How long an edge has to send its `Hello` or a request stream its `Generate`.
    pub handshake_timeout_ms: u64,
    /// Compute threads: one pool for the whole process, shared by every fleet's model.
    pub threads: usize,
    /// How the compute threads are scheduled: `normal`, or `background` (Linux `SCHED_IDLE`:
    /// compute yields a core at once to the threads that send tokens; for machines that serve
    /// and do little else).
    pub compute_priority: chorus_engine::threadpool::ComputePriority,
    /// Where fleets run their steps: `auto` (GPU 0 when the CUDA backend can start, else the
    /// CPU), `cpu` or `cuda:N`.
    pub device: chorus_engine::device::DeviceSpec,
    /// The model fleets by name.
    pub fleets: BTreeMap<String, FleetConfig>,
    /// Which fleet serves which tier, and what happens when it is full.
    pub router: RouterConfig,
    /// Per-tier overrides of the scheduling limits (DESIGN §6 defaults).
    pub tiers: BTreeMap<String, TierOverride>,
    /// The post-generation safety gate.
    pub post_safety: PostSafetyConfig,
    /// The conversation store.
    pub store: StoreConfig,
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
            engine_stall_ms: 10_000,
            engine_restart_holddown_ms: 2_000,
            drain_secs: 30,
            handshake_timeout_ms: 10_000,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            compute_priority: chorus_engine::threadpool::ComputePriority::Normal,
            device: chorus_engine::device::DeviceSpec::Auto,
            fleets: BTreeMap::from([("mini".to_string(), fleet.clone()), ("flagship".to_string(), fleet)]),
            router: RouterConfig::default(),
            tiers: BTreeMap::new(),
            post_safety: PostSafetyConfig::default(),
            store: StoreConfig::default(),
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
    /// On a GPU: the share of free device memory this fleet's KV cache may take (`kv_tokens`
    /// still caps it).
    pub gpu_memory_fraction: f64,
    /// Sampling for requests that leave `temperature` unset (default: the model card's, for a
    /// known model; else 1.0).
    pub temperature: Option<f32>,
    /// Likewise for `top_p`.
    pub top_p: Option<f32>,
    /// Likewise for `top_k` (0 disables).
    pub top_k: Option<u32>,
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
            gpu_memory_fraction: s.gpu_memory_fraction,
            temperature: None,
            top_p: None,
            top_k: None,
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

/// The conversation store: a hot tier and a durable tier.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` (in-process LRU: the embedded default) or `redis`.
    pub hot: HotKind,
    /// Conversations the in-process hot tier holds.
    pub hot_capacity: usize,
    /// How long a hot copy lives after its last write, seconds.
    pub hot_ttl_secs: u64,
    pub redis: RedisConfig,
    /// `embedded` (a redb file: the default) or `postgres`.
    pub durable: DurableKind,
    /// The embedded database file; by default `conversations.redb` in the data directory
    /// (`$CHORUS_DATA_DIR`, else `$XDG_DATA_HOME/chorus`, else `~/.local/share/chorus`).
    pub path: Option<PathBuf>,
    pub postgres: PostgresConfig,
    /// Time limit of each store operation, milliseconds; past it the tier counts as unavailable.
    pub op_timeout_ms: u64,
    /// Tries at a durable commit before the client is told the turn was not stored.
    pub commit_attempts: u32,
    /// Turns a conversation may hold.
    pub max_turns: u64,
    /// Seconds between retention sweeps.
    pub sweep_interval_secs: u64,
    /// How long an idle conversation is kept, per tier.
    pub retention: RetentionConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            hot: HotKind::Memory,
            hot_capacity: 10_000,
            hot_ttl_secs: 30 * 60,
            redis: RedisConfig::default(),
            durable: DurableKind::Embedded,
            path: None,
            postgres: PostgresConfig::default(),
            op_timeout_ms: 2000,
            commit_attempts: 3,
            max_turns: 1000,
            sweep_interval_secs: 3600,
            retention: RetentionConfig::default(),
        }
    }
}

impl StoreConfig {
    pub fn op_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.op_timeout_ms)
    }

    /// The embedded database file.
    pub fn embedded_path(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir().join("conversations.redb"))
    }
}

/// Where Chorus keeps durable local data.
pub fn data_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("CHORUS_DATA_DIR")
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("chorus")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/chorus")))
        .unwrap_or_else(|| PathBuf::from("chorus-data"))
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HotKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DurableKind {
    Embedded,
    Postgres,
}

/// The Redis hot tier (and feedback stream).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Multiplexed connections kept open.
    pub pool: usize,
    /// Prefix of every key (several regions or test runs may share a server).
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into(), pool: 4, prefix: "chorus:".into() }
    }
}

/// The PostgreSQL durable tier.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq-style connection string, e.g. `host=127.0.0.1 user=postgres dbname=chorus`.
    pub url: String,
    /// Connections kept open.
    pub pool: usize,
    /// The schema the tables live in (created if missing).
    pub schema: String,
    /// PEM roots that verify the server's certificate when the URL says `sslmode=require`
    /// (e.g. the RDS bundle); without it, the system's roots. Other modes connect in plain text.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "host=127.0.0.1 user=postgres dbname=chorus".into(),
            pool: 4,
            schema: "chorus".into(),
            ca_file: None,
        }
    }
}

/// How long a conversation is kept after its last turn: `"30d"`, `"12h"`, `"45m"`, `"90s"`, or
/// `"forever"` (until the user deletes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Keep(pub Option<u64>);

impl TryFrom<String> for Keep {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "forever" {
            return Ok(Keep(None));
        }
        let bad = || format!("{s:?}: expected a number with d, h, m or s (\"30d\"), or \"forever\"");
        let (n, unit) = s.split_at(s.len().saturating_sub(1));
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "d" => 86_400,
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        let ms = n.checked_mul(secs * 1000).filter(|&ms| ms > 0).ok_or_else(bad)?;
        Ok(Keep(Some(ms)))
    }
}

impl From<Keep> for String {
    fn from(k: Keep) -> String {
        match k.0 {
            None => "forever".into(),
            Some(ms) if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
            Some(ms) if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
            Some(ms) if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
            Some(ms) => format!("{}s", ms / 1000),
        }
    }
}

/// Retention per tier (DESIGN §6: free 30 days idle, team and plus 90, enterprise until
/// deleted).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub free: Keep,
    pub team: Keep,
    pub plus: Keep,
    pub enterprise: Keep,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |d: u64| Keep(Some(d * 86_400_000));
        Self { free: days(30), team: days(90), plus: days(90), enterprise: Keep(None) }
    }
}

impl RetentionConfig {
    /// Per tier ([`Tier::index`]): conversations last updated before this are expired at `now_ms`.
    pub fn cutoffs(&self, now_ms: u64) -> [Option<u64>; 4] {
        [self.free, self.team, self.plus, self.enterprise].map(|k| k.0.map(|ms| now_ms.saturating_sub(ms)))
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
        if self.load_report_ms == 0 || self.handshake_timeout_ms == 0 {
            return Err(invalid("load_report_ms / handshake_timeout_ms", "must be positive"));
        }
        if !(100..=3_600_000).contains(&self.engine_stall_ms) {
            return Err(invalid("engine_stall_ms", format!("{} is outside 100..=3600000", self.engine_stall_ms)));
        }
        if self.engine_restart_holddown_ms > 600_000 {
            return Err(invalid(
                "engine_restart_holddown_ms",
                format!("{} is outside 0..=600000", self.engine_restart_holddown_ms),
            ));
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
            if !(0.05..=0.98).contains(&f.gpu_memory_fraction) {
                return Err(invalid(
                    format!("fleets.{name}.gpu_memory_fraction"),
                    format!("{} is outside 0.05..=0.98", f.gpu_memory_fraction),
                ));
            }
            for (field, v, lo, hi) in [("temperature", f.temperature, 0.0, 2.0), ("top_p", f.top_p, 0.0, 1.0)] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && (lo..=hi).contains(v))) {
                    return Err(invalid(format!("fleets.{name}.{field}"), format!("{v} is outside {lo}..={hi}")));
                }
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
        let st = &self.store;
        if st.hot_capacity == 0 {
            return Err(invalid("store.hot_capacity", "must be positive"));
        }
        if st.hot_ttl_secs == 0 || st.hot_ttl_secs > 86_400 {
            return Err(invalid("store.hot_ttl_secs", "must be in 1..=86400 (30 to 60 minutes in production)"));
        }
        if st.redis.pool == 0 || st.redis.pool > 64 {
            return Err(invalid("store.redis.pool", "must be in 1..=64"));
        }
        if st.postgres.pool == 0 || st.postgres.pool > 64 {
            return Err(invalid("store.postgres.pool", "must be in 1..=64"));
        }
        let ident = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if st.postgres.schema.is_empty() || st.postgres.schema.len() > 63 || !st.postgres.schema.chars().all(ident) {
            return Err(invalid("store.postgres.schema", "must be 1 to 63 of a-z, 0-9 and _"));
        }
        if st.op_timeout_ms == 0 || st.op_timeout_ms > 60_000 {
            return Err(invalid("store.op_timeout_ms", "must be in 1..=60000"));
        }
        if st.commit_attempts == 0 || st.commit_attempts > 10 {
            return Err(invalid("store.commit_attempts", "must be in 1..=10"));
        }
        if st.max_turns == 0 {
            return Err(invalid("store.max_turns", "must be positive"));
        }
        if st.sweep_interval_secs == 0 {
            return Err(invalid("store.sweep_interval_secs", "must be positive"));
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
        let c: CoreConfig = toml::from_str("[fleets.mini]\ntop_p = 1.5\n[fleets.flagship]").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("fleets.mini.top_p") && e.contains("0..=1"), "{e}");
        let c: CoreConfig = toml::from_str("[fleets.mini]\ngpu_memory_fraction = 1.5\n[fleets.flagship]").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("fleets.mini.gpu_memory_fraction") && e.contains("0.05..=0.98"), "{e}");
        for (field, v) in
            [("engine_stall_ms", 50), ("engine_stall_ms", 3_600_001), ("engine_restart_holddown_ms", 600_001)]
        {
            let c: CoreConfig = toml::from_str(&format!("{field} = {v}")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(field) && e.contains(&v.to_string()), "{e}");
        }
        let c: CoreConfig = toml::from_str("compute_priority = \"background\"").unwrap();
        assert_eq!(c.compute_priority, chorus_engine::threadpool::ComputePriority::Background);
        let e = toml::from_str::<CoreConfig>("compute_priority = \"high\"").unwrap_err().to_string();
        assert!(e.contains("compute_priority") && e.contains("background"), "{e}");
        let c: CoreConfig = toml::from_str("device = \"cuda:1\"").unwrap();
        assert_eq!(c.device, chorus_engine::device::DeviceSpec::Cuda(1));
        let e = toml::from_str::<CoreConfig>("device = \"tpu:0\"").unwrap_err().to_string();
        assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
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
    fn retention_reads_durations_and_forever() {
        let c: CoreConfig =
            toml::from_str("[store.retention]\nfree = \"12h\"\nteam = \"90s\"\nenterprise = \"forever\"").unwrap();
        let r = c.store.retention;
        assert_eq!(r.free, Keep(Some(12 * 3_600_000)));
        assert_eq!(r.team, Keep(Some(90_000)));
        assert_eq!(r.plus, Keep(Some(90 * 86_400_000)));
        assert_eq!(r.cutoffs(100_000), [Some(0), Some(10_000), Some(0), None]);
        for bad in ["0d", "30", "x", "3w", "99999999999999999d", ""] {
            let e = toml::from_str::<CoreConfig>(&format!("[store.retention]\nfree = {bad:?}")).unwrap_err();
            assert!(e.to_string().contains("forever"), "{bad}: {e}");
        }
        assert_eq!(String::from(Keep(Some(30 * 86_400_000))), "30d");
        let c: CoreConfig = toml::from_str("[store.postgres]\nschema = \"Robert'); DROP\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("store.postgres.schema"));
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
