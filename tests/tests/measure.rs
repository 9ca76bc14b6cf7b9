//! The measuring tools against a started deployment (a core with the real model behind an
//! edge with the shipped filters): `chorus bench load` for a few seconds, open and closed
//! loop, and `chorus eval`'s level-1 checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chorus_bench::client::Endpoint;
use chorus_bench::dist::Dist;
use chorus_bench::eval::{EvalConfig, EvalSpec};
use chorus_bench::load::{LoadSpec, TierKey};
use chorus_bench::report::{Mode, Report, RunReport, default_slo};
use chorus_bench::workload::Shape;
use chorus_tests::{FREE_KEY, KEY, PLUS_KEY, System, TEAM_KEY, core_config, edge_config, site, start_core, start_edge};

fn keys() -> BTreeMap<String, String> {
    [("free", FREE_KEY), ("team", TEAM_KEY), ("plus", PLUS_KEY), ("enterprise", KEY)]
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .collect()
}

fn endpoint(sys: &System) -> Endpoint {
    Endpoint::parse("--url", &sys.url("/v1")).expect("endpoint")
}

fn spec(sys: &System) -> LoadSpec {
    LoadSpec {
        endpoint: endpoint(sys),
        model: "chorus".into(),
        tiers: keys().into_iter().map(|(tier, k)| TierKey { tier, key: Some(k), weight: 1.0 }).collect(),
        shape: Shape {
            system_words: 200,
            prompt_tokens: Dist::parse("p", "uniform:8-24", 100).unwrap(),
            output_tokens: Dist::parse("o", "uniform:4-12", 100).unwrap(),
            turns: Dist::parse("t", "uniform:1-3", 10).unwrap(),
            prompts: vec![],
        },
        duration: Duration::from_secs(3),
        max_requests: 1000,
        think: Duration::ZERO,
        ignore_eos: true,
        temperature: 0.0,
        timeout: Duration::from_secs(60),
        retry_429: 2,
        metrics: None,
        seed: 7,
        progress: false,
        max_in_flight: 1000,
        slo: default_slo(),
    }
}

