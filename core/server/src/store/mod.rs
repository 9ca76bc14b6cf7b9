//! The conversation store (DESIGN §5): a durable tier written first (an embedded redb file by
//! default, PostgreSQL when configured) and a hot tier written after (an in-process LRU by
//! default, Redis when configured), plus the feedback queue.
//!
//! Rules this module keeps:
//! - A turn is acknowledged (the core sends `Done` with `Stored::Committed`) only after the
//!   durable tier committed it. The hot copy is written after and may be lost.
//! - Every record carries a version (the number of committed turns). A hot copy whose version
//!   is not the durable one is ignored; a commit based on a version that is no longer current is
//!   refused as a conflict, never merged.
//! - Every read and write names the owner (tenant and user); a conversation of anyone else is
//!   indistinguishable from a missing one.

mod embedded;
mod hot;
mod metrics;
mod postgres;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_proto::{ConversationSummary, ConversationView, Erased, Message, Rating, Tier, Turn};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::{DurableKind, HotKind, StoreConfig};

pub use embedded::Embedded;
pub use hot::Hot;
pub use metrics::StoreMetrics;
pub use postgres::Postgres;

/// Who a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub tenant: String,
    pub user: String,
}

impl Owner {
    pub fn new(tenant: &str, user: &str) -> Self {
        Self { tenant: tenant.into(), user: user.into() }
    }
}

/// The token ids a conversation's next prompt starts with: the last turn's prompt followed by
/// its answer, exactly as the model saw them (valid only for the same model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub model: String,
    pub ids: Vec<u32>,
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub owner: Owner,
    /// The tier of the last write; retention follows it.
    pub tier: Tier,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Turns committed; the version of the record.
    pub version: u64,
    pub turns: Vec<Turn>,
    pub context: Option<Context>,
}

impl Conversation {
    /// The exact history: every turn's input messages and its answer, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        let mut out = Vec::new();
        for t in &self.turns {
            out.extend(t.input.iter().cloned());
            out.push(Message { role: chorus_proto::Role::Assistant, content: t.answer.clone() });
        }
        out
    }

    pub fn summary(&self) -> ConversationSummary {
        ConversationSummary {
            id: self.id.clone(),
            tier: self.tier,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            version: self.version,
        }
    }

    pub fn view(&self) -> ConversationView {
        ConversationView { summary: self.summary(), turns: self.turns.clone() }
    }

    /// This conversation after `c` commits.
    pub fn apply(mut self, c: &Commit) -> Self {
        self.version += 1;
        self.updated_ms = c.now_ms;
        self.tier = c.tier;
        self.turns.push(c.turn.clone());
        self.context = c.context.clone();
        self
    }

    /// A new conversation holding `c`'s turn.
    pub fn create(c: &Commit) -> Self {
        Self {
            id: c.conversation_id.clone(),
            owner: c.owner.clone(),
            tier: c.tier,
            created_ms: c.now_ms,
            updated_ms: c.now_ms,
            version: 0,
            turns: Vec::new(),
            context: None,
        }
        .apply(c)
    }
}

/// The conversation's row without its turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: String,
    pub owner: Owner,
    pub tier: Tier,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub version: u64,
    pub context: Option<Context>,
}

impl Meta {
    fn of(c: &Conversation) -> Self {
        Self {
            id: c.id.clone(),
            owner: c.owner.clone(),
            tier: c.tier,
            created_ms: c.created_ms,
            updated_ms: c.updated_ms,
            version: c.version,
            context: c.context.clone(),
        }
    }

    fn with_turns(self, turns: Vec<Turn>) -> Conversation {
        Conversation {
            id: self.id,
            owner: self.owner,
            tier: self.tier,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            version: self.version,
            turns,
            context: self.context,
        }
    }
}

/// One turn to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub owner: Owner,
    pub conversation_id: String,
    /// The version the turn was generated from; `None` creates the conversation.
    pub base: Option<u64>,
    pub tier: Tier,
    pub turn: Turn,
    pub context: Option<Context>,
    pub now_ms: u64,
}

