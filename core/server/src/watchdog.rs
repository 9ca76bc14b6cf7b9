//! The engine watchdog: `/readyz` turns false when a fleet has work in flight and its engine
//! has completed no step for `stall_secs` (a hung engine answers nothing, but looks alive).

use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// Records a sample; returns how long work has been in flight with no step completed.
    pub fn observe(&mut self, steps: u64, in_flight: u32, now: Instant) -> Option<Duration> {
        if steps != self.steps || in_flight == 0 {
            *self = Self::new(steps, now);
            return None;
        }
        Some(now.duration_since(self.since))
    }
}

/// Watches the engines every 250 ms until aborted.
pub async fn watchdog(core: Arc<Core>) {
    let stall = Duration::from_secs(core.cfg.stall_secs);
    let mut last: Vec<Progress> =
        core.fleets.iter().map(|f| Progress::new(f.handle.metrics().steps, Instant::now())).collect();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut why = None;
        for (f, p) in core.fleets.iter().zip(&mut last) {
            if let Some(d) = p.observe(f.handle.metrics().steps, f.in_flight(), now).filter(|d| *d >= stall) {
                why = Some(format!(
                    "fleet {}: {} requests in flight and no engine step for {:.1} s",
                    f.name,
                    f.in_flight(),
                    d.as_secs_f64()
                ));
            }
        }
        core.set_unready(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_work_in_flight_with_no_step() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Progress::new(5, t0);
        // Idle: never a stall, however long.
        assert_eq!(p.observe(5, 0, t0 + 10 * s), None);
        // Work arrives; steps advance: fine.
        assert_eq!(p.observe(5, 2, t0 + 11 * s), Some(s));
        assert_eq!(p.observe(6, 2, t0 + 12 * s), None);
        // Steps stop while work waits: the stall grows from the last step.
        assert_eq!(p.observe(6, 2, t0 + 15 * s), Some(3 * s));
        assert_eq!(p.observe(6, 2, t0 + 20 * s), Some(8 * s));
        // Progress resumes.
        assert_eq!(p.observe(7, 2, t0 + 21 * s), None);
    }
}
