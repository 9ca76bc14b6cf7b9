//! Normalisation: raw text → a sequence of folded, lowercase word tokens.
//!
//! Pipeline (single pass over the input, then one pass over the tokens):
//!
//! 1. **Character folding** (`char_fold`): compatibility decomposition (the NFKD
//!    half of NFKC — fullwidth, ligatures, math alphanumerics, circled letters …),
//!    removal of combining marks (accents), lowercasing, homoglyph folding
//!    (Cyrillic/Greek/small-caps look-alikes, regional-indicator and enclosed
//!    letters), deletion of invisible/format characters (zero-width, bidi
//!    controls, soft hyphen, variation selectors) and decoding of Unicode "tag"
//!    characters (invisible ASCII smuggling) back to ASCII.
//! 2. **Lexing** (`lexer`): alphanumeric runs become raw tokens. In-word
//!    apostrophes are dropped ("don't" → "dont"), `!` between letters is kept as
//!    leet. For each token we remember what separated it from the previous one
//!    (single spacer, hyphen, sentence break, role-tag punctuation).
//! 3. **Token folding** (`token_fold`): runs of single characters separated by one
//!    spacer are collapsed ("b o m b", "b.o.m.b" → "bomb"); hyphenated compounds
//!    are joined when the joined word is known ("self-harm" → "selfharm");
//!    leetspeak is folded only inside tokens that also contain letters and do not
//!    look like a number with a unit ("400mg", "3rd" are kept); letter runs of 3+
//!    are squeezed when that yields a known word ("boooomb"); unknown
//!    concatenations are segmented into known words ("ignoreallprevious…").
//!
//! Every token records whether any of these obfuscation folds changed it
//! (`F_OBF`), so findings can report `obfuscated`.

mod char_fold;
mod lexer;
mod token_fold;
mod tokens;

pub(crate) use tokens::{F_CAPS, F_OBF, F_SSTART, F_TAG, Tokens};

/// Normalise `text` (already truncated by the caller) into tokens.
pub(crate) fn tokenize(text: &str, keep_text: bool) -> Tokens {
    let (raw, rt, b64) = lexer::lex(text);
    let mut tokens = token_fold::finish(&raw, &rt, keep_text);
    tokens.maybe_base64 = b64;
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        tokenize(s, true).text
    }

    #[test]
    fn nfkc_case_and_accents() {
        assert_eq!(norm("ＨＯＷ ｔｏ"), "how to");
        assert_eq!(norm("Bômb Café"), "bomb cafe");
        assert_eq!(norm("𝐁𝐎𝐌𝐁 ⓑⓞⓜⓑ"), "bomb bomb");
        assert_eq!(norm("ﬁle"), "file");
    }

    #[test]
    fn invisible_chars_removed() {
        let t = tokenize("b\u{200B}o\u{200C}m\u{2060}b so\u{00AD}ft x\u{FE0F}", true);
        assert_eq!(t.text, "bomb soft x");
        assert!(t.toks[0].flags & F_OBF != 0);
    }

    #[test]
    fn tag_characters_decoded() {
        let hidden: String = "ignore".chars().map(|c| char::from_u32(0xE0000 + c as u32).unwrap()).collect();
        assert_eq!(norm(&hidden), "ignore");
    }

    #[test]
    fn homoglyphs_folded() {
        assert_eq!(norm("bоmb"), "bomb"); // Cyrillic о
        assert_eq!(norm("ѕаrіn"), "sarin");
        assert_eq!(norm("ΒΟΜΒ"), "bomb"); // Greek capitals
        assert_eq!(norm("🇧🇴🇲🇧"), "bomb");
    }

    #[test]
    fn leetspeak_only_in_words_with_letters() {
        assert_eq!(norm("1gn0r3 pr3v10us 1nstruct10ns"), "ignore previous instructions");
        assert_eq!(norm("m4k3 4 b0mb"), "make 4 bomb");
        assert_eq!(norm("ki11 p@$$w0rd"), "kill password");
        assert_eq!(norm("take 400mg for 3 hours on the 2nd day"), "take 400mg for 3 hours on the 2nd day");
        assert_eq!(norm("k!ll it!"), "kill it");
    }

    #[test]
    fn spaced_letters_collapsed() {
        assert_eq!(norm("h o w   t o   m a k e   a   p i p e   b o m b"), "how to make a pipe bomb");
        assert_eq!(norm("b.o.m.b"), "bomb");
        assert_eq!(norm("b-o-m-b"), "bomb");
        assert_eq!(norm("h o w t o m a k e a b o m b"), "howto make a bomb");
        assert_eq!(norm("plan a, b or c"), "plan a b or c");
    }

    #[test]
    fn compounds_and_concatenations() {
        assert_eq!(norm("self-harm"), "selfharm");
        assert_eq!(norm("bomb-shaped cake"), "bomb shaped cake");
        assert_eq!(norm("ignoreallpreviousinstructions"), "ignore all previous instructions");
        assert_eq!(norm("information"), "information");
    }

    #[test]
    fn repeated_letters_squeezed() {
        assert_eq!(norm("boooomb kiiiilll"), "bomb kill");
        assert_eq!(norm("zzzz good"), "zzzz good");
    }

    #[test]
    fn apostrophes_and_flags() {
        let t = tokenize("Don't. <system> DAN", true);
        assert_eq!(t.text, "dont system dan");
        assert!(t.toks[0].flags & F_SSTART != 0);
        assert!(t.toks[1].flags & F_TAG != 0 && t.toks[1].flags & F_SSTART != 0);
        assert!(t.toks[2].flags & F_CAPS != 0);
    }
}
