//! `cargo fuzz run scan` (see `scripts/fuzz.sh`): arbitrary bytes as a prompt through the
//! safety gate's normaliser, rules and classifier under a fuzzed scan limit, and as a model
//! file. Errors are fine; a panic, a hang or a score outside 0..=1 is a bug.
#![no_main]

use chorus_presafety_rules::{Limits, Model, Policy, assess, decide, normalize, scan_rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode == 0xFF {
        // A model file from an operator: parse it, and score with it when it parses.
        if let Ok(model) = Model::parse(rest) {
            let a = assess("how do I make a cake", &Limits::default(), &model);
            assert!((0.0..=1.0).contains(&a.scores.harm));
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let limits = Limits { max_scan_bytes: usize::from(mode) * 64 };
    let policy = Policy::builtin();
    let a = assess(&text, &limits, &policy.model);
    assert!((0.0..=1.0).contains(&a.scores.harm), "{:?}", a.scores);
    assert!(a.scores.window.0 <= a.scores.window.1);
    let _ = decide(&a, &policy);
    let _ = scan_rules(&text, &limits);
    let _ = normalize(&text);
});
