//! Windowed counters and budgets behind the `window-hit`, `window-release`, `counter-add` and
//! `budget-reserve` host imports: in-process by default, Redis when configured. Both give the
//! same answers for the same calls (tested side by side); every operation is atomic, and all
//! time arithmetic uses the caller's (frozen) clock, never the store's.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Most events a sliding window may hold (it stores one timestamp per event).
pub const MAX_WINDOW_LIMIT: u32 = 100_000;
/// Longest window, in milliseconds.
pub const MAX_WINDOW_MS: u64 = 366 * 86_400_000;

/// The answer to a sliding-window hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowHit {
    pub allowed: bool,
    pub count: u32,
    pub retry_after_ms: u64,
}

/// The answer to a budget reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub granted: bool,
    pub used: i64,
    pub retry_after_ms: u64,
}

/// Why a counter operation failed. Filters see the message as a string.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("counter store is full ({0} keys)")]
    Full(usize),
    #[error("redis: {0}")]
    Redis(String),
}

fn check_window(limit: Option<u32>, window_ms: u64) -> Result<(), StoreError> {
    if window_ms == 0 || window_ms > MAX_WINDOW_MS {
        return Err(StoreError::Invalid(format!("window-ms {window_ms} must be in 1..={MAX_WINDOW_MS}")));
    }
    if let Some(limit) = limit
        && limit > MAX_WINDOW_LIMIT
    {
        return Err(StoreError::Invalid(format!("window limit {limit} is over {MAX_WINDOW_LIMIT}")));
    }
    Ok(())
}

/// The fixed window `now` falls in: its index and the milliseconds until it ends.
fn fixed_window(now_ms: u64, window_ms: u64) -> (u64, u64) {
    let idx = now_ms / window_ms;
    (idx, (idx + 1) * window_ms - now_ms)
}

/// Where counters live.
#[derive(Debug)]
pub enum CounterStore {
    InProcess(InProcessStore),
    Redis(Box<RedisStore>),
}

impl CounterStore {
    /// An in-process store holding at most `max_keys` keys.
    pub fn in_process(max_keys: usize) -> Self {
        CounterStore::InProcess(InProcessStore::new(max_keys))
    }

    /// A Redis store at `url` (`redis://host:port/db`), keys prefixed by `namespace`.
    pub fn redis(url: &str, namespace: &str) -> Result<Self, StoreError> {
        Ok(CounterStore::Redis(Box::new(RedisStore::new(url, namespace)?)))
    }

    /// Admit and record one event under `key` if fewer than `limit` fall in `(now - window, now]`.
    pub fn window_hit(&self, key: &str, limit: u32, window_ms: u64, now_ms: u64) -> Result<WindowHit, StoreError> {
        check_window(Some(limit), window_ms)?;
        match self {
            CounterStore::InProcess(s) => s.window_hit(key, limit, window_ms, now_ms),
            CounterStore::Redis(s) => s.window_hit(key, limit, window_ms, now_ms),
        }
    }

    /// Remove one event recorded under `key` at `at_ms` (a refund of a `window_hit` made at
    /// that time); whether there was one to remove.
    pub fn window_release(&self, key: &str, at_ms: u64) -> Result<bool, StoreError> {
        match self {
            CounterStore::InProcess(s) => Ok(s.window_release(key, at_ms)),
            CounterStore::Redis(s) => s.window_release(key, at_ms),
        }
    }

    /// Add `delta` to the fixed window containing `now` and return the new total.
    pub fn counter_add(&self, key: &str, delta: i64, window_ms: u64, now_ms: u64) -> Result<i64, StoreError> {
        check_window(None, window_ms)?;
        match self {
            CounterStore::InProcess(s) => s.counter_add(key, delta, window_ms, now_ms),
            CounterStore::Redis(s) => s.counter_add(key, delta, window_ms, now_ms),
        }
    }

    /// Add `amount` to the fixed window containing `now` only if the total stays within `limit`.
    pub fn budget_reserve(
        &self,
        key: &str,
        amount: i64,
        limit: i64,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Reservation, StoreError> {
        check_window(None, window_ms)?;
        if amount < 0 {
            return Err(StoreError::Invalid(format!("reservation amount {amount} is negative")));
        }
        match self {
            CounterStore::InProcess(s) => s.budget_reserve(key, amount, limit, window_ms, now_ms),
            CounterStore::Redis(s) => s.budget_reserve(key, amount, limit, window_ms, now_ms),
        }
    }
}

#[derive(Debug)]
enum Entry {
    /// Event times, oldest first.
    Window { events: VecDeque<u64>, window_ms: u64 },
    /// A fixed-window sum.
    Counter { idx: u64, window_ms: u64, value: i64 },
}

impl Entry {
    fn expired(&self, now_ms: u64) -> bool {
        match self {
            Entry::Window { events, window_ms } => events.back().is_none_or(|&t| t + window_ms <= now_ms),
            Entry::Counter { idx, window_ms, .. } => now_ms / window_ms != *idx,
        }
    }
}

/// Counters in this process: exact, and bounded in keys.
#[derive(Debug)]
pub struct InProcessStore {
    max_keys: usize,
    map: Mutex<HashMap<String, Entry>>,
}

impl InProcessStore {
    pub fn new(max_keys: usize) -> Self {
        InProcessStore { max_keys: max_keys.max(1), map: Mutex::new(HashMap::new()) }
    }