/// A request id that produced a committed turn: a retry of the request replays that turn
/// instead of generating (and billing) it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub request_id: String,
    pub conversation_id: String,
    pub version: u64,
    pub created_ms: u64,
}

/// A rating of one answer, with what the reward model needs: the prompt and the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub id: String,
    pub created_ms: u64,
    pub owner: Owner,
    pub tier: Tier,
    pub conversation_id: String,
    pub version: u64,
    pub rating: Rating,
    pub comment: Option<String>,
    pub model: String,
    /// The messages the answer was generated from.
    pub prompt: Vec<Message>,
    pub completion: String,
}

/// Everything held for one user (the export document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserExport {
    pub tenant: String,
    pub user: String,
    pub exported_ms: u64,
    pub conversations: Vec<Conversation>,
    pub feedback: Vec<Feedback>,
    pub idempotency_records: Vec<IdempotencyRecord>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("no such conversation")]
    NotFound,
    #[error("conversation {id} is at version {current}; this turn was generated from version {base}")]
    Conflict { id: String, base: u64, current: u64 },
    #[error("request {request_id} already produced turn {version} of conversation {conversation_id}")]
    Duplicate { request_id: String, conversation_id: String, version: u64 },
    #[error("the {tier} tier is unavailable: {why}")]
    Unavailable { tier: &'static str, why: String },
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn durable(why: impl std::fmt::Display) -> Self {
        StoreError::Unavailable { tier: "durable", why: why.to_string() }
    }

    pub(crate) fn hot(why: impl std::fmt::Display) -> Self {
        StoreError::Unavailable { tier: "hot", why: why.to_string() }
    }

    /// The wire code.
    pub fn code(&self) -> chorus_proto::ErrorCode {
        use chorus_proto::ErrorCode;
        match self {
            StoreError::NotFound => ErrorCode::NotFound,
            StoreError::Conflict { .. } | StoreError::Duplicate { .. } => ErrorCode::Conflict,
            StoreError::Unavailable { .. } => ErrorCode::StoreUnavailable,
            StoreError::Corrupt(_) => ErrorCode::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A random 128-bit id, hex (conversation and feedback ids: unguessable, so knowing one
/// reveals nothing about others).
pub fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness is a broken host; fall back to time and a counter, still unique.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b[..8].copy_from_slice(&now_ms().to_le_bytes());
        b[8..].copy_from_slice(&n.to_le_bytes());
    }
    let mut s = String::with_capacity(prefix.len() + 32);
    s.push_str(prefix);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// The durable tier.
#[derive(Debug)]
pub enum Durable {
    Embedded(Embedded),
    Postgres(Box<Postgres>),
}

macro_rules! durable {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Durable::Embedded($d) => $e,
            Durable::Postgres($d) => $e,
        }
    };
}

impl Durable {
    fn name(&self) -> &'static str {
        match self {
            Durable::Embedded(_) => "embedded",
            Durable::Postgres(_) => "postgres",
        }
    }

    async fn version(&self, owner: &Owner, id: &str) -> Result<Option<u64>> {
        durable!(self, d => d.version(owner, id).await)
    }

    async fn load(&self, owner: &Owner, id: &str) -> Result<Option<Conversation>> {
        durable!(self, d => d.load(owner, id).await)
    }

    pub async fn commit(&self, c: &Commit) -> Result<()> {
        durable!(self, d => d.commit(c).await)
    }

    async fn idempotent(&self, owner: &Owner, request_id: &str) -> Result<Option<IdempotencyRecord>> {
        durable!(self, d => d.idempotent(owner, request_id).await)
    }

    async fn list(&self, owner: &Owner, limit: usize) -> Result<Vec<ConversationSummary>> {
        durable!(self, d => d.list(owner, limit).await)
    }

    async fn delete(&self, owner: &Owner, id: &str) -> Result<bool> {
        durable!(self, d => d.delete(owner, id).await)
    }

    /// Deletes everything of `owner`; returns the conversation ids removed and the counts.
    async fn erase(&self, owner: &Owner) -> Result<(Vec<String>, Erased)> {
        durable!(self, d => d.erase(owner).await)
    }

    async fn export(&self, owner: &Owner) -> Result<(Vec<Conversation>, Vec<Feedback>, Vec<IdempotencyRecord>)> {
        durable!(self, d => d.export(owner).await)
    }

    /// Deletes up to `limit` conversations idle past their tier's cutoff (`updated_ms` before
    /// it); returns their ids.
    async fn sweep(&self, cutoffs: [Option<u64>; 4], limit: usize) -> Result<Vec<String>> {
        durable!(self, d => d.sweep(cutoffs, limit).await)
    }

    async fn feedback_append(&self, f: &Feedback) -> Result<()> {
        durable!(self, d => d.feedback_append(f).await)
    }

    /// Feedback after position `after` in the log, oldest first, at most `limit`, with positions.
    async fn feedback_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Feedback)>> {
        durable!(self, d => d.feedback_after(after, limit).await)
    }
}

