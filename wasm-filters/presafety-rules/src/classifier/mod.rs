//! The learned gate: an embedding bag with one hidden layer over hashed features of the normalised text
//! (see `features`), scored over sliding token windows (see `model`).
//!
//! The weights are trained by `train/` (a reproducible program over the dataset kept in
//! `train/data/`) and compiled into the crate, so the filter needs no file and no start-up
//! work: [`Model::builtin`] parses a header over bytes that are already in memory.

pub(crate) mod features;
pub(crate) mod model;

use crate::normalize::Tokens;
pub use model::{CLASSES, MAX_HIDDEN, Model, ModelError, Parts, Scores};

/// The model trained from `train/data/` (see `train/README.md`).
static BUILTIN: &[u8] = include_bytes!("weights.bin");

impl Model<'static> {
    /// The compiled-in model.
    pub fn builtin() -> Model<'static> {
        match Model::parse(BUILTIN) {
            Ok(m) => m,
            // The build's own test (`builtin_model_parses`) keeps this unreachable.
            Err(e) => panic!("the compiled-in presafety model is invalid: {e}"),
        }
    }
}

/// Score normalised tokens with `model`.
pub(crate) fn score(tokens: &Tokens, model: &Model<'_>) -> Scores {
    let mut sums = model::Sums::new(model, tokens.toks.len());
    features::for_each(tokens, model.bits, |t, f| sums.add(model, t, f));
    sums.score(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_model_parses() {
        let m = Model::builtin();
        assert!(m.window >= 16);
        assert!(m.threshold[1..].iter().all(|t| (0.0..=1.0).contains(t)));
    }
}
