//! The `chorus` binary's script-facing interfaces: `tokenize --json`, `generate --json`, and
//! clear errors for bad input.

use std::process::Command;

fn chorus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chorus")).args(args).output().expect("chorus runs")
}

fn tmp(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn tokenize_json_prints_ids_with_special_tokens_parsed() {
    let out = chorus(&["tokenize", "--json", "<|endoftext|> text after special"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"ids": [0, 1694, 990, 1767]}));
}

/// On a machine without the model, the first command fetches it; pip's output must not leak
/// into stdout, where scripts read the JSON.
#[test]
fn fetching_the_model_keeps_stdout_clean() {
    let home = std::env::temp_dir().join(format!("chorus-cli-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["tokenize", "--json", "Hello"])
        .env("CHORUS_HOME", &home)
        .output()
        .expect("chorus runs");
    let _ = std::fs::remove_dir_all(&home);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"ids":[19556]}"#);
}

#[test]
fn generate_json_is_greedy_and_complete() {
    let msgs = tmp("m.json", r#"[{"role":"user","content":"What is the capital of Australia?"}]"#);
    let out = chorus(&[
        "generate",
        "--messages",
        msgs.to_str().unwrap(),
        "--max-tokens",
        "6",
        "--temperature",
        "0",
        "--top-logprobs",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["prompt_token_ids"].as_array().unwrap().len(), 37);
    // llama.cpp's first six tokens here all have top-2 margins above 1.9.
    assert_eq!(v["token_ids"], serde_json::json!([504, 3575, 282, 4617, 314, 40136]));
    assert_eq!(v["text"], "The capital of Australia is Canberra");
    let lp = v["logprobs"].as_array().unwrap();
    assert_eq!(lp.len(), 6);
    for entry in lp {
        let top = entry["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["id"], entry["id"], "greedy picks the top alternative");
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let msgs = tmp("ok.json", r#"[{"role":"user","content":"hi"}]"#);
    let out = chorus(&["generate", "--messages", msgs.to_str().unwrap(), "--temperature", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("temperature") && err.contains("0..=2"), "{err}");

    let bad = tmp("bad.json", r#"[{"role":"user"}]"#);
    let out = chorus(&["generate", "--messages", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("content"));

    let out = chorus(&["tokenize", "--model", "/nonexistent/model.gguf", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));

    let junk = tmp("junk.gguf", "GGUF\u{3}\0\0\0garbage");
    let out = chorus(&["tokenize", "--model", junk.to_str().unwrap(), "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn feedback_export_is_idempotent_and_bad_config_names_the_field() {
    let db = tmp("fb-placeholder", "").with_file_name("fb-store.redb");
    let _ = std::fs::remove_file(&db);
    let cfg = tmp("fb-core.toml", &format!("[store]\npath = {:?}\n", db.display().to_string()));
    let dir = db.parent().unwrap().to_path_buf();
    let out = dir.join("feedback.jsonl");
    let _ = std::fs::remove_file(&out);
    for _ in 0..2 {
        let o = chorus(&["feedback", "export", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("0 new ratings written"));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");
    let bad = tmp("fb-bad.toml", "[store.retention]\nfree = \"soon\"\n");
    let o = chorus(&["feedback", "export", "--config", bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("free = \"soon\"") && err.contains("forever"), "{err}");
}