/// Where feedback goes: a Redis Stream when the hot tier is Redis, else the durable tier's
/// local log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackQueue {
    RedisStream,
    DurableLog,
}

/// What a read of a conversation found in the hot tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotRead {
    Hit,
    Miss,
    /// A copy whose version is not the durable one (ignored).
    Stale,
    /// The hot tier did not answer; the durable tier did.
    Down,
}

impl HotRead {
    pub fn as_str(self) -> &'static str {
        match self {
            HotRead::Hit => "hit",
            HotRead::Miss => "miss",
            HotRead::Stale => "stale",
            HotRead::Down => "error",
        }
    }
}

/// The two tiers together.
#[derive(Debug)]
pub struct ConversationStore {
    pub cfg: StoreConfig,
    durable: Durable,
    hot: Hot,
    feedback: FeedbackQueue,
    pub metrics: Arc<StoreMetrics>,
}

/// Test hook: with `CHORUS_FAILPOINT=after_durable_commit@N` (N defaults to 1) the core stops
/// for good right after its Nth durable commit and before that turn's hot write, so a test can
/// kill the process exactly there. Unset, this is one relaxed load per commit.
fn failpoint_after_durable() -> bool {
    static AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(at) = *AT.get_or_init(|| crate::failpoint::named("after_durable_commit")) else {
        return false;
    };
    COMMITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == at
}

impl ConversationStore {
    /// Opens both tiers. An embedded file that cannot be opened is an error; a server that is
    /// not reachable yet is not (the store reports it unavailable until it is).
    pub async fn open(cfg: &StoreConfig) -> Result<Self> {
        let durable = match cfg.durable {
            DurableKind::Embedded => Durable::Embedded(Embedded::open(&cfg.embedded_path()).await?),
            DurableKind::Postgres => Durable::Postgres(Box::new(Postgres::new(&cfg.postgres, cfg.op_timeout())?)),
        };
        let hot = match cfg.hot {
            HotKind::Memory => Hot::memory(cfg.hot_capacity, Duration::from_secs(cfg.hot_ttl_secs)),
            HotKind::Redis => Hot::redis(&cfg.redis, Duration::from_secs(cfg.hot_ttl_secs), cfg.op_timeout())?,
        };
        let feedback = match cfg.hot {
            HotKind::Redis => FeedbackQueue::RedisStream,
            HotKind::Memory => FeedbackQueue::DurableLog,
        };
        let metrics = Arc::new(StoreMetrics::new(durable.name(), hot.name()));
        Ok(Self { cfg: cfg.clone(), durable, hot, feedback, metrics })
    }

    /// The durable tier alone (tests and tools: a write here skips the hot tier, as a crash
    /// between the two writes would).
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// The hot tier alone.
    pub fn hot(&self) -> &Hot {
        &self.hot
    }

