//! The upstream pool: one QUIC connection (mutual TLS) per core of the topology, kept up by a
//! task per core that reconnects with backoff, follows the core's load reports on the control
//! stream and polls its `/readyz`. A request's candidates are the healthy cores of the home
//! region ordered by rendezvous hashing on the request's key (the conversation id, so a
//! conversation keeps landing where its KV prefix is cached), then the other regions' in the
//! region file's RTT order. The client itself is `chorus_proto::quic::CoreClient`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chorus_proto::FleetInfo;
use chorus_proto::tls::Identity;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

pub use chorus_proto::quic::CoreClient;

use crate::config::UpstreamConfig;
use crate::regions::{CoreSite, RegionFile};

const READY_UNKNOWN: u8 = 0;
const READY_OK: u8 = 1;
const READY_FAIL: u8 = 2;

/// One core and what the edge knows of it.
#[derive(Debug)]
pub struct CoreSlot {
    pub site: CoreSite,
    pub region: String,
    conn: RwLock<Option<Arc<CoreClient>>>,
    /// The last `/readyz` answer.
    ready_http: AtomicU8,
}

impl CoreSlot {
    /// The live connection, if any.
    pub fn client(&self) -> Option<Arc<CoreClient>> {
        let c = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        c.conn.close_reason().is_none().then_some(c)
    }

    /// Connected, ready by its own load reports and by `/readyz`, not draining.
    pub fn healthy(&self) -> bool {
        let Some(c) = self.client() else { return false };
        if self.ready_http.load(Ordering::Relaxed) == READY_FAIL {
            return false;
        }
        let load = c.load();
        let report = load.borrow();
        report.as_ref().is_none_or(|r| r.ready && !r.draining)
    }

    fn set(&self, c: Option<Arc<CoreClient>>) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = c;
    }
}

