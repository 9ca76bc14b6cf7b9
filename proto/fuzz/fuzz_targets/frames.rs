//! `cargo +nightly fuzz run frames`: arbitrary bytes, split at an arbitrary point, into the
//! frame decoder as every message type. Errors are fine; panics, hangs and allocations past
//! the frame limit are bugs.
#![no_main]

use chorus_proto::{Control, FrameDecoder, Hello, Reply, Request};
use libfuzzer_sys::fuzz_target;

fn drain<T: serde::de::DeserializeOwned>(data: &[u8], split: usize, max: u32) {
    let mut d = FrameDecoder::new(max);
    let (a, b) = data.split_at(split.min(data.len()));
    for part in [a, b] {
        d.push(part);
        while let Ok(Some(_)) = d.decode::<T>() {}
    }
    let _ = d.finish();
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let split = head as usize * rest.len() / 255;
    let max = 4096;
    match head % 4 {
        0 => drain::<Request>(rest, split, max),
        1 => drain::<Reply>(rest, split, max),
        2 => drain::<Control>(rest, split, max),
        _ => drain::<Hello>(rest, split, max),
    }
});
