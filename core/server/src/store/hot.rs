//! The hot tier: recent conversations with a TTL, in process (an LRU) or in Redis, and the
//! Redis feedback stream. A copy is only ever replaced by a newer version, and readers check
//! the version against the durable tier anyway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Conversation, Feedback, Owner, Result, StoreError, decode, encode};
use crate::config::RedisConfig;

/// The hot tier.
#[derive(Debug)]
pub enum Hot {
    Memory(Memory),
    /// Boxed: with TLS support the client is several times the in-process variant.
    Redis(Box<Redis>),
}

impl Hot {
    pub fn memory(capacity: usize, ttl: Duration) -> Self {
        Hot::Memory(Memory { capacity, ttl, inner: Mutex::new(Lru::default()) })
    }

    pub fn redis(cfg: &RedisConfig, ttl: Duration, timeout: Duration) -> Result<Self> {
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| StoreError::hot(format!("store.redis.url: {e}")))?;
        Ok(Hot::Redis(Box::new(Redis {
            client,
            prefix: cfg.prefix.clone(),
            ttl,
            timeout,
            slots: (0..cfg.pool).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        })))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Hot::Memory(_) => "memory",
            Hot::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        match self {
            Hot::Memory(m) => Ok(m.get(id)),
            Hot::Redis(r) => r.get(id).await,
        }
    }

    pub async fn put(&self, c: &Conversation) -> Result<()> {
        match self {
            Hot::Memory(m) => {
                m.put(c);
                Ok(())
            }
            Hot::Redis(r) => r.put(c).await,
        }
    }

    pub async fn delete(&self, ids: &[String]) -> Result<()> {
        match self {
            Hot::Memory(m) => {
                m.delete(ids);
                Ok(())
            }
            Hot::Redis(r) => r.delete(ids).await,
        }
    }

    pub async fn feedback_append(&self, f: &Feedback) -> Result<()> {
        match self {
            Hot::Redis(r) => r.feedback_append(f).await,
            Hot::Memory(_) => Err(StoreError::hot("the in-process hot tier keeps no feedback stream")),
        }
    }

    /// Stream entries from `from` (an XRANGE start), `owner`'s only when given, at most `limit`.
    pub async fn feedback_scan(
        &self,
        owner: Option<&Owner>,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Feedback)>> {
        match self {
            Hot::Redis(r) => r.feedback_scan(owner, from, limit).await,
            Hot::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Deletes `owner`'s stream entries; returns how many.
    pub async fn feedback_erase(&self, owner: &Owner) -> Result<u64> {
        match self {
            Hot::Redis(r) => r.feedback_erase(owner).await,
            Hot::Memory(_) => Ok(0),
        }
    }
}

/// An LRU with a TTL per entry.
#[derive(Debug, Default)]
struct Lru {
    map: HashMap<String, (u64, Instant, std::sync::Arc<Conversation>)>,
    /// Use order: tick → id.
    order: BTreeMap<u64, String>,
    tick: u64,
}

/// The in-process hot tier.
#[derive(Debug)]
pub struct Memory {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Lru>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Option<Conversation> {
        let mut l = self.lock();
        let l = &mut *l;
        let (tick, expires, c) = l.map.get_mut(id)?;
        if *expires <= Instant::now() {
            let t = *tick;
            l.order.remove(&t);
            l.map.remove(id);
            return None;
        }
        l.order.remove(tick);
        l.tick += 1;
        *tick = l.tick;
        l.order.insert(l.tick, id.to_string());
        Some((**c).clone())
    }

    fn put(&self, c: &Conversation) {
        let mut l = self.lock();
        let l = &mut *l;
        if let Some((tick, _, old)) = l.map.get(&c.id) {
            if old.version > c.version {
                return;
            }
            let t = *tick;
            l.order.remove(&t);
        }
        l.tick += 1;
        let tick = l.tick;
        l.order.insert(tick, c.id.clone());
        l.map.insert(c.id.clone(), (tick, Instant::now() + self.ttl, std::sync::Arc::new(c.clone())));
        while l.map.len() > self.capacity {
            let Some((_, id)) = l.order.pop_first() else { break };
            l.map.remove(&id);
        }
    }

    fn delete(&self, ids: &[String]) {
        let mut l = self.lock();
        for id in ids {
            if let Some((tick, _, _)) = l.map.remove(id) {
                l.order.remove(&tick);
            }
        }
    }
}

/// Replaces the copy only when the new version is higher, and (re)sets the TTL.
const PUT_IF_NEWER: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if v and tonumber(v) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'body', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// The Redis hot tier: a few multiplexed connections, made lazily and remade after a failure,
/// so a core starts and serves (from the durable tier) while Redis is down.
pub struct Redis {
    client: redis::Client,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    slots: Vec<tokio::sync::Mutex<Option<ConnectionManager>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.prefix).field("pool", &self.slots.len()).finish()
    }
}

