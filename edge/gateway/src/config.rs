//! The edge's configuration (TOML). Every field has a default; unknown fields are refused;
//! cross-references are checked with the field named. `edge/gateway/README.md` documents it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chorus_proto::tls::TlsFiles;
use serde::Deserialize;

use crate::regions::{CoreSite, Region, RegionError, RegionFile};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("edge config: {0}")]
    Parse(String),
    #[error("edge config: {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error(transparent)]
    Regions(#[from] RegionError),
}

/// Everything an edge needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// The HTTP listener (API, web chat, `/metrics`).
    pub listen: SocketAddr,
    /// This edge's id in logs and in the `Hello` it sends cores.
    pub edge_id: String,
    /// The region this edge serves; its cores are tried first.
    pub region: String,
    /// A region file; without one, `cores` form the single region `region`.
    pub regions_file: Option<PathBuf>,
    pub cores: Vec<CoreSite>,
    /// The edge's client certificate; without it, the development PKI.
    pub tls: Option<TlsFiles>,
    pub filters: FilterConfig,
    pub state: StateConfig,
    pub limits: ApiLimits,
    pub upstream: UpstreamConfig,
    pub resume: ResumeConfig,
    pub debug: DebugConfig,
    /// Serve the web chat at `/`.
    pub web: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            edge_id: "edge-1".into(),
            region: "local".into(),
            regions_file: None,
            cores: vec![CoreSite {
                name: "core-1".into(),
                quic: "127.0.0.1:7443".parse().expect("literal address"),
                ops: Some("127.0.0.1:9464".parse().expect("literal address")),
                server_name: "localhost".into(),
            }],
            tls: None,
            filters: FilterConfig::default(),
            state: StateConfig::default(),
            limits: ApiLimits::default(),
            upstream: UpstreamConfig::default(),
            resume: ResumeConfig::default(),
            debug: DebugConfig::default(),
            web: true,
        }
    }
}

/// The filter chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// A module directory to load and watch; without it, the shipped chain built into the
    /// binary (auth → ratelimit → presafety).
    pub dir: Option<PathBuf>,
    /// Trusted signing keys (`chorus filter keygen` `.pub` lines).
    pub trusted_keys: Option<PathBuf>,
    /// Accept unsigned modules from `dir`. Never in production.
    pub dev_mode: bool,
    /// Operator configuration per filter: `[filters.config.ratelimit] "messages.free" = "40/3h"`.
    pub config: BTreeMap<String, BTreeMap<String, String>>,
    /// API keys the auth filter accepts (stored as SHA-256 digests in the filters' data).
    pub api_keys: Vec<ApiKey>,
}

/// One API key record.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The key's SHA-256 (hex, as `chorus_auth_core::api_key_hash` computes it) …
    #[serde(default)]
    pub sha256: Option<String>,
    /// … or the key itself (development only: it sits in the file in clear).
    #[serde(default)]
    pub key: Option<String>,
    pub tenant: String,
    pub user: String,
    pub tier: String,
}

/// Where idempotency records (and, with Redis, the filters' counters) live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `redis://…`; without it, in-process.
    pub redis: Option<String>,
    /// Key prefix in Redis.
    pub prefix: String,
    /// How long a finished request's answer is kept for replay.
    pub idempotency_ttl_secs: u64,
    /// Most in-process records (oldest evicted first).
    pub max_records: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { redis: None, prefix: "chorus:edge".into(), idempotency_ttl_secs: 86_400, max_records: 10_000 }
    }
}

