//! A chain of loaded filters and one request's pass through it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::limits::{Limits, truncate};
use crate::manifest::{Capability, Manifest, OnError};
use crate::metrics::FailureKind;
use crate::runtime::{CallState, FilterInfo, FilterPre, FilterRuntime, HostServices, MemLimiter, wit};

/// Headers that carry credentials: only filters granted `credentials` see them.
pub const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "x-api-key", "cookie", "proxy-authorization"];
/// Headers no rewrite may touch (besides the credential headers and `x-chorus-*`).
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];
/// Annotations only a filter granted `identity` may set.
pub const IDENTITY_KEYS: [&str; 3] = ["tenant", "user", "tier"];
/// Headers filters see by default (credential headers are added per capability).
pub const DEFAULT_VISIBLE_HEADERS: [&str; 10] = [
    "content-type",
    "user-agent",
    "accept",
    "accept-language",
    "origin",
    "referer",
    "x-request-id",
    "idempotency-key",
    "openai-organization",
    "openai-project",
];

fn reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&name.as_str()) || HOP_BY_HOP.contains(&name.as_str()) || name.starts_with("x-chorus-")
}

/// One request as the edge hands it to the chain.
#[derive(Clone, Debug, Default)]
pub struct FilterRequest {
    pub id: String,
    pub method: String,
    pub path: String,
    /// Raw headers; names are compared case-insensitively.
    pub headers: Vec<(String, String)>,
    pub client_ip: String,
    pub region: String,
    pub model: Option<String>,
    /// The user messages' text, newest last.
    pub prompt_text: String,
    pub message_count: u32,
    pub max_tokens: Option<u32>,
}

/// The identity the chain established.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub tenant: Option<String>,
    pub user: Option<String>,
    pub tier: Option<String>,
}

/// A refusal, as the client should see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The filter that refused (or failed).
    pub filter: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retry_after_ms: Option<u64>,
}

/// What one filter did with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Allow,
    Rewrite,
    Deny,
    /// The filter failed; its `on-error` policy decided.
    Failed {
        kind: FailureKind,
        detail: String,
        policy: OnError,
    },
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub filter: String,
    pub step: Step,
    pub elapsed: Duration,
}

/// The chain's answer for one request.
#[derive(Debug)]
pub struct ChainOutcome {
    /// `None` when every filter let the request through.
    pub denial: Option<Denial>,
    pub identity: Identity,
    pub annotations: Vec<(String, String)>,
    /// Header changes for the upstream request, in order.
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    pub steps: Vec<StepReport>,
    /// Present when the request was allowed: hand it the usage when the answer is done.
    pub ticket: Option<CompletionTicket>,
}

impl ChainOutcome {
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }
}

/// How a request that passed the chain ended (the WIT `outcome`, which documents each case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The model answered.
    Completed,
    /// The caller's own failure, or any failure after the first token.
    Failed,
    /// The client went away.
    Cancelled,
    /// A later filter (or the edge, for want of an identity) refused it.
    Denied,
    /// Failed before its first token for a reason that is not the caller's.
    Unavailable,
    /// An idempotent repeat answered from (or waiting on) an earlier request.
    Replayed,
}

/// What a request consumed, as far as the edge knows (see the WIT `usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
}

/// The filters to tell when an allowed request finishes, bound to the chain version that
/// admitted it (a reload in between does not lose the reconcile).
#[derive(Debug)]
pub struct CompletionTicket {
    chain: Arc<Chain>,
    admitted: Vec<usize>,
    request_id: String,
    identity: Identity,
    annotations: Vec<(String, String)>,
}

impl CompletionTicket {
    /// Run every admitting filter's `on-complete` with the real usage.
    pub fn complete(self, outcome: Outcome, usage: Usage, now_ms: u64) {
        let chain = self.chain.clone();
        chain.complete(&self, outcome, usage, now_ms);
    }
}

/// A filter ready to run.
pub(crate) struct LoadedFilter {
    pub info: Arc<FilterInfo>,
    pub manifest: Manifest,
    pub pre: FilterPre<CallState>,
    /// SHA-256 of the module, hex.
    pub digest: String,
    /// The key that signed it, or why none was needed.
    pub signer: String,
}

/// An ordered, immutable set of filters. Reloads build a new chain and swap it in whole.
pub struct Chain {
    pub(crate) runtime: Arc<FilterRuntime>,
    pub(crate) services: Arc<HostServices>,
    pub(crate) filters: Vec<LoadedFilter>,
    pub(crate) visible_headers: Vec<String>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.describe()).finish()
    }
}

/// A line per filter for operators: name, version, module digest, signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterDescription {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub signer: String,
}

