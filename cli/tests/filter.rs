//! `chorus filter …` end to end: scaffold, build, keygen, sign, verify, test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chorus_filter_host::builtin::WASM_DIR;

fn chorus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chorus")).args(args).output().expect("chorus runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chorus-filter-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

#[test]
fn keygen_sign_verify_and_tampering() {
    let dir = scratch("sign");
    let module = dir.join("hostile.wasm");
    std::fs::copy(Path::new(WASM_DIR).join("chorus_filter_hostile.wasm"), &module).unwrap();
    std::fs::write(dir.join("hostile.toml"), "name = \"hostile\"\nversion = \"1.0.0\"\n").unwrap();
    let key = dir.join("author.key");
    ok(&chorus(&["filter", "keygen", s(&key)]));
    assert!(!chorus(&["filter", "keygen", s(&key)]).status.success(), "never overwrites a key");
    let trusted = dir.join("author.key.pub");

    assert!(!chorus(&["filter", "verify", s(&module), "--trusted", s(&trusted)]).status.success(), "unsigned");
    ok(&chorus(&["filter", "sign", s(&module), "--key", s(&key)]));
    let out = ok(&chorus(&["filter", "verify", s(&module), "--trusted", s(&trusted)]));
    assert!(out.starts_with("ok: hostile 1.0.0 signed by "), "{out}");

    // Widening the manifest after signing breaks the signature.
    std::fs::write(
        dir.join("hostile.toml"),
        "name = \"hostile\"\nversion = \"1.0.0\"\ncapabilities = [\"credentials\"]\n",
    )
    .unwrap();
    let out = chorus(&["filter", "verify", s(&module), "--trusted", s(&trusted)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_runs_fixtures_and_reports_mismatches() {
    let dir = scratch("fixtures");
    let fixtures = dir.join("f.jsonl");
    std::fs::write(
        &fixtures,
        concat!(
            r#"{"name": "echo", "request": {"prompt": "hi", "headers": {"accept": "*/*"}}, "expect": {"verdict": "allow"}}"#,
            "\n",
            r#"{"name": "wrong", "request": {"prompt": "hi"}, "expect": {"verdict": "deny", "code": "nope"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let module = Path::new(WASM_DIR).join("chorus_filter_hostile.wasm");
    let out = chorus(&["filter", "test", s(&module), "--fixtures", s(&fixtures)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a fixture did not match: nonzero exit");
    assert!(stdout.contains("ok   echo: allow hostile.headers=accept"), "{stdout}");
    assert!(stdout.contains("FAIL wrong: allow"), "{stdout}");

    let out = chorus(&["filter", "test", s(&module), "--fixtures", s(&fixtures), "--config", "mode=trap"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deny 503 filter_failed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn prompts_json(module: &Path, prompts: &Path) -> serde_json::Value {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-filters/presafety/filter.toml");
    let out =
        ok(&chorus(&["filter", "test", s(module), "--manifest", s(&manifest), "--prompts", s(prompts), "--json"]));
    assert!(out.starts_with("{\"total\":"), "documented field order: {out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn presafety_prompt_sets_through_the_stable_json_interface() {
    let module = Path::new(WASM_DIR).join("chorus_filter_presafety.wasm");
    let adversarial = prompts_json(&module, &shared("safety/adversarial.jsonl"));
    let benign = prompts_json(&module, &shared("safety/benign.jsonl"));
    let rate = |v: &serde_json::Value| v["denied"].as_f64().unwrap() / v["total"].as_f64().unwrap();
    assert_eq!(adversarial["results"].as_array().unwrap().len(), adversarial["total"].as_u64().unwrap() as usize);
    assert!(
        adversarial["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["verdict"] == "allow" || r["code"] == "content_policy")
    );
    eprintln!(
        "presafety: blocks {:.1}% of adversarial, allows {:.1}% of benign",
        100.0 * rate(&adversarial),
        100.0 * (1.0 - rate(&benign))
    );
    assert!(rate(&adversarial) >= 0.95, "{adversarial}");
    assert!(1.0 - rate(&benign) >= 0.98, "{benign}");
}

#[test]
fn new_then_build_then_test_a_filter() {
    let dir = scratch("new");
    let crate_dir = dir.join("wordfilter");
    ok(&chorus(&["filter", "new", s(&crate_dir)]));
    // Share the guest build's dependencies with the host's build script.
    let target = Path::new(WASM_DIR).parent().unwrap().parent().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["filter", "build", s(&crate_dir)])
        .env("CARGO_TARGET_DIR", target.join("scaffold"))
        .output()
        .unwrap();
    let wasm = ok(&out);
    assert!(wasm.trim().ends_with("dist/wordfilter.wasm"), "{wasm}");
    let out =
        ok(&chorus(&["filter", "test", wasm.trim(), "--fixtures", s(&crate_dir.join("fixtures/requests.jsonl"))]));
    assert!(out.contains("2 requests, 1 denied, 0 not as expected"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
