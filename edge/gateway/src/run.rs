//! One answer in flight (a "run"): the events the upstream produced, kept in a bounded buffer
//! that any number of readers follow — the client that asked, a client resuming with
//! `Last-Event-ID`, a retry attaching through its `Idempotency-Key`. The run is driven by its
//! own task, apart from any client connection; when its last reader goes away it is cancelled
//! (the upstream stream reset) unless a reader returns within the resume window.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_proto::Tier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::openai::{Shape, TokenLogprob, Usage};

/// What happened, in order. The first event is `Head` or `Error`; the last is `Finish` or
/// `Error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The core accepted the request and produced its first token.
    Head {
        model: String,
        /// The fleet that answers (`mini`, `flagship`).
        #[serde(default)]
        fleet: String,
        /// The prompt the core built, when the request asked for it (`x-chorus-echo-prompt`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        /// Routed to a smaller fleet than the tier's (busy).
        degraded_model: bool,
        /// The conversation store served it degraded.
        degraded_store: bool,
        conversation_id: Option<String>,
        /// How many answers the request asked for (`n`).
        #[serde(default = "one")]
        choices: u32,
    },
    Delta {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logprobs: Vec<TokenLogprob>,
        /// Which answer (with `n` > 1).
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
    },
    /// Tool call `index` of the answer begins (its arguments follow in [`RunEvent::ToolArgs`]).
    ToolCall {
        index: u32,
        id: String,
        name: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
    },
    /// More of call `index`'s arguments JSON.
    ToolArgs {
        index: u32,
        text: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        choice: u32,
    },
    Finish {
        finish_reason: String,
        usage: Usage,
        /// The committed turn, when the conversation is stored.
        conversation_id: Option<String>,
        turn_version: Option<u64>,
        /// Why a turn that was to be stored was not.
        store_error: Option<String>,
        /// With `n` > 1: each answer's finish reason, in choice order (`finish_reason` is the
        /// first's).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        choices: Vec<String>,
    },
    #[serde(skip)]
    Error(ApiError),
}

fn one() -> u32 {
    1
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl RunEvent {
    fn size(&self) -> usize {
        match self {
            RunEvent::Delta { text, logprobs, .. } => {
                64 + text.len()
                    + logprobs
                        .iter()
                        .map(|l| {
                            64 + 2 * l.token.len()
                                + l.top_logprobs.iter().map(|t| 48 + 2 * t.token.len()).sum::<usize>()
                        })
                        .sum::<usize>()
            }
            RunEvent::ToolArgs { text, .. } => 64 + text.len(),
            RunEvent::ToolCall { id, name, .. } => 64 + id.len() + name.len(),
            _ => 256,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, RunEvent::Finish { .. } | RunEvent::Error(_))
    }
}

/// Reading at an index found …
#[derive(Debug)]
pub enum Next {
    Event(RunEvent),
    /// … nothing yet.
    Pending,
    /// … the end.
    End,
    /// … an event already dropped from the bounded buffer.
    Gone,
}

#[derive(Debug, Default)]
struct Buffer {
    /// The `Head`, kept even when older events are dropped (a resumed reader needs it).
    head: Option<RunEvent>,
    events: VecDeque<RunEvent>,
    /// Index of `events[0]`.
    first: usize,
    bytes: usize,
    done: bool,
    finished_at: Option<Instant>,
}

/// One answer in flight.
#[derive(Debug)]
pub struct Run {
    /// `chatcmpl-…`; SSE event ids are `<id>.<index>`.
    pub id: String,
    /// UNIX seconds.
    pub created: u64,
    /// The client asked for a stream.
    pub stream: bool,
    pub include_usage: bool,
    pub tier: Tier,
    /// The API shape the answer is rendered in.
    pub shape: Shape,
    /// Whose answer it is (a hash of tenant and user): only they may resume or attach.
    owner: [u8; 32],
    buf: Mutex<Buffer>,
    max_bytes: usize,
    pushed: watch::Sender<usize>,
    cancel: watch::Sender<bool>,
    readers: AtomicUsize,
    /// Bumped by every new reader: a grace timer cancels only if none came since it started.
    epoch: AtomicUsize,
    /// How long the run waits for a reader to come back before it is cancelled.
    grace: Duration,
}

/// How the caller asked for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    /// Streamed (SSE or WebSocket) rather than one body.
    pub stream: bool,
    pub include_usage: bool,
    pub shape: Shape,
}

/// The owner key of (tenant, user).
pub fn owner_of(tenant: &str, user: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(user.as_bytes());
    h.finalize().into()
}

