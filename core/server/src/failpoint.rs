//! Test hooks, named by one environment variable so a test can make a real core process fail
//! at a chosen point.

/// Test hooks: `CHORUS_FAILPOINT=<name>[@N]` names one failpoint for the whole process (N
/// defaults to 1); `None` when it names another or none. Read once by each hook.
pub(crate) fn named(name: &str) -> Option<u64> {
    let v = std::env::var("CHORUS_FAILPOINT").ok()?;
    let n = v.strip_prefix(name)?;
    if n.is_empty() { Some(1) } else { n.strip_prefix('@')?.parse().ok() }
}
