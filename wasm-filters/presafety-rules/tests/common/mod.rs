//! Shared helpers for the integration tests: tiny JSONL / TSV readers.
#![allow(dead_code)]

use std::path::Path;

/// Shared reference sets (read-only), beside the checkout as `../shared`.
pub const SHARED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/safety");

/// Parse a JSON string literal starting at `s[0] == '"'`; returns (value, rest).
fn json_string(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.strip_prefix('"')?.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 2..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        let mut cp = u32::from_str_radix(&hex, 16).ok()?;
                        if (0xD800..0xDC00).contains(&cp) {
                            // surrogate pair
                            let _ = chars.next();
                            let _ = chars.next();
                            let lo: String = (0..4).filter_map(|_| chars.next().map(|x| x.1)).collect();
                            let lo = u32::from_str_radix(&lo, 16).ok()?;
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        }
                        out.push(char::from_u32(cp)?);
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// Value of a string field in a flat JSON object line.
fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\"");
    let at = line.find(&pat)? + pat.len();
    let rest = line[at..].trim_start().strip_prefix(':')?.trim_start();
    json_string(rest).map(|(v, _)| v)
}

/// (category, prompt) pairs from a JSON-lines file.
pub fn read_jsonl(path: impl AsRef<Path>) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (field(l, "category").unwrap_or_default(), field(l, "prompt").expect("prompt field")))
        .collect()
}

/// (category, prompt) pairs from a `category<TAB>prompt` file in tests/.
pub fn read_tsv(name: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('\t') {
            Some((c, p)) => (c.to_string(), p.to_string()),
            None => (String::new(), l.to_string()),
        })
        .collect()
}

/// Scan a set; returns (rate, misclassified lines). `expect_block` selects
/// whether a finding is the correct outcome.
pub fn evaluate(set: &[(String, String)], expect_block: bool) -> (f64, Vec<String>) {
    let mut wrong = Vec::new();
    for (cat, prompt) in set {
        let f = chorus_presafety_rules::scan(prompt);
        if f.is_some() != expect_block {
            let how = match f {
                Some(f) => format!("blocked by {} ({})", f.rule, f.category.as_str()),
                None => "passed".to_string(),
            };
            wrong.push(format!("[{cat}] {how}: {prompt:?}"));
        }
    }
    let ok = set.len() - wrong.len();
    (ok as f64 / set.len() as f64, wrong)
}
