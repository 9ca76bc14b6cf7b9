//! How an engine loop is doing, as its supervisor reports it and a server reads it: whether
//! the loop runs, is restarting after a failure, or is down; how many steps it has completed
//! and whether it has work (a watchdog's signs of progress); how many times it restarted and
//! why it last did. Also the loop's failpoints, the test hooks that make it panic or stall.
//!
//! A leaf module: it knows nothing of the loop itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why the engine ended a sequence it had accepted (or could not take one). Every variant
/// means the client's request was fine: the same request may succeed later or elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineFailure {
    /// The engine loop panicked; it restarts with a fresh scheduler and KV cache.
    #[error("the engine loop panicked and restarts: {0}")]
    Panicked(String),
    /// The backend failed a step (a device or kernel error); the loop restarts.
    #[error("the engine failed a step and restarts: {0}")]
    Step(String),
    /// The loop is restarting, or could not rebuild its state; nothing was queued.
    #[error("the engine is restarting: {0}")]
    Restarting(String),
    /// The engine loop has stopped for good.
    #[error("the engine loop has stopped")]
    Stopped,
    /// A bug caught as a typed failure instead of a panic.
    #[error("engine bug: {0}")]
    Internal(String),
}

impl EngineFailure {
    /// A stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineFailure::Panicked(_) => "panic",
            EngineFailure::Step(_) => "step",
            EngineFailure::Restarting(_) => "restarting",
            EngineFailure::Stopped => "stopped",
            EngineFailure::Internal(_) => "internal",
        }
    }
}

/// Where the engine loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopState {
    /// Taking work and stepping.
    Running,
    /// A failure ended the loop; its sequences were failed and its state is being rebuilt.
    Restarting,
    /// The loop could not rebuild its state (it keeps trying) or its thread has exited.
    Down,
}

impl LoopState {
    pub fn as_str(self) -> &'static str {
        match self {
            LoopState::Running => "running",
            LoopState::Restarting => "restarting",
            LoopState::Down => "down",
        }
    }
}

/// The failure a loop last restarted after.
#[derive(Debug, Clone, PartialEq)]
pub struct LastFailure {
    /// When the supervisor saw it (before any sequence was told).
    pub at: Instant,
    pub failure: EngineFailure,
}

/// A snapshot of an engine loop's health.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineHealth {
    pub state: LoopState,
    /// Steps completed since the engine started, across restarts.
    pub steps: u64,
    /// The loop has work: sequences waiting or running, or a command or step under way. An
    /// idle loop waiting for work is not busy, however long it waits.
    pub busy: bool,
    /// Times the loop restarted after a failure.
    pub restarts: u64,
    pub last_failure: Option<LastFailure>,
}

#[derive(Debug)]
struct Status {
    state: LoopState,
    restarts: u64,
    last_failure: Option<LastFailure>,
}

/// What the loop thread publishes and handles read: atomics for what changes every step, a
/// mutex for what changes on a failure.
#[derive(Debug)]
pub(crate) struct Pulse {
    steps: AtomicU64,
    busy: AtomicBool,
    status: Mutex<Status>,
}

impl Default for Pulse {
    fn default() -> Self {
        Self {
            steps: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            status: Mutex::new(Status { state: LoopState::Running, restarts: 0, last_failure: None }),
        }
    }
}

impl Pulse {
    pub(crate) fn stepped(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Relaxed);
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A failure ended the loop: counted and recorded before any sequence hears of it, so a
    /// client that sees its request fail already finds the engine not running.
    pub(crate) fn failed(&self, failure: EngineFailure) {
        self.set_busy(false);
        let mut s = self.status();
        s.state = LoopState::Restarting;
        s.restarts += 1;
        s.last_failure = Some(LastFailure { at: Instant::now(), failure });
    }

    pub(crate) fn set_state(&self, state: LoopState) {
        if state != LoopState::Running {
            self.set_busy(false);
        }
        self.status().state = state;
    }

    pub(crate) fn health(&self) -> EngineHealth {
        let s = self.status();
        EngineHealth {
            state: s.state,
            steps: self.steps.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            restarts: s.restarts,
            last_failure: s.last_failure.clone(),
        }
    }
}

/// Test hooks inside the engine step, each armed once: tests call them on
/// [`crate::serve::EngineHandle::failpoints`], and a server may arm them from its own test
/// configuration. Disarmed, they cost two atomic loads per step.
#[derive(Debug, Default)]
pub struct Failpoints {
    /// Steps with work until the one that panics (0: disarmed).
    panic_in: AtomicU64,
    /// Milliseconds the next step with work blocks before it runs (0: disarmed).
    stall_ms: AtomicU64,
}

impl Failpoints {
    /// The `n`th step with work from now (1: the next one) panics inside the step, once, with
    /// its sequences holding KV blocks. `0` disarms.
    pub fn panic_in_step(&self, n: u64) {
        self.panic_in.store(n, Ordering::Relaxed);
    }

    /// The next step with work blocks for `d` before it runs, once: the engine makes no
    /// progress for `d` while its work waits, then carries on.
    pub fn stall_next_step(&self, d: Duration) {
        self.stall_ms.store(d.as_millis().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// Called inside every step that has work, before the forward pass.
    pub(crate) fn on_step(&self) {
        let ms = self.stall_ms.swap(0, Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let due = self.panic_in.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if due == Ok(1) {
            panic!("failpoint engine_panic: a panic inside an engine step");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoints_fire_once_where_armed() {
        let f = Failpoints::default();
        f.on_step();
        f.panic_in_step(2);
        f.on_step();
        assert!(std::panic::catch_unwind(|| f.on_step()).is_err(), "the second step panics");
        f.on_step();
        f.stall_next_step(Duration::from_millis(30));
        let t = Instant::now();
        f.on_step();
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(f.stall_ms.load(Ordering::Relaxed), 0, "a stall is spent once");
    }

    #[test]
    fn a_failure_is_recorded_before_the_restart() {
        let p = Pulse::default();
        p.set_busy(true);
        p.stepped();
        p.failed(EngineFailure::Panicked("boom".into()));
        let h = p.health();
        assert_eq!((h.state, h.steps, h.busy, h.restarts), (LoopState::Restarting, 1, false, 1));
        assert_eq!(h.last_failure.map(|f| f.failure.kind()), Some("panic"));
        p.set_state(LoopState::Running);
        assert_eq!(p.health().state, LoopState::Running);
    }
}
