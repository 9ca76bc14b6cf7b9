//! Signatures, trust, hot reload and the precompiled cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_filter_host::{
    FilterHost, HostConfig, LoadError, ModuleSource, RuntimeConfig, SignatureError, SigningKey, TrustPolicy,
};

use crate::common::*;

fn signed(key: &SigningKey, name: &str) -> ModuleSource {
    let mut src = hostile(name, "");
    src.signature = Some(key.sign(&src.wasm, src.manifest.as_bytes()).to_file());
    src
}

fn strict_host(key: &SigningKey, runtime: RuntimeConfig) -> Arc<FilterHost> {
    let trust = TrustPolicy { keys: vec![key.public()], dev_mode: false };
    Arc::new(FilterHost::new(HostConfig { trust, runtime, ..HostConfig::default() }).unwrap())
}

#[test]
fn only_modules_signed_by_a_trusted_key_load() {
    let key = SigningKey::from_seed([7; 32]);
    let host = strict_host(&key, RuntimeConfig::default());
    host.load(&[signed(&key, "hostile")]).unwrap();
    assert_eq!(host.chain().describe()[0].signer, key.id());

    let sig_err = |src: ModuleSource| match host.load(&[src]) {
        Err(LoadError::Signature { source, .. }) => source,
        other => panic!("expected a signature error, got {other:?}"),
    };
    let mut unsigned = signed(&key, "hostile");
    unsigned.signature = None;
    assert_eq!(sig_err(unsigned), SignatureError::Unsigned);
    assert!(matches!(sig_err(signed(&SigningKey::from_seed([8; 32]), "hostile")), SignatureError::UntrustedKey(_)));
    let mut tampered = signed(&key, "hostile");
    tampered.wasm.push(0);
    assert_eq!(sig_err(tampered), SignatureError::DigestMismatch("module"));
    let mut widened = signed(&key, "hostile");
    widened.manifest.push_str("capabilities = [\"credentials\"]\n");
    assert_eq!(sig_err(widened), SignatureError::DigestMismatch("manifest"));
    assert_eq!(host.chain().describe()[0].signer, key.id(), "failed loads leave the chain in place");
    assert_eq!(
        host.metrics().render().lines().find(|l| l.starts_with("chorus_filter_reload_failures_total")),
        Some("chorus_filter_reload_failures_total 4")
    );
}

fn write_dir(dir: &std::path::Path, key: &SigningKey, names: &[&str]) {
    for name in names {
        let src = signed(key, name);
        std::fs::write(dir.join(format!("{name}.wasm")), &src.wasm).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), &src.manifest).unwrap();
        std::fs::write(dir.join(format!("{name}.sig")), src.signature.unwrap()).unwrap();
    }
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    std::fs::write(dir.join("chain.toml.tmp"), format!("filters = [{}]\n", list.join(", "))).unwrap();
    std::fs::rename(dir.join("chain.toml.tmp"), dir.join("chain.toml")).unwrap();
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_changed_directory_is_swapped_in_and_a_bad_one_is_not() {
    let key = SigningKey::from_seed([9; 32]);
    let dir = TempDir::new("reload");
    write_dir(&dir.0, &key, &["first"]);
    let host = strict_host(&key, RuntimeConfig::default());
    host.load_dir(&dir.0).unwrap();
    let _watch = host.watch(dir.0.clone(), Duration::from_millis(25)).unwrap();

    // A request that started on the old chain finishes on it.
    let old = host.chain();
    write_dir(&dir.0, &key, &["first", "second"]);
    wait_for("the new chain", || host.chain().names() == ["first", "second"]);
    assert_eq!(old.names(), ["first"]);
    assert!(old.run(&request(&[], "x"), 1).allowed());

    // A module whose signature does not verify: the running chain stays.
    std::fs::write(dir.0.join("second.wasm"), b"\0asm\x0d\0\x01\0tampered").unwrap();
    wait_for("the failed reload", || host.last_reload_error().is_some());
    assert_eq!(host.chain().names(), ["first", "second"]);
    assert!(host.last_reload_error().unwrap().contains("second"), "{:?}", host.last_reload_error());

    // Fixed again: picked up.
    write_dir(&dir.0, &key, &["second"]);
    wait_for("the fixed chain", || host.chain().names() == ["second"]);
    assert!(host.last_reload_error().is_none());
}

