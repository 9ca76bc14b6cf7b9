use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chorus_filter_host::builtin::WASM_DIR;
use chorus_filter_host::{FilterHost, FilterRequest, HostConfig, ModuleSource, TrustPolicy};

/// The component a crate in wasm-filters/ built to.
pub fn wasm(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(WASM_DIR).join(file)).unwrap_or_else(|e| panic!("{WASM_DIR}/{file}: {e}"))
}

pub fn manifest(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nversion = \"0.1.0\"\n{extra}\n")
}

/// A hostile filter module with the given manifest lines (dev mode: unsigned). Unless the test
/// sets one, the time budget is generous: tests run an unoptimized host on a loaded machine.
pub fn hostile(name: &str, extra: &str) -> ModuleSource {
    let budget = if extra.contains("budget-ms") { "" } else { "budget-ms = 100\n" };
    ModuleSource {
        name: name.into(),
        wasm: wasm("chorus_filter_hostile.wasm"),
        manifest: manifest(name, &format!("{budget}{extra}")),
        signature: None,
        builtin: false,
    }
}

pub fn dev_host(config: HostConfig) -> Arc<FilterHost> {
    Arc::new(FilterHost::new(HostConfig { trust: TrustPolicy { keys: vec![], dev_mode: true }, ..config }).unwrap())
}

pub fn config_for(filter: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
    let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    BTreeMap::from([(filter.to_owned(), map)])
}

pub fn request(headers: &[(&str, &str)], prompt: &str) -> FilterRequest {
    FilterRequest {
        id: "req-1".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        client_ip: "203.0.113.7".into(),
        region: "test-1".into(),
        model: None,
        prompt_text: prompt.into(),
        message_count: 1,
        max_tokens: Some(100),
    }
}

/// A Redis URL: the local server when one answers, else a private `redis-server` on a free
/// port that exits with this test process. `None` (the test is skipped with a note) only when
/// neither is possible.
pub fn redis_url() -> Option<String> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        if TcpStream::connect_timeout(&"127.0.0.1:6379".parse().unwrap(), Duration::from_millis(200)).is_ok() {
            return Some("redis://127.0.0.1:6379/".into());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let script = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null & r=$!; \
             while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill $r",
            std::process::id()
        );
        std::process::Command::new("sh").args(["-c", &script]).spawn().ok()?;
        for _ in 0..50 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(format!("redis://127.0.0.1:{port}/"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .clone()
}

/// A key prefix no other test run shares.
pub fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("chorus-test:{}:{nanos}:{test}:", std::process::id())
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(namespace(tag).replace(':', "-"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
