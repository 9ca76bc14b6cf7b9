//! The edge routes by the cores' readiness: a core whose engine stalls says it is not ready
//! (its load reports and `/readyz`), the edge sends it no new requests while it is not, and
//! its sibling in the region serves them; when the engine steps again the core is taken back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chorus_edge::upstream::rendezvous;
use chorus_proto::quic::CoreClient;
use chorus_proto::{Message, Reply, Role, Sampling, Tier};
use chorus_tests::*;
use serde_json::json;

/// Polls until `f` holds or `secs` pass.
async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Healthy upstream cores as the edge sees them.
fn healthy(edge: &chorus_edge::RunningEdge) -> usize {
    edge.state.pool.health().iter().map(|h| h.1).sum::<usize>()
}

/// Cores `core-a` (configured further by `tune`) and `core-b` in one region, and an edge that
/// has connected to both.
async fn two_cores_and_an_edge(
    tag: &str,
    tune: impl FnOnce(&mut chorus_core::config::CoreConfig),
) -> (chorus_core::RunningCore, chorus_core::RunningCore, chorus_edge::RunningEdge) {
    let mut cfg_a = core_config(&format!("{tag}-a"));
    cfg_a.core_id = "core-a".into();
    tune(&mut cfg_a);
    let a = start_core(cfg_a).await;
    let mut cfg_b = core_config(&format!("{tag}-b"));
    cfg_b.core_id = "core-b".into();
    let b = start_core(cfg_b).await;
    let edge = start_edge(edge_config(vec![site("core-a", &a), site("core-b", &b)])).await;
    until("the edge connects to both cores", 20, || healthy(&edge) == 2).await;
    (a, b, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_with_a_stalled_engine_gets_no_new_requests_and_its_sibling_serves_them() {
    let (a, b, edge) = two_cores_and_an_edge("ready", |a| a.engine_stall_ms = 300).await;

    // Stall A's flagship engine (enterprise requests go there) under a request of its own.
    let flagship = a.core.fleets.iter().find(|f| f.name == "flagship").expect("a flagship fleet").clone();
    flagship.handle.failpoints().stall_next_step(Duration::from_secs(15));
    let direct = CoreClient::connect(a.quic_addr, "localhost", &pki().edge_identity().unwrap()).await.unwrap();
    let g = chorus_proto::Generate {
        request_id: "stalled".into(),
        tenant: "acme".into(),
        user: "alice".into(),
        tier: Tier::Enterprise,
        messages: vec![Message { role: Role::User, content: "Say hi.".into() }],
        sampling: Sampling { temperature: Some(0.0), ..Sampling::default() },
        max_tokens: 4,
        ..chorus_proto::Generate::default()
    };
    let stalled = tokio::spawn(async move { direct.generate(g).await.unwrap().collect().await });
    until("core A to say it is not ready", 10, || a.core.readiness().is_err()).await;
    until("the edge to pass over core A", 10, || healthy(&edge) == 1).await;

    // Every new request goes to B while A is not ready, including those whose key (the
    // request id, for a request outside a conversation) ranks A first.
    let (a0, b0) =
        (a.core.metrics.streams_total.load(Ordering::Relaxed), b.core.metrics.streams_total.load(Ordering::Relaxed));
    let k = auth(KEY);
    let headers = [("Authorization", k.as_str()), ("Content-Type", "application/json")];
    let body = json!({"model": "chorus", "temperature": 0, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]})
        .to_string();
    let (mut sent, mut ranked_a_first) = (0, 0);
    while ranked_a_first < 2 && sent < 16 {
        let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &body).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(!r.json()["choices"][0]["message"]["content"].as_str().unwrap_or("").is_empty(), "{}", r.body);
        let key = r.header("x-chorus-request-id").expect("a request id").to_owned();
        if rendezvous(&key, "core-a") > rendezvous(&key, "core-b") {
            ranked_a_first += 1;
        }
        sent += 1;
    }
    assert!(ranked_a_first >= 2, "{sent} requests, {ranked_a_first} of them ranking core A first");
    assert!(!stalled.is_finished(), "A was stalled throughout");
    assert_eq!(a.core.metrics.streams_total.load(Ordering::Relaxed), a0, "no request reached the stalled core");
    assert_eq!(b.core.metrics.streams_total.load(Ordering::Relaxed), b0 + sent, "its sibling served them all");
    let m = http(edge.addr, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("chorus_edge_upstream_retries_total 0"), "routed away, not retried: {m}");

    // A's engine steps again: its own request completes, and the edge takes it back.
    let replies = stalled.await.unwrap().unwrap();
    assert!(matches!(replies.last(), Some(Reply::Done(_))), "{replies:?}");
    until("core A ready again", 10, || a.core.readiness().is_ok()).await;
    until("the edge to take core A back", 10, || healthy(&edge) == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_fails_before_the_first_token_is_retried_on_its_sibling() {
    let (a, b, edge) = two_cores_and_an_edge("panic", |_| {}).await;

    // A's flagship engine (enterprise requests go there) panics in its next step, once.
    let flagship = a.core.fleets.iter().find(|f| f.name == "flagship").expect("a flagship fleet").clone();
    flagship.handle.failpoints().panic_in_step(1);
    let k = auth(KEY);
    let headers = [("Authorization", k.as_str()), ("Content-Type", "application/json")];
    let body = json!({"model": "chorus", "temperature": 0, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]})
        .to_string();
    let served_by_a = || a.core.metrics.streams_total.load(Ordering::Relaxed);
    let mut sent = 0;
    // Requests land on A or B by their id; every one succeeds, including the one A failed.
    while served_by_a() == 0 && sent < 24 {
        let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &body).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(!r.json()["choices"][0]["message"]["content"].as_str().unwrap_or("").is_empty(), "{}", r.body);
        sent += 1;
    }
    assert_eq!(served_by_a(), 1, "{sent} requests, none reached core A");
    assert_eq!(b.core.metrics.streams_total.load(Ordering::Relaxed), sent, "B answered every one, A's too");
    let m = http(edge.addr, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("chorus_edge_upstream_retries_total 1"), "the failed answer was retried once: {m}");
}