    /// Times `f` against the per-operation limit and records it.
    async fn timed<T>(&self, tier: &'static str, op: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let r = match tokio::time::timeout(self.cfg.op_timeout(), f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable {
                tier,
                why: format!("{op} took longer than {} ms", self.cfg.op_timeout_ms),
            }),
        };
        let failed = matches!(r, Err(StoreError::Unavailable { .. } | StoreError::Corrupt(_)));
        self.metrics.observe(tier, op, start.elapsed(), failed);
        r
    }

    /// A conversation of `owner`, from the hot tier when its copy is current.
    pub async fn load(&self, owner: &Owner, id: &str) -> Result<(Conversation, HotRead)> {
        let (version, hot) = tokio::join!(self.timed("durable", "version", self.durable.version(owner, id)), async {
            self.timed("hot", "get", self.hot.get(id)).await
        });
        let Some(version) = version? else {
            return Err(StoreError::NotFound);
        };
        let read = match hot {
            Ok(Some(c)) if c.version == version && &c.owner == owner => {
                self.metrics.hot(HotRead::Hit);
                return Ok((c, HotRead::Hit));
            }
            Ok(Some(_)) => HotRead::Stale,
            Ok(None) => HotRead::Miss,
            Err(_) => HotRead::Down,
        };
        self.metrics.hot(read);
        let c = self.timed("durable", "load", self.durable.load(owner, id)).await?.ok_or(StoreError::NotFound)?;
        if read != HotRead::Down {
            let _ = self.timed("hot", "put", self.hot.put(&c)).await;
        }
        Ok((c, read))
    }

    /// The turn a request already produced, if any (a retry replays it).
    pub async fn replay(&self, owner: &Owner, request_id: &str) -> Result<Option<(Conversation, u64)>> {
        let Some(r) = self.timed("durable", "idempotency", self.durable.idempotent(owner, request_id)).await? else {
            return Ok(None);
        };
        let c = self
            .timed("durable", "load", self.durable.load(owner, &r.conversation_id))
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Some((c, r.version)))
    }

    /// Commits a turn: durable first (retried within `commit_attempts`), then the hot copy
    /// (best effort: a stale or missing hot copy is only slower). `prior` is the conversation
    /// the turn was generated from (`None` for a new one). Returns the new version.
    pub async fn commit(&self, c: &Commit, prior: Option<Conversation>) -> Result<u64> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.timed("durable", "commit", self.durable.commit(c)).await {
                Ok(()) => break,
                // An earlier attempt committed after all (its answer was lost with the
                // connection): the idempotency record says so.
                Err(StoreError::Duplicate { conversation_id, .. })
                    if attempt > 1 && conversation_id == c.conversation_id =>
                {
                    break;
                }
                Err(e @ StoreError::Unavailable { .. }) if attempt < self.cfg.commit_attempts => {
                    warn!(conversation = %c.conversation_id, attempt, error = %e, "durable commit failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
                Err(e) => {
                    self.metrics.commit(match e {
                        StoreError::Conflict { .. } | StoreError::Duplicate { .. } => "conflict",
                        _ => "failed",
                    });
                    return Err(e);
                }
            }
        }
        self.metrics.commit("committed");
        if failpoint_after_durable() {
            eprintln!("failpoint after_durable_commit: conversation {}", c.conversation_id);
            std::future::pending::<()>().await;
        }
        let next = match prior {
            Some(p) => p.apply(c),
            None => Conversation::create(c),
        };
        if let Err(e) = self.timed("hot", "put", self.hot.put(&next)).await {
            warn!(conversation = %c.conversation_id, error = %e, "hot copy not written; the durable copy serves");
        }
        Ok(next.version)
    }

    pub async fn list(&self, owner: &Owner, limit: usize) -> Result<Vec<ConversationSummary>> {
        self.timed("durable", "list", self.durable.list(owner, limit)).await
    }

    /// Deletes one conversation from both tiers.
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<()> {
        if !self.timed("durable", "delete", self.durable.delete(owner, id)).await? {
            return Err(StoreError::NotFound);
        }
        self.hot_delete(&[id.to_string()]).await
    }

    /// The hot copies must go too: a deletion that left a readable copy behind would not be one.
    async fn hot_delete(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.timed("hot", "delete", self.hot.delete(ids)).await
    }

    /// Deletes all of `owner`'s data in both tiers and the feedback queue.
    pub async fn erase(&self, owner: &Owner) -> Result<Erased> {
        let (ids, mut erased) = self.timed("durable", "erase", self.durable.erase(owner)).await?;
        self.hot_delete(&ids).await?;
        if self.feedback == FeedbackQueue::RedisStream {
            erased.feedback += self.timed("hot", "feedback_erase", self.hot.feedback_erase(owner)).await?;
        }
        Ok(erased)
    }

    /// All of `owner`'s data.
    pub async fn export(&self, owner: &Owner) -> Result<UserExport> {
        let (conversations, mut feedback, idempotency_records) =
            self.timed("durable", "export", self.durable.export(owner)).await?;
        if self.feedback == FeedbackQueue::RedisStream {
            feedback.extend(
                self.timed("hot", "feedback_scan", self.hot.feedback_scan(Some(owner), "0", usize::MAX))
                    .await?
                    .into_iter()
                    .map(|(_, f)| f),
            );
        }
        Ok(UserExport {
            tenant: owner.tenant.clone(),
            user: owner.user.clone(),
            exported_ms: now_ms(),
            conversations,
            feedback,
            idempotency_records,
        })
    }

    /// Records a rating of turn `version` of a conversation of `owner`.
    pub async fn feedback(
        &self,
        owner: &Owner,
        conversation_id: &str,
        version: u64,
        rating: Rating,
        comment: Option<String>,
    ) -> Result<String> {
        let (c, _) = self.load(owner, conversation_id).await?;
        let Some(i) = version.checked_sub(1).map(|v| v as usize).filter(|&i| i < c.turns.len()) else {
            return Err(StoreError::NotFound);
        };
        let turn = &c.turns[i];
        let mut prompt: Vec<Message> = c.turns[..i]
            .iter()
            .flat_map(|t| {
                t.input
                    .iter()
                    .cloned()
                    .chain([Message { role: chorus_proto::Role::Assistant, content: t.answer.clone() }])
            })
            .collect();
        prompt.extend(turn.input.iter().cloned());
        let f = Feedback {
            id: new_id("fb_"),
            created_ms: now_ms(),
            owner: owner.clone(),
            tier: c.tier,
            conversation_id: c.id.clone(),
            version,
            rating,
            comment,
            model: turn.model.clone(),
            prompt,
            completion: turn.answer.clone(),
        };
        match self.feedback {
            FeedbackQueue::RedisStream => self.timed("hot", "feedback_append", self.hot.feedback_append(&f)).await?,
            FeedbackQueue::DurableLog => {
                self.timed("durable", "feedback_append", self.durable.feedback_append(&f)).await?
            }
        }
        Ok(f.id)
    }

    /// Feedback after `cursor` (a position in the queue; empty for the start), oldest first;
    /// returns the entries and the cursor after them.
    pub async fn feedback_page(&self, cursor: &str, limit: usize) -> Result<(Vec<Feedback>, String)> {
        match self.feedback {
            FeedbackQueue::RedisStream => {
                let from = if cursor.is_empty() { "0".to_string() } else { format!("({cursor}") };
                let page = self.timed("hot", "feedback_scan", self.hot.feedback_scan(None, &from, limit)).await?;
                let next = page.last().map_or_else(|| cursor.to_string(), |(id, _)| id.clone());
                Ok((page.into_iter().map(|(_, f)| f).collect(), next))
            }
            FeedbackQueue::DurableLog => {
                let after = if cursor.is_empty() {
                    0
                } else {
                    cursor.parse().map_err(|_| StoreError::Corrupt(format!("feedback cursor {cursor:?}")))?
                };
                let page = self.timed("durable", "feedback_read", self.durable.feedback_after(after, limit)).await?;
                let next = page.last().map_or(after, |(n, _)| *n).to_string();
                Ok((page.into_iter().map(|(_, f)| f).collect(), next))
            }
        }
    }

    /// One retention pass at time `now_ms`: deletes conversations idle past their tier's
    /// retention from both tiers; returns how many.
    pub async fn sweep(&self, now_ms: u64) -> Result<usize> {
        let cutoffs = self.cfg.retention.cutoffs(now_ms);
        let mut total = 0;
        loop {
            let ids = self.timed("durable", "sweep", self.durable.sweep(cutoffs, 500)).await?;
            self.hot_delete(&ids).await?;
            total += ids.len();
            self.metrics.swept(ids.len() as u64);
            if ids.len() < 500 {
                return Ok(total);
            }
        }
    }
}