/// An XRANGE entry: its id and its field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn re(e: redis::RedisError) -> StoreError {
    StoreError::hot(e)
}

impl Redis {
    fn key(&self, id: &str) -> String {
        format!("{}conv:{id}", self.prefix)
    }

    fn stream(&self) -> String {
        format!("{}feedback", self.prefix)
    }

    /// A connection (a clone of a pooled multiplexed connection).
    async fn conn(&self) -> Result<ConnectionManager> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let c = ConnectionManager::new_with_config(self.client.clone(), cfg).await.map_err(re)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn get(&self, id: &str) -> Result<Option<Conversation>> {
        let mut c = self.conn().await?;
        let body: Option<Vec<u8>> =
            redis::cmd("HGET").arg(self.key(id)).arg("body").query_async(&mut c).await.map_err(re)?;
        body.map(|b| decode("hot copy", &b)).transpose()
    }

    async fn put(&self, conv: &Conversation) -> Result<()> {
        let mut c = self.conn().await?;
        let _: i64 = redis::Script::new(PUT_IF_NEWER)
            .key(self.key(&conv.id))
            .arg(conv.version)
            .arg(encode(conv))
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(re)?;
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<()> {
        let mut c = self.conn().await?;
        for chunk in ids.chunks(256) {
            let keys: Vec<String> = chunk.iter().map(|id| self.key(id)).collect();
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut c).await.map_err(re)?;
        }
        Ok(())
    }

    async fn feedback_append(&self, f: &Feedback) -> Result<()> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("XADD")
            .arg(self.stream())
            .arg("*")
            .arg("tenant")
            .arg(&f.owner.tenant)
            .arg("user")
            .arg(&f.owner.user)
            .arg("body")
            .arg(encode(f))
            .query_async(&mut c)
            .await
            .map_err(re)?;
        Ok(())
    }

    async fn feedback_scan(&self, owner: Option<&Owner>, from: &str, limit: usize) -> Result<Vec<(String, Feedback)>> {
        let mut c = self.conn().await?;
        let mut out = Vec::new();
        let mut start = from.to_string();
        loop {
            let page: Vec<StreamEntry> = redis::cmd("XRANGE")
                .arg(self.stream())
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(re)?;
            let Some((last, _)) = page.last() else { return Ok(out) };
            start = format!("({last}");
            let n = page.len();
            for (id, fields) in page {
                let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_slice());
                if let Some(o) = owner
                    && (field("tenant") != Some(o.tenant.as_bytes()) || field("user") != Some(o.user.as_bytes()))
                {
                    continue;
                }
                let Some(body) = field("body") else { continue };
                out.push((id, decode("feedback", body)?));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if n < 500 {
                return Ok(out);
            }
        }
    }

    async fn feedback_erase(&self, owner: &Owner) -> Result<u64> {
        let ids: Vec<String> =
            self.feedback_scan(Some(owner), "-", usize::MAX).await?.into_iter().map(|(id, _)| id).collect();
        let mut c = self.conn().await?;
        let mut n = 0;
        for chunk in ids.chunks(256) {
            let d: u64 = redis::cmd("XDEL").arg(self.stream()).arg(chunk).query_async(&mut c).await.map_err(re)?;
            n += d;
        }
        Ok(n)
    }
}
