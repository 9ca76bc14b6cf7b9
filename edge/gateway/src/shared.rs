//! Answers shared by the edges of a region through Redis, so an edge restart or a load
//! balancer sending the reconnect elsewhere loses nothing: a client that comes back to another
//! edge with `Last-Event-ID` resumes, and a retry with the same `Idempotency-Key` attaches.
//!
//! - The edge that generates an answer (its *origin*) publishes it: a metadata record (whose
//!   answer, how it is rendered) and a Redis stream with one entry per event, entry id
//!   `0-<index + 1>`, so event indexes (the SSE ids) are the same on every edge. Writes are
//!   batched (whatever the run produced since the last write, in one pipeline) and never hold
//!   the answer up: if Redis fails, the answer goes on and only sharing is lost.
//! - Another edge asked for that answer *mirrors* it: a local run fed from the stream (a
//!   blocking read on its own connection), which its readers follow as if it were local.
//!   While a mirror has readers it keeps a `live` key fresh; the origin holds a reader for it,
//!   so the origin does not cancel an answer whose client moved to another edge.
//! - Everything expires `resume.window_secs` after the answer's last event (and at most
//!   `upstream.deadline_ms` plus that window after it began).

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::error::ApiError;
use crate::openai::Shape;
use crate::run::{Form, Next, Run, RunEvent, Runs};
use chorus_proto::Tier;

/// Most stream entries kept per answer (Redis trims beyond it); an answer is bounded by its
/// token limit long before this.
const MAX_ENTRIES: usize = 65_536;
/// How often a mirror refreshes its `live` key, and how long the key lives.
const LIVE_EVERY: Duration = Duration::from_millis(1000);
const LIVE_TTL_MS: u64 = 3_000;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    owner: String,
    stream: bool,
    include_usage: bool,
    shape: Shape,
    tier: Tier,
    created: u64,
    edge: String,
}

/// One event on the wire (errors keep their type).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Wire {
    Event(RunEvent),
    Error(ApiError),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The shared answers of a region's edges.
#[derive(Debug)]
pub struct SharedRuns {
    client: redis::Client,
    conn: OnceCell<redis::aio::ConnectionManager>,
    prefix: String,
    edge: String,
    /// How long a finished answer stays readable.
    window: Duration,
    /// How long an answer may run at all (the upstream deadline).
    deadline: Duration,
}

impl SharedRuns {
    pub fn open(url: &str, prefix: &str, edge: &str, window: Duration, deadline: Duration) -> Result<Self, ApiError> {
        let client = redis::Client::open(url).map_err(|e| ApiError::State(e.to_string()))?;
        Ok(Self { client, conn: OnceCell::new(), prefix: prefix.into(), edge: edge.into(), window, deadline })
    }

