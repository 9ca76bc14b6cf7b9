//! In-process and Redis counters give identical answers.

use chorus_filter_host::CounterStore;
use chorus_filter_host::store::StoreError;

use crate::common::*;
use crate::filters::{message_window_script, module};

fn script(store: &CounterStore) -> Vec<String> {
    let t = 1_800_000_000_123u64;
    let mut out = Vec::new();
    let mut log = |r: Result<String, StoreError>| out.push(r.unwrap_or_else(|e| format!("error: {e}")));
    for i in 0..5 {
        log(store.window_hit("w", 3, 1000, t + i * 100).map(|h| format!("{h:?}")));
    }
    log(store.window_hit("w", 3, 1000, t + 1000).map(|h| format!("{h:?}")));
    log(store.window_hit("w", 3, 1000, t + 1001).map(|h| format!("{h:?}")));
    log(store.window_hit("w", 0, 1000, t).map(|h| format!("{h:?}")));
    log(store.window_hit("w", 3, 0, t).map(|h| format!("{h:?}")));
    for (delta, dt) in [(5, 0), (-2, 10), (7, 86_400_000)] {
        log(store.counter_add("c", delta, 86_400_000, t + dt).map(|v| v.to_string()));
    }
    for (amount, dt) in [(60, 0), (30, 1), (20, 2), (40, 3), (-1, 4), (10, 86_400_000)] {
        log(store.budget_reserve("b", amount, 100, 86_400_000, t + dt).map(|r| format!("{r:?}")));
    }
    // Giving back the event at t + 100 frees a place; there is only one to give back.
    for (key, at) in [("w", t + 100), ("w", t + 100), ("w", t + 7), ("nothing", t)] {
        log(store.window_release(key, at).map(|r| r.to_string()));
    }
    log(store.window_hit("w", 3, 1000, t + 1002).map(|h| format!("{h:?}")));
    out
}

#[test]
fn in_process_and_redis_agree() {
    let Some(url) = redis_url() else {
        eprintln!("skipping: no redis-server available");
        return;
    };
    let local = script(&CounterStore::in_process(100));
    let redis = script(&CounterStore::redis(&url, &namespace("agree")).unwrap());
    assert_eq!(local, redis);
    assert!(local[3].contains("allowed: false") && local[3].contains("retry_after_ms: 700"), "{local:?}");
    assert!(local[8].starts_with("error:"), "{local:?}");
    assert_eq!(local[18..22], ["true", "false", "false", "false"], "{local:?}");
    assert!(local[22].contains("allowed: true") && local[22].contains("count: 3"), "{local:?}");
}

#[test]
fn ratelimit_filter_gives_identical_answers_on_redis() {
    let Some(url) = redis_url() else {
        eprintln!("skipping: no redis-server available");
        return;
    };
    let host_for = |counters| {
        let config = config_for("ratelimit", &[("burst.free", "1000/1s")]);
        let host = chorus_filter_host::FilterHost::new(chorus_filter_host::HostConfig {
            counters,
            filter_config: config,
            ..Default::default()
        })
        .unwrap();
        host.load(&[module("ratelimit")]).unwrap();
        host
    };
    let local = message_window_script(&host_for(CounterStore::in_process(100)));
    let redis = message_window_script(&host_for(CounterStore::redis(&url, &namespace("ratelimit")).unwrap()));
    assert_eq!(local, redis);
}

#[test]
fn redis_down_is_an_error_not_a_hang() {
    let store = CounterStore::redis("redis://127.0.0.1:1/", "x:").unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(store.window_hit("k", 1, 1000, 0), Err(StoreError::Redis(_))));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn in_process_store_is_bounded() {
    let store = CounterStore::in_process(2);
    store.counter_add("a", 1, 1000, 0).unwrap();
    store.counter_add("b", 1, 1000, 0).unwrap();
    assert!(matches!(store.counter_add("c", 1, 1000, 0), Err(StoreError::Full(2))));
    // Expired keys make room.
    store.counter_add("c", 1, 1000, 5000).unwrap();
}
