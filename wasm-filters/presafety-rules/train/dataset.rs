//! The datasets' file formats, read by the trainer, the evaluator and the held-out test
//! (included by each with `#[path]`; not part of the crate).
//!
//! A `.jsonl` line is `{"label", "text" | "turns", "source"?, "group"?, "lang"?}`; `turns`
//! (a multi-turn ask) are joined newest last, as the filter joins a request's user turns. A
//! legacy `.tsv` line is `label<TAB>text`; in a file named `*benign*` the label is a topic and
//! the case is benign.

#![allow(dead_code)] // each includer reads the fields it needs

use std::path::{Path, PathBuf};

/// One labelled prompt.
pub struct Case {
    pub label: String,
    /// The benign group (a topic) or, for harmful cases, the label.
    pub group: String,
    pub text: String,
    pub source: String,
    /// `file:line`, for messages.
    pub at: String,
}

/// Every case in the `.jsonl` and `.tsv` files of `dir` whose names start with `prefix`, in
/// file-name order.
pub fn load_dir(dir: &Path, prefix: &str) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("jsonl" | "tsv")))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    files.sort();
    files.iter().flat_map(|p| load_file(p)).collect()
}

/// Every case in one file.
pub fn load_file(path: &Path) -> Vec<Case> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{name}:{}", n + 1);
        let case = if name.ends_with(".tsv") {
            let (l, t) = line.split_once('\t').unwrap_or_else(|| panic!("{at}: no tab"));
            let label = if name.contains("benign") { "benign" } else { l };
            Case { label: label.into(), group: l.into(), text: t.into(), source: format!("file:{name}"), at }
        } else {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: {e}"));
            let label = v["label"].as_str().unwrap_or_else(|| panic!("{at}: no label")).to_string();
            let body = match (&v["text"], &v["turns"]) {
                (serde_json::Value::String(t), _) => t.clone(),
                (_, serde_json::Value::Array(turns)) => {
                    turns.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join("\n")
                }
                _ => panic!("{at}: no text or turns"),
            };
            Case {
                group: v["group"].as_str().unwrap_or(&label).to_string(),
                source: v["source"].as_str().unwrap_or("unknown").to_string(),
                label,
                text: body,
                at,
            }
        };
        out.push(case);
    }
    out
}