/// Bounds on what a client may send; checked before any other work.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    pub max_body_bytes: usize,
    pub max_messages: usize,
    pub max_message_bytes: usize,
    /// Largest `max_tokens` / `max_completion_tokens`.
    pub max_tokens: u32,
    /// Used when the request sets none.
    pub default_max_tokens: u32,
    pub max_stop: usize,
    pub max_stop_bytes: usize,
    pub max_user_bytes: usize,
    pub max_idempotency_key_bytes: usize,
    pub max_top_logprobs: u8,
    /// Most `logit_bias` entries.
    pub max_logit_bias: usize,
    /// Most tools one request may offer (and calls one assistant message may carry).
    pub max_tools: usize,
    /// Largest JSON schema, grammar or tool definition, in bytes.
    pub max_schema_bytes: usize,
    /// Most completions one request may ask for (`n`).
    pub max_n: u32,
    /// Most concurrent WebSocket connections.
    pub max_websockets: usize,
    /// Most answers held at once (in flight, or finished and resumable).
    pub max_in_flight: usize,
    /// Seconds a client has to send its whole body; a WebSocket idle this long is closed.
    pub client_timeout_secs: u64,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_messages: 256,
            max_message_bytes: 128 * 1024,
            max_tokens: 4096,
            default_max_tokens: 512,
            max_stop: 4,
            max_stop_bytes: 256,
            max_user_bytes: 256,
            max_idempotency_key_bytes: 255,
            max_top_logprobs: 20,
            max_logit_bias: 300,
            max_tools: 64,
            max_schema_bytes: 64 * 1024,
            max_n: 8,
            max_websockets: 10_000,
            max_in_flight: 10_000,
            client_timeout_secs: 60,
        }
    }
}

/// Connections to cores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub connect_timeout_ms: u64,
    /// Pause between reconnection attempts to a core that is down (doubling up to 16×).
    pub reconnect_ms: u64,
    /// How often each core's `/readyz` is polled.
    pub health_interval_ms: u64,
    /// Most cores one request is tried on before its first token.
    pub max_attempts: usize,
    /// The whole answer's deadline, sent to the core.
    pub deadline_ms: u32,
    /// A core whose load report shows more requests waiting than this is tried after its
    /// siblings in the region (a conversation leaves its cached core only then).
    pub busy_waiting: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            reconnect_ms: 250,
            health_interval_ms: 1_000,
            max_attempts: 3,
            deadline_ms: 300_000,
            busy_waiting: 64,
        }
    }
}

/// Resumable streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// How long after its client went away (or after it finished) an answer can be resumed.
    /// 0 turns resumption off: a client that goes away cancels its answer at once.
    pub window_secs: u64,
    /// Most bytes of events kept per answer; a resume point older than that is refused.
    pub max_buffer_bytes: usize,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self { window_secs: 30, max_buffer_bytes: 1 << 20 }
    }
}

/// Evaluation aids, off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Honour `x-chorus-echo-prompt: 1`: the answer carries the prompt text the core built
    /// (`chorus.prompt`), so `chorus eval` can check the conversation store delivers context.
    /// The prompt holds only the caller's own conversation, but keep this off where operators
    /// add instructions users should not read.
    pub echo_prompt: bool,
}

