//! `cargo +nightly fuzz run chat_body`: arbitrary bytes as a chat-completions body. Errors are
//! fine; a panic, a hang, or a request that parses but breaks a limit is a bug.
#![no_main]

use chorus_edge::config::ApiLimits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ApiLimits::default();
    if let Ok(v) = chorus_edge::openai::parse_chat(data, &limits) {
        assert!(!v.messages.is_empty() && v.messages.len() <= limits.max_messages);
        assert!(v.messages.iter().all(|m| m.content.len() <= limits.max_message_bytes));
        assert!((1..=limits.max_tokens).contains(&v.max_tokens));
        assert!(v.stop.len() <= limits.max_stop);
    }
});
