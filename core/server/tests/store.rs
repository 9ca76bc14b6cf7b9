//! The conversation store against its real backends: the embedded redb file always, a private
//! Redis server (hot tier and feedback stream), and the CI machine's PostgreSQL when it answers.
//! Each property is checked on every combination of durable and hot tier.

mod common;

use std::time::Duration;

use chorus_core::config::{DurableKind, HotKind, Keep, StoreConfig};
use chorus_core::store::{Commit, ConversationStore, HotRead, Owner, StoreError, UserExport};
use chorus_proto::{FinishReason, Message, Rating, Role, Tier, Turn, Usage};
use common::{RedisServer, drop_schema, postgres_url, scratch_dir, unique};

/// Every combination this machine can run, named.
fn setups(tag: &str, redis: Option<&RedisServer>) -> Vec<(String, StoreConfig)> {
    let mut durables = vec![("embedded", {
        let mut c = StoreConfig { durable: DurableKind::Embedded, ..StoreConfig::default() };
        c.path = Some(scratch_dir(tag).join("store.redb"));
        c
    })];
    match postgres_url() {
        Some(url) => {
            let mut c = StoreConfig { durable: DurableKind::Postgres, ..StoreConfig::default() };
            c.postgres.url = url;
            c.postgres.schema = unique(tag);
            c.postgres.pool = 2;
            durables.push(("postgres", c));
        }
        None => eprintln!("note: no PostgreSQL at 127.0.0.1:5432; the postgres tier is not exercised here"),
    }
    let mut out = Vec::new();
    for (d, c) in durables {
        out.push((format!("{d}+memory"), StoreConfig { hot: HotKind::Memory, ..c.clone() }));
        match redis {
            Some(r) => {
                let mut c = StoreConfig { hot: HotKind::Redis, ..c };
                c.redis.url = r.url();
                c.redis.prefix = format!("{}:", unique(tag));
                c.redis.pool = 2;
                // Storage per setup: the same tables must not serve two setups.
                if d == "postgres" {
                    c.postgres.schema = unique(&format!("{tag}_r"));
                } else {
                    c.path = Some(scratch_dir(tag).join("store.redb"));
                }
                out.push((format!("{d}+redis"), c));
            }
            None => eprintln!("note: no redis-server here; the redis tier is not exercised"),
        }
    }
    out
}

/// Drops a setup's PostgreSQL schema when the iteration ends, however it ends.
struct Cleanup(StoreConfig);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let cfg = self.0.clone();
        // A plain thread with its own runtime: drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(drop_schema(&cfg));
        })
        .join();
    }
}

fn owner(t: &str, u: &str) -> Owner {
    Owner::new(t, u)
}

