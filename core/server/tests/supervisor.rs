//! The engine supervisor over real QUIC with the real model: a panic inside an engine step
//! ends the in-flight stream with `engine_failed`, turns `/readyz` false until the restarted
//! loop's hold-down passes, and is counted; a stalled engine turns `/readyz` false within the
//! stall window and ready again once it steps.
//!
//! Tests run one at a time (each starts a core with two engine loops on a two-core machine).

mod common;

use std::sync::Arc;
use std::time::Duration;

use chorus_core::RunningCore;
use chorus_core::fleet::Fleet;
use chorus_proto::{ErrorCode, Reply, Tier};
use common::serving::{base_config, connect, eventually, generate, http_get, long, start};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fleet<'a>(core: &'a RunningCore, name: &str) -> &'a Arc<Fleet> {
    core.core.fleets.iter().find(|f| f.name == name).expect("the fleet exists")
}

fn metric_line(body: &str, series: &str) -> Option<String> {
    body.lines().find(|l| l.starts_with(series)).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_step_fails_the_stream_restarts_the_loop_and_the_next_request_succeeds() {
    let _g = SERIAL.lock().await;
    let mut cfg = base_config();
    cfg.engine_restart_holddown_ms = 3_000;
    let core = start(cfg).await;
    let client = connect(core.quic_addr).await;
    assert_eq!(http_get(core.http_addr, "/readyz").0, 200);

    // Mid-answer: the first token has arrived, then the next step panics.
    let mut s = client.generate(long(Tier::Free, 400)).await.unwrap();
    loop {
        match s.next().await.unwrap() {
            Some(Reply::Accepted(_)) => {}
            Some(Reply::Token(_)) => break,
            other => panic!("expected Accepted then a token, got {other:?}"),
        }
    }
    let mini = fleet(&core, "mini");
    mini.handle.failpoints().panic_in_step(1);
    let last = loop {
        match s.next().await.unwrap() {
            Some(Reply::Token(_)) => {}
            Some(r) => break r,
            None => panic!("the stream ended without a final reply"),
        }
    };
    let Reply::Error(e) = last else { panic!("expected an error, got {last:?}") };
    assert_eq!(e.code, ErrorCode::EngineFailed, "{e:?}");
    assert!(e.message.contains("panicked") && e.message.contains("failpoint engine_panic"), "{}", e.message);
    let end = tokio::time::timeout(Duration::from_secs(10), s.next()).await.expect("the stream ends");
    assert_eq!(end.unwrap(), None, "nothing follows the error");

    // Not ready at once (the failure is recorded before any stream hears of it), on /readyz
    // and in the load reports edges route by.
    let (status, body) = http_get(core.http_addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("fleet mini: engine") && body.contains("after a panic"), "{body}");
    let load = client.load();
    eventually("a load report saying not ready", || load.borrow().as_ref().is_some_and(|r| !r.ready)).await;

    // Ready again after the hold-down, with the restart counted and the KV given back.
    eventually("/readyz ready again", || http_get(core.http_addr, "/readyz").0 == 200).await;
    eventually("a load report saying ready", || load.borrow().as_ref().is_some_and(|r| r.ready)).await;
    let h = mini.handle.health();
    assert_eq!((h.restarts, h.state), (1, chorus_engine::serve::LoopState::Running));
    let (_, m) = http_get(core.http_addr, "/metrics");
    for (series, want) in [
        ("chorus_engine_restarts_total{fleet=\"mini\",", " 1"),
        ("chorus_engine_restarts_total{fleet=\"flagship\",", " 0"),
        ("chorus_engine_up{fleet=\"mini\",", " 1"),
        ("chorus_kv_blocks_used{fleet=\"mini\",", " 0"),
        ("chorus_core_requests_total{fleet=\"mini\",outcome=\"engine_failed\"}", " 1"),
    ] {
        let line = metric_line(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
        assert!(line.ends_with(want), "{line}");
    }

    // The restarted loop serves: a following request on the same connection completes.
    let replies = client.generate(generate(Tier::Free, "Say hello.", 12)).await.unwrap().collect().await.unwrap();
    assert!(matches!(replies.last(), Some(Reply::Done(_))), "{replies:?}");
    assert!(replies.iter().any(|r| matches!(r, Reply::Token(t) if !t.text.is_empty())), "{replies:?}");
    core.drain(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_engine_is_not_ready_within_the_window_and_ready_again_when_it_steps() {
    let _g = SERIAL.lock().await;
    let mut cfg = base_config();
    cfg.engine_stall_ms = 300;
    let core = start(cfg).await;
    let client = Arc::new(connect(core.quic_addr).await);
    assert_eq!(http_get(core.http_addr, "/readyz").0, 200);
    let mini = fleet(&core, "mini").clone();
    // Far longer than the window, so the stall is seen while it lasts.
    mini.handle.failpoints().stall_next_step(Duration::from_millis(4_000));
    let c = client.clone();
    let answer =
        tokio::spawn(async move { c.generate(generate(Tier::Free, "Say hello.", 12)).await.unwrap().collect().await });

    eventually("/readyz not ready while the engine is stalled", || http_get(core.http_addr, "/readyz").0 == 503).await;
    assert!(!answer.is_finished(), "the stall is seen while the request still waits on it");
    let (_, body) = http_get(core.http_addr, "/readyz");
    assert!(body.contains("fleet mini: engine has work and completed no step"), "{body}");
    let (_, m) = http_get(core.http_addr, "/metrics");
    assert!(m.contains("chorus_engine_stalled{fleet=\"mini\"} 1"), "{m}");
    assert!(m.contains("chorus_engine_stalled{fleet=\"flagship\"} 0"), "{m}");
    let load = client.load();
    eventually("a load report saying not ready", || load.borrow().as_ref().is_some_and(|r| !r.ready)).await;

    // The engine steps again: the request completes and the core is ready.
    let replies = answer.await.unwrap().unwrap();
    assert!(matches!(replies.last(), Some(Reply::Done(_))), "{replies:?}");
    eventually("/readyz ready again", || http_get(core.http_addr, "/readyz").0 == 200).await;
    let (_, m) = http_get(core.http_addr, "/metrics");
    assert!(m.contains("chorus_engine_stalled{fleet=\"mini\"} 0"), "{m}");
    assert!(m.contains("chorus_engine_stalls_total{fleet=\"mini\"} 1"), "{m}");
    assert_eq!(mini.handle.health().restarts, 0, "a stall is not a restart");
    core.drain(Duration::from_secs(5)).await;
}
