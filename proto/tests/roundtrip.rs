//! Every message survives encode → decode unchanged, however the bytes are split; and no byte
//! string makes the decoder panic or buffer past the limit.

use chorus_proto::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z ]{0,200}"]
}

fn tier() -> impl Strategy<Value = Tier> {
    prop::sample::select(Tier::ALL.to_vec())
}

fn finite() -> impl Strategy<Value = f32> {
    -1000.0f32..1000.0
}

fn sampling() -> impl Strategy<Value = Sampling> {
    (
        (finite(), finite(), any::<u32>(), finite(), finite()),
        (finite(), finite(), option::of(any::<u64>()), option::of(any::<u8>()), any::<bool>()),
    )
        .prop_map(
            |(
                (temperature, top_p, top_k, min_p, presence_penalty),
                (frequency_penalty, repetition_penalty, seed, logprobs, ignore_eos),
            )| {
                Sampling {
                    temperature,
                    top_p,
                    top_k,
                    min_p,
                    presence_penalty,
                    frequency_penalty,
                    repetition_penalty,
                    seed,
                    logprobs,
                    ignore_eos,
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    (prop::sample::select(vec![Role::System, Role::User, Role::Assistant]), text())
        .prop_map(|(role, content)| Message { role, content })
}

fn generate() -> impl Strategy<Value = Generate> {
    (
        (text(), text(), text(), tier(), option::of(text())),
        (
            vec(message(), 0..6),
            sampling(),
            any::<u32>(),
            vec(text(), 0..4),
            option::of(any::<u32>()),
            option::of(text()),
        ),
    )
        .prop_map(
            |(
                (request_id, tenant, user, tier, conversation_id),
                (messages, sampling, max_tokens, stop, deadline_ms, trace),
            )| Generate {
                request_id,
                tenant,
                user,
                tier,
                conversation_id,
                messages,
                sampling,
                max_tokens,
                stop,
                deadline_ms,
                trace,
            },
        )
}

fn logprob() -> impl Strategy<Value = Logprob> {
    (any::<u32>(), text(), finite()).prop_map(|(id, text, logprob)| Logprob { id, text, logprob })
}

fn reply() -> impl Strategy<Value = Reply> {
    let code = any::<u16>().prop_map(ErrorCode::from);
    prop_oneof![
        (text(), text(), any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(model, fleet, degraded, queue_position, prompt_tokens, trimmed_messages)| {
                Reply::Accepted(Accepted { model, fleet, degraded, queue_position, prompt_tokens, trimmed_messages })
            }
        ),
        (text(), vec(any::<u32>(), 0..3), option::of((logprob(), vec(logprob(), 0..4))), any::<u64>())
            .prop_map(|(text, ids, logprobs, emitted_us)| Reply::Token(Token { text, ids, logprobs, emitted_us })),
        (
            prop::sample::select(vec![FinishReason::Stop, FinishReason::Length, FinishReason::ContentFilter]),
            any::<[u32; 3]>(),
            option::of(text())
        )
            .prop_map(|(finish_reason, [p, c, k], filter_category)| Reply::Done(Done {
                finish_reason,
                usage: Usage { prompt_tokens: p, completion_tokens: c, cached_tokens: k },
                filter_category
            })),
        (code, text(), option::of(any::<u32>())).prop_map(|(code, message, retry_after_ms)| Reply::Error(ErrorReply {
            code,
            message,
            retry_after_ms
        })),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (any::<u16>(), text(), text(), vec((text(), text()), 0..3)).prop_map(|(version, core_id, region, f)| {
            Control::Welcome {
                version,
                core_id,
                region,
                fleets: f.into_iter().map(|(fleet, model)| FleetInfo { fleet, model }).collect(),
            }
        }),
        (any::<u64>(), any::<bool>(), any::<bool>(), vec((text(), any::<[u32; 4]>(), any::<[u32; 3]>()), 0..3))
            .prop_map(|(seq, ready, draining, f)| {
                Control::Load(LoadReport {
                    seq,
                    ready,
                    draining,
                    fleets: f
                        .into_iter()
                        .map(|(fleet, waiting, [running, kv_blocks_used, kv_blocks_total])| FleetLoad {
                            fleet,
                            waiting,
                            running,
                            kv_blocks_used,
                            kv_blocks_total,
                        })
                        .collect(),
                })
            }),
    ]
}

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    msgs: &[T],
    split: usize,
) {
    let mut bytes = Vec::new();
    for m in msgs {
        encode(m, DEFAULT_MAX_FRAME, &mut bytes).unwrap();
    }
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut got = Vec::new();
    for c in bytes.chunks(split.max(1)) {
        d.push(c);
        while let Some(m) = d.decode::<T>().unwrap() {
            got.push(m);
        }
    }
    d.finish().unwrap();
    assert_eq!(&got, msgs);
}

proptest! {
    #[test]
    fn requests_round_trip(gs in vec(generate(), 1..4), split in 1usize..300) {
        let msgs: Vec<Request> = gs.into_iter().map(|g| Request::Generate(Box::new(g))).chain([Request::Cancel]).collect();
        roundtrip(&msgs, split);
    }

    #[test]
    fn replies_round_trip(msgs in vec(reply(), 1..8), split in 1usize..300) {
        roundtrip(&msgs, split);
    }

    #[test]
    fn control_round_trips(msgs in vec(control(), 1..4), hello in (any::<u16>(), any::<u16>(), text()), split in 1usize..300) {
        roundtrip(&msgs, split);
        roundtrip(&[Hello { min_version: hello.0, max_version: hello.1, edge_id: hello.2 }], split);
    }

    #[test]
    fn error_codes_keep_their_numbers(n in any::<u16>()) {
        prop_assert_eq!(ErrorCode::from(n).code(), n);
    }

    /// Arbitrary bytes: an error or a message, never a panic, and never more buffered than
    /// what was pushed.
    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..2000), max in 0u32..4096) {
        let mut d = FrameDecoder::new(max);
        d.push(&bytes);
        for _ in 0..bytes.len() + 1 {
            match d.decode::<Request>() {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(d.buffered() <= bytes.len());
        let _ = decode_body::<Reply>(&bytes);
        let _ = decode_body::<Control>(&bytes);
        let _ = decode_body::<Hello>(&bytes);
    }
}

#[test]
fn negotiation_picks_the_highest_common_version() {
    let h = |min_version, max_version| Hello { min_version, max_version, edge_id: "e".into() };
    assert_eq!(negotiate(&h(1, 1), 1..=1), Some(1));
    assert_eq!(negotiate(&h(1, 3), 1..=2), Some(2));
    assert_eq!(negotiate(&h(2, 3), 1..=1), None);
    assert_eq!(negotiate(&h(3, 1), 1..=5), None);
}

#[test]
fn generate_check_names_the_field() {
    let mut g = Generate {
        request_id: "r".into(),
        tenant: "t".into(),
        user: "u".into(),
        tier: Tier::Free,
        conversation_id: None,
        messages: vec![Message { role: Role::User, content: "hi".into() }],
        sampling: Sampling::default(),
        max_tokens: 8,
        stop: vec![],
        deadline_ms: None,
        trace: None,
    };
    let l = Limits::default();
    g.check(&l).unwrap();
    g.messages[0].content = "x".repeat(l.max_message_bytes + 1);
    assert_eq!(g.check(&l).unwrap_err().field, "messages[0].content");
    g.messages[0].content = "hi".into();
    g.stop = vec![String::new()];
    assert_eq!(g.check(&l).unwrap_err().field, "stop[0]");
    g.stop.clear();
    g.messages.push(Message { role: Role::Assistant, content: "x".into() });
    assert_eq!(g.check(&l).unwrap_err().field, "messages");
    g.messages.clear();
    assert_eq!(g.check(&l).unwrap_err().field, "messages");
}
