//! `cargo fuzz run imports` (see `scripts/fuzz.sh`): the filter host's guest-facing imports and
//! verdict checks, driven by a guest. The hostile test module in `calls` mode reads the
//! request's prompt as a script of host calls (counters, windows, budgets, kv, config, token
//! counts, logs, metrics) with arguments from the fuzzer's bytes, then returns a verdict built
//! from them. Whatever the guest asks, the host must answer or refuse it without a panic, a
//! hang or unbounded memory, and what the chain hands on must respect the host's limits.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chorus_filter_host::builtin::WASM_DIR;
use chorus_filter_host::{
    CounterStore, FilterHost, FilterRequest, HostConfig, Limits, ModuleSource, Outcome, TrustPolicy, Usage,
};
use libfuzzer_sys::fuzz_target;

fn host() -> &'static FilterHost {
    static HOST: OnceLock<FilterHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let wasm = std::fs::read(format!("{WASM_DIR}/chorus_filter_hostile.wasm")).expect("the hostile test module");
        let host = FilterHost::new(HostConfig {
            trust: TrustPolicy { keys: Vec::new(), dev_mode: true },
            counters: CounterStore::in_process(10_000),
            kv: BTreeMap::from([("apikey:x".to_owned(), b"{\"tenant\":\"t\"}".to_vec())]),
            filter_config: BTreeMap::from([(
                "hostile".to_owned(),
                BTreeMap::from([("mode".to_owned(), "calls".to_owned()), ("k".to_owned(), "v".to_owned())]),
            )]),
            ..HostConfig::default()
        })
        .expect("host");
        let source = ModuleSource {
            name: "hostile".into(),
            wasm,
            manifest: "name = \"hostile\"\nversion = \"0.1.0\"\nbudget-ms = 100\ncapabilities = [\"credentials\", \"identity\"]\n"
                .into(),
            signature: None,
            builtin: false,
        };
        host.load(&[source]).expect("the hostile module loads");
        host
    })
}

fuzz_target!(|data: &[u8]| {
    let host = host();
    let req = FilterRequest {
        id: "fuzz".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![("authorization".into(), "Bearer sk-fuzz".into())],
        client_ip: "192.0.2.1".into(),
        region: "fuzz-1".into(),
        model: None,
        prompt_text: String::from_utf8_lossy(data).into_owned(),
        message_count: 1,
        max_tokens: Some(64),
    };
    let out = host.chain().run(&req, 1_800_000_000_000);
    let limits = Limits::default();
    if let Some(d) = &out.denial {
        assert!((400..=599).contains(&d.status), "denial status {}", d.status);
        assert!(d.message.len() <= limits.max_message_bytes, "denial message of {} bytes", d.message.len());
    }
    assert!(out.annotations.len() <= limits.max_total_annotations);
    for (_, value) in &out.set_headers {
        assert!(value.len() <= limits.max_header_bytes && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
    }
    if let Some(ticket) = out.ticket {
        ticket.complete(Outcome::Completed, Usage::default(), 1_800_000_000_001);
    }
});
