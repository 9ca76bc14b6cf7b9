//! Idempotency records behave the same in-process and in Redis: claim, running, finished,
//! mismatch, release, erase — and one user's records never answer another's. What the rate
//! limiter charges through the edge is the same on both too: nothing for a request no core
//! could take, nothing for a replayed answer.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chorus_edge::EdgeState;
use chorus_edge::config::StateConfig;
use chorus_edge::idempotency::{Claim, IdempotencyStore, fingerprint, scope};
use chorus_edge::run::RunEvent;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::{api_key, edge_state, nowhere_config};

/// The CI machine's Redis, or a private `redis-server` on a free port.
struct Redis {
    url: String,
    _child: Option<ChildGuard>,
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Redis {
    if TcpStream::connect("127.0.0.1:6379").is_ok() {
        return Redis { url: "redis://127.0.0.1:6379/".into(), _child: None };
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (CI installs it)");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "redis-server starts");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis { url: format!("redis://127.0.0.1:{port}/"), _child: Some(ChildGuard(child)) }
}

fn events() -> Vec<RunEvent> {
    vec![RunEvent::Delta { text: "hello".into(), logprobs: vec![], choice: 0 }]
}

async fn exercise(store: IdempotencyStore) {
    let unique = chorus_edge::random_hex(6);
    let alice = scope("acme", &format!("alice-{unique}"));
    let bob = scope("acme", &format!("bob-{unique}"));
    assert!(matches!(store.claim(&alice, "k1", "fp1", "edge-1", "run-1").await.unwrap(), Claim::Fresh));
    match store.claim(&alice, "k1", "fp1", "edge-2", "run-2").await.unwrap() {
        Claim::Running { edge, run } => assert_eq!((edge.as_str(), run.as_str()), ("edge-1", "run-1")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(store.claim(&alice, "k1", "fp-other", "edge-2", "run-2").await.unwrap(), Claim::Mismatch));
    assert!(
        matches!(store.claim(&bob, "k1", "fp1", "edge-1", "run-3").await.unwrap(), Claim::Fresh),
        "bob's key is his"
    );
    store.finish(&alice, "k1", "fp1", "edge-1", "run-1", events()).await;
    match store.claim(&alice, "k1", "fp1", "edge-2", "run-4").await.unwrap() {
        Claim::Finished { run, events } => {
            assert_eq!(run, "run-1");
            assert!(matches!(&events[..], [RunEvent::Delta { text, .. }] if text == "hello"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(store.claim(&alice, "k2", "fp2", "edge-1", "run-5").await.unwrap(), Claim::Fresh));
    store.release(&alice, "k2").await;
    assert!(matches!(store.claim(&alice, "k2", "fp2", "edge-1", "run-6").await.unwrap(), Claim::Fresh), "released");
    assert_eq!(store.erase(&alice).await.unwrap(), 2);
    assert!(matches!(store.claim(&alice, "k1", "fp1", "edge-1", "run-7").await.unwrap(), Claim::Fresh), "erased");
    assert!(
        matches!(store.claim(&bob, "k1", "fp1", "edge-1", "run-8").await.unwrap(), Claim::Running { .. }),
        "bob's record survives alice's erasure"
    );
}

#[tokio::test]
async fn idempotency_records_in_process() {
    exercise(IdempotencyStore::open(&StateConfig::default(), Duration::from_secs(60)).unwrap()).await;
}

#[tokio::test]
async fn idempotency_records_in_redis() {
    let r = redis();
    let cfg = StateConfig {
        redis: Some(r.url.clone()),
        prefix: format!("test:{}", chorus_edge::random_hex(4)),
        ..StateConfig::default()
    };
    exercise(IdempotencyStore::open(&cfg, Duration::from_secs(60)).unwrap()).await;
}

/// An edge whose only core is nowhere, with a free-tier caller allowed two messages per three
/// hours (and no burst limit), its state and counters in Redis when `redis` is given.
fn edge(redis: Option<&str>, user: &str) -> Arc<EdgeState> {
    let mut cfg = nowhere_config();
    cfg.state.redis = redis.map(str::to_owned);
    cfg.state.prefix = format!("test:{}", chorus_edge::random_hex(4));
    cfg.filters.api_keys = vec![api_key(FREE, user, "free")];
    let limits = [("burst.free", "unlimited"), ("messages.free", "2/3h")];
    cfg.filters.config.insert("ratelimit".into(), limits.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    edge_state(cfg)
}

const FREE: &str = "sk-free-0123456789abcdef";
const BODY: &str = r#"{"model": "chorus", "messages": [{"role": "user", "content": "hello"}]}"#;

/// Status and error code (empty on success) of one chat request.
async fn chat(st: &Arc<EdgeState>, body: &str, idempotency_key: Option<&str>) -> (u16, String) {
    let mut req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {FREE}"))
        .header("content-type", "application/json");
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let resp = chorus_edge::app(st.clone()).oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status >= 400 {
        eprintln!("{status}: {v}");
    }
    (status, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

async fn charges(redis: Option<&str>) {
    let user = format!("u-{}", chorus_edge::random_hex(6));
    let st = edge(redis, &user);
    // No core takes them: more requests than the window holds, none charged.
    for i in 0..4 {
        assert_eq!(chat(&st, BODY, None).await, (503, "no_upstream".into()), "request {i}");
    }
    // An answer recorded for an Idempotency-Key is replayed, as often as asked, for free.
    let answer = vec![
        RunEvent::Head {
            model: "m".into(),
            fleet: "mini".into(),
            prompt: None,
            degraded_model: false,
            degraded_store: false,
            conversation_id: None,
            choices: 1,
        },
        RunEvent::Delta { text: "hi".into(), logprobs: vec![], choice: 0 },
        RunEvent::Finish {
            finish_reason: "stop".into(),
            usage: chorus_proto::Usage { prompt_tokens: 9, completion_tokens: 1, cached_tokens: 0 }.into(),
            conversation_id: None,
            turn_version: None,
            store_error: None,
            choices: vec![],
        },
    ];
    let (sc, fp) = (scope("t", &user), fingerprint(BODY.as_bytes()));
    st.idempotency.finish(&sc, "order-1", &fp, &st.cfg.edge_id, "chatcmpl-recorded", answer).await;
    for i in 0..4 {
        assert_eq!(chat(&st, BODY, Some("order-1")).await, (200, String::new()), "replay {i}");
    }
    // The window is still whole: the key reused with another body is the caller's error and
    // is charged, twice; then the window is spent.
    let other = json!({"model": "chorus", "messages": [{"role": "user", "content": "bye"}]}).to_string();
    for i in 0..2 {
        assert_eq!(chat(&st, &other, Some("order-1")).await, (422, "idempotency_key_reused".into()), "misuse {i}");
    }
    assert_eq!(chat(&st, BODY, None).await, (429, "rate_limited".into()));
}

#[tokio::test]
async fn nothing_is_charged_for_no_core_or_a_replay_in_process() {
    charges(None).await;
}

#[tokio::test]
async fn nothing_is_charged_for_no_core_or_a_replay_in_redis() {
    let r = redis();
    charges(Some(&r.url)).await;
}

/// A shared answer with quiet gaps longer than a blocking read (a slow or busy core) is
/// mirrored whole on another edge: every event, in order, with the same indexes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_answer_with_quiet_gaps_is_mirrored_whole() {
    use chorus_edge::openai::Shape;
    use chorus_edge::run::{Form, Next, Run, Runs, owner_of};
    use chorus_edge::shared::SharedRuns;
    let r = redis();
    let prefix = format!("test:{}", chorus_edge::random_hex(4));
    let open = |edge: &str| {
        Arc::new(SharedRuns::open(&r.url, &prefix, edge, Duration::from_secs(30), Duration::from_secs(60)).unwrap())
    };
    let (origin, other) = (open("edge-1"), open("edge-2"));
    let owner = owner_of("acme", "alice");
    let form = Form { stream: true, include_usage: false, shape: Shape::Chat };
    let run = Run::new("chatcmpl-gaps".into(), form, chorus_proto::Tier::Plus, owner, 1 << 20, Duration::from_secs(30));
    let _reader = run.reader();
    tokio::spawn(origin.clone().publish(run.clone(), owner));
    run.push(RunEvent::Head {
        model: "m".into(),
        fleet: "flagship".into(),
        prompt: None,
        degraded_model: false,
        degraded_store: false,
        conversation_id: None,
        choices: 1,
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = Runs::new(16);
    assert!(
        other.mirror(&runs, "chatcmpl-gaps", &owner_of("acme", "mallory"), 1 << 20).await.unwrap().is_none(),
        "not theirs"
    );
    let mirror = other.mirror(&runs, "chatcmpl-gaps", &owner, 1 << 20).await.unwrap().expect("shared");
    for word in ["one", "two", "three"] {
        tokio::time::sleep(Duration::from_millis(1600)).await; // longer than a blocking read
        run.push(RunEvent::Delta { text: word.into(), logprobs: vec![], choice: 0 });
    }
    run.push(RunEvent::Finish {
        finish_reason: "stop".into(),
        usage: Default::default(),
        conversation_id: None,
        turn_version: None,
        store_error: None,
        choices: vec![],
    });
    let mut text = String::new();
    for i in 0.. {
        match tokio::time::timeout(Duration::from_secs(10), mirror.next(i)).await.expect("the mirror keeps up") {
            Next::Event(RunEvent::Delta { text: t, .. }) => text.push_str(&t),
            Next::Event(RunEvent::Error(e)) => panic!("the mirror failed: {e}"),
            Next::Event(RunEvent::Finish { .. }) => {
                assert_eq!(i, 4, "head, three deltas, finish");
                break;
            }
            Next::Event(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(text, "onetwothree");
}
