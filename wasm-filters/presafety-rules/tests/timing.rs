//! Timing printout (not an assertion): median `scan()` time on a ~4 KB benign
//! prompt. Run with `cargo test --release --test timing -- --nocapture`.
use std::time::Instant;

#[test]
fn timing_4k_benign_prompt() {
    let text = include_str!("data/benign_4k.txt");
    assert!(chorus_presafety_rules::scan(text).is_none(), "the timing prompt must be benign");
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        let r = chorus_presafety_rules::scan(std::hint::black_box(text));
        samples.push(t.elapsed());
        std::hint::black_box(r);
    }
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "scan() on {} bytes: median {:?}, p90 {:?}, p99 {:?} ({} build)",
        text.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
