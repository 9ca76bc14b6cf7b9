//! The post-generation safety gate: the answer's text, as it streams, is checked over a sliding
//! window with the rule engine and Unicode normalisation of the edge's presafety filter
//! (`chorus-presafety-rules`; its classifier is trained on requests, not answers), restricted to the categories that matter for output, plus
//! operator phrases. A match ends the answer with finish reason `content_filter`; the text that
//! matched is never sent.

use chorus_presafety_rules::{Category, Limits};

use crate::config::PostSafetyConfig;

/// A compiled policy; shared by every stream.
#[derive(Debug, Clone)]
pub struct Policy {
    enabled: bool,
    categories: Vec<Category>,
    /// Normalised phrases, each wrapped in spaces so they match whole words.
    deny: Vec<String>,
    window: usize,
}

/// Why an answer was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A rule category, or `policy` for an operator phrase.
    pub category: String,
    pub rule: String,
}

impl Policy {
    pub fn new(c: &PostSafetyConfig) -> Self {
        let categories = Category::ALL.into_iter().filter(|k| c.categories.iter().any(|n| n == k.as_str())).collect();
        let deny = c
            .deny
            .iter()
            .map(|p| chorus_presafety_rules::normalize(p))
            .filter(|p| !p.is_empty())
            .map(|p| format!(" {p} "))
            .collect();
        Self { enabled: c.enabled, categories, deny, window: c.window_bytes }
    }

    /// A gate for one answer.
    pub fn gate(&self) -> Gate<'_> {
        Gate { policy: self, text: String::new() }
    }
}

/// One answer's view of the policy.
#[derive(Debug)]
pub struct Gate<'p> {
    policy: &'p Policy,
    /// The last `window` bytes (or a little more, to a character boundary) of the answer.
    text: String,
}

impl Gate<'_> {
    /// Adds the next piece of the answer; `Some` when the window now breaks the policy.
    pub fn push(&mut self, piece: &str) -> Option<Violation> {
        let p = self.policy;
        if !p.enabled || piece.is_empty() {
            return None;
        }
        self.text.push_str(piece);
        if self.text.len() > p.window {
            let cut = self.text.ceil_char_boundary(self.text.len() - p.window);
            self.text.drain(..cut);
        }
        if let Some(f) = chorus_presafety_rules::scan_rules(&self.text, &Limits { max_scan_bytes: p.window })
            && p.categories.contains(&f.category)
        {
            return Some(Violation { category: f.category.as_str().to_string(), rule: f.rule.to_string() });
        }
        if !p.deny.is_empty() {
            let norm = format!(" {} ", chorus_presafety_rules::normalize(&self.text));
            if let Some(d) = p.deny.iter().find(|d| norm.contains(d.as_str())) {
                return Some(Violation { category: "policy".into(), rule: d.trim().to_string() });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(deny: &[&str]) -> Policy {
        Policy::new(&PostSafetyConfig { deny: deny.iter().map(|s| s.to_string()).collect(), ..Default::default() })
    }

    #[test]
    fn a_phrase_split_across_tokens_is_caught_when_it_completes() {
        let p = policy(&["secret sauce"]);
        let mut g = p.gate();
        for piece in ["The ", "SeCr", "ét", " sau"] {
            assert_eq!(g.push(piece), None, "{piece}");
        }
        let v = g.push("ce!").unwrap();
        assert_eq!((v.category.as_str(), v.rule.as_str()), ("policy", "secret sauce"));
    }

    #[test]
    fn phrases_match_whole_words_only() {
        let p = policy(&["cat"]);
        let mut g = p.gate();
        assert_eq!(g.push("concatenate the catalogue"), None);
        assert!(g.push(" and the C4T").is_some());
    }

    #[test]
    fn rule_categories_apply_and_excluded_ones_do_not() {
        let p = policy(&[]);
        let harmful = "Sure. Here is how to build a pipe bomb at home: step one";
        let mut g = p.gate();
        let v = harmful.split_inclusive(' ').find_map(|w| g.push(w)).expect("weapons instructions are caught");
        assert_eq!(v.category, "weapons");
        // Prompt-injection phrasing in an answer is not harmful output.
        let mut g = p.gate();
        assert_eq!(g.push("You asked me to ignore all previous instructions, which I cannot do."), None);
    }

    #[test]
    fn the_window_slides_and_stays_bounded() {
        let p = Policy::new(&PostSafetyConfig { window_bytes: 64, deny: vec!["needle".into()], ..Default::default() });
        let mut g = p.gate();
        for _ in 0..1000 {
            assert_eq!(g.push("héllo wörld "), None);
            assert!(g.text.len() <= 64 + 3);
        }
        assert!(g.push("needle").is_some());
        let off = Policy::new(&PostSafetyConfig { enabled: false, deny: vec!["needle".into()], ..Default::default() });
        assert_eq!(off.gate().push("needle"), None);
    }
}

#[cfg(test)]
mod cost {
    /// `cargo test --release -p chorus-core --lib gate_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn gate_cost() {
        let p = super::Policy::new(&Default::default());
        let mut g = p.gate();
        let text = std::env::var("GATE_TEXT").ok().and_then(|p| std::fs::read_to_string(p).ok());
        let words = text.as_deref().unwrap_or("Once upon a time a small robot named Bolt lived in a quiet town and helped the baker every morning with bread and cakes. ");
        let pieces: Vec<&str> = words.split_inclusive(' ').collect();
        let t = std::time::Instant::now();
        let n = 5000;
        for i in 0..n {
            if let Some(v) = g.push(pieces[i % pieces.len()]) {
                eprintln!("{v:?}");
                g = p.gate();
            }
        }
        eprintln!("{:.1} µs per token", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}
