//! Engine integration tests against the real SmolLM2 model (fetched once, cached).

mod batching;
mod common;
mod cuda;
mod generation;
mod reference;
mod serve;
mod tokenizer_ref;
