//! Integration tests of the filter host with real components built from `wasm-filters/`.

mod common;
mod containment;
mod filters;
mod loading;
mod refunds;
mod store;