    fn keys(&self, id: &str) -> (String, String, String) {
        let base = format!("{}:run:{id}", self.prefix);
        (format!("{base}:meta"), format!("{base}:events"), format!("{base}:live"))
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager, ApiError> {
        self.conn
            .get_or_try_init(|| async {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                self.client.get_connection_manager_with_config(cfg).await
            })
            .await
            .cloned()
            .map_err(|e| ApiError::State(e.to_string()))
    }

    /// Publishes `run` (this edge is its origin) until it ends; spawn it.
    pub async fn publish(self: Arc<Self>, run: Arc<Run>, owner: [u8; 32]) {
        if let Err(e) = self.publish_inner(&run, owner).await {
            tracing::warn!(run = %run.id, error = %e, "sharing an answer through Redis failed; it stays resumable on this edge only");
        }
    }

    async fn publish_inner(&self, run: &Arc<Run>, owner: [u8; 32]) -> Result<(), ApiError> {
        let mut c = self.conn().await?;
        let (meta_key, events_key, live_key) = self.keys(&run.id);
        let meta = Meta {
            owner: hex(&owner),
            stream: run.stream,
            include_usage: run.include_usage,
            shape: run.shape,
            tier: run.tier,
            created: run.created,
            edge: self.edge.clone(),
        };
        let lifetime = (self.deadline + self.window).as_millis() as u64;
        let meta = serde_json::to_string(&meta).map_err(|e| ApiError::State(e.to_string()))?;
        let _: () = c.pset_ex(&meta_key, meta, lifetime).await.map_err(state)?;
        let mut next = 0usize;
        // A reader held for a client that now reads through another edge's mirror.
        let mut remote = None;
        let mut checked = Instant::now();
        loop {
            let got = tokio::time::timeout(LIVE_EVERY, run.next(next)).await;
            let mut pipe = redis::pipe();
            let mut ended = false;
            if let Ok(first) = got {
                let mut ev = first;
                loop {
                    match ev {
                        Next::Event(e) => {
                            ended = e.is_final();
                            let wire = match e {
                                RunEvent::Error(err) => Wire::Error(err),
                                other => Wire::Event(other),
                            };
                            let json = serde_json::to_string(&wire).map_err(|e| ApiError::State(e.to_string()))?;
                            pipe.cmd("XADD")
                                .arg(&events_key)
                                .arg("MAXLEN")
                                .arg("~")
                                .arg(MAX_ENTRIES)
                                .arg(format!("0-{}", next + 1))
                                .arg("e")
                                .arg(json)
                                .ignore();
                            next += 1;
                        }
                        Next::Gone => next += 1, // dropped locally before it was written: mirrors will see the gap
                        Next::End => ended = true,
                        Next::Pending => break,
                    }
                    if ended {
                        break;
                    }
                    ev = run.get(next);
                }
            }
            if ended {
                let keep = self.window.as_millis() as u64;
                pipe.cmd("PEXPIRE").arg(&events_key).arg(keep).ignore();
                pipe.cmd("PEXPIRE").arg(&meta_key).arg(keep).ignore();
            } else {
                pipe.cmd("PEXPIRE").arg(&events_key).arg(lifetime).ignore();
            }
            let _: () = pipe.query_async(&mut c).await.map_err(state)?;
            if ended {
                return Ok(());
            }
            if checked.elapsed() >= LIVE_EVERY {
                checked = Instant::now();
                let live: bool = c.exists(&live_key).await.map_err(state)?;
                match (live, remote.is_some()) {
                    (true, false) => remote = Some(run.reader()),
                    (false, true) => remote = None,
                    _ => {}
                }
            }
        }
    }

    /// The answer `id` as another edge publishes it, mirrored into `runs`, when it exists and
    /// belongs to `owner`.
    pub async fn mirror(
        self: &Arc<Self>,
        runs: &Runs,
        id: &str,
        owner: &[u8; 32],
        max_bytes: usize,
    ) -> Result<Option<Arc<Run>>, ApiError> {
        let mut c = self.conn().await?;
        let (meta_key, ..) = self.keys(id);
        let Some(meta): Option<String> = c.get(&meta_key).await.map_err(state)? else { return Ok(None) };
        let meta: Meta = serde_json::from_str(&meta).map_err(|e| ApiError::State(format!("{meta_key}: {e}")))?;
        if meta.owner != hex(owner) {
            return Ok(None);
        }
        let form = Form { stream: meta.stream, include_usage: meta.include_usage, shape: meta.shape };
        let run = Run::mirror(id.to_string(), form, meta.tier, *owner, meta.created, max_bytes, self.window);
        let run = match runs.insert_new(run.clone())? {
            Some(existing) => return Ok(Some(existing)),
            None => run,
        };
        let me = self.clone();
        let follower = run.clone();
        tokio::spawn(async move {
            let stop = follower.clone();
            tokio::select! {
                r = me.follow(&follower) => if let Err(e) = r {
                    follower.push(RunEvent::Error(ApiError::Unavailable(format!("following the answer on edge {}: {e}", meta.edge))));
                },
                _ = stop.cancelled() => {}
            }
        });
        Ok(Some(run))
    }

    /// Feeds a mirror from the stream until the answer ends.
    async fn follow(&self, run: &Arc<Run>) -> Result<(), ApiError> {
        let (_, events_key, live_key) = self.keys(&run.id);
        // Blocking reads get their own connection: they would stall every other command on a
        // multiplexed one.
        // Its replies take up to the block time, so its response timeout is longer than that
        // (the client's default, 500 ms, would cut every quiet second short).
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(LIVE_EVERY + Duration::from_secs(2)));
        let mut blocking = self.client.get_multiplexed_async_connection_with_config(&cfg).await.map_err(state)?;
        let mut c = self.conn().await?;
        let mut last = "0-0".to_string();
        let mut expect = 0usize;
        let mut heard = Instant::now();
        let mut beat = Instant::now() - LIVE_EVERY;
        let opts = StreamReadOptions::default().count(256).block(LIVE_EVERY.as_millis() as usize);
        loop {
            if run.readers() > 0 && beat.elapsed() >= LIVE_EVERY {
                beat = Instant::now();
                let _: () = c.pset_ex(&live_key, &self.edge, LIVE_TTL_MS).await.map_err(state)?;
            }
            let reply: Option<StreamReadReply> =
                blocking.xread_options(&[&events_key], &[&last], &opts).await.map_err(state)?;
            let entries = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>()).unwrap_or_default();
            if entries.is_empty() {
                if heard.elapsed() > self.deadline {
                    return Err(ApiError::Unavailable("the edge producing this answer stopped sending it".into()));
                }
                continue;
            }
            heard = Instant::now();
            for entry in entries {
                let index = entry.id.split_once('-').and_then(|(_, s)| s.parse::<usize>().ok()).unwrap_or(0);
                if index != expect + 1 {
                    return Err(ApiError::ResumeGone(format!(
                        "events {expect}..{} of {} are no longer shared",
                        index.saturating_sub(1),
                        run.id
                    )));
                }
                let text: String =
                    entry.get("e").ok_or_else(|| ApiError::State(format!("{events_key}: entry without an event")))?;
                let event = match serde_json::from_str::<Wire>(&text)
                    .map_err(|e| ApiError::State(format!("{events_key}: {e}")))?
                {
                    Wire::Event(e) => e,
                    Wire::Error(e) => RunEvent::Error(e),
                };
                let end = event.is_final();
                run.push(event);
                expect = index;
                last = entry.id;
                if end {
                    return Ok(());
                }
            }
        }
    }
}

fn state(e: redis::RedisError) -> ApiError {
    ApiError::State(e.to_string())
}
