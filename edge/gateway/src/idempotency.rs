//! Idempotency records, in-process (the default) or in Redis (shared by every edge of a
//! deployment). A record is claimed when a request with an `Idempotency-Key`
//! starts (`running`, naming the edge and the answer), replaced by the finished answer's events
//! (`done`, kept `idempotency_ttl_secs`), or removed when the answer failed so a retry can
//! generate again. Keys are scoped by the caller's tenant and user (hashed), so one user's key
//! never meets another's and a user's erasure can find all of theirs.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::StateConfig;
use crate::error::ApiError;
use crate::run::RunEvent;

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// The key is ours: generate.
    Fresh,
    /// Someone is answering it: on `edge`, as the answer `run`.
    Running { edge: String, run: String },
    /// It was answered (as the answer `run`): replay these events.
    Finished { run: String, events: Vec<RunEvent> },
    /// The key was used with a different request body.
    Mismatch,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// SHA-256 of the request body.
    fp: String,
    edge: String,
    run: String,
    #[serde(default)]
    events: Option<Vec<RunEvent>>,
}

/// The hash that scopes a caller's records.
pub fn scope(tenant: &str, user: &str) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(user.as_bytes());
    hex(&h.finalize()[..16])
}

/// SHA-256, hex.
pub fn fingerprint(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// In-process or Redis.
#[derive(Debug)]
pub struct IdempotencyStore {
    backend: Backend,
    ttl: Duration,
    /// How long a `running` claim lives without being finished: the answer's deadline and a
    /// margin (an edge that died mid-answer must not hold the key for a day).
    running_ttl: Duration,
}

#[derive(Debug)]
enum Backend {
    Memory(Mutex<Memory>),
    /// The client is boxed: with TLS support it is several times the in-process variant.
    Redis {
        client: Box<redis::Client>,
        conn: OnceCell<redis::aio::ConnectionManager>,
        prefix: String,
    },
}

#[derive(Debug, Default)]
struct Memory {
    map: HashMap<String, (Record, Instant)>,
    order: VecDeque<String>,
    max: usize,
}

impl Memory {
    fn get(&mut self, k: &str) -> Option<Record> {
        match self.map.get(k) {
            Some((r, exp)) if *exp > Instant::now() => Some(r.clone()),
            Some(_) => {
                self.map.remove(k);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, k: String, r: Record, ttl: Duration) {
        if self.map.insert(k.clone(), (r, Instant::now() + ttl)).is_none() {
            self.order.push_back(k);
        }
        // Evict the oldest finished records; a running claim is never evicted (that would let
        // a retry generate a second time).
        let mut spared = 0;
        while self.map.len() > self.max && spared < self.order.len() {
            let Some(old) = self.order.pop_front() else { break };
            match self.map.get(&old) {
                Some((r, _)) if r.events.is_none() => {
                    self.order.push_back(old);
                    spared += 1;
                }
                _ => {
                    self.map.remove(&old);
                }
            }
        }
        // Forget order entries of records already removed, so `order` stays bounded too.
        if self.order.len() > 2 * self.max.max(1) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

impl IdempotencyStore {
    pub fn open(cfg: &StateConfig, answer_deadline: Duration) -> Result<Self, ApiError> {
        let ttl = Duration::from_secs(cfg.idempotency_ttl_secs.max(1));
        let running_ttl = answer_deadline + Duration::from_secs(60);
        let backend = match &cfg.redis {
            None => Backend::Memory(Mutex::new(Memory { max: cfg.max_records.max(1), ..Memory::default() })),
            Some(url) => Backend::Redis {
                client: Box::new(redis::Client::open(url.as_str()).map_err(|e| ApiError::State(e.to_string()))?),
                conn: OnceCell::new(),
                prefix: cfg.prefix.clone(),
            },
        };
        Ok(Self { backend, ttl, running_ttl })
    }

    fn key(prefix: &str, scope: &str, key: &str) -> String {
        format!("{prefix}:idem:{scope}:{}", fingerprint(key.as_bytes()))
    }

    async fn redis(&self) -> Result<(redis::aio::ConnectionManager, &str), ApiError> {
        let Backend::Redis { client, conn, prefix } = &self.backend else { unreachable!("redis() on memory") };
        let c = conn
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                client.get_connection_manager_with_config(cfg).await
            })
            .await
            .map_err(|e| ApiError::State(e.to_string()))?;
        Ok((c.clone(), prefix))
    }

    /// Claims `key` for a new answer `run` on `edge`, or says who has it.
    pub async fn claim(&self, scope: &str, key: &str, fp: &str, edge: &str, run: &str) -> Result<Claim, ApiError> {
        let fresh = Record { fp: fp.into(), edge: edge.into(), run: run.into(), events: None };
        let existing = match &self.backend {
            Backend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let k = Self::key("", scope, key);
                match m.get(&k) {
                    Some(r) => r,
                    None => {
                        m.put(k, fresh, self.running_ttl);
                        return Ok(Claim::Fresh);
                    }
                }
            }
            Backend::Redis { .. } => {
                let (mut c, prefix) = self.redis().await?;
                let k = Self::key(prefix, scope, key);
                if self.set_nx(&mut c, &k, &fresh).await? {
                    return Ok(Claim::Fresh);
                }
                let got: Option<String> = c.get(&k).await.map_err(|e| ApiError::State(e.to_string()))?;
                match got {
                    Some(g) => serde_json::from_str::<Record>(&g)
                        .map_err(|e| ApiError::State(format!("unreadable idempotency record: {e}")))?,
                    // It expired between the two commands: the key is free again, once.
                    None => {
                        return Ok(if self.set_nx(&mut c, &k, &fresh).await? {
                            Claim::Fresh
                        } else {
                            Claim::Running { edge: String::new(), run: String::new() }
                        });
                    }
                }
            }
        };
        if existing.fp != fp {
            return Ok(Claim::Mismatch);
        }
        Ok(match existing.events {
            Some(events) => Claim::Finished { run: existing.run, events },
            None => Claim::Running { edge: existing.edge, run: existing.run },
        })
    }

    /// `SET key record NX EX running_ttl`: whether the key was free.
    async fn set_nx(&self, c: &mut redis::aio::ConnectionManager, k: &str, r: &Record) -> Result<bool, ApiError> {
        let body = serde_json::to_string(r).map_err(|e| ApiError::State(e.to_string()))?;
        let set: Option<String> = redis::cmd("SET")
            .arg(k)
            .arg(body)
            .arg("NX")
            .arg("EX")
            .arg(self.running_ttl.as_secs())
            .query_async(c)
            .await
            .map_err(|e| ApiError::State(e.to_string()))?;
        Ok(set.is_some())
    }

    /// Records the finished answer for replay.
    pub async fn finish(&self, scope: &str, key: &str, fp: &str, edge: &str, run: &str, events: Vec<RunEvent>) {
        let r = Record { fp: fp.into(), edge: edge.into(), run: run.into(), events: Some(events) };
        match &self.backend {
            Backend::Memory(m) => {
                m.lock().unwrap_or_else(|e| e.into_inner()).put(Self::key("", scope, key), r, self.ttl);
            }
            Backend::Redis { .. } => {
                let res = async {
                    let (mut c, prefix) = self.redis().await?;
                    let body = serde_json::to_string(&r).map_err(|e| ApiError::State(e.to_string()))?;
                    let _: () = c
                        .set_ex(Self::key(prefix, scope, key), body, self.ttl.as_secs())
                        .await
                        .map_err(|e| ApiError::State(e.to_string()))?;
                    Ok::<_, ApiError>(())
                }
                .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "could not record an idempotent answer; a retry will generate again");
                }
            }
        }
    }

    /// Gives the key up (the answer failed): a retry generates again.
    pub async fn release(&self, scope: &str, key: &str) {
        match &self.backend {
            Backend::Memory(m) => {
                m.lock().unwrap_or_else(|e| e.into_inner()).map.remove(&Self::key("", scope, key));
            }
            Backend::Redis { .. } => {
                if let Ok((mut c, prefix)) = self.redis().await {
                    let _: Result<(), _> = c.del(Self::key(prefix, scope, key)).await;
                }
            }
        }
    }

    /// Removes every record of a caller (user erasure); returns how many.
    pub async fn erase(&self, scope: &str) -> Result<u64, ApiError> {
        match &self.backend {
            Backend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let prefix = format!(":idem:{scope}:");
                let before = m.map.len();
                m.map.retain(|k, _| !k.starts_with(&prefix));
                Ok((before - m.map.len()) as u64)
            }
            Backend::Redis { .. } => {
                let (mut c, prefix) = self.redis().await?;
                let pattern = format!("{prefix}:idem:{scope}:*");
                let mut cursor: u64 = 0;
                let mut n = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut c)
                        .await
                        .map_err(|e| ApiError::State(e.to_string()))?;
                    if !keys.is_empty() {
                        let k: u64 = c.del(&keys).await.map_err(|e| ApiError::State(e.to_string()))?;
                        n += k;
                    }
                    if next == 0 {
                        return Ok(n);
                    }
                    cursor = next;
                }
            }
        }
    }
}