impl Run {
    pub fn new(id: String, form: Form, tier: Tier, owner: [u8; 32], max_bytes: usize, grace: Duration) -> Arc<Self> {
        let Form { stream, include_usage, shape } = form;
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Arc::new(Run {
            id,
            created,
            stream,
            include_usage,
            tier,
            shape,
            owner,
            buf: Mutex::new(Buffer::default()),
            max_bytes,
            pushed: watch::Sender::new(0),
            cancel: watch::Sender::new(false),
            readers: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            grace,
        })
    }

    /// A run fed from another edge's shared answer (see [`crate::shared`]): the same id, owner
    /// and creation time, so it renders exactly as the origin's.
    pub fn mirror(
        id: String,
        form: Form,
        tier: Tier,
        owner: [u8; 32],
        created: u64,
        max_bytes: usize,
        grace: Duration,
    ) -> Arc<Self> {
        let mut run = Run::new(id, form, tier, owner, max_bytes, grace);
        Arc::get_mut(&mut run).expect("just made").created = created;
        run
    }

    /// How many readers follow it now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::SeqCst)
    }

    /// A finished run built from stored events (an idempotent replay).
    pub fn replay(id: String, form: Form, tier: Tier, owner: [u8; 32], events: Vec<RunEvent>) -> Arc<Self> {
        let run = Run::new(id, form, tier, owner, usize::MAX, Duration::ZERO);
        for e in events {
            run.push(e);
        }
        run
    }

    pub fn owned_by(&self, owner: &[u8; 32]) -> bool {
        &self.owner == owner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event (ignored after the final one).
    pub fn push(&self, e: RunEvent) {
        let total = {
            let mut b = self.lock();
            if b.done {
                return;
            }
            b.done = e.is_final();
            if matches!(e, RunEvent::Head { .. }) && b.head.is_none() {
                b.head = Some(e.clone());
            }
            if b.done {
                b.finished_at = Some(Instant::now());
            }
            b.bytes += e.size();
            b.events.push_back(e);
            // Keep the head (its headers) and the newest events within the byte bound.
            while b.bytes > self.max_bytes && b.events.len() > 2 {
                if let Some(old) = b.events.pop_front() {
                    b.bytes -= old.size();
                    b.first += 1;
                }
            }
            b.first + b.events.len()
        };
        self.pushed.send_replace(total);
    }

    /// The `Head` event, once pushed.
    pub fn head(&self) -> Option<RunEvent> {
        self.lock().head.clone()
    }

    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    /// Finished, and longer ago than `window`.
    pub fn expired(&self, window: Duration) -> bool {
        self.lock().finished_at.is_some_and(|t| t.elapsed() > window)
    }

    pub fn get(&self, i: usize) -> Next {
        let b = self.lock();
        if i < b.first {
            return Next::Gone;
        }
        match b.events.get(i - b.first) {
            Some(e) => Next::Event(e.clone()),
            None if b.done => Next::End,
            None => Next::Pending,
        }
    }

    /// Waits for the event at `i` (or the end).
    pub async fn next(&self, i: usize) -> Next {
        let mut rx = self.pushed.subscribe();
        loop {
            match self.get(i) {
                Next::Pending => {}
                other => return other,
            }
            if rx.changed().await.is_err() {
                return Next::End;
            }
        }
    }

    /// The head, or the error that ended the run before one (the head is kept even when the
    /// buffer has dropped older events).
    pub async fn first(&self) -> RunEvent {
        let mut rx = self.pushed.subscribe();
        loop {
            {
                let b = self.lock();
                if let Some(h) = &b.head {
                    return h.clone();
                }
                if b.done {
                    return b.events.back().cloned().unwrap_or_else(|| {
                        RunEvent::Error(ApiError::Unavailable("the answer ended before it started".into()))
                    });
                }
            }
            if rx.changed().await.is_err() {
                return RunEvent::Error(ApiError::Unavailable("the answer ended before it started".into()));
            }
        }
    }

    /// Becomes a reader; dropping the [`Reader`] may cancel the run.
    pub fn reader(self: &Arc<Self>) -> Reader {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.readers.fetch_add(1, Ordering::SeqCst);
        Reader { run: self.clone() }
    }

    /// Cancels the run now (the driver resets the upstream stream).
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// Resolves when the run is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// A reader of a run; the last one going away starts the resume grace, then cancels.
#[derive(Debug)]
pub struct Reader {
    run: Arc<Run>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if self.run.readers.fetch_sub(1, Ordering::SeqCst) != 1 || self.run.is_done() {
            return;
        }
        let run = self.run.clone();
        let epoch = run.epoch.load(Ordering::SeqCst);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if !run.grace.is_zero() => {
                h.spawn(async move {
                    tokio::time::sleep(run.grace).await;
                    let untouched = run.epoch.load(Ordering::SeqCst) == epoch;
                    if untouched && run.readers.load(Ordering::SeqCst) == 0 && !run.is_done() {
                        run.cancel();
                    }
                });
            }
            _ => run.cancel(),
        }
    }
}

