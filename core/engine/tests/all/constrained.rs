//! Constrained decoding on the real model: output always parses against its schema or regex,
//! unconstrained rows of a mixed batch are untouched, and bad grammars are typed errors.

use chorus_engine::chat_template::ChatMessage;
use chorus_engine::constraint::{ConstraintError, Grammar};
use chorus_engine::sampler::SamplingParams;
use chorus_engine::serve::{EngineHandle, SeqStream, ServeOptions, SubmitError};
use chorus_sched::Tier;
use serde_json::Value;

use crate::common::{engine, shared_engine};

fn chat(user: &str) -> Vec<u32> {
    let msg = |role: &str, content: &str| ChatMessage { role: role.into(), content: content.into() };
    engine().chat_prompt(&[msg("system", "You are a helpful assistant. Reply in JSON."), msg("user", user)]).unwrap()
}

fn params(grammar: Option<Grammar>, temperature: f32, seed: u64, max_tokens: u32) -> SamplingParams {
    SamplingParams { temperature, seed: Some(seed), max_tokens, grammar, ..SamplingParams::default() }
}

const PERSON: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 40},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "role": {"enum": ["admin", "user", "guest"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 3},
    "address": {
      "type": "object",
      "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
      "required": ["city", "zip"],
      "additionalProperties": false
    }
  },
  "required": ["name", "age", "role", "tags", "address"],
  "additionalProperties": false
}"#;

/// The checks the schema above makes, by hand.
fn check_person(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    for k in &keys {
        if !["name", "age", "role", "tags", "address"].contains(k) {
            return Err(format!("unexpected key {k}"));
        }
    }
    let name = o.get("name").and_then(Value::as_str).ok_or("name")?;
    (name.chars().count() <= 40).then_some(()).ok_or("name too long")?;
    let age = o.get("age").and_then(Value::as_i64).ok_or("age")?;
    ((0..=150).contains(&age)).then_some(()).ok_or("age out of range")?;
    let role = o.get("role").and_then(Value::as_str).ok_or("role")?;
    (["admin", "user", "guest"].contains(&role)).then_some(()).ok_or("role not in enum")?;
    let tags = o.get("tags").and_then(Value::as_array).ok_or("tags")?;
    ((1..=3).contains(&tags.len())).then_some(()).ok_or("tags length")?;
    tags.iter().all(|t| t.as_str().is_some_and(|s| s.chars().count() <= 20)).then_some(()).ok_or("tag")?;
    let addr = o.get("address").and_then(Value::as_object).ok_or("address")?;
    addr.get("city").and_then(Value::as_str).ok_or("city")?;
    let zip = addr.get("zip").and_then(Value::as_str).ok_or("zip")?;
    (zip.len() == 5 && zip.bytes().all(|b| b.is_ascii_digit())).then_some(()).ok_or("zip pattern")?;
    (addr.len() == 2).then_some(()).ok_or("address keys")?;
    Ok(())
}

#[test]
fn schema_output_always_validates() {
    let prompts = ["Describe a system administrator named Ana.", "Invent a guest user.", "Who are you?"];
    let mut s = engine().session(2048).unwrap();
    for (i, q) in prompts.iter().enumerate() {
        for (t, seed) in [(0.0, 1), (1.0, 7 + i as u64)] {
            let p = params(Some(Grammar::JsonSchema(PERSON.into())), t, seed, 200);
            let g = s.generate(&chat(q), &p, &mut |_| {}).unwrap();
            let v: Value = serde_json::from_str(&g.text).unwrap_or_else(|e| panic!("{q:?} T={t}: {e}: {}", g.text));
            check_person(&v).unwrap_or_else(|e| panic!("{q:?} T={t}: {e}: {}", g.text));
            assert_eq!(g.finish_reason.as_str(), "stop", "{}", g.text);
        }
    }
}

