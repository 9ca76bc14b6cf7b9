//! Admission: who a request is and whether it may proceed, as the filter chain decides it.
//! [`Admission`] owns the filter host built from the configuration (trusted keys, operator
//! config, API keys as the auth filter's data, counters in-process or in Redis, the watched
//! module directory or the shipped chain); [`Admission::admit`] runs the chain and yields a
//! [`Caller`] or the refusal, and [`Admission::complete`] tells the filters how an admitted
//! request ended (the rate limiter reconciles its reservation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chorus_filter_host::{
    CompletionTicket, CounterStore, FilterHost, FilterRequest, HostConfig, Outcome, TrustPolicy, TrustedKey,
    WatchHandle,
};
use chorus_proto::Tier;

use crate::config::EdgeConfig;
use crate::error::{ApiError, StartError};
use crate::ids::{now_ms, random_hex};
use crate::metrics::Histogram;
use crate::openai::ValidChat;

/// Who a request is, as the filter chain established it.
#[derive(Debug)]
pub struct Caller {
    pub tenant: String,
    pub user: String,
    pub tier: Tier,
    /// Hand the usage back when the answer ends.
    pub ticket: Option<CompletionTicket>,
}

/// What a request asks to do, as the filters see it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The parsed chat body, for routes that carry one.
    pub chat: Option<&'a ValidChat>,
}

/// The filter chain and how to run it.
pub struct Admission {
    pub filters: Arc<FilterHost>,
    /// The filters' counters are in Redis: run the chain off the async workers.
    blocking: bool,
    region: String,
    _watch: Option<WatchHandle>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("blocking", &self.blocking).finish_non_exhaustive()
    }
}

/// The filters' view of a request's token counts.
pub fn filter_usage(u: chorus_proto::Usage) -> chorus_filter_host::Usage {
    chorus_filter_host::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cached_tokens: u.cached_tokens,
    }
}

impl Admission {
    /// Builds and loads the filter host the configuration describes.
    pub fn new(cfg: &EdgeConfig) -> Result<Self, StartError> {
        let (filters, watch) = filter_host(cfg)?;
        Ok(Self { filters, blocking: cfg.state.redis.is_some(), region: cfg.region.clone(), _watch: watch })
    }

    /// Runs the filter chain (its time goes into `chain_time`); the caller's identity, or the
    /// refusal.
    pub async fn admit(&self, a: Attempt<'_>, chain_time: &Histogram) -> Result<Caller, ApiError> {
        let req = FilterRequest {
            id: random_hex(8),
            method: a.method.into(),
            path: a.path.into(),
            headers: a
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            client_ip: a.client_ip.into(),
            region: self.region.clone(),
            model: a.chat.map(|c| c.model.clone()),
            prompt_text: a.chat.map(ValidChat::prompt_text).unwrap_or_default(),
            message_count: a.chat.map_or(0, |c| c.messages.len() as u32),
            max_tokens: a.chat.map(|c| c.max_tokens),
        };
        let start = Instant::now();
        let chain = self.filters.chain();
        let outcome = if self.blocking {
            tokio::task::spawn_blocking(move || chain.run(&req, now_ms()))
                .await
                .map_err(|e| ApiError::Unavailable(format!("filter chain: {e}")))?
        } else {
            chain.run(&req, now_ms())
        };
        chain_time.observe(start.elapsed());
        if let Some(d) = outcome.denial {
            return Err(ApiError::Denied {
                status: d.status,
                code: d.code,
                message: d.message,
                retry_after_ms: d.retry_after_ms,
            });
        }
        let id = outcome.identity;
        let (Some(tenant), Some(user)) = (id.tenant, id.user) else {
            self.complete(outcome.ticket, Outcome::Denied, Default::default()).await;
            return Err(ApiError::Denied {
                status: 401,
                code: "unauthenticated".into(),
                message: "no identity was established: send an API key (Authorization: Bearer …)".into(),
                retry_after_ms: None,
            });
        };
        let tier = match id.tier.as_deref() {
            None => Tier::Free,
            Some(name) => name.parse::<Tier>().map_err(ApiError::Unavailable)?,
        };
        Ok(Caller { tenant, user, tier, ticket: outcome.ticket })
    }

    /// Tells the filters how an admitted request ended, and returns once they have settled
    /// it: a caller who reads the answer's end and asks again sees what was given back.
    pub async fn complete(&self, ticket: Option<CompletionTicket>, outcome: Outcome, usage: chorus_filter_host::Usage) {
        let Some(t) = ticket else { return };
        if self.blocking {
            if let Err(e) = tokio::task::spawn_blocking(move || t.complete(outcome, usage, now_ms())).await {
                tracing::warn!(error = %e, "the filters' on-complete did not finish");
            }
        } else {
            t.complete(outcome, usage, now_ms());
        }
    }
}

/// The filter host the configuration describes, loaded; and the directory watch that keeps it
/// current, when modules come from a directory.
fn filter_host(cfg: &EdgeConfig) -> Result<(Arc<FilterHost>, Option<WatchHandle>), StartError> {
    let f = &cfg.filters;
    let keys = match &f.trusted_keys {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| StartError::Filters(format!("{}: {e}", p.display())))?;
            TrustedKey::parse_file(&text).map_err(|e| StartError::Filters(format!("{}: {e}", p.display())))?
        }
        None => vec![],
    };
    let counters = match &cfg.state.redis {
        Some(url) => CounterStore::redis(url, &format!("{}:filters", cfg.state.prefix))
            .map_err(|e| StartError::Filters(format!("counter store: {e}")))?,
        None => CounterStore::in_process(1_000_000),
    };
    let mut kv = BTreeMap::new();
    for k in &f.api_keys {
        let hash = match (&k.sha256, &k.key) {
            (Some(h), _) => h.to_ascii_lowercase(),
            (None, Some(key)) => chorus_auth_core::api_key_hash(key),
            (None, None) => continue,
        };
        let record = serde_json::json!({"tenant": k.tenant, "user": k.user, "tier": k.tier});
        kv.insert(format!("apikey:{hash}"), record.to_string().into_bytes());
    }
    let host = FilterHost::new(HostConfig {
        trust: TrustPolicy { keys, dev_mode: f.dev_mode },
        counters,
        filter_config: f.config.clone(),
        kv,
        ..HostConfig::default()
    })
    .map_err(|e| StartError::Filters(format!("{e:#}")))?;
    let host = Arc::new(host);
    let watch = match &f.dir {
        Some(dir) => {
            host.load_dir(dir).map_err(|e| StartError::Filters(e.to_string()))?;
            Some(host.watch(dir.clone(), Duration::from_secs(1)).map_err(|e| StartError::Filters(e.to_string()))?)
        }
        None => {
            host.load(&chorus_filter_host::builtin::default_chain()).map_err(|e| StartError::Filters(e.to_string()))?;
            None
        }
    };
    Ok((host, watch))
}