/// The runs this edge holds, by id: in flight, and finished ones for the resume window.
#[derive(Debug)]
pub struct Runs {
    map: Mutex<HashMap<String, Arc<Run>>>,
    max: usize,
}

impl Runs {
    /// At most `max` runs are held; finished ones are forgotten first when it is reached.
    pub fn new(max: usize) -> Self {
        Runs { map: Mutex::default(), max: max.max(1) }
    }

    /// Holds `run`, or says the edge holds too many answers already.
    pub fn insert(&self, run: Arc<Run>) -> Result<(), ApiError> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= self.max {
            m.retain(|_, r| !r.is_done());
        }
        if m.len() >= self.max {
            return Err(ApiError::Unavailable(format!(
                "this edge holds {} answers in flight; retry shortly",
                self.max
            )));
        }
        m.insert(run.id.clone(), run);
        Ok(())
    }

    /// Holds `run` unless one with its id is held already, which is returned instead.
    pub fn insert_new(&self, run: Arc<Run>) -> Result<Option<Arc<Run>>, ApiError> {
        if let Some(existing) = self.get(&run.id) {
            return Ok(Some(existing));
        }
        self.insert(run).map(|()| None)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets runs finished longer ago than `window`.
    pub fn sweep(&self, window: Duration) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, r| !r.expired(window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_run(max_bytes: usize, grace: Duration) -> Arc<Run> {
        let form = Form { stream: true, include_usage: false, shape: Shape::Chat };
        Run::new("r".into(), form, Tier::Free, owner_of("t", "u"), max_bytes, grace)
    }

    fn delta(t: &str) -> RunEvent {
        RunEvent::Delta { text: t.into(), logprobs: vec![], choice: 0 }
    }

    #[tokio::test]
    async fn readers_follow_and_the_buffer_is_bounded() {
        let run = test_run(200, Duration::ZERO);
        run.push(RunEvent::Head {
            model: "m".into(),
            fleet: "mini".into(),
            prompt: None,
            degraded_model: false,
            degraded_store: false,
            conversation_id: None,
            choices: 1,
        });
        let r2 = run.clone();
        let waiter = tokio::spawn(async move { matches!(r2.next(1).await, Next::Event(RunEvent::Delta { .. })) });
        run.push(delta("a"));
        assert!(waiter.await.unwrap());
        for t in ["b", "c", "d", "e"] {
            run.push(delta(t));
        }
        assert!(matches!(run.get(1), Next::Gone), "the oldest deltas are dropped past the byte bound");
        assert!(matches!(run.get(5), Next::Event(RunEvent::Delta { .. })));
        assert!(matches!(run.get(6), Next::Pending));
        assert!(matches!(run.head(), Some(RunEvent::Head { .. })), "the head outlives the buffer");
        run.push(RunEvent::Error(ApiError::Unavailable("x".into())));
        run.push(delta("ignored after the end"));
        assert!(matches!(run.get(7), Next::End));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_reader_leaving_cancels_after_the_grace() {
        let run = test_run(1 << 20, Duration::from_millis(50));
        let a = run.reader();
        let b = run.reader();
        drop(a);
        drop(b);
        assert!(!*run.cancel.borrow());
        let back = run.reader();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!*run.cancel.borrow(), "a reader came back within the grace");
        drop(back);
        tokio::time::timeout(Duration::from_secs(2), run.cancelled()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_grace_timer_does_not_cut_a_later_readers_grace_short() {
        let run = test_run(1 << 20, Duration::from_millis(200));
        drop(run.reader()); // timer 1 runs out at 200 ms
        tokio::time::sleep(Duration::from_millis(120)).await;
        drop(run.reader()); // timer 2 runs out at 320 ms
        tokio::time::sleep(Duration::from_millis(130)).await; // 250 ms: timer 1 has fired
        assert!(!*run.cancel.borrow(), "a reader came after timer 1 started");
        tokio::time::timeout(Duration::from_secs(2), run.cancelled()).await.unwrap();
    }
}
