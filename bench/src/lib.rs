//! Chorus's measuring tools, usable against any OpenAI-compatible chat server:
//!
//! - [`load`]: the load generator behind `chorus bench load` (open and closed loop, tier mix,
//!   multi-turn sessions, per-tier TTFT / inter-token / end-to-end percentiles, errors by
//!   status, server-side cache and queue figures), [`report`] its JSON, SLO verdicts and
//!   `compare`, [`chart`] its SVG;
//! - [`plan`]: capacity planning by Little's law from measured runs (`chorus plan`);
//! - [`eval`]: the level-1 checks of a deployment (`chorus eval`).

pub mod chart;
pub mod client;
pub mod dist;
pub mod eval;
pub mod load;
pub mod plan;
pub mod prom;
pub mod report;
pub mod stats;
pub mod svg;
pub mod workload;