/// Runs the retention sweeper every `sweep_interval_secs`.
pub async fn sweeper(store: Arc<ConversationStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(store.cfg.sweep_interval_secs.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.sweep(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(conversations = n, "retention sweep deleted idle conversations"),
            Err(e) => warn!(error = %e, "retention sweep failed; the next pass retries"),
        }
    }
}

/// One line of the feedback export: what a reward model trains on. The user's identity is
/// left out; the ids let a pipeline drop lines of data erased later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackLine {
    pub id: String,
    pub created_ms: u64,
    pub tier: Tier,
    pub conversation_id: String,
    pub turn: u64,
    pub rating: Rating,
    pub comment: Option<String>,
    pub model: String,
    pub prompt: Vec<Message>,
    pub completion: String,
}

impl From<Feedback> for FeedbackLine {
    fn from(f: Feedback) -> Self {
        Self {
            id: f.id,
            created_ms: f.created_ms,
            tier: f.tier,
            conversation_id: f.conversation_id,
            turn: f.version,
            rating: f.rating,
            comment: f.comment,
            model: f.model,
            prompt: f.prompt,
            completion: f.completion,
        }
    }
}

/// What an export run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportStats {
    /// Lines appended by this run.
    pub written: usize,
    /// Entries already in the file.
    pub present: usize,
}

