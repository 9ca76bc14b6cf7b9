//! The core over real QUIC on loopback with the real model: streaming, usage, cancellation,
//! routing, bad input, many streams, clients that vanish, post-generation safety, drain.
//!
//! Tests share one loaded model and run one at a time (two engines stepping at once on a
//! two-core machine would only slow each other down).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::config::{DurableKind, HotKind};
use chorus_core::tls::Identity;
use chorus_proto::quic::{ClientError, CoreClient};
use chorus_proto::{
    ConversationRef, Done, ErrorCode, FinishReason, Generate, Message, Rating, Reply, Request, Role, StoreOp,
    StoreReply, StoreRequest, StoreStatus, Stored, Tier,
};
use common::serving::{base_config, connect, engine, eventually, generate, http_get, long, pki, start};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Accepted, the text, and the final reply.
fn split(replies: &[Reply]) -> (Option<&chorus_proto::Accepted>, String, Vec<u32>, &Reply) {
    let accepted = replies.iter().find_map(|r| if let Reply::Accepted(a) = r { Some(a) } else { None });
    let mut text = String::new();
    let mut ids = Vec::new();
    for r in replies {
        if let Reply::Token(t) = r {
            text.push_str(&t.text);
            ids.extend(&t.ids);
        }
    }
    (accepted, text, ids, replies.last().expect("at least one reply"))
}

