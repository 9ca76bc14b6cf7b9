//! A core in this process on the real model, and the clients that talk to it: the model and
//! the development PKI once per test binary, a config on free ports, QUIC and HTTP clients.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chorus_core::config::{CoreConfig, FleetConfig};
use chorus_core::tls::DevPki;
use chorus_core::{Core, RunningCore, fleet};
use chorus_engine::engine::{Engine, EngineOptions};
use chorus_proto::quic::CoreClient;
use chorus_proto::{Generate, Message, Role, Sampling, Tier};

/// The model, loaded once per test binary.
pub fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = chorus_engine::model_store::ensure(chorus_engine::model_store::DEFAULT_MODEL, &mut |_| {})
            .expect("the test model can be fetched (pip) or is cached");
        Arc::new(Engine::load(&path, &EngineOptions { threads: 2, ..Default::default() }).expect("model loads"))
    })
    .clone()
}

/// A fresh path under the system temp directory (removed by the OS, not the test).
pub fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("chorus-core-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub fn pki() -> &'static DevPki {
    static P: OnceLock<DevPki> = OnceLock::new();
    P.get_or_init(|| chorus_core::tls::mint_dev("test CA", &["localhost".into()]).unwrap())
}

pub fn base_config() -> CoreConfig {
    let mut c = CoreConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        load_report_ms: 50,
        ..CoreConfig::default()
    };
    c.store.path = Some(scratch("quic.redb"));
    for f in c.fleets.values_mut() {
        *f = FleetConfig { kv_tokens: 8192, ..FleetConfig::default() };
    }
    c
}

pub async fn start(cfg: CoreConfig) -> RunningCore {
    cfg.validate().unwrap();
    let fleets = fleet::start_fleets(&cfg, &mut |_, _| Ok(engine())).unwrap();
    let store = chorus_core::open_store(&cfg).await.unwrap();
    let core = Core::new(cfg, fleets, store);
    chorus_core::serve(core, &pki().core_identity().unwrap()).await.unwrap()
}

pub async fn connect(addr: SocketAddr) -> CoreClient {
    CoreClient::connect(addr, "localhost", &pki().edge_identity().unwrap()).await.unwrap()
}

pub fn generate(tier: Tier, text: &str, max_tokens: u32) -> Generate {
    Generate {
        request_id: "req".into(),
        tenant: "tenant-a".into(),
        user: "user-1".into(),
        tier,
        conversation: chorus_proto::ConversationRef::Stateless,
        messages: vec![Message { role: Role::User, content: text.into() }],
        sampling: Sampling { temperature: Some(0.0), ..Sampling::default() },
        max_tokens,
        ..Generate::default()
    }
}

pub fn long(tier: Tier, max_tokens: u32) -> Generate {
    let mut g = generate(tier, "Count slowly from one to one thousand.", max_tokens);
    g.sampling.ignore_eos = true;
    g
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default())
}

/// Polls until `f` holds or 10 s pass.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
