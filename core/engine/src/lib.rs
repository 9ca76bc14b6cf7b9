//! The inference engine: GGUF models, tokenizer, chat template, CPU kernels (and, with the
//! `cuda` feature, a CUDA backend) and sampler.
//!
//! It owns everything between token ids and logits (and the text on either side of them), and
//! exposes one step API, [`model::Model::forward`], that runs a batch of sequences at different
//! positions through a paged KV cache. It never decides which sequences run or which KV blocks
//! they get — that is the scheduler's — and it does no network or async I/O; the one exception
//! to "no I/O" is [`model_store`], which fetches and verifies model files for the CLI and tests.

mod attention;
pub mod chat_template;
pub mod constraint;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod engine;
pub mod exec;
pub mod gguf;
pub mod health;
pub mod kernels;
pub mod kv;
pub mod metrics;
pub mod model;
pub mod model_store;
pub mod quant;
mod row_writers;
pub mod sampler;
pub mod serve;
mod spm;
mod step;
pub mod threadpool;
pub mod tokenizer;
