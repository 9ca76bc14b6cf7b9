//! The engine watchdog: a fleet whose engine has work and completes no step for
//! `engine_stall_ms` is stalled (a hung engine answers nothing, but looks alive), which turns
//! `/readyz` false until the engine steps again; and a restart of an engine loop after a panic
//! or a failed step is logged with its cause. Both are counted in the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::state::Core;

/// One fleet's progress as the watchdog sees it.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    steps: u64,
    since: Instant,
}

impl Progress {
    pub fn new(steps: u64, now: Instant) -> Self {
        Self { steps, since: now }
    }

    /// Records a sample; returns how long the engine has been busy with no step completed.
    pub fn observe(&mut self, steps: u64, busy: bool, now: Instant) -> Option<Duration> {
        if steps != self.steps || !busy {
            *self = Self::new(steps, now);
            return None;
        }
        Some(now.duration_since(self.since))
    }
}

/// How often the watchdog looks: a quarter of the window, between 10 and 250 ms, so a stall is
/// seen within a window and a quarter.
pub fn tick_for(stall: Duration) -> Duration {
    (stall / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Watches the engines until aborted.
pub async fn watchdog(core: Arc<Core>) {
    let stall = Duration::from_millis(core.cfg.engine_stall_ms);
    let now = Instant::now();
    let mut last: Vec<(Progress, u64)> = core
        .fleets
        .iter()
        .map(|f| {
            let h = f.handle.health();
            (Progress::new(h.steps, now), h.restarts)
        })
        .collect();
    let mut tick = tokio::time::interval(tick_for(stall));
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (f, (progress, restarts)) in core.fleets.iter().zip(&mut last) {
            let h = f.handle.health();
            if h.restarts != *restarts {
                *restarts = h.restarts;
                let (kind, why) = h
                    .last_failure
                    .as_ref()
                    .map_or(("unknown", String::new()), |l| (l.failure.kind(), l.failure.to_string()));
                error!(
                    fleet = %f.name,
                    restarts = h.restarts,
                    cause = kind,
                    failure = %why,
                    state = h.state.as_str(),
                    "engine loop failed: its sequences ended with engine_failed and it restarted with fresh KV state"
                );
            }
            let busy = h.busy && h.state == chorus_engine::serve::LoopState::Running;
            let stalled = progress.observe(h.steps, busy, now).filter(|d| *d >= stall);
            let was = f.stalled_for();
            if f.set_stall(stalled) {
                warn!(
                    fleet = %f.name,
                    in_flight = f.in_flight(),
                    stalled_ms = stalled.map_or(0, |d| d.as_millis() as u64),
                    "engine stalled: work waiting and no step completed; not ready until it steps again"
                );
            } else if stalled.is_none()
                && let Some(d) = was
            {
                info!(fleet = %f.name, stalled_ms = d.as_millis() as u64, "engine stepping again after a stall");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_a_busy_engine_with_no_step() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Progress::new(5, t0);
        // Idle: never a stall, however long.
        assert_eq!(p.observe(5, false, t0 + 10 * s), None);
        // Work arrives; steps advance: fine.
        assert_eq!(p.observe(5, true, t0 + 11 * s), Some(s));
        assert_eq!(p.observe(6, true, t0 + 12 * s), None);
        // Steps stop while work waits: the stall grows from the last step.
        assert_eq!(p.observe(6, true, t0 + 15 * s), Some(3 * s));
        assert_eq!(p.observe(6, true, t0 + 20 * s), Some(8 * s));
        // Progress resumes.
        assert_eq!(p.observe(7, true, t0 + 21 * s), None);
    }

    #[test]
    fn the_watchdog_looks_several_times_a_window() {
        assert_eq!(tick_for(Duration::from_secs(10)), Duration::from_millis(250));
        assert_eq!(tick_for(Duration::from_millis(400)), Duration::from_millis(100));
        assert_eq!(tick_for(Duration::from_millis(100)), Duration::from_millis(25));
    }
}
