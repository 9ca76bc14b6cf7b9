//! `cargo fuzz run tokenizer` (see `scripts/fuzz.sh`): arbitrary bytes as text through the
//! SmolLM2 tokenizer and chat template of the cached model. Errors are fine; a panic, a
//! hang, text that does not come back from its own ids (but for the bytes the vocabulary has
//! no token for, which are dropped as llama.cpp drops them), or content that becomes control
//! tokens is a bug.
#![no_main]

use std::sync::OnceLock;

use chorus_engine::chat_template::ChatMessage;
use chorus_engine::engine::{Engine, EngineOptions};
use chorus_engine::tokenizer::StreamDecoder;
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let path = chorus_engine::model_store::ensure("smollm2-135m", &mut |_| {})
            .expect("the SmolLM2 model (run `chorus pull` or the tests once to cache it)");
        Engine::load(&path, &EngineOptions { threads: 1, ..EngineOptions::default() }).expect("model loads")
    })
}

/// The bytes the vocabulary has no byte-level token for.
fn missing_bytes(e: &Engine) -> &'static [u8] {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| e.tokenizer.unencodable_bytes())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let e = engine();
    let tok = &e.tokenizer;
    if let Ok(ids) = tok.encode(&text, mode & 1 == 1) {
        if mode & 1 == 0 {
            // Without special-token parsing every id is ordinary text, and the text returns.
            assert!(ids.iter().all(|&id| !tok.is_special(id)), "{text:?} became control tokens");
            let kept: Vec<u8> = text.bytes().filter(|b| !missing_bytes(e).contains(b)).collect();
            if let Ok(want) = String::from_utf8(kept) {
                assert_eq!(tok.decode(&ids, false).ok(), Some(want), "round trip of {text:?}");
            }
        }
        let mut stream = StreamDecoder::new(false);
        let mut streamed: String = ids.iter().map(|&id| stream.push(tok, id)).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(Some(streamed), tok.decode(&ids, false).ok(), "streamed decode = whole decode");
    }
    // The same text as a chat turn: the prompt holds exactly the template's control tokens.
    let msg = |role: &str| ChatMessage { role: role.into(), content: text.to_string() };
    if let (Ok(plain), Ok(chat)) =
        (e.chat_prompt(&[ChatMessage { role: "user".into(), content: String::new() }]), e.chat_prompt(&[msg("user")]))
    {
        let specials = |ids: &[u32]| ids.iter().filter(|&&id| tok.is_special(id)).count();
        assert_eq!(specials(&plain), specials(&chat), "{text:?} added control tokens to the prompt");
    }
    let _ = e.chat_prompt(&[msg("system"), msg("user"), msg("assistant"), msg("tool")]);
});
