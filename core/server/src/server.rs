//! The QUIC side: the accept loop, and per connection the control stream (version
//! handshake, then load reports) and one task per request stream ([`crate::request`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_proto::quic::{ControlStream, RequestStream};
use chorus_proto::{Control, FleetInfo, PROTOCOL_VERSION};
use quinn::Connection;
use tracing::{debug, info, warn};

use crate::metrics::CoreMetrics;
use crate::state::{Core, Phase};

/// Serves connections from `endpoint` until it is closed.
pub async fn accept_loop(core: Arc<Core>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        if core.phase() != Phase::Serving {
            incoming.refuse();
            continue;
        }
        let core = core.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    // Almost always TLS: no client certificate, or one from another CA.
                    core.metrics.refused("tls");
                    warn!(%remote, error = %e, "edge connection refused");
                    return;
                }
            };
            CoreMetrics::inc(&core.metrics.connections_total);
            CoreMetrics::inc(&core.metrics.connections_open);
            connection(&core, conn, remote).await;
            CoreMetrics::dec(&core.metrics.connections_open);
        });
    }
}

async fn connection(core: &Arc<Core>, conn: Connection, remote: SocketAddr) {
    let max = core.cfg.max_frame;
    let timeout = Duration::from_millis(core.cfg.handshake_timeout_ms);
    // The control stream is the first stream the edge opens; nothing else is served before
    // the versions agree.
    let hello = tokio::time::timeout(timeout, ControlStream::accept(&conn, max))
        .await
        .unwrap_or_else(|_| Err(format!("no Hello within {} ms", timeout.as_millis())));
    let (mut control, hello) = match hello {
        Ok(x) => x,
        Err(why) => {
            core.metrics.refused("hello");
            warn!(%remote, %why, "edge connection closed");
            conn.close(chorus_proto::CLOSE_PROTOCOL_ERROR.into(), why.as_bytes());
            return;
        }
    };
    let Some(version) = chorus_proto::negotiate(&hello, PROTOCOL_VERSION..=PROTOCOL_VERSION) else {
        let why = format!(
            "unsupported protocol version: the edge speaks {}..={}, this core speaks {PROTOCOL_VERSION}",
            hello.min_version, hello.max_version
        );
        core.metrics.refused("version");
        warn!(%remote, edge = %hello.edge_id, %why, "edge connection closed");
        conn.close(chorus_proto::CLOSE_UNSUPPORTED_VERSION.into(), why.as_bytes());
        return;
    };
    info!(%remote, edge = %hello.edge_id, version, "edge connected");
    let welcome = Control::Welcome {
        version,
        core_id: core.cfg.core_id.clone(),
        region: core.cfg.region.clone(),
        fleets: core
            .fleets
            .iter()
            .map(|f| FleetInfo {
                fleet: f.name.clone(),
                model: f.model.clone(),
                context_length: u32::try_from(f.engine.model.cfg.ctx_len).unwrap_or(u32::MAX),
                defaults: f.defaults,
            })
            .collect(),
    };
    if control.send(&welcome).await.is_err() {
        return;
    }
    let reports = {
        let core = core.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(core.cfg.load_report_ms));
            for seq in 0.. {
                tick.tick().await;
                if control.send(&Control::Load(core.load_report(seq))).await.is_err() {
                    break;
                }
            }
        })
    };
    loop {
        let stream = match RequestStream::accept(&conn, max).await {
            Ok(s) => s,
            Err(e) => {
                debug!(%remote, error = %e, "edge connection ended");
                break;
            }
        };
        let core = core.clone();
        tokio::spawn(async move {
            CoreMetrics::inc(&core.metrics.streams_total);
            CoreMetrics::inc(&core.metrics.streams_open);
            crate::request::serve(&core, stream).await;
            CoreMetrics::dec(&core.metrics.streams_open);
        });
    }
    reports.abort();
}