    fn with_entry<R>(
        &self,
        key: &str,
        now_ms: u64,
        make: impl FnOnce() -> Entry,
        f: impl FnOnce(&mut Entry) -> R,
    ) -> Result<R, StoreError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= self.max_keys {
            map.retain(|_, e| !e.expired(now_ms));
            if map.len() >= self.max_keys {
                return Err(StoreError::Full(self.max_keys));
            }
        }
        let entry = map.entry(key.to_owned()).or_insert_with(make);
        Ok(f(entry))
    }

    fn window_hit(&self, key: &str, limit: u32, window_ms: u64, now_ms: u64) -> Result<WindowHit, StoreError> {
        let make = || Entry::Window { events: VecDeque::new(), window_ms };
        self.with_entry(&format!("w:{key}"), now_ms, make, |entry| {
            if !matches!(entry, Entry::Window { .. }) {
                *entry = Entry::Window { events: VecDeque::new(), window_ms };
            }
            let Entry::Window { events, window_ms: w } = entry else { unreachable!("just set") };
            *w = window_ms;
            while events.front().is_some_and(|&t| t + window_ms <= now_ms) {
                events.pop_front();
            }
            // Limits may shrink between calls: a window may hold more than today's limit.
            while events.len() > MAX_WINDOW_LIMIT as usize {
                events.pop_front();
            }
            let n = events.len() as u32;
            if n < limit {
                // Keep the deque sorted when clocks of different edges disagree slightly.
                let at = events.partition_point(|&t| t <= now_ms);
                events.insert(at, now_ms);
                WindowHit { allowed: true, count: n + 1, retry_after_ms: 0 }
            } else {
                let oldest = events.front().copied().unwrap_or(now_ms);
                WindowHit { allowed: false, count: n, retry_after_ms: (oldest + window_ms).saturating_sub(now_ms) }
            }
        })
    }

    fn window_release(&self, key: &str, at_ms: u64) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(Entry::Window { events, .. }) = map.get_mut(&format!("w:{key}")) else { return false };
        // Events are sorted: the first one at `at_ms`, if any, is where `at_ms` would go.
        let at = events.partition_point(|&t| t < at_ms);
        if events.get(at) != Some(&at_ms) {
            return false;
        }
        events.remove(at);
        true
    }

    fn counter_entry(entry: &mut Entry, window_ms: u64, now_ms: u64) -> &mut i64 {
        let idx = now_ms / window_ms;
        let fresh = match entry {
            Entry::Counter { idx: i, window_ms: w, .. } => *i != idx || *w != window_ms,
            Entry::Window { .. } => true,
        };
        if fresh {
            *entry = Entry::Counter { idx, window_ms, value: 0 };
        }
        let Entry::Counter { value, .. } = entry else { unreachable!("just set") };
        value
    }

    fn counter_add(&self, key: &str, delta: i64, window_ms: u64, now_ms: u64) -> Result<i64, StoreError> {
        let make = || Entry::Counter { idx: now_ms / window_ms, window_ms, value: 0 };
        self.with_entry(&format!("c:{key}:{window_ms}"), now_ms, make, |entry| {
            let value = Self::counter_entry(entry, window_ms, now_ms);
            *value = value.saturating_add(delta);
            *value
        })
    }

    fn budget_reserve(
        &self,
        key: &str,
        amount: i64,
        limit: i64,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Reservation, StoreError> {
        let make = || Entry::Counter { idx: now_ms / window_ms, window_ms, value: 0 };
        self.with_entry(&format!("c:{key}:{window_ms}"), now_ms, make, |entry| {
            let value = Self::counter_entry(entry, window_ms, now_ms);
            if value.saturating_add(amount) <= limit {
                *value = value.saturating_add(amount);
                Reservation { granted: true, used: *value, retry_after_ms: 0 }
            } else {
                Reservation { granted: false, used: *value, retry_after_ms: fixed_window(now_ms, window_ms).1 }
            }
        })
    }
}

