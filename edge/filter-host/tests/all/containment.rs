//! Hostile modules are contained: each failure becomes the filter's on-error answer and a
//! metric, and other requests keep being served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_filter_host::{CompletionTicket, FailureKind, HostConfig, LoadError, ModuleSource, OnError, Step};

use crate::common::*;

fn run_echo() -> (chorus_filter_host::ChainOutcome, Arc<chorus_filter_host::FilterHost>) {
    let host = dev_host(HostConfig::default());
    host.load(&[hostile("hostile", "")]).unwrap();
    let outcome = host.chain().run(&request(&[("x-request-id", "r1"), ("x-hostile-mode", "trap")], "hi"), 1_000);
    (outcome, host)
}

fn hostile_with_mode(
    mode: &str,
    extra: &str,
) -> (chorus_filter_host::ChainOutcome, Arc<chorus_filter_host::FilterHost>) {
    let host =
        dev_host(HostConfig { filter_config: config_for("hostile", &[("mode", mode)]), ..HostConfig::default() });
    host.load(&[hostile("hostile", extra)]).unwrap();
    let outcome = host.chain().run(&request(&[], "hi"), 1_000);
    (outcome, host)
}

fn failed_with(outcome: &chorus_filter_host::ChainOutcome, kind: FailureKind) {
    let denial = outcome.denial.as_ref().expect("a failing filter with on-error deny refuses the request");
    assert_eq!((denial.status, denial.code.as_str()), (503, "filter_failed"));
    match &outcome.steps[0].step {
        Step::Failed { kind: k, policy, .. } => assert_eq!((*k, *policy), (kind, OnError::Deny)),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn echo_sees_only_allow_listed_headers_and_a_frozen_clock() {
    let (outcome, _host) = run_echo();
    assert!(outcome.allowed(), "{:?}", outcome.denial);
    let get = |k: &str| outcome.annotations.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("hostile.headers").as_deref(), Some("x-request-id"));
    assert_eq!(get("hostile.now").as_deref(), Some("1000"));

    let host = dev_host(HostConfig::default());
    host.load(&[hostile("hostile", "")]).unwrap();
    let req =
        request(&[("Authorization", "Bearer secret"), ("x-api-key", "k"), ("Cookie", "c"), ("accept", "*/*")], "");
    let outcome = host.chain().run(&req, 5);
    let headers = outcome.annotations.iter().find(|(k, _)| k == "hostile.headers").unwrap().1.clone();
    assert_eq!(headers, "accept", "credentials reach only filters granted `credentials`");

    host.load(&[hostile("hostile", "capabilities = [\"credentials\"]")]).unwrap();
    let outcome = host.chain().run(&req, 5);
    let headers = outcome.annotations.iter().find(|(k, _)| k == "hostile.headers").unwrap().1.clone();
    assert_eq!(headers, "authorization,x-api-key,cookie,accept");
}

#[test]
fn infinite_loop_hits_the_deadline_while_other_requests_are_served() {
    let mut visible: Vec<String> =
        chorus_filter_host::chain::DEFAULT_VISIBLE_HEADERS.iter().map(|h| h.to_string()).collect();
    visible.push("x-hostile-mode".into());
    let host = dev_host(HostConfig { visible_headers: visible, ..HostConfig::default() });
    host.load(&[hostile("hostile", "budget-ms = 10")]).unwrap();
    let looping = {
        let chain = host.chain();
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = chain.run(&request(&[("x-hostile-mode", "loop")], ""), 1);
            (out, started.elapsed())
        })
    };
    // Requests from other clients keep flowing while the loop spins.
    for _ in 0..20 {
        assert!(host.chain().run(&request(&[], "hello"), 2).allowed());
    }
    let (out, took) = looping.join().unwrap();
    failed_with(&out, FailureKind::Deadline);
    assert!(took < Duration::from_secs(2), "deadline of 10 ms took {took:?}");
    assert!(host.metrics().render().contains("chorus_filter_failures_total{filter=\"hostile\",kind=\"deadline\"} 1"));
}

#[test]
fn unbounded_memory_growth_is_stopped_at_the_cap() {
    let (out, host) = hostile_with_mode("grow", "memory-mib = 8\nbudget-ms = 100");
    failed_with(&out, FailureKind::Memory);
    assert!(host.chain().run(&request(&[], "x"), 1).denial.is_some(), "still failing, still contained");
}

#[test]
fn a_trap_is_a_failure() {
    let (out, _) = hostile_with_mode("trap", "");
    failed_with(&out, FailureKind::Trap);
}

#[test]
fn a_huge_verdict_is_refused() {
    let (out, _) = hostile_with_mode("huge", "memory-mib = 16\nbudget-ms = 100");
    failed_with(&out, FailureKind::Oversized);
}

#[test]
fn identity_and_reserved_headers_are_protected() {
    let (out, _) = hostile_with_mode("spoof", "");
    failed_with(&out, FailureKind::InvalidVerdict);
    assert_eq!(out.identity.tier, None);
    let (out, _) = hostile_with_mode("reserved", "");
    failed_with(&out, FailureKind::InvalidVerdict);
    assert!(out.set_headers.is_empty());
}

#[test]
fn on_error_allow_skips_a_failing_filter() {
    let (out, _) = hostile_with_mode("trap", "on-error = \"allow\"");
    assert!(out.allowed());
    assert!(matches!(out.steps[0].step, Step::Failed { kind: FailureKind::Trap, policy: OnError::Allow, .. }));
    let ticket: Option<CompletionTicket> = out.ticket;
    assert!(ticket.is_some());
}

#[test]
fn a_module_importing_sockets_is_refused_at_load() {
    let host = dev_host(HostConfig::default());
    host.load(&[hostile("hostile", "")]).unwrap();
    let src = ModuleSource {
        name: "sockets".into(),
        wasm: wasm("chorus_filter_sockets.wasm"),
        manifest: manifest("sockets", ""),
        signature: None,
        builtin: false,
    };
    let err = host.load(&[src]).unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("wasi:sockets"), "{err}");
    assert_eq!(host.chain().names(), ["hostile"], "the running chain is untouched");
}

#[test]
fn garbage_is_not_a_component() {
    let host = dev_host(HostConfig::default());
    let src = ModuleSource {
        name: "junk".into(),
        wasm: b"\0asm garbage".to_vec(),
        manifest: manifest("junk", ""),
        signature: None,
        builtin: false,
    };
    assert!(matches!(host.load(&[src]), Err(LoadError::Compile { .. })));
}
