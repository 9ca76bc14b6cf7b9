//! What the rate limiter keeps charged once a request ends, on both counter stores: a failure
//! before the first token that was not the caller's (`Unavailable`) and an idempotent repeat
//! (`Replayed`) give back the message and the token reservation; an answer that completed or
//! that the caller cancelled after tokens stays charged.

use chorus_filter_host::{CounterStore, FilterHost, Outcome, Usage};

use crate::common::*;
use crate::filters::ratelimit_host;

const T0: u64 = 1_800_000_000_000;
/// What `request(&[], "hi")` reserves: one prompt token (estimated) and `max_tokens` 100.
const RESERVATION: u64 = 101;

/// Makes a fresh, empty counter store.
type MakeStore = Box<dyn Fn() -> CounterStore>;

/// The stores each case runs on: in-process, and Redis when a server can be had.
fn stores(test: &str) -> Vec<(&'static str, MakeStore)> {
    let mut out: Vec<(&'static str, MakeStore)> = vec![("in-process", Box::new(|| CounterStore::in_process(1000)))];
    match redis_url() {
        Some(url) => {
            let test = test.to_owned();
            out.push(("redis", Box::new(move || CounterStore::redis(&url, &namespace(&test)).unwrap())));
        }
        None => eprintln!("{test}: no redis-server available; in-process only"),
    }
    out
}

/// Requests admitted in a row from `now` until the first refusal, and its code: the caller's
/// remaining quota, spent.
fn quota(host: &FilterHost, now: u64) -> (u64, String) {
    for n in 0..100 {
        let out = host.chain().run(&request(&[], "hi"), now + n);
        if let Some(d) = out.denial {
            return (n, d.code);
        }
    }
    panic!("no limit reached in 100 requests");
}

/// Three messages per window, tokens plenty: the message window binds.
const MESSAGES: [(&str, &str); 3] =
    [("burst.free", "1000/1s"), ("messages.free", "3/3h"), ("tokens.free", "1000000/1d")];
/// Messages unlimited, three reservations' worth of tokens: the token budget binds.
const TOKENS: [(&str, &str); 3] =
    [("burst.free", "1000/1s"), ("messages.free", "unlimited"), ("tokens.free", "303/1d")];

/// The quota left (under each binding limit) after one request that ended with `outcome`.
fn after(store: &dyn Fn() -> CounterStore, outcome: Outcome, usage: Usage) -> [(u64, String); 2] {
    [MESSAGES, TOKENS].map(|config| {
        let host = ratelimit_host(store(), &config);
        let out = host.chain().run(&request(&[], "hi"), T0);
        assert!(out.allowed(), "{:?}", out.denial);
        out.ticket.unwrap().complete(outcome, usage, T0 + 1);
        quota(&host, T0 + 2)
    })
}

fn full() -> [(u64, String); 2] {
    [(3, "rate_limited".into()), (3, "token_budget_exhausted".into())]
}

fn one_spent() -> [(u64, String); 2] {
    [(2, "rate_limited".into()), (2, "token_budget_exhausted".into())]
}

#[test]
fn the_limits_start_full() {
    for (name, store) in stores("full") {
        for config in [MESSAGES, TOKENS] {
            let host = ratelimit_host(store(), &config);
            let out = host.chain().run(&request(&[], "hi"), T0);
            let reserved = out.annotations.iter().find(|(k, _)| k == "ratelimit.reserved_tokens").map(|(_, v)| v);
            assert_eq!(reserved.map(String::as_str), Some(RESERVATION.to_string().as_str()), "{name}");
        }
        let fresh = [MESSAGES, TOKENS].map(|config| quota(&ratelimit_host(store(), &config), T0));
        assert_eq!(fresh, full(), "{name}");
    }
}

#[test]
fn a_failure_before_the_first_token_that_is_not_the_callers_leaves_the_quota_unchanged() {
    for (name, store) in stores("unavailable") {
        // No core could take it, or its fleet was over capacity: the edge reports nothing used.
        assert_eq!(after(&*store, Outcome::Unavailable, Usage::default()), full(), "{name}");
    }
}

#[test]
fn an_idempotent_replay_is_not_charged_again() {
    for (name, store) in stores("replayed") {
        assert_eq!(after(&*store, Outcome::Replayed, Usage::default()), full(), "{name}");
        // Several repeats of one answer cost nothing either.
        let host = ratelimit_host(store(), &MESSAGES);
        for i in 0..5 {
            let out = host.chain().run(&request(&[], "hi"), T0 + i);
            assert!(out.allowed(), "{name}: repeat {i}: {:?}", out.denial);
            out.ticket.unwrap().complete(Outcome::Replayed, Usage::default(), T0 + i);
        }
        assert_eq!(quota(&host, T0 + 10), (3, "rate_limited".into()), "{name}");
    }
}

#[test]
fn completed_and_cancelled_after_tokens_stay_charged() {
    let used = Usage { prompt_tokens: 5, completion_tokens: 15, cached_tokens: 0 };
    for (name, store) in stores("charged") {
        // 20 tokens used of 303: 283 left, two more reservations of 101.
        assert_eq!(after(&*store, Outcome::Completed, used), one_spent(), "{name}: completed");
        assert_eq!(after(&*store, Outcome::Cancelled, used), one_spent(), "{name}: cancelled after tokens");
        // The caller's own failure keeps the message; it used no tokens.
        let failed = after(&*store, Outcome::Failed, Usage::default());
        assert_eq!(failed, [(2, "rate_limited".into()), (3, "token_budget_exhausted".into())], "{name}: failed");
    }
}

#[test]
fn a_request_refused_for_tokens_does_not_spend_a_message() {
    for (name, store) in stores("refused") {
        let config = [("burst.free", "1000/1s"), ("messages.free", "2/3h"), ("tokens.free", "101/1d")];
        let host = ratelimit_host(store(), &config);
        let first = host.chain().run(&request(&[], "hi"), T0);
        assert!(first.allowed(), "{name}");
        let out = host.chain().run(&request(&[], "hi"), T0 + 1);
        assert_eq!(out.denial.unwrap().code, "token_budget_exhausted", "{name}");
        // The first answer used nothing: its tokens come back, its message stays.
        first.ticket.unwrap().complete(Outcome::Completed, Usage::default(), T0 + 2);
        assert_eq!(quota(&host, T0 + 3), (1, "rate_limited".into()), "{name}: the refused one left its message");
    }
}
