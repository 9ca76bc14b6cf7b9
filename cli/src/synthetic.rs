//! Synthetic prompts for the engine benchmarks (`bench engine`, with or without
//! `--concurrency`): the same ids on every run, so figures compare across runs and builds.

/// Deterministic, ordinary-looking token ids (skipping the first 100, where vocabularies keep
/// their control tokens), within a vocabulary of `vocab`.
pub(crate) fn tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(100).max(1);
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % span + 100.min(vocab - 1)) as u32).collect()
}