#[test]
fn json_object_and_regex() {
    let mut s = engine().session(2048).unwrap();
    let g = s.generate(
        &chat("Give me a fruit and its colour."),
        &params(Some(Grammar::JsonObject), 0.8, 3, 120),
        &mut |_| {},
    );
    let text = g.unwrap().text;
    assert!(serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}")).is_object());
    let rx = Grammar::Regex(r"[0-9]{3}-[0-9]{4}".into());
    let g = s.generate(&chat("Make up a phone number."), &params(Some(rx), 1.0, 5, 40), &mut |_| {}).unwrap();
    let b = g.text.as_bytes();
    assert!(
        b.len() == 8 && b[3] == b'-' && b.iter().enumerate().all(|(i, c)| i == 3 || c.is_ascii_digit()),
        "{:?}",
        g.text
    );
    assert_eq!(g.finish_reason.as_str(), "stop");
}

fn collect(s: SeqStream) -> (Vec<u32>, String) {
    let (ids, text, _, _) = crate::serve::collect(s);
    (ids, text)
}

#[test]
fn unconstrained_rows_are_untouched_by_constrained_neighbours() {
    let h = EngineHandle::start(shared_engine().clone(), ServeOptions::default()).unwrap();
    let plain: Vec<Vec<u32>> = ["Why is the sky blue?", "Name a famous painter."].iter().map(|q| chat(q)).collect();
    let run = |with_constrained: bool| -> Vec<(Vec<u32>, String)> {
        let mut streams = Vec::new();
        for (i, p) in plain.iter().enumerate() {
            streams.push(h.submit(h.validate(p.clone(), params(None, 0.0, 1, 32), Tier::Free, "t").unwrap()));
            if with_constrained {
                let g = Some(Grammar::JsonSchema(PERSON.into()));
                let seq = h.validate(chat("Invent a user."), params(g, 0.9, i as u64, 200), Tier::Free, "t").unwrap();
                streams.push(h.submit(seq));
            }
        }
        streams.into_iter().map(collect).collect()
    };
    let alone = run(false);
    let mixed = run(true);
    assert_eq!(alone[0], mixed[0]);
    assert_eq!(alone[1], mixed[2]);
    for constrained in [&mixed[1], &mixed[3]] {
        let v: Value = serde_json::from_str(&constrained.1).unwrap_or_else(|e| panic!("{e}: {}", constrained.1));
        check_person(&v).unwrap();
    }
}

#[test]
fn bad_grammars_are_typed_errors_and_the_cache_serves_repeats() {
    let h = EngineHandle::start(shared_engine().clone(), ServeOptions::default()).unwrap();
    let try_grammar = |g: Grammar| h.validate(chat("hi"), params(Some(g), 0.0, 1, 8), Tier::Free, "t").map(|_| ());
    let err = |g: Grammar| match try_grammar(g) {
        Err(SubmitError::Constraint(e)) => e,
        other => panic!("expected a constraint error, got {other:?}"),
    };
    assert!(matches!(err(Grammar::JsonSchema("{not json".into())), ConstraintError::NotJson { .. }));
    assert!(matches!(err(Grammar::JsonSchema("[1, 2]".into())), ConstraintError::NotObject { .. }));
    let huge = format!(r#"{{"description": "{}"}}"#, "x".repeat(70_000));
    assert!(matches!(err(Grammar::JsonSchema(huge)), ConstraintError::TooLarge { .. }));
    let e = err(Grammar::JsonSchema(r#"{"type": "strin"}"#.into()));
    assert!(matches!(e, ConstraintError::Compile { field: "response_format.json_schema.schema", .. }), "{e}");
    assert!(matches!(
        err(Grammar::Regex("(unclosed".into())),
        ConstraintError::Compile { field: "response_format.regex", .. }
    ));
    assert!(matches!(err(Grammar::Lark("start: undefined_rule".into())), ConstraintError::Compile { .. }));
    // Deep nesting is bounded, not a stack overflow.
    let deep = format!("{}{}", r#"{"type":"array","items":"#.repeat(2000), "{}".to_string() + &"}".repeat(2000));
    let _ = try_grammar(Grammar::JsonSchema(deep));
    let before = shared_engine().constraints.stats();
    try_grammar(Grammar::JsonSchema(PERSON.into())).unwrap();
    try_grammar(Grammar::JsonSchema(PERSON.into())).unwrap();
    let after = shared_engine().constraints.stats();
    assert!(after.cache_hits > before.cache_hits, "{before:?} -> {after:?}");
}
