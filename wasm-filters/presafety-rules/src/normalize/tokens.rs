//! The normaliser's output: token spans, token flags and lexicon concepts.

use crate::mask::Mask;

/// Token changed by obfuscation folding.
pub(crate) const F_OBF: u8 = 1;
/// First token of a sentence or line.
pub(crate) const F_SSTART: u8 = 2;
/// Adjacent to chat-template punctuation (`<system>`, `[INST]`, `### system`, `system:` at line start).
pub(crate) const F_TAG: u8 = 4;
/// Written in capitals (≥ 2 letters, all upper case).
pub(crate) const F_CAPS: u8 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tok {
    pub start: u32,
    pub end: u32,
    pub flags: u8,
}

/// Normalised text: tokens separated by single spaces, plus token spans.
pub(crate) struct Tokens {
    pub text: String,
    pub toks: Vec<Tok>,
    /// Lexicon concepts of each token (looked up once, during folding).
    pub masks: Vec<Mask>,
    /// The input has a span that may be embedded base64 (worth decoding).
    pub maybe_base64: bool,
}

impl Tokens {
    /// Text of token `i` (only available when built with `keep_text`).
    #[cfg(feature = "debug-concepts")]
    pub fn word(&self, i: usize) -> &str {
        let t = self.toks[i];
        &self.text[t.start as usize..t.end as usize]
    }
}
