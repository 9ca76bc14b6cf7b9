//! Idempotency records behave the same in-process and in Redis: claim, running, finished,
//! mismatch, release, erase — and one user's records never answer another's.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_edge::config::StateConfig;
use chorus_edge::idempotency::{Claim, IdempotencyStore, scope};
use chorus_edge::run::RunEvent;

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
    vec![RunEvent::Delta { text: "hello".into(), logprobs: vec![] }]
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
