//! Fuzzes the GGUF header parser: any bytes must give a header or a typed error, never a panic,
//! a hang or an allocation beyond the parser's caps. Run with `cargo +nightly fuzz run gguf_header`
//! from `core/engine`.
#![no_main]

use chorus_engine::gguf::GgufHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = GgufHeader::parse(data);
});
