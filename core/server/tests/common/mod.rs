//! Helpers shared by the core's integration tests: a core in this process and its clients
//! ([`serving`]), scratch paths, a private Redis server that a test can stop and start again,
//! and the CI machine's PostgreSQL when it answers.

#![allow(dead_code)]

pub mod serving;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp directory.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("chorus-core-{tag}-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A name no other test or run shares (Redis prefixes, PostgreSQL schemas).
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t_{tag}_{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// A `redis-server` of this test's own on a free port, so the test can stop it.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// `None` (the caller skips with a note) only when no `redis-server` can run here; CI
    /// installs one.
    pub fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut s = Self { port, child: None };
        s.spawn().then_some(s)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (its data is gone: it keeps none on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CI machine's PostgreSQL (trust auth, database `test`) when it answers.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("CHORUS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_millis(300)).ok()?;
    Some(url)
}

/// Drops a test's PostgreSQL schema (the CI database is shared across runs).
pub async fn drop_schema(cfg: &chorus_core::config::StoreConfig) {
    if cfg.durable != chorus_core::config::DurableKind::Postgres {
        return;
    }
    if let Ok((client, conn)) = tokio_postgres::connect(&cfg.postgres.url, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", cfg.postgres.schema)).await;
    }
}