const WINDOW_HIT: &str = r#"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
local n = redis.call('ZCARD', key)
if n < limit then
  local seq = redis.call('INCR', key .. ':seq')
  redis.call('PEXPIRE', key .. ':seq', win)
  redis.call('ZADD', key, now, tostring(now) .. ':' .. tostring(seq))
  redis.call('PEXPIRE', key, win)
  return {1, n + 1, 0}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local retry = tonumber(oldest[2]) + win - now
if retry < 0 then retry = 0 end
return {0, n, retry}
"#;

const WINDOW_RELEASE: &str = r#"
local at = ARGV[1]
local hit = redis.call('ZRANGEBYSCORE', KEYS[1], at, at, 'LIMIT', 0, 1)
if hit[1] then
  redis.call('ZREM', KEYS[1], hit[1])
  return 1
end
return 0
"#;

const COUNTER_ADD: &str = r#"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return v
"#;

const BUDGET_RESERVE: &str = r#"
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if cur + amount <= tonumber(ARGV[2]) then
  local v = redis.call('INCRBY', KEYS[1], amount)
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  return {1, v}
end
return {0, cur}
"#;

/// Counters in Redis, shared by every edge that points at the same server. Each operation is
/// one Lua script, so it is atomic; connections time out rather than stall a request.
pub struct RedisStore {
    client: redis::Client,
    namespace: String,
    idle: Mutex<Vec<redis::Connection>>,
    window_hit: redis::Script,
    window_release: redis::Script,
    counter_add: redis::Script,
    budget_reserve: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// A rate limiter must not hold a request for long: well under a filter's wall-clock cap.
const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
const MAX_IDLE: usize = 32;

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

impl RedisStore {
    pub fn new(url: &str, namespace: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        Ok(RedisStore {
            client,
            namespace: namespace.to_owned(),
            idle: Mutex::new(Vec::new()),
            window_hit: redis::Script::new(WINDOW_HIT),
            window_release: redis::Script::new(WINDOW_RELEASE),
            counter_add: redis::Script::new(COUNTER_ADD),
            budget_reserve: redis::Script::new(BUDGET_RESERVE),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    fn with_conn<R>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>) -> Result<R, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = self.client.get_connection_with_timeout(REDIS_TIMEOUT).map_err(redis_err)?;
                c.set_read_timeout(Some(REDIS_TIMEOUT)).map_err(redis_err)?;
                c.set_write_timeout(Some(REDIS_TIMEOUT)).map_err(redis_err)?;
                c
            }
        };
        let out = f(&mut conn).map_err(redis_err)?;
        // A connection that failed is dropped above; a healthy one goes back.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(out)
    }

    fn window_hit(&self, key: &str, limit: u32, window_ms: u64, now_ms: u64) -> Result<WindowHit, StoreError> {
        let key = self.key(&format!("w:{key}"));
        let (allowed, count, retry): (i64, i64, i64) =
            self.with_conn(|c| self.window_hit.key(&key).arg(now_ms).arg(window_ms).arg(limit).invoke(c))?;
        Ok(WindowHit {
            allowed: allowed == 1,
            count: u32::try_from(count).unwrap_or(u32::MAX),
            retry_after_ms: u64::try_from(retry).unwrap_or(0),
        })
    }

    fn window_release(&self, key: &str, at_ms: u64) -> Result<bool, StoreError> {
        let key = self.key(&format!("w:{key}"));
        let removed: i64 = self.with_conn(|c| self.window_release.key(&key).arg(at_ms).invoke(c))?;
        Ok(removed == 1)
    }

    fn counter_key(&self, key: &str, window_ms: u64, now_ms: u64) -> (String, u64) {
        let (idx, _) = fixed_window(now_ms, window_ms);
        // The key outlives its window by a minute so late reconciles still find it.
        (self.key(&format!("c:{key}:{window_ms}:{idx}")), (idx + 1) * window_ms + 60_000)
    }

    fn counter_add(&self, key: &str, delta: i64, window_ms: u64, now_ms: u64) -> Result<i64, StoreError> {
        let (key, expire_at) = self.counter_key(key, window_ms, now_ms);
        self.with_conn(|c| self.counter_add.key(&key).arg(delta).arg(expire_at).invoke(c))
    }

    fn budget_reserve(
        &self,
        key: &str,
        amount: i64,
        limit: i64,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Reservation, StoreError> {
        let (key, expire_at) = self.counter_key(key, window_ms, now_ms);
        let (granted, used): (i64, i64) =
            self.with_conn(|c| self.budget_reserve.key(&key).arg(amount).arg(limit).arg(expire_at).invoke(c))?;
        let retry_after_ms = if granted == 1 { 0 } else { fixed_window(now_ms, window_ms).1 };
        Ok(Reservation { granted: granted == 1, used, retry_after_ms })
    }
}