/// Everything a report says must add up.
fn consistent(r: &RunReport) {
    assert!(r.sent > 0, "{} sent nothing", r.name);
    assert_eq!(r.sent, r.answered + r.errors, "sent = answered + errors");
    assert_eq!(r.sent as usize, r.records.len());
    assert_eq!(r.tiers.values().map(|t| t.sent).sum::<u64>(), r.sent);
    assert_eq!(r.tiers.values().map(|t| t.answered).sum::<u64>(), r.answered);
    assert_eq!(r.errors_by_status.values().sum::<u64>(), r.errors);
    assert_eq!(r.errors_by_code.values().sum::<u64>(), r.errors);
    assert_eq!(r.timeline.iter().map(|w| w.sent).sum::<u64>(), r.sent);
    assert!(r.answered > 0, "{}: nothing answered: {:?}", r.name, r.errors_by_code);
    assert!(
        !r.errors_by_code.contains_key("content_policy"),
        "generated turns pass the safety gate: {:?}",
        r.errors_by_code
    );
    for rec in r.records.iter().filter(|x| x.answered()) {
        let ttft = rec.ttft_ms.expect("an answer has a first token");
        assert!(ttft > 0.0 && ttft <= rec.e2e_ms, "{rec:?}");
        assert!(rec.output_tokens > 0 && rec.output_tokens <= 12, "ignore_eos and max_tokens: {rec:?}");
        assert!(rec.prompt_tokens.is_some_and(|p| p > 200), "the shared system prompt counts: {rec:?}");
        // Routing, seen from the client: the fleet each answer names.
        let want = if rec.tier == "free" || rec.tier == "team" { "mini" } else { "flagship" };
        assert_eq!(rec.fleet.as_deref(), Some(want), "{rec:?}");
    }
    let all = &r.overall;
    assert_eq!(all.ttft_ms.count as u64, r.answered);
    assert!(all.ttft_ms.p50 <= all.ttft_ms.p95 && all.ttft_ms.p95 <= all.ttft_ms.p99);
    assert!(all.e2e_ms.p50 >= all.ttft_ms.p50);
    assert!(all.output_tok_s > 0.0);
    assert!(all.itl_ms.count > 0, "streamed answers have inter-token gaps");
    assert!(!r.slo.is_empty(), "every tier that sent gets SLO verdicts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_runs_open_and_closed_loop_and_its_json_adds_up() {
    let sys = System::up("measure-load").await;
    let open = chorus_bench::load::run(spec(&sys), Mode::Open { rate: 4.0 }).await;
    consistent(&open);
    // Every session shares one system prompt, and sessions go on: the server's prefix cache
    // hits, read from the edge's /metrics, and so do the answers' own usage figures.
    assert!(open.server.scrapes >= 2, "{:?}", open.server);
    let hit = open.server.prefix_cache_hit_rate.expect("the edge's token counters");
    assert!(hit > 0.2 && hit <= 1.0, "hit rate {hit}");
    assert!(open.overall.cached_fraction.is_some_and(|c| c > 0.2), "{:?}", open.overall.cached_fraction);
    assert!(open.server.queue_depth.is_some(), "queue depth from the cores' load reports");
    assert!(open.sent >= 4 && open.sent <= 40, "about 4/s for 3 s: {}", open.sent);

    let mut closed_spec = spec(&sys);
    closed_spec.duration = Duration::from_secs(60);
    closed_spec.max_requests = 6;
    let closed = chorus_bench::load::run(closed_spec, Mode::Closed { users: 2, think_ms: 0 }).await;
    consistent(&closed);
    assert_eq!(closed.sent, 6, "the request bound holds");

    // The JSON document round-trips, charts render, and compare reads both runs.
    let report = Report {
        tool: "test".into(),
        label: "chorus".into(),
        url: sys.url("/v1"),
        model: "chorus".into(),
        workload: serde_json::Value::Null,
        slo_targets: default_slo(),
        runs: vec![open, closed],
    };
    let text = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back.runs[0].sent, report.runs[0].sent);
    assert_eq!(back.runs[1].tiers.len(), report.runs[1].tiers.len());
    let svg = chorus_bench::chart::load_chart(&back);
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..80.min(svg.len())]);
    assert!(svg.contains("TTFT CDF") && svg.contains("over time"));
    let cmp = chorus_bench::report::compare(&report, &back);
    assert!(cmp.contains("1.00×"), "{cmp}");
    let plan = chorus_bench::plan::capacity_from(&report, "test").expect("capacity");
    assert!(plan.answers_per_s > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_counts_429s_and_says_whether_retry_after_was_honoured() {
    let sys = System::up("measure-429").await;
    // Free tier alone, 2 requests a second allowed, offered 12/s.
    let mut s = spec(&sys);
    s.tiers = vec![TierKey { tier: "free".into(), key: Some(FREE_KEY.into()), weight: 1.0 }];
    s.duration = Duration::from_secs(2);
    s.retry_429 = 0;
    s.shape.output_tokens = Dist::Fixed { value: 2 };
    let r = chorus_bench::load::run(s, Mode::Open { rate: 12.0 }).await;
    assert_eq!(r.sent, r.answered + r.errors);
    let limited = r.errors_by_status.get("429").copied().unwrap_or(0);
    assert!(limited > 0, "{:?}", r.errors_by_status);
    assert_eq!(r.rate_limited.responses, limited);
    assert_eq!(r.rate_limited.with_retry_after, limited, "every 429 names Retry-After");
    assert!(!r.rate_limited.honoured);
    assert!(chorus_bench::report::render_run(&r).contains("not honoured"));
}

fn shared(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/safety").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_level_1_checks_pass_on_a_deployment_and_fail_when_they_should() {
    let core = start_core(core_config("measure-eval")).await;
    let mut cfg = edge_config(vec![site("core-1", &core)]);
    cfg.debug.echo_prompt = true;
    let sys = System { edge: start_edge(cfg).await, core };
    let spec = EvalSpec {
        endpoint: endpoint(&sys),
        model: "chorus".into(),
        keys: keys(),
        adversarial: chorus_bench::eval::load_set(&shared("adversarial.jsonl")).unwrap(),
        benign: chorus_bench::eval::load_set(&shared("benign.jsonl")).unwrap(),
        config: EvalConfig { routing_samples: 2, sessions: 2, conversations: 2, ..EvalConfig::default() },
        timeout: Duration::from_secs(120),
    };
    let report = chorus_bench::eval::run(spec.clone()).await;
    let table = chorus_bench::eval::render(&report);
    println!("{table}");
    assert!(report.passed, "{table}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "routing",
            "prefix_cache",
            "safety_adversarial_blocked",
            "safety_benign_answered",
            "refusal_rate_sensitive",
            "multi_turn_context"
        ]
    );
    assert!(report.checks.iter().all(|c| c.samples > 0), "{table}");
    // 4 + 6 turns: turns 4.. of each are checked.
    assert_eq!(report.checks[5].samples, 1 + 3);

    // The checks can fail: a wrong route, and an edge that does not echo prompts.
    let mut wrong = spec.clone();
    wrong.config.checks = vec!["routing".into()];
    wrong.config.routes.insert("free".into(), "flagship".into());
    let r = chorus_bench::eval::run(wrong).await;
    assert!(!r.passed);
    assert!(r.checks[0].detail.contains("free → mini (want flagship)"), "{}", r.checks[0].detail);

    let plain = System::up("measure-eval-plain").await;
    let mut no_echo = spec;
    no_echo.endpoint = endpoint(&plain);
    no_echo.config.checks = vec!["multi_turn".into()];
    no_echo.config.conversations = 1;
    let r = chorus_bench::eval::run(no_echo).await;
    assert!(!r.passed);
    assert!(
        r.checks[0].detail.contains("x-chorus-echo-prompt") || r.checks[0].detail.contains("echo"),
        "{}",
        r.checks[0].detail
    );
}