fn commit(o: &Owner, id: &str, base: Option<u64>, tier: Tier, request_id: &str, now_ms: u64) -> Commit {
    let version = base.map_or(1, |b| b + 1);
    Commit {
        owner: o.clone(),
        conversation_id: id.into(),
        base,
        tier,
        turn: Turn {
            version,
            request_id: request_id.into(),
            created_ms: now_ms,
            input: vec![Message { role: Role::User, content: format!("question {version} \u{0} ünïcode") }],
            answer: format!("answer {version}"),
            finish_reason: FinishReason::Stop,
            model: "m".into(),
            usage: Usage { prompt_tokens: 10, completion_tokens: 2, cached_tokens: 0 },
        },
        context: Some(chorus_core::store::Context { model: "m".into(), ids: vec![1, 2, 3, version as u32] }),
        now_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_commit_in_order_and_conflicts_are_detected() {
    let redis = RedisServer::start();
    for (name, cfg) in setups("order", redis.as_ref()) {
        let s = ConversationStore::open(&cfg).await.unwrap();
        let _cleanup = Cleanup(cfg.clone());
        let a = owner("tenant-a", "alice");
        let id = chorus_core::store::new_id("conv_");
        assert_eq!(s.commit(&commit(&a, &id, None, Tier::Free, "r1", 1000), None).await.unwrap(), 1, "{name}");
        let (c, read) = s.load(&a, &id).await.unwrap();
        assert_eq!((c.version, c.turns.len(), read), (1, 1, HotRead::Hit), "{name}");
        assert_eq!(c.turns[0].input[0].content, "question 1 \u{0} ünïcode", "{name}: exact bytes");
        assert_eq!(s.commit(&commit(&a, &id, Some(1), Tier::Free, "r2", 2000), Some(c)).await.unwrap(), 2, "{name}");
        let (c2, _) = s.load(&a, &id).await.unwrap();
        assert_eq!(c2.messages().len(), 4, "{name}");
        assert_eq!(c2.context.as_ref().unwrap().ids, vec![1, 2, 3, 2], "{name}");

        // Two turns generated from version 2 at once: one commits, the other is refused.
        let (ca, cb) =
            (commit(&a, &id, Some(2), Tier::Free, "r3a", 3000), commit(&a, &id, Some(2), Tier::Free, "r3b", 3000));
        let (x, y) = tokio::join!(s.commit(&ca, Some(c2.clone())), s.commit(&cb, Some(c2.clone())));
        let results = [x, y];
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{name}: {results:?}");
        assert!(
            results.iter().any(|r| matches!(r, Err(StoreError::Conflict { base: 2, current: 3, .. }))),
            "{name}: {results:?}"
        );
        assert_eq!(s.load(&a, &id).await.unwrap().0.version, 3, "{name}");

        // A request id that already produced a turn is refused, and replays that turn.
        let dup = s.commit(&commit(&a, &id, Some(3), Tier::Free, "r1", 4000), None).await;
        assert!(matches!(dup, Err(StoreError::Duplicate { version: 1, .. })), "{name}: {dup:?}");
        let (c, v) = s.replay(&a, "r1").await.unwrap().unwrap();
        assert_eq!((c.id.as_str(), v), (id.as_str(), 1), "{name}");
        assert!(s.replay(&a, "never").await.unwrap().is_none(), "{name}");
        assert_eq!(s.metrics.counter("commit", "conflict"), 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_hot_copy_is_ignored() {
    let redis = RedisServer::start();
    for (name, cfg) in setups("stale", redis.as_ref()) {
        let s = ConversationStore::open(&cfg).await.unwrap();
        let _cleanup = Cleanup(cfg.clone());
        let a = owner("t", "u");
        let id = chorus_core::store::new_id("conv_");
        s.commit(&commit(&a, &id, None, Tier::Plus, "r1", 1), None).await.unwrap();
        // The durable tier moves on without the hot tier, as when a core dies between the writes.
        s.durable().commit(&commit(&a, &id, Some(1), Tier::Plus, "r2", 2)).await.unwrap();
        assert_eq!(s.hot().get(&id).await.unwrap().unwrap().version, 1, "{name}: the hot copy is stale");
        let (c, read) = s.load(&a, &id).await.unwrap();
        assert_eq!((c.version, read), (2, HotRead::Stale), "{name}");
        assert_eq!(c.turns[1].answer, "answer 2", "{name}");
        // The read refreshed the hot copy.
        assert_eq!(s.load(&a, &id).await.unwrap().1, HotRead::Hit, "{name}");
        // An older copy never replaces a newer one.
        s.hot()
            .put(&{
                let mut old = c.clone();
                old.version = 1;
                old
            })
            .await
            .unwrap();
        assert_eq!(s.hot().get(&id).await.unwrap().unwrap().version, 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_conversation_is_not_found_anywhere() {
    let redis = RedisServer::start();
    for (name, cfg) in setups("tenancy", redis.as_ref()) {
        let s = ConversationStore::open(&cfg).await.unwrap();
        let _cleanup = Cleanup(cfg.clone());
        let a = owner("tenant-a", "same-user");
        let b = owner("tenant-b", "same-user");
        let id = chorus_core::store::new_id("conv_");
        s.commit(&commit(&a, &id, None, Tier::Team, "r1", 1), None).await.unwrap();
        let nf = |r: Result<_, StoreError>| matches!(r, Err(StoreError::NotFound));
        assert!(nf(s.load(&b, &id).await.map(drop)), "{name}: load");
        assert!(nf(s.load(&b, "conv_missing").await.map(drop)), "{name}: missing reads the same");
        assert!(nf(s.delete(&b, &id).await), "{name}: delete");
        assert!(nf(s.feedback(&b, &id, 1, Rating::Up, None).await.map(drop)), "{name}: feedback");
        assert!(nf(s.commit(&commit(&b, &id, Some(1), Tier::Team, "rb", 2), None).await.map(drop)), "{name}: append");
        assert!(s.list(&b, 100).await.unwrap().is_empty(), "{name}: list");
        let e = s.export(&b).await.unwrap();
        assert!(e.conversations.is_empty() && e.idempotency_records.is_empty(), "{name}: export");
        assert!(s.replay(&b, "r1").await.unwrap().is_none(), "{name}: replay");
        // Nothing of it changed for its owner.
        assert_eq!(s.load(&a, &id).await.unwrap().0.version, 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_sweeps_by_tier_and_hot_copies_expire() {
    let redis = RedisServer::start();
    for (name, mut cfg) in setups("retention", redis.as_ref()) {
        cfg.hot_ttl_secs = 1;
        cfg.retention.team = Keep(Some(60_000));
        let s = ConversationStore::open(&cfg).await.unwrap();
        let _cleanup = Cleanup(cfg.clone());
        let o = owner("t", "u");
        let day = 86_400_000u64;
        let t0 = chorus_core::store::now_ms();
        let mut ids = std::collections::HashMap::new();
        for tier in Tier::ALL {
            let id = chorus_core::store::new_id("conv_");
            s.commit(&commit(&o, &id, None, tier, &format!("r-{tier}"), t0), None).await.unwrap();
            ids.insert(tier, id);
        }
        // The hot copies expire on their own.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(s.hot().get(&ids[&Tier::Free]).await.unwrap().is_none(), "{name}: TTL");
        assert_eq!(s.load(&o, &ids[&Tier::Free]).await.unwrap().1, HotRead::Miss, "{name}");

        assert_eq!(s.sweep(t0 + 30_000).await.unwrap(), 0, "{name}: nothing is old yet");
        assert_eq!(s.sweep(t0 + 61_000).await.unwrap(), 1, "{name}: team after its 60 s");
        assert_eq!(s.sweep(t0 + 29 * day).await.unwrap(), 0, "{name}");
        assert_eq!(s.sweep(t0 + 31 * day).await.unwrap(), 1, "{name}: free after 30 days idle");
        assert_eq!(s.sweep(t0 + 91 * day).await.unwrap(), 1, "{name}: plus after 90 days");
        assert_eq!(s.sweep(t0 + 10_000 * day).await.unwrap(), 0, "{name}: enterprise is kept");
        for tier in [Tier::Free, Tier::Team, Tier::Plus] {
            assert!(matches!(s.load(&o, &ids[&tier]).await, Err(StoreError::NotFound)), "{name}: {tier}");
            assert!(s.hot().get(&ids[&tier]).await.unwrap().is_none(), "{name}: {tier} hot copy");
            assert!(s.replay(&o, &format!("r-{tier}")).await.unwrap().is_none(), "{name}: {tier} idempotency");
        }
        assert!(s.load(&o, &ids[&Tier::Enterprise]).await.is_ok(), "{name}");
        assert_eq!(s.metrics.counter("swept", ""), 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_nothing_and_export_round_trips() {
    let redis = RedisServer::start();
    for (name, cfg) in setups("erase", redis.as_ref()) {
        let s = ConversationStore::open(&cfg).await.unwrap();
        let _cleanup = Cleanup(cfg.clone());
        let a = owner("t", "alice");
        let b = owner("t", "bob");
        let mut mine = Vec::new();
        for k in 0..2 {
            let id = chorus_core::store::new_id("conv_");
            s.commit(&commit(&a, &id, None, Tier::Plus, &format!("a{k}"), 10 + k), None).await.unwrap();
            let c = s.load(&a, &id).await.unwrap().0;
            s.commit(&commit(&a, &id, Some(1), Tier::Plus, &format!("a{k}b"), 20 + k), Some(c)).await.unwrap();
            mine.push(id);
        }
        let fb = s.feedback(&a, &mine[0], 2, Rating::Down, Some("wrong".into())).await.unwrap();
        let theirs = chorus_core::store::new_id("conv_");
        s.commit(&commit(&b, &theirs, None, Tier::Plus, "b0", 5), None).await.unwrap();
        s.feedback(&b, &theirs, 1, Rating::Up, None).await.unwrap();

        // Export: every conversation with every turn, the feedback and the idempotency records,
        // and the JSON reads back to the same document.
        let e = s.export(&a).await.unwrap();
        assert_eq!(e.conversations.len(), 2, "{name}");
        assert!(e.conversations.iter().all(|c| c.turns.len() == 2), "{name}");
        assert_eq!(e.feedback.len(), 1, "{name}");
        assert_eq!(e.feedback[0].id, fb, "{name}");
        assert_eq!(e.feedback[0].prompt.len(), 3, "{name}: the rated answer's prompt");
        assert_eq!(e.feedback[0].completion, "answer 2", "{name}");
        assert_eq!(e.idempotency_records.len(), 4, "{name}");
        let json = serde_json::to_string(&e).unwrap();
        let back: UserExport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e, "{name}: export round-trips");
        assert!(json.contains("\"role\":\"user\"") && json.contains("\"tier\":\"plus\""), "{name}: {json}");

        // Deleting one conversation takes its turns and idempotency records with it.
        s.delete(&a, &mine[1]).await.unwrap();
        assert!(s.hot().get(&mine[1]).await.unwrap().is_none(), "{name}");
        assert!(s.replay(&a, "a1").await.unwrap().is_none(), "{name}");
        assert!(matches!(s.delete(&a, &mine[1]).await, Err(StoreError::NotFound)), "{name}");

        let erased = s.erase(&a).await.unwrap();
        assert_eq!((erased.conversations, erased.feedback, erased.idempotency_records), (1, 1, 2), "{name}");
        let e = s.export(&a).await.unwrap();
        assert!(e.conversations.is_empty() && e.feedback.is_empty() && e.idempotency_records.is_empty(), "{name}");
        assert!(s.list(&a, 10).await.unwrap().is_empty(), "{name}");
        for id in &mine {
            assert!(s.hot().get(id).await.unwrap().is_none(), "{name}: no hot copy left");
            assert!(matches!(s.load(&a, id).await, Err(StoreError::NotFound)), "{name}");
        }
        let (all, _) = s.feedback_page("", 1000).await.unwrap();
        assert!(all.iter().all(|f| f.owner != a), "{name}: no feedback left in the queue");
        assert!(all.iter().any(|f| f.owner == b), "{name}: other users' feedback stays");
        // Erasing again finds nothing and fails nothing.
        assert_eq!(s.erase(&a).await.unwrap(), chorus_proto::Erased::default(), "{name}");
        assert_eq!(s.export(&b).await.unwrap().conversations.len(), 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_exports_to_jsonl_idempotently() {
    let redis = RedisServer::start();
    for (name, cfg) in setups("feedback", redis.as_ref()) {
        let s = ConversationStore::open(&cfg).await.unwrap();
        let _cleanup = Cleanup(cfg.clone());
        let o = owner("t", "u");
        let id = chorus_core::store::new_id("conv_");
        s.commit(&commit(&o, &id, None, Tier::Free, "r1", 1), None).await.unwrap();
        assert!(matches!(s.feedback(&o, &id, 2, Rating::Up, None).await, Err(StoreError::NotFound)), "{name}");
        let f1 = s.feedback(&o, &id, 1, Rating::Up, Some("great".into())).await.unwrap();
        let out = scratch_dir("fbout").join("feedback.jsonl");
        let st = s.export_feedback(&out).await.unwrap();
        assert_eq!((st.written, st.present), (1, 0), "{name}");
        let st = s.export_feedback(&out).await.unwrap();
        assert_eq!((st.written, st.present), (0, 1), "{name}: a second run adds nothing");
        let f2 = s.feedback(&o, &id, 1, Rating::Down, None).await.unwrap();
        // A run cut off mid-line: the partial line goes, the entry is written whole.
        let mut text = std::fs::read_to_string(&out).unwrap();
        text.push_str("{\"id\":\"half");
        std::fs::write(&out, &text).unwrap();
        let st = s.export_feedback(&out).await.unwrap();
        assert_eq!((st.written, st.present), (1, 1), "{name}");
        let lines: Vec<chorus_core::store::FeedbackLine> =
            std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), [f1.as_str(), f2.as_str()], "{name}");
        assert_eq!(lines[0].completion, "answer 1", "{name}");
        assert_eq!(lines[0].prompt[0].role, Role::User, "{name}");
        assert_eq!(lines[0].comment.as_deref(), Some("great"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_the_durable_tier_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        eprintln!("skipping: no redis-server here");
        return;
    };
    let mut cfg = StoreConfig { hot: HotKind::Redis, op_timeout_ms: 500, ..StoreConfig::default() };
    cfg.path = Some(scratch_dir("outage").join("s.redb"));
    cfg.redis.url = redis.url();
    cfg.redis.prefix = format!("{}:", unique("outage"));
    let s = ConversationStore::open(&cfg).await.unwrap();
    let o = owner("t", "u");
    let id = chorus_core::store::new_id("conv_");
    s.commit(&commit(&o, &id, None, Tier::Free, "r1", 1), None).await.unwrap();
    assert_eq!(s.load(&o, &id).await.unwrap().1, HotRead::Hit);

    redis.stop();
    let started = std::time::Instant::now();
    let (c, read) = s.load(&o, &id).await.unwrap();
    assert_eq!((c.version, read), (1, HotRead::Down));
    assert!(started.elapsed() < Duration::from_secs(3), "a dead hot tier costs at most its timeout");
    // Turns still commit (durably); the hot write fails and is counted.
    s.commit(&commit(&o, &id, Some(1), Tier::Free, "r2", 2), Some(c)).await.unwrap();
    assert!(s.metrics.errors("hot", "put") >= 1);
    assert_eq!(s.load(&o, &id).await.unwrap().0.version, 2);

    redis.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if let Ok((c, HotRead::Miss | HotRead::Hit)) = s.load(&o, &id).await {
            assert_eq!(c.version, 2);
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the hot tier is used again once Redis is back");
    assert_eq!(s.load(&o, &id).await.unwrap().1, HotRead::Hit);
    let page = s.metrics.render();
    assert!(page.contains("chorus_store_hot_lookups_total{result=\"error\"}"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_durable_tier_is_a_typed_error_in_bounded_time() {
    // Nothing listens on the port: the PostgreSQL tier is down from the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = StoreConfig {
        durable: DurableKind::Postgres,
        op_timeout_ms: 300,
        commit_attempts: 2,
        ..StoreConfig::default()
    };
    cfg.postgres.url = format!("host=127.0.0.1 port={port} user=postgres dbname=test");
    let s = ConversationStore::open(&cfg).await.expect("a store whose server is down still opens");
    let o = owner("t", "u");
    let started = std::time::Instant::now();
    assert!(matches!(s.load(&o, "conv_x").await, Err(StoreError::Unavailable { tier: "durable", .. })));
    let e = s.commit(&commit(&o, "conv_x", None, Tier::Free, "r1", 1), None).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { tier: "durable", .. }), "{e}");
    assert_eq!(e.code(), chorus_proto::ErrorCode::StoreUnavailable);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.metrics.counter("commit", "failed"), 1);
}

/// `sslmode=require` really does TLS and verifies the server: the CI PostgreSQL serves TLS with
/// a self-signed certificate nobody trusts here, so the connection is refused for it (without
/// TLS it would succeed, as every other test here shows); a bad `ca_file` names the field.
#[tokio::test]
async fn postgres_tls_verifies_the_server() {
    let bad = StoreConfig {
        durable: DurableKind::Postgres,
        postgres: chorus_core::config::PostgresConfig {
            url: "host=127.0.0.1 user=postgres dbname=test sslmode=require".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        },
        ..StoreConfig::default()
    };
    let e = ConversationStore::open(&bad).await.unwrap_err().to_string();
    assert!(e.contains("store.postgres.ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");

    let Some(url) = postgres_url() else {
        eprintln!("note: no PostgreSQL at 127.0.0.1:5432; TLS to it is not exercised here");
        return;
    };
    let mut cfg = StoreConfig { durable: DurableKind::Postgres, ..StoreConfig::default() };
    cfg.postgres.url = format!("{url} sslmode=require connect_timeout=5");
    cfg.postgres.schema = unique("tls");
    let s = ConversationStore::open(&cfg).await.unwrap();
    let a = Owner::new("t", "u");
    let e = s.list(&a, 5).await.unwrap_err().to_string();
    assert!(
        ["certificate", "UnknownIssuer", "NotValidForName", "does not support TLS", "TLS"]
            .iter()
            .any(|w| e.contains(w)),
        "TLS must be attempted and the server verified: {e}"
    );
}

/// ElastiCache runs Redis with TLS in transit: `rediss://` URLs are accepted (the client is
/// built with rustls; a build without it refuses the scheme).
#[test]
fn rediss_urls_are_supported() {
    redis::Client::open("rediss://:token@127.0.0.1:6380/").unwrap();
}