/// Every core of the topology, and the order to try them in.
#[derive(Debug)]
pub struct UpstreamPool {
    /// Regions in failover order from the home region; each with its cores.
    regions: Vec<(String, Vec<Arc<CoreSlot>>)>,
    /// Waiting requests past which a core is passed over for a sibling.
    busy_waiting: u32,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl UpstreamPool {
    /// Starts a maintainer task per core. Call inside a tokio runtime.
    pub fn start(
        topology: &RegionFile,
        home: &str,
        identity: Identity,
        edge_id: &str,
        cfg: &UpstreamConfig,
    ) -> Arc<Self> {
        let identity = Arc::new(identity);
        let mut regions = Vec::new();
        let mut tasks = Vec::new();
        for r in topology.failover_order(home) {
            let mut slots = Vec::new();
            for site in &r.cores {
                let slot = Arc::new(CoreSlot {
                    site: site.clone(),
                    region: r.name.clone(),
                    conn: RwLock::new(None),
                    ready_http: AtomicU8::new(READY_UNKNOWN),
                });
                tasks.push(tokio::spawn(maintain(slot.clone(), identity.clone(), edge_id.to_owned(), cfg.clone())));
                if let Some(ops) = site.ops {
                    tasks.push(tokio::spawn(poll_ready(slot.clone(), ops, cfg.health_interval_ms)));
                }
                slots.push(slot);
            }
            regions.push((r.name.clone(), slots));
        }
        Arc::new(Self { regions, busy_waiting: cfg.busy_waiting, tasks: Mutex::new(tasks) })
    }

    /// Healthy cores to try for `key`, best first, each with its connection: region by
    /// region in failover order; inside a region the rendezvous order, except that cores whose
    /// load reports show a deep queue go after the others (the key's own core is left only
    /// when it is that busy and a sibling is not).
    pub fn candidates(&self, key: &str) -> Vec<(Arc<CoreSlot>, Arc<CoreClient>)> {
        let mut out = Vec::new();
        if self.regions.is_empty() {
            return out;
        }
        // A conversation's home region goes first: its store holds the history.
        let home = chorus_proto::conversation_home(key);
        let first = home.and_then(|h| self.regions.iter().position(|(name, _)| name == h)).unwrap_or(0);
        let order = std::iter::once(first).chain((0..self.regions.len()).filter(|&i| i != first));
        for (_, slots) in order.map(|i| &self.regions[i]) {
            let live: Vec<(&Arc<CoreSlot>, Arc<CoreClient>)> =
                slots.iter().filter(|s| s.healthy()).filter_map(|s| Some((s, s.client()?))).collect();
            let facts: Vec<(&str, bool)> = live
                .iter()
                .map(|(s, c)| {
                    (s.site.name.as_str(), c.load().borrow().as_ref().is_some_and(|r| busy(r, self.busy_waiting)))
                })
                .collect();
            for i in rank(key, &facts) {
                out.push((live[i].0.clone(), live[i].1.clone()));
            }
        }
        out
    }

    /// The models the connected cores serve (fleet and model ids, deduplicated).
    pub fn models(&self) -> Vec<FleetInfo> {
        let mut out: Vec<FleetInfo> = Vec::new();
        for s in self.regions.iter().flat_map(|(_, s)| s) {
            if let Some(c) = s.client() {
                for f in &c.fleets {
                    if !out.contains(f) {
                        out.push(f.clone());
                    }
                }
            }
        }
        out
    }

    /// Per region: (name, healthy cores, cores).
    pub fn health(&self) -> Vec<(String, usize, usize)> {
        self.regions
            .iter()
            .map(|(name, slots)| (name.clone(), slots.iter().filter(|s| s.healthy()).count(), slots.len()))
            .collect()
    }

    /// Each connected core's latest load report, by core name.
    pub fn loads(&self) -> Vec<(String, chorus_proto::LoadReport)> {
        let slots = self.regions.iter().flat_map(|(_, s)| s);
        slots
            .filter_map(|s| {
                let report = s.client()?.load().borrow().clone()?;
                Some((s.site.name.clone(), report))
            })
            .collect()
    }

    /// Waits until some core is healthy or `timeout` passes.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.regions.iter().flat_map(|(_, s)| s).any(|s| s.healthy()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the maintainer tasks and closes every connection.
    pub fn shutdown(&self) {
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        for s in self.regions.iter().flat_map(|(_, s)| s) {
            if let Some(c) = s.client() {
                c.conn.close(chorus_proto::CLOSE_NORMAL.into(), b"edge shutting down");
            }
            s.set(None);
        }
    }
}

impl Drop for UpstreamPool {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// A core is busy when more requests wait to start on it than `limit`.
fn busy(r: &chorus_proto::LoadReport, limit: u32) -> bool {
    r.fleets.iter().map(|f| f.waiting.iter().sum::<u32>()).sum::<u32>() > limit
}

/// The order to try one region's cores in: not busy before busy, each by descending
/// rendezvous score for `key`. `cores` holds (name, busy).
fn rank(key: &str, cores: &[(&str, bool)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cores.len()).collect();
    order.sort_by_key(|&i| (cores[i].1, std::cmp::Reverse(rendezvous(key, cores[i].0))));
    order
}

/// Highest-random-weight score of `core` for `key`.
pub fn rendezvous(key: &str, core: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(core.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes of a 32-byte digest"))
}

async fn maintain(slot: Arc<CoreSlot>, identity: Arc<Identity>, edge_id: String, cfg: UpstreamConfig) {
    let base = Duration::from_millis(cfg.reconnect_ms.max(10));
    let mut backoff = base;
    let mut was_up = false;
    loop {
        let connect = CoreClient::connect_as(slot.site.quic, &slot.site.server_name, &identity, &edge_id);
        match tokio::time::timeout(Duration::from_millis(cfg.connect_timeout_ms), connect).await {
            Ok(Ok(client)) => {
                info!(core = %slot.site.name, region = %slot.region, addr = %slot.site.quic, "upstream connected");
                let client = Arc::new(client);
                slot.set(Some(client.clone()));
                backoff = base;
                was_up = true;
                let reason = client.conn.closed().await;
                slot.set(None);
                warn!(core = %slot.site.name, region = %slot.region, %reason, "upstream connection lost");
            }
            Ok(Err(e)) => {
                if was_up {
                    warn!(core = %slot.site.name, error = %e, "upstream reconnect failed");
                    was_up = false;
                }
            }
            Err(_) => {
                if was_up {
                    warn!(core = %slot.site.name, "upstream connect timed out");
                    was_up = false;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(base * 16);
    }
}

/// Consecutive unreachable `/readyz` polls after which a core is taken for dead and its
/// connection closed: QUIC alone notices a killed peer only at the idle timeout, and the
/// requests in flight on it fail over (or end with an error) at once instead.
const DEAD_AFTER: u32 = 2;

async fn poll_ready(slot: Arc<CoreSlot>, ops: SocketAddr, interval_ms: u64) {
    let interval = Duration::from_millis(interval_ms.max(50));
    let mut unreachable = 0;
    loop {
        let r = tokio::time::timeout(interval, readyz(ops)).await.unwrap_or(Ready::Unreachable);
        slot.ready_http.store(if r == Ready::Yes { READY_OK } else { READY_FAIL }, Ordering::Relaxed);
        unreachable = if r == Ready::Unreachable { unreachable + 1 } else { 0 };
        if unreachable == DEAD_AFTER
            && let Some(c) = slot.client()
        {
            warn!(core = %slot.site.name, region = %slot.region, "core unreachable; closing its connection");
            c.conn.close(chorus_proto::CLOSE_NORMAL.into(), b"health check failed");
        }
        tokio::time::sleep(interval).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ready {
    Yes,
    /// It answered, but not 200 (draining, stalled).
    No,
    /// Nothing answered.
    Unreachable,
}

/// `GET /readyz` on the core's operations port.
async fn readyz(addr: SocketAddr) -> Ready {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return Ready::Unreachable };
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Ready::Unreachable;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    if n < 12 {
        Ready::Unreachable
    } else if buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200") {
        Ready::Yes
    } else {
        Ready::No
    }
}

#[cfg(test)]
mod tests {
    use super::{rank, rendezvous};

    #[test]
    fn busy_cores_go_last_and_the_rest_keep_their_rendezvous_order() {
        let cores = [("a", false), ("b", false), ("c", false)];
        for i in 0..50 {
            let key = format!("conv-{i}");
            let calm = rank(&key, &cores);
            let first = calm[0];
            let mut with_busy = cores;
            with_busy[first].1 = true;
            let order = rank(&key, &with_busy);
            assert_eq!(*order.last().unwrap(), first, "the busy core goes last");
            let rest: Vec<usize> = calm.iter().copied().filter(|&c| c != first).collect();
            assert_eq!(&order[..2], &rest[..], "the others keep their order");
        }
        assert!(rank("k", &[]).is_empty());
    }

    #[test]
    fn rendezvous_moves_only_the_removed_cores_keys() {
        let cores = ["a", "b", "c", "d"];
        fn best<'a>(set: &[&'a str], key: &str) -> &'a str {
            set.iter().copied().max_by_key(|c| rendezvous(key, c)).unwrap()
        }
        let mut moved = 0;
        let mut per_core = std::collections::HashMap::new();
        for i in 0..2000 {
            let key = format!("conv-{i}");
            let before = best(&cores, &key);
            *per_core.entry(before).or_insert(0) += 1;
            let after = best(&["a", "b", "d"], &key);
            if before != "c" {
                assert_eq!(before, after, "a key not on the removed core moved");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 300 && moved < 700, "{moved}");
        assert!(per_core.values().all(|&n| n > 350), "{per_core:?}");
    }
}