impl EdgeConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), why: e.to_string() })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: EdgeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The topology: the region file, or `cores` as the single region `region`.
    pub fn topology(&self) -> Result<RegionFile, ConfigError> {
        match &self.regions_file {
            Some(path) => Ok(RegionFile::load(path)?),
            None => {
                let home = Region {
                    name: self.region.clone(),
                    edge: None,
                    cores: self.cores.clone(),
                    rtt_ms: BTreeMap::new(),
                    provision: None,
                };
                let file = RegionFile { provision: None, regions: vec![home] };
                file.validate(Path::new("[cores]"))?;
                Ok(file)
            }
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| Err(ConfigError::Invalid { field, why });
        if self.edge_id.is_empty() || self.edge_id.len() > 128 {
            return bad("edge_id", "1 to 128 bytes".into());
        }
        if self.regions_file.is_none() && self.cores.is_empty() {
            return bad("cores", "name at least one core, or set regions_file".into());
        }
        let topo = self.topology()?;
        if topo.region(&self.region).is_none() {
            return bad("region", format!("`{}` is not a region of the topology", self.region));
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 || l.max_body_bytes > 64 << 20 {
            return bad("limits.max_body_bytes", "1 KiB to 64 MiB".into());
        }
        if l.default_max_tokens == 0 || l.default_max_tokens > l.max_tokens {
            return bad("limits.default_max_tokens", format!("1 to limits.max_tokens ({})", l.max_tokens));
        }
        let p = chorus_proto::Limits::default();
        if l.max_messages == 0 || l.max_messages > p.max_messages {
            return bad("limits.max_messages", format!("1 to {}", p.max_messages));
        }
        if l.max_message_bytes == 0 || l.max_message_bytes > p.max_message_bytes {
            return bad("limits.max_message_bytes", format!("1 to {}", p.max_message_bytes));
        }
        if l.max_stop > p.max_stops || l.max_stop_bytes > p.max_stop_bytes {
            return bad("limits.max_stop", format!("at most {} stops of {} bytes", p.max_stops, p.max_stop_bytes));
        }
        if l.max_logit_bias > p.max_logit_bias || l.max_tools > p.max_tools || l.max_schema_bytes > p.max_schema_bytes {
            return bad(
                "limits",
                format!(
                    "max_logit_bias at most {}, max_tools at most {}, max_schema_bytes at most {} (the protocol's bounds)",
                    p.max_logit_bias, p.max_tools, p.max_schema_bytes
                ),
            );
        }
        if l.max_n == 0 || l.max_n > u32::from(chorus_proto::MAX_N) {
            return bad("limits.max_n", format!("1 to {} (the protocol's bound)", chorus_proto::MAX_N));
        }
        if l.max_tokens == 0 || l.max_tokens > p.max_tokens {
            return bad("limits.max_tokens", format!("1 to {} (the protocol's bound)", p.max_tokens));
        }
        if l.max_in_flight == 0 || l.client_timeout_secs == 0 || l.client_timeout_secs > 3600 {
            return bad("limits", "max_in_flight at least 1; client_timeout_secs 1 to 3600".into());
        }
        let u = &self.upstream;
        if u.max_attempts == 0 || u.max_attempts > 16 {
            return bad("upstream.max_attempts", "1 to 16".into());
        }
        if !(10..=60_000).contains(&u.connect_timeout_ms) || !(50..=60_000).contains(&u.health_interval_ms) {
            return bad("upstream", "connect_timeout_ms 10 to 60000, health_interval_ms 50 to 60000".into());
        }
        if u.deadline_ms < 1000 {
            return bad("upstream.deadline_ms", "at least 1000".into());
        }
        if self.state.idempotency_ttl_secs == 0 || self.state.idempotency_ttl_secs > 30 * 86_400 {
            return bad("state.idempotency_ttl_secs", "1 s to 30 days".into());
        }
        if self.resume.window_secs > 3600 {
            return bad("resume.window_secs", "at most 3600".into());
        }
        for k in &self.filters.api_keys {
            if k.sha256.is_some() == k.key.is_some() {
                return bad("filters.api_keys", "each key needs exactly one of `sha256` or `key`".into());
            }
            if !["free", "team", "plus", "enterprise"].contains(&k.tier.as_str()) {
                return bad("filters.api_keys", format!("tier {:?}: free, team, plus or enterprise", k.tier));
            }
        }
        if let Some(url) = &self.state.redis
            && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://"))
        {
            return bad("state.redis", "a redis:// URL".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\nlisten").expect("the README has a config example") + 8;
        let end = start + readme[start..].find("```").unwrap();
        let cfg = EdgeConfig::parse(&readme[start..end]).unwrap();
        assert_eq!(cfg.cores.len(), 1);
        assert_eq!(cfg.filters.api_keys[0].tier, "plus");
    }

    #[test]
    fn defaults_validate_and_unknown_fields_are_refused() {
        EdgeConfig::default().validate().unwrap();
        let e = EdgeConfig::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3").unwrap_err().to_string();
        assert!(e.contains("listen_port"), "{e}");
        let e = EdgeConfig::parse("region = \"Mars Base\"").unwrap_err().to_string();
        assert!(e.contains("region") && e.contains("Mars Base"), "{e}");
        let e = EdgeConfig::parse("[limits]\ndefault_max_tokens = 0").unwrap_err().to_string();
        assert!(e.contains("limits.default_max_tokens"), "{e}");
    }

    /// The edge may not admit more tokens than the protocol lets a core accept.
    #[test]
    fn max_tokens_above_the_protocol_bound_is_refused_by_name() {
        let bound = chorus_proto::Limits::default().max_tokens;
        let e = EdgeConfig::parse(&format!("[limits]\nmax_tokens = {}", bound + 1)).unwrap_err().to_string();
        assert!(e.contains("limits.max_tokens") && e.contains(&bound.to_string()), "{e}");
        EdgeConfig::parse(&format!("[limits]\nmax_tokens = {bound}")).unwrap();
    }
}