impl ConversationStore {
    /// Appends every feedback entry not yet in `out` (JSONL, oldest first) and syncs it.
    /// Idempotent: a second run appends nothing; a run cut off mid-line leaves a partial line
    /// that the next run removes before appending.
    pub async fn export_feedback(&self, out: &std::path::Path) -> anyhow::Result<ExportStats> {
        use anyhow::Context as _;
        use std::io::Write as _;
        let mut seen = std::collections::HashSet::new();
        let mut keep = 0u64;
        match std::fs::read(out) {
            Ok(bytes) => {
                let mut start = 0;
                while let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') {
                    let line = &bytes[start..start + nl];
                    let parsed: FeedbackLine = serde_json::from_slice(line)
                        .with_context(|| format!("{}: line at byte {start} is not a feedback line", out.display()))?;
                    seen.insert(parsed.id);
                    start += nl + 1;
                }
                keep = start as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(out)
            .with_context(|| format!("opening {}", out.display()))?;
        file.set_len(keep)?;
        let mut w = std::io::BufWriter::new(std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map(|_| file)?);
        let mut stats = ExportStats { written: 0, present: seen.len() };
        let mut cursor = String::new();
        loop {
            let (page, next) = self.feedback_page(&cursor, 1000).await?;
            if page.is_empty() {
                break;
            }
            for f in page {
                if seen.insert(f.id.clone()) {
                    serde_json::to_writer(&mut w, &FeedbackLine::from(f))?;
                    w.write_all(b"\n")?;
                    stats.written += 1;
                }
            }
            cursor = next;
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(stats)
    }
}
