//! Engine integration tests against the real SmolLM2 and Gemma 3 models (fetched once, cached).

mod batching;
mod common;
mod constrained;
mod cuda;
mod gemma;
mod generation;
mod reference;
mod serve;
mod tokenizer_ref;
