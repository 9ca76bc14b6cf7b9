//! `chorus-filter-host` runs the edge's policy filters: WebAssembly components implementing
//! `chorus:filter@0.2.0`, signed with ed25519, each call in a fresh instance from a pooling
//! allocator with a deadline, a memory cap and bounded inputs and outputs. It owns the filter
//! engine, module verification and the precompiled-artifact cache, the host imports (windowed
//! counters in-process or in Redis, operator key-value data, a frozen clock, logs, metrics),
//! and atomic chain reloads from a watched directory.
//!
//! It is the only crate that names wasmtime. It never does network I/O on behalf of a filter
//! beyond the counter store, never gives a filter WASI filesystem, sockets or environment, and
//! never lets a failing filter take the edge down: a failure becomes that filter's `on-error`
//! answer and a metric.

pub mod builtin;
pub mod chain;
pub mod host;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod runtime;
pub mod signing;
pub mod store;

pub use chain::{Chain, ChainOutcome, CompletionTicket, Denial, FilterRequest, Identity, Outcome, Step, Usage};
pub use host::{FilterHost, HostConfig, LoadError, ModuleSource, TrustPolicy, WatchHandle, read_dir};
pub use limits::Limits;
pub use manifest::{Capability, Manifest, OnError};
pub use metrics::FailureKind;
pub use runtime::{RuntimeConfig, estimate_tokens};
pub use signing::{Signature, SignatureError, SigningKey, TrustedKey};
pub use store::CounterStore;
