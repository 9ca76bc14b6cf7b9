//! `Session::generate` end to end: seeds, stop strings, limits and streaming.

use chorus_engine::chat_template::ChatMessage;
use chorus_engine::engine::FinishReason;
use chorus_engine::sampler::SamplingParams;

use crate::common::engine;

fn prompt(text: &str) -> Vec<u32> {
    engine().chat_prompt(&[ChatMessage { role: "user".into(), content: text.into() }]).unwrap()
}

#[test]
fn same_seed_same_text_and_streaming_equals_the_result() {
    let e = engine();
    let p = prompt("Tell me a short story about a cat.");
    let params = SamplingParams { temperature: 0.9, top_p: 0.95, seed: Some(42), max_tokens: 40, ..Default::default() };
    let mut streamed = String::new();
    let a = e.session(512).unwrap().generate(&p, &params, &mut |s| streamed.push_str(s)).unwrap();
    let b = e.session(512).unwrap().generate(&p, &params, &mut |_| {}).unwrap();
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.text, streamed);
    let other = SamplingParams { seed: Some(43), ..params };
    let c = e.session(512).unwrap().generate(&p, &other, &mut |_| {}).unwrap();
    assert_ne!(a.token_ids, c.token_ids, "a different seed should change a 40-token sample");
}

#[test]
fn max_tokens_and_stop_strings_end_generation() {
    let e = engine();
    let p = prompt("What is the capital of Australia?");
    let greedy = SamplingParams { temperature: 0.0, max_tokens: 3, ..Default::default() };
    let g = e.session(512).unwrap().generate(&p, &greedy, &mut |_| {}).unwrap();
    assert_eq!((g.token_ids.len(), g.finish_reason), (3, FinishReason::Length));
    assert_eq!(g.text, "The capital of");

    let stop =
        SamplingParams { temperature: 0.0, max_tokens: 20, stop: vec![" Australia".into()], ..Default::default() };
    let s = e.session(512).unwrap().generate(&p, &stop, &mut |_| {}).unwrap();
    assert_eq!((s.text.as_str(), s.finish_reason), ("The capital of", FinishReason::Stop));

    let full = SamplingParams { temperature: 0.0, max_tokens: 20, ..Default::default() };
    let f = e.session(512).unwrap().generate(&p, &full, &mut |_| {}).unwrap();
    assert_eq!(f.finish_reason, FinishReason::Stop, "ends on <|im_end|>");
    assert_eq!(f.token_ids.last(), Some(&2));
    assert!(!f.text.contains("<|im_end|>"));
}

#[test]
fn prompts_that_do_not_fit_are_rejected() {
    let e = engine();
    let p = prompt("hello");
    let params = SamplingParams { temperature: 0.0, max_tokens: 4, ..Default::default() };
    let err = e.session(p.len()).unwrap().generate(&p, &params, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = e.session(64).unwrap().generate(&[], &params, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let bad = SamplingParams { top_p: 0.0, ..params };
    let err = e.session(64).unwrap().generate(&p, &bad, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
}
