//! `cargo run --release --example bench [PART…]` — timing of scan() and its parts (normalize,
//! rules, features, scan; all by default) on the 4 KB benign prompt.
use std::time::Instant;

fn measure(name: &str, iters: usize, mut f: impl FnMut()) {
    let parts: Vec<String> = std::env::args().skip(1).collect();
    if !parts.is_empty() && !parts.iter().any(|p| p == name) {
        return;
    }
    for _ in 0..200 {
        f();
    }
    let mut v: Vec<u128> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos()
        })
        .collect();
    v.sort();
    println!(
        "{name:<12} min {:>7.1}µs  median {:>7.1}µs  p99 {:>7.1}µs",
        v[0] as f64 / 1e3,
        v[iters / 2] as f64 / 1e3,
        v[iters * 99 / 100] as f64 / 1e3
    );
}

fn main() {
    let text = include_str!("../tests/data/benign_4k.txt");
    let iters = std::env::var("ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(5000);
    measure("normalize", iters, || {
        std::hint::black_box(chorus_presafety_rules::normalize(std::hint::black_box(text)));
    });
    parts(text);
    measure("scan", iters, || {
        std::hint::black_box(chorus_presafety_rules::scan(std::hint::black_box(text)));
    });
}
/// The scan's parts: the rules alone, and normalisation plus feature hashing.
fn parts(text: &str) {
    use chorus_presafety_rules::*;
    measure("rules", 2000, || {
        std::hint::black_box(scan_rules(std::hint::black_box(text), &Limits::default()));
    });
    measure("features", 2000, || {
        std::hint::black_box(hashed_features(std::hint::black_box(text), 16));
    });
}