enum CallError {
    Failed(FailureKind, String),
}

impl Chain {
    pub fn describe(&self) -> Vec<FilterDescription> {
        self.filters
            .iter()
            .map(|f| FilterDescription {
                name: f.info.name.clone(),
                version: f.manifest.version.clone(),
                digest: f.digest.clone(),
                signer: f.signer.clone(),
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.filters.iter().map(|f| f.info.name.clone()).collect()
    }

    fn limits(&self) -> &Limits {
        &self.services.limits
    }

    fn call_state(&self, f: &LoadedFilter, now_ms: u64) -> CallState {
        let limits = self.limits();
        CallState {
            filter: f.info.clone(),
            services: self.services.clone(),
            now_ms,
            mem: MemLimiter { max_bytes: f.manifest.memory_mib as usize * 1024 * 1024, hit: false },
            logs_left: limits.max_logs_per_call,
            calls_left: limits.max_host_calls,
        }
    }

    fn budget(f: &LoadedFilter) -> Duration {
        Duration::from_millis(f.manifest.budget_ms)
    }

    fn classify(store_hit_memory: bool, err: &wasmtime::Error) -> (FailureKind, String) {
        if store_hit_memory {
            return (FailureKind::Memory, "linear memory limit reached".into());
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => (FailureKind::Deadline, "call exceeded its time budget".into()),
            Some(trap) => (FailureKind::Trap, trap.to_string()),
            None => (FailureKind::Trap, format!("{err:#}")),
        }
    }

    fn call_request(&self, f: &LoadedFilter, req: &wit::Request, now_ms: u64) -> Result<wit::Verdict, CallError> {
        let mut store = self.runtime.store(self.call_state(f, now_ms), Self::budget(f));
        let instance = f.pre.instantiate(&mut store).map_err(|e| {
            let (kind, detail) = Self::classify(store.data().mem.hit, &e);
            let kind = if kind == FailureKind::Trap { FailureKind::Instantiate } else { kind };
            CallError::Failed(kind, detail)
        })?;
        instance.call_on_request(&mut store, req).map_err(|e| {
            let (kind, detail) = Self::classify(store.data().mem.hit, &e);
            CallError::Failed(kind, detail)
        })
    }

    fn guest_request(
        &self,
        f: &LoadedFilter,
        req: &FilterRequest,
        view: &RequestView<'_>,
        ctx: &Progress,
    ) -> wit::Request {
        let limits = self.limits();
        let credentials = f.manifest.grants(Capability::Credentials);
        let mut headers = Vec::new();
        for (name, value) in &view.headers {
            if headers.len() >= limits.max_headers {
                break;
            }
            let visible =
                self.visible_headers.contains(name) || (credentials && CREDENTIAL_HEADERS.contains(&name.as_str()));
            if visible && value.len() <= limits.max_header_bytes {
                headers.push(wit::Header { name: name.clone(), value: (*value).to_owned() });
            }
        }
        let prompt = truncate(&req.prompt_text, limits.max_prompt_bytes);
        wit::Request {
            id: truncate(&req.id, 128).to_owned(),
            method: truncate(&req.method, 16).to_owned(),
            path: truncate(&req.path, 1024).to_owned(),
            headers,
            client_ip: truncate(&req.client_ip, 64).to_owned(),
            region: truncate(&req.region, 64).to_owned(),
            model: req.model.as_deref().map(|m| truncate(m, 128).to_owned()),
            tenant: ctx.identity.tenant.clone(),
            user: ctx.identity.user.clone(),
            tier: ctx.identity.tier.clone(),
            prompt_text: prompt.to_owned(),
            prompt_chars: view.prompt_chars,
            message_count: req.message_count,
            max_tokens: req.max_tokens,
            annotations: ctx
                .annotations
                .iter()
                .map(|(key, value)| wit::Annotation { key: key.clone(), value: value.clone() })
                .collect(),
        }
    }

    fn check_annotations(&self, f: &LoadedFilter, list: &[wit::Annotation]) -> Result<(), CallError> {
        let limits = self.limits();
        if list.len() > limits.max_annotations {
            return Err(CallError::Failed(
                FailureKind::Oversized,
                format!("{} annotations; the limit is {}", list.len(), limits.max_annotations),
            ));
        }
        for a in list {
            let key_ok = (1..=limits.max_annotation_key_bytes).contains(&a.key.len())
                && a.key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !key_ok {
                return Err(CallError::Failed(
                    FailureKind::InvalidVerdict,
                    format!("annotation key {:?}", truncate(&a.key, 64)),
                ));
            }
            if a.value.len() > limits.max_annotation_value_bytes {
                return Err(CallError::Failed(
                    FailureKind::Oversized,
                    format!(
                        "annotation `{}` is {} bytes; the limit is {}",
                        a.key,
                        a.value.len(),
                        limits.max_annotation_value_bytes
                    ),
                ));
            }
            if IDENTITY_KEYS.contains(&a.key.as_str()) && !f.manifest.grants(Capability::Identity) {
                return Err(CallError::Failed(
                    FailureKind::InvalidVerdict,
                    format!("sets `{}` without the identity capability", a.key),
                ));
            }
        }
        Ok(())
    }

    fn check_denial(&self, d: &wit::Denial) -> Result<(), CallError> {
        let limits = self.limits();
        if d.message.len() > limits.max_message_bytes || d.code.len() > limits.max_code_bytes {
            return Err(CallError::Failed(
                FailureKind::Oversized,
                format!("denial code/message of {}/{} bytes is over the limit", d.code.len(), d.message.len()),
            ));
        }
        if !(400..=599).contains(&d.status) {
            return Err(CallError::Failed(
                FailureKind::InvalidVerdict,
                format!("denial status {} is not 4xx/5xx", d.status),
            ));
        }
        let code_ok =
            !d.code.is_empty() && d.code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !code_ok {
            return Err(CallError::Failed(FailureKind::InvalidVerdict, "denial code must be [a-z0-9_]+".into()));
        }
        if d.retry_after_ms.is_some_and(|ms| ms > limits.max_retry_after_ms) {
            return Err(CallError::Failed(FailureKind::InvalidVerdict, "retry-after is over a year".into()));
        }
        Ok(())
    }

    fn check_rewrite(&self, f: &LoadedFilter, r: &wit::Rewrite) -> Result<(), CallError> {
        let limits = self.limits();
        if r.set_headers.len() + r.remove_headers.len() > limits.max_rewrite_headers {
            return Err(CallError::Failed(FailureKind::Oversized, "too many header rewrites".into()));
        }
        let names = r.set_headers.iter().map(|h| h.name.as_str()).chain(r.remove_headers.iter().map(String::as_str));
        for name in names {
            let valid = (1..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid || reserved_header(name) {
                return Err(CallError::Failed(
                    FailureKind::InvalidVerdict,
                    format!("rewrite of reserved or invalid header {:?}", truncate(name, 64)),
                ));
            }
        }
        for h in &r.set_headers {
            if h.value.len() > limits.max_header_bytes || h.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(CallError::Failed(FailureKind::InvalidVerdict, format!("bad value for header {}", h.name)));
            }
        }
        self.check_annotations(f, &r.annotations)
    }

    /// Run the chain on one request, with the clock frozen at `now_ms`. Never fails: a filter
    /// failure becomes its `on-error` policy's answer.
    pub fn run(self: &Arc<Self>, req: &FilterRequest, now_ms: u64) -> ChainOutcome {
        let view = RequestView::new(req);
        let mut ctx = Progress::default();
        let mut admitted = Vec::new();
        let mut steps = Vec::with_capacity(self.filters.len());
        let mut denial = None;
        for (i, f) in self.filters.iter().enumerate() {
            let started = Instant::now();
            let guest_req = self.guest_request(f, req, &view, &ctx);
            let result = self.call_request(f, &guest_req, now_ms).and_then(|v| {
                match &v {
                    wit::Verdict::Allow(list) => self.check_annotations(f, list)?,
                    wit::Verdict::Deny(d) => self.check_denial(d)?,
                    wit::Verdict::Rewrite(r) => self.check_rewrite(f, r)?,
                }
                if ctx.annotations.len() + annotation_count(&v) > self.limits().max_total_annotations {
                    return Err(CallError::Failed(FailureKind::Oversized, "chain annotation limit reached".into()));
                }
                Ok(v)
            });
            let elapsed = started.elapsed();
            let metrics = &f.info.metrics;
            metrics.observe(elapsed);
            let step = match result {
                Ok(wit::Verdict::Allow(list)) => {
                    metrics.allows.fetch_add(1, Ordering::Relaxed);
                    ctx.apply(list);
                    admitted.push(i);
                    Step::Allow
                }
                Ok(wit::Verdict::Rewrite(r)) => {
                    metrics.rewrites.fetch_add(1, Ordering::Relaxed);
                    ctx.apply(r.annotations);
                    for h in r.set_headers {
                        ctx.set_headers.push((h.name.to_ascii_lowercase(), h.value));
                    }
                    ctx.remove_headers.extend(r.remove_headers.into_iter().map(|h| h.to_ascii_lowercase()));
                    admitted.push(i);
                    Step::Rewrite
                }
                Ok(wit::Verdict::Deny(d)) => {
                    metrics.denies.fetch_add(1, Ordering::Relaxed);
                    denial = Some(Denial {
                        filter: f.info.name.clone(),
                        status: d.status,
                        code: d.code,
                        message: d.message,
                        retry_after_ms: d.retry_after_ms,
                    });
                    Step::Deny
                }
                Err(CallError::Failed(kind, detail)) => {
                    metrics.failure(kind);
                    let policy = f.manifest.on_error;
                    tracing::warn!(filter = %f.info.name, kind = kind.as_str(), %detail, "filter failed");
                    if policy == OnError::Deny {
                        denial = Some(Denial {
                            filter: f.info.name.clone(),
                            status: 503,
                            code: "filter_failed".into(),
                            message: format!("policy filter `{}` failed; try again later", f.info.name),
                            retry_after_ms: None,
                        });
                    }
                    Step::Failed { kind, detail, policy }
                }
            };
            steps.push(StepReport { filter: f.info.name.clone(), step, elapsed });
            if denial.is_some() {
                break;
            }
        }
        let ticket = CompletionTicket {
            chain: self.clone(),
            admitted,
            request_id: req.id.clone(),
            identity: ctx.identity.clone(),
            annotations: ctx.annotations.clone(),
        };
        let ticket = if denial.is_some() {
            // Filters before the denial may hold reservations: release them now.
            ticket.complete(Outcome::Denied, Usage::default(), now_ms);
            None
        } else {
            Some(ticket)
        };
        ChainOutcome {
            denial,
            identity: ctx.identity,
            annotations: ctx.annotations,
            set_headers: ctx.set_headers,
            remove_headers: ctx.remove_headers,
            steps,
            ticket,
        }
    }

    fn complete(&self, ticket: &CompletionTicket, outcome: Outcome, usage: Usage, now_ms: u64) {
        let done = wit::Completion {
            request_id: ticket.request_id.clone(),
            tenant: ticket.identity.tenant.clone(),
            user: ticket.identity.user.clone(),
            tier: ticket.identity.tier.clone(),
            annotations: ticket
                .annotations
                .iter()
                .map(|(key, value)| wit::Annotation { key: key.clone(), value: value.clone() })
                .collect(),
            outcome: match outcome {
                Outcome::Completed => wit::Outcome::Completed,
                Outcome::Failed => wit::Outcome::Failed,
                Outcome::Cancelled => wit::Outcome::Cancelled,
                Outcome::Denied => wit::Outcome::Denied,
                Outcome::Unavailable => wit::Outcome::Unavailable,
                Outcome::Replayed => wit::Outcome::Replayed,
            },
            usage: wit::Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_tokens: usage.cached_tokens,
            },
        };
        for &i in &ticket.admitted {
            let f = &self.filters[i];
            let mut store = self.runtime.store(self.call_state(f, now_ms), Self::budget(f));
            let result = f.pre.instantiate(&mut store).and_then(|inst| inst.call_on_complete(&mut store, &done));
            f.info.metrics.completes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = result {
                let (kind, detail) = Self::classify(store.data().mem.hit, &e);
                f.info.metrics.failure(kind);
                tracing::warn!(filter = %f.info.name, kind = kind.as_str(), %detail, "on-complete failed");
            }
        }
    }
}

fn annotation_count(v: &wit::Verdict) -> usize {
    match v {
        wit::Verdict::Allow(list) => list.len(),
        wit::Verdict::Rewrite(r) => r.annotations.len(),
        wit::Verdict::Deny(_) => 0,
    }
}

/// What every filter's view of one request shares, computed once per request.
struct RequestView<'a> {
    /// Header names lower-cased, with their values.
    headers: Vec<(String, &'a str)>,
    prompt_chars: u32,
}

impl<'a> RequestView<'a> {
    fn new(req: &'a FilterRequest) -> Self {
        RequestView {
            headers: req.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.as_str())).collect(),
            prompt_chars: u32::try_from(req.prompt_text.chars().count()).unwrap_or(u32::MAX),
        }
    }
}

/// What the filters so far have established.
#[derive(Default)]
struct Progress {
    identity: Identity,
    annotations: Vec<(String, String)>,
    set_headers: Vec<(String, String)>,
    remove_headers: Vec<String>,
}

impl Progress {
    fn apply(&mut self, list: Vec<wit::Annotation>) {
        for a in list {
            match a.key.as_str() {
                "tenant" => self.identity.tenant = Some(a.value.clone()),
                "user" => self.identity.user = Some(a.value.clone()),
                "tier" => self.identity.tier = Some(a.value.clone()),
                _ => {}
            }
            self.annotations.push((a.key, a.value));
        }
    }
}
