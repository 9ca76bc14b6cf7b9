//! Hashed features of the normalised token stream.
//!
//! Every feature is anchored at one token, so a window of tokens owns exactly the features of
//! its tokens and window sums are prefix-sum differences. Per token:
//!
//! * the word itself, and the word pair it ends (`prev word`);
//! * character 3- and 4-grams of the word with boundary marks (`<bomb>` → `<bo`, `bom`, …),
//!   which carry misspellings, inflections and languages without spaces;
//! * each lexicon concept of the token, and each concept pair it closes with the concepts of
//!   the three tokens before it (the co-occurrence signal the rules use, without the rules).
//!
//! A feature hashes to one of `2^bits` buckets with a sign (signed feature hashing keeps
//! collisions unbiased). Nothing here allocates per feature: the caller gets a callback.

use crate::mask::{MASK_WORDS, Mask};
use crate::normalize::Tokens;

/// Longest prefix of a token, in characters, that contributes character n-grams (base64
/// blobs and pasted hashes should not dominate a window).
const MAX_GRAM_CHARS: usize = 48;
/// How many tokens back a concept pair may reach.
const PAIR_REACH: usize = 3;

/// Feature kinds, mixed into the hash so a word and a character gram never share a key.
const K_WORD: u32 = 0x9E37_79B1;
const K_PAIR: u32 = 0x85EB_CA77;
const K_GRAM3: u32 = 0xC2B2_AE3D;
const K_GRAM4: u32 = 0x27D4_EB2F;
const K_CONCEPT: u32 = 0x1656_67B1;
const K_CONCEPT_PAIR: u32 = 0xD3A2_646C;

/// One hashed feature: its bucket and whether it counts negatively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub bucket: u32,
    pub negative: bool,
}

#[inline]
fn fnv(seed: u32, bytes: &[u8]) -> u32 {
    let mut h = 0x811C_9DC5 ^ seed;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// murmur3's finaliser: spreads every input bit over the output.
#[inline]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

#[inline]
fn feature(h: u32, bits: u32) -> Feature {
    let h = mix(h);
    Feature { bucket: h >> (32 - bits), negative: h & 1 == 1 }
}

/// Concept ids of a mask, lowest first.
fn concepts(m: &Mask) -> impl Iterator<Item = u32> + '_ {
    (0..MASK_WORDS).flat_map(move |w| {
        let mut bits = m.0[w];
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            Some(w as u32 * 64 + b)
        })
    })
}

/// Call `f(token_index, feature)` for every feature of `tokens` (built with text kept).
/// `bits` is the log2 of the bucket count (1..=31).
pub(crate) fn for_each(tokens: &Tokens, bits: u32, mut f: impl FnMut(usize, Feature)) {
    let text = tokens.text.as_bytes();
    let mut prev_word = 0u32;
    let mut grams = [0u32; MAX_GRAM_CHARS + 2];
    for (i, tok) in tokens.toks.iter().enumerate() {
        let word = &text[tok.start as usize..tok.end as usize];
        let w = fnv(K_WORD, word);
        f(i, feature(w, bits));
        if i > 0 {
            f(i, feature(w ^ prev_word.rotate_left(11) ^ K_PAIR, bits));
        }
        prev_word = w;

        // Character grams over `<word>`, in characters (UTF-8 sequences), not bytes.
        let mut n = 0;
        grams[n] = u32::from(b'<');
        n += 1;
        if let Ok(s) = std::str::from_utf8(word) {
            for c in s.chars().take(MAX_GRAM_CHARS) {
                grams[n] = c as u32;
                n += 1;
            }
        }
        grams[n] = u32::from(b'>');
        n += 1;
        for (len, kind) in [(3, K_GRAM3), (4, K_GRAM4)] {
            for g in grams[..n].windows(len) {
                let h = g.iter().fold(kind, |h, &c| (h ^ c).wrapping_mul(0x0100_0193));
                f(i, feature(h, bits));
            }
        }

        let mask = &tokens.masks[i];
        if mask.is_empty() {
            continue;
        }
        for c in concepts(mask) {
            f(i, feature(mix(c ^ K_CONCEPT), bits));
            for back in 1..=PAIR_REACH.min(i) {
                for d in concepts(&tokens.masks[i - back]) {
                    // Order-free: "make … bomb" and "bomb … make" are one pair.
                    let (a, b) = if c < d { (c, d) } else { (d, c) };
                    f(i, feature(mix(a.wrapping_mul(0x0001_0001) ^ b.rotate_left(16) ^ K_CONCEPT_PAIR), bits));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::tokenize;

    fn feats(s: &str) -> Vec<(usize, Feature)> {
        let t = tokenize(s, true);
        let mut v = Vec::new();
        for_each(&t, 16, |i, f| v.push((i, f)));
        v
    }

    #[test]
    fn features_are_anchored_and_bounded() {
        let v = feats("how to make a bomb");
        assert!(v.iter().all(|(_, f)| f.bucket < 1 << 16));
        assert!(v.iter().all(|(i, _)| *i < 5));
        // word + pair + grams for each token: at least 5 words and 4 pairs
        assert!(v.len() > 20);
    }

    #[test]
    fn obfuscation_folds_to_the_same_features() {
        assert_eq!(feats("how to make a bomb"), feats("H0W t0 m4k3 a b o m b"));
        assert_eq!(feats("bomb"), feats("bоmb")); // Cyrillic о
    }

    #[test]
    fn long_tokens_are_capped() {
        let long = "a".repeat(10_000);
        let v = feats(&long);
        assert!(v.len() < 2 * MAX_GRAM_CHARS + 10, "{}", v.len());
    }
}
