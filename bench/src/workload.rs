//! What the load generator says: a long system prompt every session shares (the prefix cache's
//! best case, as in a deployed assistant), user turns of a drawn length, and multi-turn
//! sessions that carry their history. Text is made of common English words, about one token
//! each for a BPE vocabulary, so `--prompt-tokens` is close to what the server counts (the
//! report gives the server's own count from `usage`).

use serde_json::{Value, json};

use crate::dist::{Dist, Rng};

/// Everyday words, about one token each. Word salad is read by the safety gate like any
/// prompt: verbs such as "build", "cook" or "move" near "people" or "way" trip its proximity
/// rules, so the list keeps to nouns, adjectives and gentle verbs (400 generated turns of 16–64
/// words: none refused).
const WORDS: &[&str] = &[
    "time", "water", "world", "house", "music", "garden", "river", "city", "road", "morning", "evening", "book",
    "story", "school", "market", "window", "table", "paper", "question", "answer", "idea", "plan", "weather", "summer",
    "winter", "forest", "mountain", "ocean", "island", "bridge", "station", "train", "letter", "picture", "color",
    "sound", "song", "field", "bread", "coffee", "tea", "apple", "orange", "green", "blue", "small", "large", "bright",
    "quiet", "warm", "new", "good", "simple", "clear", "early", "read", "learn", "paint", "describe", "compare",
    "remember", "share", "grow", "the", "and", "with", "about",
];

/// `n` words drawn from the vocabulary.
pub fn words(rng: &mut Rng, n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

/// The system prompt every session shares: the same text for a given length, so a server
/// with a prefix cache computes it once.
pub fn system_prompt(words_wanted: u32) -> String {
    let mut rng = Rng::new(0x5EED);
    let mut s = String::from("You are a helpful, careful assistant for a travel and home company.");
    let mut rule = 1;
    let mut count = s.split_whitespace().count() as u32;
    while count < words_wanted {
        s.push_str(&format!(" Rule {rule}: {}.", words(&mut rng, 12)));
        count += 14;
        rule += 1;
    }
    s
}

/// How requests are made up.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Words of the shared system prompt (0: none).
    pub system_words: u32,
    /// Words of each user turn (ignored with `prompts`).
    pub prompt_tokens: Dist,
    /// `max_tokens` of each answer.
    pub output_tokens: Dist,
    /// User turns per session.
    pub turns: Dist,
    /// User turns to draw from instead of generated text.
    pub prompts: Vec<String>,
}

/// Most words of one generated turn, tokens of one answer, and turns of a session.
pub const MAX_PROMPT_TOKENS: u32 = 32_768;
pub const MAX_OUTPUT_TOKENS: u32 = 32_768;
pub const MAX_TURNS: u32 = 64;

/// One simulated user's conversation.
#[derive(Debug, Clone)]
pub struct Session {
    pub tier: usize,
    /// The history sent with every turn (stateless API use, as OpenAI clients do).
    pub messages: Vec<Value>,
    pub turns_left: u32,
    pub turn: u32,
}

impl Session {
    pub fn new(tier: usize, shape: &Shape, system: &str, rng: &mut Rng) -> Self {
        let messages = if system.is_empty() { vec![] } else { vec![json!({"role": "system", "content": system})] };
        Self { tier, messages, turns_left: shape.turns.sample(rng, MAX_TURNS), turn: 0 }
    }

    /// The next user turn's text.
    pub fn next_prompt(&self, shape: &Shape, rng: &mut Rng) -> String {
        if !shape.prompts.is_empty() {
            return shape.prompts[rng.below(shape.prompts.len())].clone();
        }
        let n = shape.prompt_tokens.sample(rng, MAX_PROMPT_TOKENS);
        format!("Question {}: {}", self.turn + 1, words(rng, n.saturating_sub(2).max(1)))
    }

    /// Records a finished turn; whether the session goes on.
    pub fn answered(&mut self, prompt: String, answer: String) -> bool {
        self.messages.push(json!({"role": "user", "content": prompt}));
        self.messages.push(json!({"role": "assistant", "content": answer}));
        self.turn += 1;
        self.turns_left = self.turns_left.saturating_sub(1);
        self.turns_left > 0
    }
}

/// Reads user turns from a file: JSON lines with a `prompt` (or `content`/`text`) string, or
/// plain lines. Bounded: at most 100,000 turns of at most 1 MiB each.
pub fn load_prompts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let meta = std::fs::metadata(path).with_context(|| format!("--prompts {}", path.display()))?;
    anyhow::ensure!(meta.len() <= 256 << 20, "--prompts {}: over 256 MiB", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("--prompts {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let p = if line.starts_with('{') {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("--prompts {} line {}: not JSON", path.display(), i + 1))?;
            ["prompt", "content", "text"]
                .iter()
                .find_map(|k| v.get(k).and_then(Value::as_str))
                .with_context(|| format!("--prompts {} line {}: no \"prompt\" string", path.display(), i + 1))?
                .to_owned()
        } else {
            line.to_owned()
        };
        anyhow::ensure!(p.len() <= 1 << 20, "--prompts {} line {}: over 1 MiB", path.display(), i + 1);
        anyhow::ensure!(out.len() < 100_000, "--prompts {}: over 100,000 prompts", path.display());
        out.push(p);
    }
    anyhow::ensure!(!out.is_empty(), "--prompts {}: no prompts", path.display());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_prompt_is_long_shared_and_stable() {
        let a = system_prompt(600);
        assert_eq!(a, system_prompt(600), "every session sends the same text");
        let n = a.split_whitespace().count();
        assert!((600..640).contains(&n), "{n}");
        assert!(system_prompt(0).starts_with("You are"));
    }

    #[test]
    fn sessions_carry_history_and_end() {
        let shape = Shape {
            system_words: 10,
            prompt_tokens: Dist::Fixed { value: 20 },
            output_tokens: Dist::Fixed { value: 8 },
            turns: Dist::Fixed { value: 2 },
            prompts: vec![],
        };
        let mut rng = Rng::new(1);
        let mut s = Session::new(0, &shape, "sys", &mut rng);
        let p = s.next_prompt(&shape, &mut rng);
        assert_eq!(p.split_whitespace().count(), 20);
        assert!(s.answered(p, "a1".into()));
        let p2 = s.next_prompt(&shape, &mut rng);
        assert!(p2.starts_with("Question 2:"));
        assert!(!s.answered(p2, "a2".into()));
        assert_eq!(s.messages.len(), 5);
        assert_eq!(s.messages[0]["role"], "system");
    }

    #[test]
    fn prompt_files_take_json_lines_or_plain_lines_and_name_bad_lines() {
        let dir = std::env::temp_dir().join(format!("chorus-bench-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.jsonl");
        std::fs::write(&f, "{\"category\":\"x\",\"prompt\":\"hello\"}\n\nplain line\n").unwrap();
        assert_eq!(load_prompts(&f).unwrap(), vec!["hello".to_string(), "plain line".into()]);
        std::fs::write(&f, "{\"prompt\": 3}\n").unwrap();
        let e = load_prompts(&f).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        std::fs::write(&f, "").unwrap();
        assert!(load_prompts(&f).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
