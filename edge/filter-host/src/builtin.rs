//! The shipped filters, compiled into the binary: the edge's default chain
//! (auth → ratelimit → presafety). They are trusted as the binary itself is.

use crate::host::ModuleSource;

macro_rules! module {
    ($name:literal, $crate_file:literal, $manifest:literal) => {
        ModuleSource {
            name: $name.to_owned(),
            wasm: include_bytes!(concat!(env!("CHORUS_FILTER_WASM_DIR"), "/", $crate_file)).to_vec(),
            manifest: include_str!($manifest).to_owned(),
            signature: None,
            builtin: true,
        }
    };
}

/// The default chain, in order.
pub fn default_chain() -> Vec<ModuleSource> {
    vec![
        module!("auth", "chorus_filter_auth.wasm", "../../../wasm-filters/auth/filter.toml"),
        module!("ratelimit", "chorus_filter_ratelimit.wasm", "../../../wasm-filters/ratelimit/filter.toml"),
        module!("presafety", "chorus_filter_presafety.wasm", "../../../wasm-filters/presafety/filter.toml"),
    ]
}

/// Where the build put every filter component (the shipped ones and the test fixtures).
pub const WASM_DIR: &str = env!("CHORUS_FILTER_WASM_DIR");