/// A reference case: its messages, llama.cpp's greedy text, and its greedy ids up to its
/// first near-tie (where a different but correct kernel may pick the other token).
fn reference(name: &str) -> (Vec<Message>, String, Vec<u32>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs/smollm2_greedy.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = v["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    let messages = case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message {
            role: match m["role"].as_str().unwrap() {
                "system" => Role::System,
                "assistant" => Role::Assistant,
                _ => Role::User,
            },
            content: m["content"].as_str().unwrap().into(),
        })
        .collect();
    let near_tie = case["first_position_with_top1_margin_below_0.05"].as_u64().map_or(usize::MAX, |p| p as usize);
    let ids: Vec<u32> =
        case["generated_token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let agreed = ids[..near_tie.min(ids.len())].to_vec();
    (messages, case["generated_text"].as_str().unwrap().to_string(), agreed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_reference_answer_with_exact_usage_and_a_cached_second_turn() {
    let _g = SERIAL.lock().await;
    let core = start(base_config()).await;
    let client = connect(core.quic_addr).await;
    assert_eq!(client.fleets.len(), 2);
    let (messages, _, agreed) = reference("factual_qa");
    let mut g = generate(Tier::Free, "", 64);
    g.messages = messages.clone();
    let replies = client.generate(g.clone()).await.unwrap().collect().await.unwrap();
    let (acc, text, ids, last) = split(&replies);
    let acc = acc.expect("Accepted comes first");
    assert!(matches!(replies[0], Reply::Accepted(_)));
    assert_eq!((acc.fleet.as_str(), acc.degraded, acc.trimmed_messages), ("mini", false, 0));
    assert!(ids.starts_with(&agreed), "greedy over QUIC matches llama.cpp up to its first near-tie: {text:?}");
    let Reply::Done(done) = last else { panic!("{last:?}") };
    assert_eq!(done.finish_reason, FinishReason::Stop);
    let chat: Vec<_> = messages
        .iter()
        .map(|m| chorus_engine::chat_template::ChatMessage { role: m.role.as_str().into(), content: m.content.clone() })
        .collect();
    let prompt = engine().chat_prompt(&chat).unwrap();
    assert_eq!(done.usage.prompt_tokens as usize, prompt.len());
    assert_eq!(acc.prompt_tokens as usize, prompt.len());
    assert_eq!(done.usage.completion_tokens as usize, ids.len(), "one id per generated token, end-of-turn included");
    // The same prompt again (same tenant): its full blocks come from the prefix cache.
    let again = client.generate(g).await.unwrap().collect().await.unwrap();
    let Reply::Done(d2) = split(&again).3 else { panic!() };
    assert!(d2.usage.cached_tokens >= 16, "{:?}", d2.usage);
    assert_eq!(split(&again).1, text);

    let (status, body) = http_get(core.http_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("chorus_core_requests_total{fleet=\"mini\",outcome=\"stop\"} 2"), "{body}");
    assert!(
        body.contains("chorus_ttft_seconds_count{fleet=\"mini\",model=\"smollm2-135m\",tier=\"free\"} 2"),
        "{body}"
    );
    assert_eq!(body.matches("# TYPE chorus_kv_blocks_used ").count(), 1, "one family per name");
    assert_eq!(http_get(core.http_addr, "/healthz").0, 200);
    assert_eq!(http_get(core.http_addr, "/readyz").0, 200);
    // Load reports arrive on the control stream.
    let mut load = client.load();
    tokio::time::timeout(Duration::from_secs(5), load.wait_for(|r| r.is_some())).await.unwrap().unwrap();
    core.drain(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_reset_mid_stream_free_the_kv_blocks() {
    let _g = SERIAL.lock().await;
    let core = start(base_config()).await;
    let client = connect(core.quic_addr).await;
    let mini = core.core.fleets.iter().find(|f| f.name == "mini").unwrap().clone();

    // Cancel frame: the core answers `cancelled`.
    let mut s = client.generate(long(Tier::Free, 400)).await.unwrap();
    let mut tokens = 0;
    while tokens < 3 {
        if let Reply::Token(_) = s.next().await.unwrap().unwrap() {
            tokens += 1;
        }
    }
    assert!(mini.handle.metrics().kv_blocks_used > 0);
    s.send(&Request::Cancel).await.unwrap();
    let rest = s.collect().await.unwrap();
    let Some(Reply::Error(e)) = rest.last() else { panic!("{rest:?}") };
    assert_eq!(e.code, ErrorCode::Cancelled);
    eventually("blocks freed after Cancel", || mini.handle.metrics().kv_blocks_used == 0 && mini.in_flight() == 0)
        .await;

    // Stream reset: no answer, same effect.
    let mut s = client.generate(long(Tier::Free, 400)).await.unwrap();
    while !matches!(s.next().await.unwrap(), Some(Reply::Token(_))) {}
    s.reset();
    eventually("blocks freed after reset", || {
        mini.handle.metrics().kv_blocks_used == 0
            && mini.in_flight() == 0
            && core.core.metrics.streams_open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(core.core.metrics.outcomes("mini", "cancelled"), 1);
    core.drain(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_route_to_their_fleets_and_overflow_is_visible() {
    let _g = SERIAL.lock().await;
    let mut cfg = base_config();
    cfg.fleets.get_mut("flagship").unwrap().max_running = 1;
    cfg.router.degrade_at.insert("flagship".into(), 1);
    cfg.router.reject_at.insert("flagship".into(), 2);
    let core = start(cfg).await;
    let client = connect(core.quic_addr).await;

    // The seeds' level-1 routing check on a sample of each tier.
    for i in 0..3 {
        for (tier, fleet) in
            [(Tier::Free, "mini"), (Tier::Team, "mini"), (Tier::Plus, "flagship"), (Tier::Enterprise, "flagship")]
        {
            let r = client.generate(generate(tier, &format!("Say {i}."), 1)).await.unwrap().collect().await.unwrap();
            let (acc, ..) = split(&r);
            let acc = acc.unwrap_or_else(|| panic!("{tier}: {r:?}"));
            assert_eq!((acc.fleet.as_str(), acc.degraded), (fleet, false), "{tier}");
            assert!(matches!(r.last(), Some(Reply::Done(_))), "{r:?}");
        }
    }

    // Fill the flagship: one running, one waiting.
    let mut a = client.generate(long(Tier::Enterprise, 300)).await.unwrap();
    let mut b = client.generate(long(Tier::Enterprise, 300)).await.unwrap();
    for s in [&mut a, &mut b] {
        assert!(matches!(s.next().await.unwrap(), Some(Reply::Accepted(_))));
    }
    // One of them starts (whichever the engine loop saw first); the other waits behind it.
    let flagship = core.core.fleets.iter().find(|f| f.name == "flagship").unwrap().clone();
    eventually("one running and one waiting", || flagship.waiting() == 1).await;
    // Plus goes to mini, and says so.
    let r = client.generate(generate(Tier::Plus, "Hi.", 2)).await.unwrap().collect().await.unwrap();
    let acc = split(&r).0.unwrap();
    assert_eq!((acc.fleet.as_str(), acc.degraded), ("mini", true));
    // Enterprise is never downgraded: it queues on the flagship (now two waiting).
    let mut c = client.generate(long(Tier::Enterprise, 300)).await.unwrap();
    let Some(Reply::Accepted(acc)) = c.next().await.unwrap() else { panic!() };
    assert_eq!((acc.fleet.as_str(), acc.degraded), ("flagship", false));
    // Past the hard bound: a typed refusal with a retry hint.
    let r = client.generate(generate(Tier::Plus, "Hi.", 2)).await.unwrap().collect().await.unwrap();
    let [Reply::Error(e)] = &r[..] else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::OverCapacity);
    assert_eq!(e.retry_after_ms, Some(2000));
    assert!(e.message.contains("flagship"), "{}", e.message);
    for s in [a, b, c] {
        s.reset();
    }
    assert_eq!(core.core.metrics.degraded_total.load(std::sync::atomic::Ordering::Relaxed), 1);
    core.drain(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_while_other_streams_are_served() {
    let _g = SERIAL.lock().await;
    let core = start(base_config()).await;
    let addr = core.quic_addr;
    let client = connect(addr).await;
    let mut good = client.generate(long(Tier::Team, 24)).await.unwrap();

    // A frame whose body is not a message.
    let mut s = client.open().await.unwrap();
    s.send_raw(&[3, 0, 0, 0, 9, 9, 9]).await.unwrap();
    let r = s.collect().await.unwrap();
    let [Reply::Error(e)] = &r[..] else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::Protocol);
    assert!(e.message.contains("malformed"), "{}", e.message);

    // A length prefix over the limit: refused from the header alone.
    let mut s = client.open().await.unwrap();
    s.send_raw(&(64u32 << 20).to_le_bytes()).await.unwrap();
    let r = s.collect().await.unwrap();
    let [Reply::Error(e)] = &r[..] else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::Protocol);
    assert!(e.message.contains("exceeds the 1048576-byte limit"), "{}", e.message);

    // Fields out of range are named.
    let mut g = generate(Tier::Free, "hi", 4);
    g.sampling.temperature = Some(7.0);
    let r = client.generate(g).await.unwrap().collect().await.unwrap();
    let [Reply::Error(e)] = &r[..] else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("temperature"), "{}", e.message);
    let mut g = generate(Tier::Free, "hi", 4);
    g.messages.push(Message { role: Role::Assistant, content: "x".into() });
    let r = client.generate(g).await.unwrap().collect().await.unwrap();
    let [Reply::Error(e)] = &r[..] else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::InvalidRequest);

    // A prompt over the tier's cap that trimming cannot save.
    let r = client.generate(generate(Tier::Free, &"word ".repeat(5000), 4)).await.unwrap().collect().await.unwrap();
    let [Reply::Error(e)] = &r[..] else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::PromptTooLong);
    assert!(e.message.contains("the limit is"), "{}", e.message);

    // A version the core does not speak: the connection is closed with the reason.
    let (next, after) = (chorus_proto::PROTOCOL_VERSION + 1, chorus_proto::PROTOCOL_VERSION + 2);
    match CoreClient::connect_with(addr, "localhost", &pki().edge_identity().unwrap(), next, after).await {
        Err(ClientError::Closed(why)) => assert!(why.contains("unsupported protocol version"), "{why}"),
        other => panic!("{other:?}"),
    }

    // A client certificate from another CA never gets a stream served.
    let rogue = chorus_core::tls::mint_dev("rogue CA", &["localhost".into()]).unwrap();
    let mixed = Identity { ca: pki().edge_identity().unwrap().ca, ..rogue.edge_identity().unwrap() };
    let refused = async {
        let c = CoreClient::connect(addr, "localhost", &mixed).await?;
        c.generate(generate(Tier::Free, "hi", 2)).await?.collect().await
    };
    let res = tokio::time::timeout(Duration::from_secs(10), refused).await.expect("refusal is prompt");
    assert!(res.is_err(), "{res:?}");
    eventually("the TLS refusal counted", || {
        http_get(core.http_addr, "/metrics").1.contains("chorus_core_connections_refused_total{reason=\"tls\"}")
    })
    .await;

    // The stream that was running all along finished normally.
    let r = good.collect().await.unwrap();
    let Some(Reply::Done(d)) = r.last() else { panic!("{r:?}") };
    assert_eq!((d.finish_reason, d.usage.completion_tokens), (FinishReason::Length, 24));
    core.drain(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_streams_on_one_connection_and_a_vanishing_client_leaks_nothing() {
    let _g = SERIAL.lock().await;
    let mut cfg = base_config();
    cfg.fleets.get_mut("mini").unwrap().max_running = 32;
    let core = start(cfg).await;
    let client = Arc::new(connect(core.quic_addr).await);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut g = generate(
                    if i % 2 == 0 { Tier::Free } else { Tier::Team },
                    &format!("Tell me about the number {i}."),
                    8,
                );
                g.sampling.ignore_eos = true;
                client.generate(g).await.unwrap().collect().await.unwrap()
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        let Some(Reply::Done(d)) = r.last() else { panic!("{r:?}") };
        assert_eq!(d.usage.completion_tokens, 8);
        assert_eq!(split(&r).2.len(), 8);
    }

    // A second client starts long answers and then disappears without a word.
    let other = connect(core.quic_addr).await;
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(other.generate(long(Tier::Free, 500)).await.unwrap());
    }
    while !matches!(streams[0].next().await.unwrap(), Some(Reply::Token(_))) {}
    let mini = core.core.fleets.iter().find(|f| f.name == "mini").unwrap().clone();
    assert!(mini.in_flight() > 0);
    drop(streams);
    other.endpoint.close(0u32.into(), b"");
    drop(other);
    eventually("everything released", || {
        let m = mini.handle.metrics();
        m.kv_blocks_used == 0
            && m.running == 0
            && mini.in_flight() == 0
            && core.core.metrics.streams_open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    eventually("the connection counted closed", || {
        core.core.metrics.connections_open.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    core.drain(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_generation_safety_ends_the_answer_before_the_match_is_sent() {
    let _g = SERIAL.lock().await;
    let mut cfg = base_config();
    cfg.post_safety.deny = vec!["canberra".into()];
    let core = start(cfg).await;
    let client = connect(core.quic_addr).await;
    let (messages, expected, agreed) = reference("factual_qa");
    let canberra = engine().tokenizer.decode(&agreed, false).unwrap();
    assert!(canberra.ends_with("Canberra"), "{canberra:?}");
    let mut g = generate(Tier::Plus, "", 64);
    g.messages = messages;
    let r = client.generate(g).await.unwrap().collect().await.unwrap();
    let (_, text, ids, last) = split(&r);
    let Reply::Done(d) = last else { panic!("{r:?}") };
    assert_eq!(d.finish_reason, FinishReason::ContentFilter);
    assert_eq!(d.filter_category.as_deref(), Some("policy"));
    assert!(!text.contains("Canberra") && expected.starts_with(&text) && !text.is_empty(), "{text:?}");
    // Usage counts the token that tripped the gate (it was generated), not sent.
    assert_eq!(d.usage.completion_tokens as usize, ids.len() + 1);
    core.drain(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_lose_their_oldest_turns_but_keep_the_system_prompt() {
    let _g = SERIAL.lock().await;
    let mut cfg = base_config();
    cfg.tiers
        .insert("free".into(), chorus_core::config::TierOverride { max_input_tokens: Some(200), ..Default::default() });
    let core = start(cfg).await;
    let client = connect(core.quic_addr).await;
    let mut g = generate(Tier::Free, "", 4);
    g.messages = vec![Message { role: Role::System, content: "You are terse.".into() }];
    for i in 0..12 {
        g.messages
            .push(Message { role: Role::User, content: format!("Remember fact number {i}: the sky is a colour.") });
        g.messages.push(Message { role: Role::Assistant, content: format!("Noted fact {i}.") });
    }
    g.messages.push(Message { role: Role::User, content: "What do you remember?".into() });
    let r = client.generate(g.clone()).await.unwrap().collect().await.unwrap();
    let acc = split(&r).0.unwrap().clone();
    assert!(acc.trimmed_messages > 0 && acc.trimmed_messages.is_multiple_of(2), "{acc:?}");
    assert!(acc.prompt_tokens <= 200, "{acc:?}");
    assert!(matches!(r.last(), Some(Reply::Done(_))));
    // The builder kept as much as fits: one more turn would not.
    let kept = &g.messages[1 + acc.trimmed_messages as usize..];
    let mut with_system = vec![g.messages[0].clone()];
    with_system.extend_from_slice(kept);
    let p = chorus_core::prompt::build(&engine(), &with_system, 200).unwrap();
    assert_eq!((p.ids.len() as u32, p.trimmed), (acc.prompt_tokens, 0));
    let mut one_more = vec![g.messages[0].clone()];
    one_more.extend_from_slice(&g.messages[acc.trimmed_messages as usize - 1..]);
    assert_eq!(one_more[1].role, Role::User);
    assert!(chorus_core::prompt::build(&engine(), &one_more, 10_000).unwrap().ids.len() > 200);
    core.drain(Duration::from_secs(1)).await;
}

/// The real binary, a real SIGTERM: every open stream ends with `Done` or a typed error, and
/// the process exits cleanly. (The drain deadline leaves the 16-token answer room on a loaded
/// two-core machine, where five sequences step at ~100 ms; the 3000-token ones cannot finish.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work() {
    let _g = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("chorus-core-drain-{}", std::process::id()));
    let (core_files, _) = pki().write(&dir).unwrap();
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nthreads = 2\ndrain_secs = 6\n\
         [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[fleets.mini]\nkv_tokens = 8192\n[fleets.flagship]\nkv_tokens = 8192\n",
        core_files.ca, core_files.cert, core_files.key
    );
    std::fs::write(dir.join("core.toml"), cfg).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chorus-core"))
        .arg("--config")
        .arg(dir.join("core.toml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr: SocketAddr =
        line.split_whitespace().nth(3).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line:?}"));
    let client = connect(addr).await;
    let short = client.generate(long(Tier::Free, 16)).await.unwrap();
    let mut longs = Vec::new();
    for _ in 0..3 {
        longs.push(client.generate(long(Tier::Plus, 3000)).await.unwrap());
    }
    let mut first = client.generate(long(Tier::Free, 3000)).await.unwrap();
    while !matches!(first.next().await.unwrap(), Some(Reply::Token(_))) {}
    assert!(std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let mut all = vec![short, first];
    all.extend(longs);
    let mut outcomes = Vec::new();
    for mut s in all {
        let r = tokio::time::timeout(Duration::from_secs(20), s.collect()).await.expect("every stream ends").unwrap();
        match r.last() {
            Some(Reply::Done(_)) => outcomes.push("done".to_string()),
            Some(Reply::Error(e)) if e.code == ErrorCode::ShuttingDown => outcomes.push(e.code.to_string()),
            other => panic!("stream ended with {other:?}"),
        }
    }
    assert_eq!(outcomes[0], "done", "the short request finished within the drain deadline");
    assert!(outcomes.contains(&"shutting_down".to_string()), "{outcomes:?}");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn store_req(tenant: &str, user: &str, op: StoreOp) -> StoreRequest {
    StoreRequest { request_id: "store-req".into(), tenant: tenant.into(), user: user.into(), op }
}

/// The reply of a store request that is not an export.
async fn store_one(client: &CoreClient, tenant: &str, user: &str, op: StoreOp) -> Reply {
    let mut r = client.store(store_req(tenant, user, op)).await.unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    r.pop().unwrap()
}

/// One turn: (accepted, answer text, done).
async fn turn(client: &CoreClient, g: Generate) -> (chorus_proto::Accepted, String, Done) {
    let replies = client.generate(g).await.unwrap().collect().await.unwrap();
    let (a, text, _, last) = split(&replies);
    let Reply::Done(d) = last else { panic!("{last:?}") };
    (a.expect("accepted").clone(), text, d.clone())
}

fn stored(d: &Done) -> (String, u64) {
    match &d.stored {
        Stored::Committed { conversation_id, version } => (conversation_id.clone(), *version),
        s => panic!("not stored: {s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_conversation_continues_and_its_next_turn_hits_the_prefix_cache() {
    let _serial = SERIAL.lock().await;
    let running = start(base_config()).await;
    let client = connect(running.quic_addr).await;

    let mut g = generate(Tier::Free, "Name three colours of the rainbow.", 24);
    g.request_id = "turn-1".into();
    g.conversation = ConversationRef::New;
    g.messages.insert(0, Message { role: Role::System, content: "You are a terse assistant.".into() });
    let (a1, text1, d1) = turn(&client, g.clone()).await;
    let (id, v1) = stored(&d1);
    assert_eq!(v1, 1);
    assert_eq!(a1.conversation_id.as_deref(), Some(id.as_str()));
    assert_eq!((a1.store, a1.history_messages), (StoreStatus::Ok, 0));

    // Turn 2 sends only the new message; the core puts the stored history before it.
    let mut g2 = generate(Tier::Free, "And two more?", 16);
    g2.request_id = "turn-2".into();
    g2.conversation = ConversationRef::Continue(id.clone());
    let (a2, text2, d2) = turn(&client, g2.clone()).await;
    assert_eq!(stored(&d2), (id.clone(), 2));
    assert_eq!(a2.history_messages, 3, "system, user, assistant");
    assert!(a2.prompt_tokens > a1.prompt_tokens + d1.usage.completion_tokens);
    // The prefix contract: all of turn 1's prompt (whole blocks) comes from the cache.
    let block = chorus_engine::engine::BLOCK_SIZE as u32;
    assert!(
        d2.usage.cached_tokens >= a1.prompt_tokens / block * block,
        "turn 2 reused {} cached tokens; turn 1's prompt was {}",
        d2.usage.cached_tokens,
        a1.prompt_tokens
    );

    // A retry of turn 2 (same request id) replays it: same text, nothing generated again.
    let steps = running.core.fleets[0].handle.metrics().steps;
    let (_, again, d2b) = turn(&client, g2).await;
    assert_eq!((again.as_str(), stored(&d2b)), (text2.as_str(), (id.clone(), 2)));
    assert_eq!(running.core.fleets[0].handle.metrics().steps, steps, "a replay runs no engine step");

    // The same request id on another conversation is refused, not replayed there.
    let mut reuse = generate(Tier::Free, "hi", 4);
    reuse.request_id = "turn-2".into();
    reuse.conversation = ConversationRef::Continue("conv_other".into());
    let replies = client.generate(reuse).await.unwrap().collect().await.unwrap();
    assert!(matches!(replies.last(), Some(Reply::Error(e)) if e.code == ErrorCode::Conflict), "{replies:?}");

    // The store over the wire: the exact turns, tenancy, feedback, export, erasure.
    let Reply::Store(StoreReply::Conversation(view)) =
        store_one(&client, "tenant-a", "user-1", StoreOp::Get { conversation_id: id.clone() }).await
    else {
        panic!()
    };
    assert_eq!(view.turns.iter().map(|t| t.answer.as_str()).collect::<Vec<_>>(), [text1.as_str(), text2.as_str()]);
    assert_eq!(view.turns[0].input[0].content, "You are a terse assistant.");
    for (tenant, user) in [("tenant-b", "user-1"), ("tenant-a", "user-2")] {
        let r = store_one(&client, tenant, user, StoreOp::Get { conversation_id: id.clone() }).await;
        assert!(matches!(&r, Reply::Error(e) if e.code == ErrorCode::NotFound), "{r:?}");
        let mut other = generate(Tier::Free, "hi", 4);
        other.tenant = tenant.into();
        other.user = user.into();
        other.conversation = ConversationRef::Continue(id.clone());
        let replies = client.generate(other).await.unwrap().collect().await.unwrap();
        assert!(matches!(replies.last(), Some(Reply::Error(e)) if e.code == ErrorCode::NotFound), "{replies:?}");
    }
    let r = store_one(
        &client,
        "tenant-a",
        "user-1",
        StoreOp::Feedback { conversation_id: id.clone(), version: 2, rating: Rating::Up, comment: None },
    )
    .await;
    assert!(matches!(r, Reply::Store(StoreReply::FeedbackRecorded { .. })), "{r:?}");
    let pieces = client.store(store_req("tenant-a", "user-1", StoreOp::Export)).await.unwrap();
    let json: String = pieces
        .iter()
        .map(|p| match p {
            Reply::Store(StoreReply::Export { data, .. }) => data.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    let doc: chorus_core::store::UserExport = serde_json::from_str(&json).unwrap();
    assert_eq!((doc.conversations.len(), doc.feedback.len(), doc.idempotency_records.len()), (1, 1, 2));
    let r = store_one(&client, "tenant-a", "user-1", StoreOp::Erase).await;
    assert!(matches!(r, Reply::Store(StoreReply::Erased(e)) if e.conversations == 1 && e.feedback == 1), "{r:?}");
    let r = store_one(&client, "tenant-a", "user-1", StoreOp::Get { conversation_id: id }).await;
    assert!(matches!(&r, Reply::Error(e) if e.code == ErrorCode::NotFound), "{r:?}");
    let page = http_get(running.http_addr, "/metrics").1;
    assert!(
        page.contains("chorus_store_op_seconds_count{tier=\"durable\",backend=\"embedded\",op=\"commit\"}"),
        "{page}"
    );
    running.drain(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_continue_while_redis_is_down_and_the_hot_tier_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(mut redis) = common::RedisServer::start() else {
        eprintln!("skipping: no redis-server here");
        return;
    };
    let mut cfg = base_config();
    cfg.store.hot = HotKind::Redis;
    cfg.store.redis.url = redis.url();
    // Short enough that a stopped Redis costs a turn little; long enough for the embedded
    // durable tier's first commits on a busy disk (500 ms failed a loaded CI run's first commit).
    cfg.store.op_timeout_ms = 1500;
    let running = start(cfg).await;
    let client = connect(running.quic_addr).await;
    let mut g = generate(Tier::Plus, "Say hello.", 8);
    g.conversation = ConversationRef::New;
    g.request_id = "r1".into();
    let (_, _, d) = turn(&client, g).await;
    let (id, _) = stored(&d);
    let next = |n: u32| {
        let mut g = generate(Tier::Plus, "Again.", 8);
        g.conversation = ConversationRef::Continue(id.clone());
        g.request_id = format!("r{n}");
        g
    };

    redis.stop();
    let (a, _, d) = turn(&client, next(2)).await;
    assert_eq!(a.store, StoreStatus::HotUnavailable, "flagged degraded");
    assert!(a.store.degraded());
    assert_eq!(a.history_messages, 2, "the history came from the durable tier");
    assert_eq!(stored(&d).1, 2, "and the turn is durable");

    redis.restart();
    let mut recovered = false;
    for n in 3..20 {
        let (a, _, d) = turn(&client, next(n)).await;
        assert_eq!(stored(&d).1, u64::from(n));
        if a.store == StoreStatus::Ok {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "answers are no longer degraded once Redis is back");
    let page = http_get(running.http_addr, "/metrics").1;
    assert!(page.contains("chorus_store_degraded_answers_total{reason=\"hot_unavailable\"}"), "{page}");
    running.drain(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_unreachable_answers_are_single_turn_and_not_claimed_stored() {
    let _serial = SERIAL.lock().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = base_config();
    cfg.store.durable = DurableKind::Postgres;
    cfg.store.postgres.url = format!("host=127.0.0.1 port={port} user=postgres dbname=test");
    cfg.store.op_timeout_ms = 300;
    cfg.store.commit_attempts = 1;
    let running = start(cfg).await;
    let client = connect(running.quic_addr).await;
    for conversation in [ConversationRef::New, ConversationRef::Continue("conv_somewhere".into())] {
        let mut g = generate(Tier::Free, "Say hello.", 8);
        g.conversation = conversation;
        let (a, text, d) = turn(&client, g).await;
        assert_eq!((a.store, a.history_messages), (StoreStatus::Unavailable, 0));
        assert!(!text.is_empty(), "the user still gets an answer");
        assert!(matches!(&d.stored, Stored::Failed { code: ErrorCode::StoreUnavailable, .. }), "{:?}", d.stored);
    }
    let r = store_one(&client, "tenant-a", "user-1", StoreOp::List { limit: 10 }).await;
    assert!(matches!(&r, Reply::Error(e) if e.code == ErrorCode::StoreUnavailable), "{r:?}");
    // Stateless requests never touch the store.
    let (a, _, d) = turn(&client, generate(Tier::Free, "Say hello.", 4)).await;
    assert_eq!((a.store, d.stored), (StoreStatus::NotUsed, Stored::NotRequested));
    running.drain(Duration::from_secs(5)).await;
}
