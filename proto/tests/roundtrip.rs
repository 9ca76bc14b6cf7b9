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
        (option::of(finite()), option::of(finite()), option::of(any::<u32>()), finite(), finite()),
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
                    logit_bias: seed.map(|s| vec![(s as u32, -1.5)]).unwrap_or_default(),
                }
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    (prop::sample::select(vec![Role::System, Role::User, Role::Assistant, Role::Tool]), text())
        .prop_map(|(role, content)| Message { role, content })
}

fn conversation() -> impl Strategy<Value = ConversationRef> {
    prop_oneof![
        Just(ConversationRef::Stateless),
        Just(ConversationRef::New),
        text().prop_map(ConversationRef::Continue)
    ]
}

fn finish_reason() -> impl Strategy<Value = FinishReason> {
    prop::sample::select(vec![FinishReason::Stop, FinishReason::Length, FinishReason::ContentFilter])
}

fn usage() -> impl Strategy<Value = Usage> {
    any::<[u32; 3]>().prop_map(|[p, c, k]| Usage { prompt_tokens: p, completion_tokens: c, cached_tokens: k })
}

fn store_request() -> impl Strategy<Value = StoreRequest> {
    let op = prop_oneof![
        any::<u32>().prop_map(|limit| StoreOp::List { limit }),
        text().prop_map(|conversation_id| StoreOp::Get { conversation_id }),
        text().prop_map(|conversation_id| StoreOp::Delete { conversation_id }),
        Just(StoreOp::Erase),
        Just(StoreOp::Export),
        (text(), any::<u64>(), any::<bool>(), option::of(text())).prop_map(
            |(conversation_id, version, up, comment)| {
                StoreOp::Feedback {
                    conversation_id,
                    version,
                    rating: if up { Rating::Up } else { Rating::Down },
                    comment,
                }
            }
        ),
    ];
    (text(), text(), text(), op).prop_map(|(request_id, tenant, user, op)| StoreRequest {
        request_id,
        tenant,
        user,
        op,
    })
}

fn summary() -> impl Strategy<Value = ConversationSummary> {
    (text(), tier(), any::<[u64; 3]>()).prop_map(|(id, tier, [created_ms, updated_ms, version])| ConversationSummary {
        id,
        tier,
        created_ms,
        updated_ms,
        version,
    })
}

fn store_reply() -> impl Strategy<Value = StoreReply> {
    let turn = (any::<u64>(), text(), vec(message(), 0..3), text(), finish_reason(), text(), usage()).prop_map(
        |(version, request_id, input, answer, finish_reason, model, usage)| Turn {
            version,
            request_id,
            created_ms: version / 2,
            input,
            answer,
            finish_reason,
            model,
            usage,
        },
    );
    prop_oneof![
        vec(summary(), 0..3).prop_map(StoreReply::List),
        (summary(), vec(turn, 0..3))
            .prop_map(|(summary, turns)| StoreReply::Conversation(ConversationView { summary, turns })),
        Just(StoreReply::Deleted),
        any::<[u64; 3]>().prop_map(|[conversations, feedback, idempotency_records]| StoreReply::Erased(Erased {
            conversations,
            feedback,
            idempotency_records
        })),
        (text(), any::<bool>()).prop_map(|(data, last)| StoreReply::Export { data, last }),
        text().prop_map(|feedback_id| StoreReply::FeedbackRecorded { feedback_id }),
    ]
}

fn generate() -> impl Strategy<Value = Generate> {
    (
        (text(), text(), text(), tier(), conversation(), any::<bool>()),
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
                (request_id, tenant, user, tier, conversation, echo_prompt),
                (messages, sampling, max_tokens, stop, deadline_ms, trace),
            )| Generate {
                constraint: trace.clone().map(Constraint::JsonSchema),
                tools: stop
                    .iter()
                    .map(|s| Tool { name: "f".into(), description: s.clone(), parameters: "{}".into() })
                    .collect(),
                tool_choice: if echo_prompt { ToolChoice::Required } else { ToolChoice::Function(tenant.clone()) },
                parallel_tool_calls: echo_prompt,
                prompt: deadline_ms.map(|d| RawPrompt::Ids(vec![d, 1, 2])),
                n: if echo_prompt { 3 } else { 1 },
                request_id,
                tenant,
                user,
                tier,
                conversation,
                messages,
                sampling,
                max_tokens,
                stop,
                deadline_ms,
                trace,
                echo_prompt,
            },
        )
}

fn logprob() -> impl Strategy<Value = Logprob> {
    (any::<u32>(), text(), finite()).prop_map(|(id, text, logprob)| Logprob { id, text, logprob })
}

