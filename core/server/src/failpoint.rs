//! Test hooks, named by one environment variable so a test can make a real core process fail
//! at a chosen point.

/// Test hooks: `CHORUS_FAILPOINT=<name>[@N]` names one failpoint for the whole process (N
/// defaults to 1); `None` when it names another or none. Read once by each hook.
pub(crate) fn named(name: &str) -> Option<u64> {
    let v = std::env::var("CHORUS_FAILPOINT").ok()?;
    let n = v.strip_prefix(name)?;
    if n.is_empty() { Some(1) } else { n.strip_prefix('@')?.parse().ok() }
}

/// Arms an engine loop's failpoints when the environment names one: `engine_panic[@N]` (its
/// Nth step with work panics inside the step, once) or `engine_stall@N` (its first step with
/// work blocks for N ms, once).
pub(crate) fn arm_engine(f: &chorus_engine::serve::Failpoints) {
    if let Some(n) = named("engine_panic") {
        eprintln!("failpoint engine_panic: armed for step {n}");
        f.panic_in_step(n);
    }
    if let Some(ms) = named("engine_stall") {
        eprintln!("failpoint engine_stall: the first step with work blocks {ms} ms");
        f.stall_next_step(std::time::Duration::from_millis(ms));
    }
}
