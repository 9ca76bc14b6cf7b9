//! The held-out report: `cargo run --release -p chorus-presafety-rules --example evaluate`.
//!
//! Scores `train/heldout/*.jsonl` (written apart from the training data, never used to fit or
//! to choose thresholds) with the compiled-in model and writes `train/HELDOUT.md`: block rate
//! per category, false positives per benign group, and the calibration table (block rate
//! against benign false-positive rate for each harm threshold) from which an operator picks
//! the filter's `threshold`. `--misses` also prints every wrong decision.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chorus_presafety_rules::{Assessment, Category, Limits, Model, Policy, assess, decide, scan_rules};

#[path = "../train/dataset.rs"]
mod dataset;
use dataset::{Case, load_dir};

/// (blocked, total) per key.
fn tally<'a>(keys: impl Iterator<Item = &'a str>, blocked: &[bool]) -> BTreeMap<&'a str, (usize, usize)> {
    let mut out: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (k, b) in keys.zip(blocked) {
        let e = out.entry(k).or_default();
        e.0 += usize::from(*b);
        e.1 += 1;
    }
    out
}

fn pct(a: usize, b: usize) -> f64 {
    100.0 * a as f64 / b.max(1) as f64
}

fn main() {
    let misses = std::env::args().any(|a| a == "--misses");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("train/heldout");
    let adversarial = load_dir(&root, "adversarial");
    let benign = load_dir(&root, "benign");
    let model = Model::builtin();
    let policy = Policy::builtin();
    let limits = Limits::default();
    let score = |set: &[Case]| -> Vec<Assessment> { set.iter().map(|c| assess(&c.text, &limits, &model)).collect() };
    let (adv, ben) = (score(&adversarial), score(&benign));

    let mut r = String::new();
    let _ = writeln!(r, "# Presafety classifier: held-out figures\n");
    let _ = writeln!(
        r,
        "Written by `cargo run --release -p chorus-presafety-rules --example evaluate`; do not edit. \
         The sets in `train/heldout/` were written by authors who saw neither the training data \
         nor the rules, and are never used to fit the model or to choose its thresholds.\n"
    );
    let blocked_adv: Vec<bool> = adv.iter().map(|a| decide(a, &policy).is_some()).collect();
    let blocked_ben: Vec<bool> = ben.iter().map(|a| decide(a, &policy).is_some()).collect();
    let n_adv = blocked_adv.iter().filter(|b| **b).count();
    let n_ben = blocked_ben.iter().filter(|b| **b).count();
    let _ = writeln!(
        r,
        "With the compiled-in thresholds: adversarial blocked **{:.1}%** ({n_adv}/{}), benign blocked **{:.1}%** ({n_ben}/{}).\n",
        pct(n_adv, adv.len()),
        adv.len(),
        pct(n_ben, ben.len()),
        ben.len()
    );
    let rules_adv = adversarial.iter().filter(|c| scan_rules(&c.text, &limits).is_some()).count();
    let rules_ben = benign.iter().filter(|c| scan_rules(&c.text, &limits).is_some()).count();
    let _ = writeln!(
        r,
        "The rules alone (the gate before the classifier): adversarial blocked {:.1}%, benign blocked {:.1}%.\n",
        pct(rules_adv, adv.len()),
        pct(rules_ben, ben.len())
    );
    let per = tally(adversarial.iter().map(|c| c.label.as_str()), &blocked_adv);
    let _ = writeln!(r, "| category | blocked | of | rate |\n|---|---|---|---|");
    for (l, (b, n)) in &per {
        let _ = writeln!(r, "| {l} | {b} | {n} | {:.1}% |", pct(*b, *n));
    }
    let groups = tally(benign.iter().map(|c| c.group.as_str()), &blocked_ben);
    let _ = writeln!(r, "\n| benign group | blocked | of |\n|---|---|---|");
    for (g, (b, n)) in &groups {
        let _ = writeln!(r, "| {g} | {b} | {n} |");
    }
    let _ = writeln!(
        r,
        "\n## Calibration\n\nThe same harm threshold for every category (the filter's `threshold`), rules at the compiled-in floor.\n"
    );
    let _ = writeln!(r, "| threshold | adversarial blocked | benign blocked |\n|---|---|---|");
    for t in [0.3f32, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999] {
        let p = Policy { thresholds: [t; Category::ALL.len()], ..policy };
        let a = adv.iter().filter(|x| decide(x, &p).is_some()).count();
        let b = ben.iter().filter(|x| decide(x, &p).is_some()).count();
        let _ = writeln!(r, "| {t} | {:.1}% | {:.1}% |", pct(a, adv.len()), pct(b, ben.len()));
    }
    std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("train/HELDOUT.md"), &r).expect("write HELDOUT.md");
    print!("{r}");
    if misses {
        for (c, (a, b)) in adversarial.iter().zip(adv.iter().zip(&blocked_adv)) {
            if !b {
                println!("MISSED {:.2} [{}] {:?}", a.scores.harm, c.label, c.text);
            }
        }
        for (c, (a, b)) in benign.iter().zip(ben.iter().zip(&blocked_ben)) {
            if *b {
                println!("FALSE POSITIVE {:.2} [{}] {:?}", a.scores.harm, c.group, c.text);
            }
        }
    }
}