#[test]
fn precompiled_artifacts_are_cached_and_never_trusted_when_altered() {
    let key = SigningKey::from_seed([10; 32]);
    let cache = TempDir::new("cache");
    let runtime = RuntimeConfig { cache_dir: Some(cache.0.clone()), ..RuntimeConfig::default() };
    let host = strict_host(&key, runtime.clone());
    host.load(&[signed(&key, "hostile")]).unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(&cache.0).unwrap().flatten().map(|e| e.path()).collect();
    let cwasm = artifacts.iter().find(|p| p.extension().is_some_and(|e| e == "cwasm")).expect("an artifact").clone();
    assert!(artifacts.iter().any(|p| p.extension().is_some_and(|e| e == "sha256")));

    // A second host loads from the cache and runs.
    let again = strict_host(&key, runtime.clone());
    again.load(&[signed(&key, "hostile")]).unwrap();
    assert!(again.chain().run(&request(&[], "x"), 1).allowed());

    // An altered artifact is ignored (recompiled), never deserialized.
    let mut bytes = std::fs::read(&cwasm).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&cwasm, &bytes).unwrap();
    let third = strict_host(&key, runtime);
    third.load(&[signed(&key, "hostile")]).unwrap();
    assert!(third.chain().run(&request(&[], "x"), 1).allowed());
    assert_ne!(std::fs::read(&cwasm).unwrap(), bytes, "the artifact was rewritten");
}

#[test]
fn the_builtin_chain_loads_without_signatures() {
    let host = FilterHost::new(HostConfig::default()).unwrap();
    let chain = host.load(&chorus_filter_host::builtin::default_chain()).unwrap();
    assert_eq!(chain.names(), ["auth", "ratelimit", "presafety"]);
    assert!(chain.describe().iter().all(|d| d.signer == "builtin"));
}

#[test]
fn a_bad_module_directory_is_a_typed_error_naming_the_problem() {
    let key = SigningKey::from_seed([11; 32]);
    let host = strict_host(&key, RuntimeConfig::default());
    let dir = TempDir::new("baddir");
    let err = |host: &FilterHost| host.load_dir(&dir.0).unwrap_err().to_string();
    assert!(err(&host).contains("chain.toml"), "missing chain file: {}", err(&host));
    std::fs::write(dir.0.join("chain.toml"), "filters = \"auth\"").unwrap();
    assert!(err(&host).contains("chain.toml"), "{}", err(&host));
    std::fs::write(dir.0.join("chain.toml"), "filters = [\"../etc/passwd\"]").unwrap();
    assert!(err(&host).contains("must be 1-32 of [a-z0-9-]"), "{}", err(&host));
    std::fs::write(dir.0.join("chain.toml"), format!("filters = [{}]", vec!["\"a\""; 17].join(","))).unwrap();
    assert!(err(&host).contains("limit is 16"), "{}", err(&host));
    std::fs::write(dir.0.join("chain.toml"), "filters = [\"absent\"]").unwrap();
    assert!(err(&host).contains("absent.wasm"), "{}", err(&host));
    write_dir(&dir.0, &key, &["dup"]);
    std::fs::write(dir.0.join("chain.toml"), "filters = [\"dup\", \"dup\"]").unwrap();
    assert!(err(&host).contains("appears twice"), "{}", err(&host));
    // The manifest must name the filter it ships as.
    write_dir(&dir.0, &key, &["named"]);
    std::fs::rename(dir.0.join("named.wasm"), dir.0.join("other.wasm")).unwrap();
    std::fs::rename(dir.0.join("named.toml"), dir.0.join("other.toml")).unwrap();
    std::fs::rename(dir.0.join("named.sig"), dir.0.join("other.sig")).unwrap();
    std::fs::write(dir.0.join("chain.toml"), "filters = [\"other\"]").unwrap();
    assert!(err(&host).contains("manifest names `named`"), "{}", err(&host));
    assert!(host.chain().names().is_empty(), "nothing was installed");
}