fn reply() -> impl Strategy<Value = Reply> {
    let code = any::<u16>().prop_map(ErrorCode::from);
    prop_oneof![
        (
            (text(), text(), any::<bool>(), any::<u32>(), any::<u32>(), any::<u32>()),
            (
                option::of(text()),
                any::<u32>(),
                prop::sample::select(vec![
                    StoreStatus::NotUsed,
                    StoreStatus::Ok,
                    StoreStatus::HotUnavailable,
                    StoreStatus::Unavailable
                ]),
                option::of(text()),
            )
        )
            .prop_map(
                |(
                    (model, fleet, degraded, queue_position, prompt_tokens, trimmed_messages),
                    (conversation_id, history_messages, store, prompt),
                )| {
                    Reply::Accepted(Accepted {
                        model,
                        fleet,
                        degraded,
                        queue_position,
                        prompt_tokens,
                        trimmed_messages,
                        conversation_id,
                        history_messages,
                        store,
                        prompt,
                    })
                }
            ),
        (text(), vec(any::<u32>(), 0..3), option::of((logprob(), vec(logprob(), 0..4))), any::<u64>()).prop_map(
            |(text, ids, logprobs, emitted_us)| {
                Reply::Token(Token { text, ids, logprobs, emitted_us, choice: (emitted_us % 3) as u8 })
            }
        ),
        (finish_reason(), usage(), option::of(text()), stored()).prop_map(
            |(finish_reason, usage, filter_category, stored)| Reply::Done(Done {
                finish_reason,
                usage,
                choices: vec![ChoiceEnd {
                    finish_reason,
                    filter_category: filter_category.clone(),
                    completion_tokens: usage.completion_tokens
                }],
                filter_category,
                stored,
            })
        ),
        store_reply().prop_map(Reply::Store),
        (code, text(), option::of(any::<u32>())).prop_map(|(code, message, retry_after_ms)| Reply::Error(ErrorReply {
            param: retry_after_ms.map(|r| r.to_string()),
            code,
            message,
            retry_after_ms
        })),
    ]
}

fn stored() -> impl Strategy<Value = Stored> {
    prop_oneof![
        Just(Stored::NotRequested),
        (text(), any::<u64>()).prop_map(|(conversation_id, version)| Stored::Committed { conversation_id, version }),
        (any::<u16>(), text()).prop_map(|(code, message)| Stored::Failed { code: ErrorCode::from(code), message }),
    ]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        (any::<u16>(), text(), text(), vec((text(), text(), any::<u32>(), (finite(), finite(), any::<u32>())), 0..3))
            .prop_map(|(version, core_id, region, f)| {
                Control::Welcome {
                    version,
                    core_id,
                    region,
                    fleets: f
                        .into_iter()
                        .map(|(fleet, model, context_length, (temperature, top_p, top_k))| FleetInfo {
                            fleet,
                            model,
                            context_length,
                            defaults: SamplingDefaults { temperature, top_p, top_k },
                        })
                        .collect(),
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
    fn requests_round_trip(gs in vec(generate(), 1..4), ss in vec(store_request(), 0..3), split in 1usize..300) {
        let msgs: Vec<Request> = gs
            .into_iter()
            .map(|g| Request::Generate(Box::new(g)))
            .chain(ss.into_iter().map(|s| Request::Store(Box::new(s))))
            .chain([Request::Cancel])
            .collect();
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
        messages: vec![Message { role: Role::User, content: "hi".into() }],
        max_tokens: 8,
        ..Generate::default()
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
    g.messages.push(Message { role: Role::User, content: "hi".into() });
    g.conversation = ConversationRef::Continue(String::new());
    assert_eq!(g.check(&l).unwrap_err().field, "conversation");
    g.conversation = ConversationRef::Continue("c".into());
    g.check(&l).unwrap();
    g.user = "a\u{0}b".into();
    let e = g.check(&l).unwrap_err();
    assert_eq!(e.field, "user");
    assert!(e.problem.contains("control character"), "{e}");
    g.tenant.clear();
    assert_eq!(g.check(&l).unwrap_err().field, "tenant");
}

#[test]
fn store_request_check_names_the_field() {
    let l = Limits::default();
    let mut r = StoreRequest {
        request_id: "r".into(),
        tenant: "t".into(),
        user: "u".into(),
        op: StoreOp::Feedback {
            conversation_id: "c".into(),
            version: 1,
            rating: Rating::Up,
            comment: Some("ok".into()),
        },
    };
    r.check(&l).unwrap();
    r.op = StoreOp::Feedback {
        conversation_id: "c".into(),
        version: 1,
        rating: Rating::Down,
        comment: Some("x".repeat(l.max_comment_bytes + 1)),
    };
    assert_eq!(r.check(&l).unwrap_err().field, "comment");
    r.op = StoreOp::Get { conversation_id: "x".repeat(l.max_id_bytes + 1) };
    assert_eq!(r.check(&l).unwrap_err().field, "conversation_id");
    r.op = StoreOp::Erase;
    r.user.clear();
    assert_eq!(r.check(&l).unwrap_err().field, "user");
}

#[test]
fn store_codes_map_to_http() {
    assert_eq!(ErrorCode::NotFound.http_status(), 404);
    assert_eq!(ErrorCode::Conflict.http_status(), 409);
    assert_eq!(ErrorCode::StoreUnavailable.http_status(), 503);
    assert_eq!(ErrorCode::from(42), ErrorCode::StoreUnavailable);
    assert!(!Reply::Store(StoreReply::Export { data: String::new(), last: false }).is_final());
    assert!(Reply::Store(StoreReply::Export { data: String::new(), last: true }).is_final());
}

#[test]
fn max_tokens_is_bounded_by_the_protocol_limit_and_named() {
    let l = Limits::default();
    let mut g = Generate {
        request_id: "r".into(),
        tenant: "t".into(),
        user: "u".into(),
        tier: Tier::Free,
        messages: vec![Message { role: Role::User, content: "hi".into() }],
        max_tokens: l.max_tokens,
        ..Generate::default()
    };
    g.check(&l).unwrap();
    for bad in [0, l.max_tokens + 1, u32::MAX] {
        g.max_tokens = bad;
        let e = g.check(&l).unwrap_err();
        assert_eq!(e.field, "max_tokens");
        assert!(e.to_string().contains(&l.max_tokens.to_string()), "{e}");
    }
}
