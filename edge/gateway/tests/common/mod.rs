//! Fixtures shared by the edge's integration tests.
#![allow(dead_code)] // each test file uses what it needs

use std::sync::Arc;

use chorus_edge::config::ApiKey;
use chorus_edge::regions::CoreSite;
use chorus_edge::{EdgeConfig, EdgeState};

/// An edge configuration whose only core is nowhere (nothing listens on the discard port), so
/// a request that passes every check finds no core, quickly.
pub fn nowhere_config() -> EdgeConfig {
    let mut cfg = EdgeConfig {
        cores: vec![CoreSite {
            name: "nowhere".into(),
            quic: "127.0.0.1:9".parse().unwrap(),
            ops: None,
            server_name: "localhost".into(),
        }],
        ..EdgeConfig::default()
    };
    cfg.upstream.connect_timeout_ms = 100;
    cfg
}

/// A plaintext API key for `user` of tenant `t` on `tier`.
pub fn api_key(key: &str, user: &str, tier: &str) -> ApiKey {
    ApiKey { sha256: None, key: Some(key.into()), tenant: "t".into(), user: user.into(), tier: tier.into() }
}

/// The edge's state for `cfg`, with a freshly minted development PKI.
pub fn edge_state(cfg: EdgeConfig) -> Arc<EdgeState> {
    let pki = chorus_proto::tls::mint_dev("edge test CA", &["localhost".into()]).unwrap();
    EdgeState::new(cfg, pki.edge_identity().unwrap()).unwrap()
}
