//! Held-out sets written for this crate (tests/heldout_*.txt): paraphrases,
//! new cases and hard benign near-misses. Required: block ≥ 95 %, allow ≥ 98 %.
mod common;

#[test]
fn heldout_adversarial_block_rate() {
    let set = common::read_tsv("heldout_adversarial.txt");
    assert!(set.len() >= 60);
    let (rate, wrong) = common::evaluate(&set, true);
    println!("held-out adversarial: blocked {:.1}% of {}", rate * 100.0, set.len());
    for w in &wrong {
        println!("  MISSED {w}");
    }
    assert!(rate >= 0.95, "block rate {rate:.3} < 0.95");
}

#[test]
fn heldout_benign_allow_rate() {
    let set = common::read_tsv("heldout_benign.txt");
    assert!(set.len() >= 60);
    let (rate, wrong) = common::evaluate(&set, false);
    println!("held-out benign: allowed {:.1}% of {}", rate * 100.0, set.len());
    for w in &wrong {
        println!("  FALSE POSITIVE {w}");
    }
    assert!(rate >= 0.98, "allow rate {rate:.3} < 0.98");
}
