//! Stage 2, lexing: folded characters → raw tokens, each with what separated
//! it from the previous one, plus the embedded-base64 pre-filter.

use super::char_fold::{CF_OBF, CF_UPPER, fold_char};
use super::tokens::{F_CAPS, F_OBF, F_SSTART, F_TAG};
use crate::lexicon::{FNV_INIT, fnv_step};

/// What separated a raw token from the previous one.
pub(super) const G_SPACER: u8 = 1; // exactly one spacer char: ' ' . - _ * ~ / | + ·
pub(super) const G_HYPHEN: u8 = 2; // exactly one '-' or '_' (compound word)
const G_SENT: u8 = 4; // sentence / line break or start of text
const G_TAG_OPEN: u8 = 8; // '<' '[' '#' '{' '|' before the token
const G_NEWLINE: u8 = 16; // line start

/// Byte classes for the ASCII fast path.
const C_ALNUM: u8 = 1;
const C_DIGIT: u8 = 2;
const C_UPPER: u8 = 1 << 5; // == the ASCII case bit, see `push_run`
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() {
            t[b] = C_ALNUM | C_DIGIT;
        } else if c.is_ascii_uppercase() {
            t[b] = C_ALNUM | C_UPPER;
        } else if c.is_ascii_lowercase() {
            t[b] = C_ALNUM;
        }
        b += 1;
    }
    t
};

/// What a raw token contains (lets the common case skip the folding work).
pub(super) const K_DIGIT: u8 = 1;
pub(super) const K_SYM: u8 = 2; // '@', '$', '!'
pub(super) const K_NONASCII: u8 = 4;

#[derive(Clone, Copy, Debug)]
pub(super) struct RawTok {
    pub(super) start: u32,
    pub(super) end: u32,
    /// FNV-1a hash of the token text, valid when `runs == 1` (one ASCII run).
    pub(super) hash: u32,
    pub(super) flags: u8,
    pub(super) gap: u8,
    pub(super) kind: u8,
    pub(super) single: bool,
    pub(super) runs: u8,
}

struct Lexer {
    /// Folded token text (valid UTF-8: only whole characters are pushed).
    raw: Vec<u8>,
    toks: Vec<RawTok>,
    in_tok: bool,
    start: usize,
    tok_flags: u8,
    upper: u32,
    cased: u32,
    nchars: u32,
    kind: u8,
    hash: u32,
    runs: u8,
    pending: Option<char>,
    pending_drop: bool,
    gap_len: u32,
    gap_first: char,
    gap: u8,
    budget: usize,
    /// Base64 pre-filter: length of the current span of base64 symbols
    /// (letters, digits, `+ / _ -`), whether it mixes upper case with lower
    /// case/digits, and whether any span could hold a payload.
    b64_span: u32,
    b64_upper: bool,
    b64_other: bool,
    b64_candidate: bool,
}

impl Lexer {
    fn new(cap: usize) -> Self {
        Lexer {
            raw: Vec::with_capacity(cap + 16),
            toks: Vec::with_capacity(cap / 5 + 4),
            in_tok: false,
            start: 0,
            tok_flags: 0,
            upper: 0,
            cased: 0,
            nchars: 0,
            kind: 0,
            hash: FNV_INIT,
            runs: 0,
            pending: None,
            pending_drop: false,
            gap_len: 0,
            gap_first: ' ',
            gap: G_SENT | G_NEWLINE,
            budget: cap.saturating_mul(3) + 64,
            b64_span: 0,
            b64_upper: false,
            b64_other: false,
            b64_candidate: false,
        }
    }

    #[inline]
    fn is_word(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '@' || c == '$' || (!c.is_ascii() && c.is_alphanumeric())
    }

    /// Start a token if needed, resolving a pending in-word `'` / `!`.
    #[inline]
    fn enter_word(&mut self) {
        if !self.in_tok {
            self.begin();
        } else if let Some(p) = self.pending.take() {
            if p == '!' {
                self.raw.push(b'!');
                self.kind |= K_SYM;
                self.nchars += 1;
            }
            self.runs = 2; // "don't": the hash would cover only the last run
        }
        if self.pending_drop {
            self.tok_flags |= F_OBF;
            self.pending_drop = false;
        }
    }

    /// A run of ASCII letters/digits starting at `bytes[0]` (the bulk of most
    /// inputs): scanned, lowercased, counted and hashed in one pass. Returns
    /// the run length.
    #[inline]
    fn push_run(&mut self, bytes: &[u8]) -> usize {
        let mut n = 0;
        let (mut upper, mut digits) = (0u32, 0u32);
        let mut h = FNV_INIT;
        let full = self.raw.len() >= self.budget;
        if !full {
            self.enter_word();
        }
        for &b in bytes {
            let c = CLASS[b as usize];
            if c & C_ALNUM == 0 {
                break;
            }
            upper += u32::from((c & C_UPPER) >> 5);
            digits += u32::from(c & C_DIGIT);
            let l = b | (c & C_UPPER); // ASCII lowercase: C_UPPER is the case bit
            h = fnv_step(h, l);
            if !full {
                self.raw.push(l);
            }
            n += 1;
        }
        if full {
            return n;
        }
        let digits = digits >> 1; // C_DIGIT is bit 1
        self.cased += n as u32 - digits;
        self.upper += upper;
        self.nchars += n as u32;
        self.hash = h;
        self.runs = self.runs.saturating_add(1);
        if digits != 0 {
            self.kind |= K_DIGIT;
        }
        self.b64_span += n as u32;
        self.b64_upper |= upper > 0;
        self.b64_other |= upper < n as u32;
        if self.b64_span >= crate::base64::MIN_RUN as u32 && self.b64_upper && self.b64_other {
            self.b64_candidate = true;
        }
        n
    }

    /// A plain space, the most common separator.
    #[inline]
    fn space(&mut self) {
        if self.in_tok {
            if self.pending.is_some() {
                self.push_sep(b' ');
                return;
            }
            self.end();
        }
        if self.gap_len == 0 {
            self.gap_first = ' ';
        }
        self.gap_len += 1;
        self.b64_span = 0;
        self.b64_upper = false;
        self.b64_other = false;
    }

    /// An ASCII byte that is not a letter or digit.
    #[inline]
    fn push_sep(&mut self, b: u8) {
        if matches!(b, b'+' | b'/' | b'_' | b'-') {
            self.b64_span += 1;
        } else {
            self.b64_span = 0;
            self.b64_upper = false;
            self.b64_other = false;
        }
        if b == b'@' || b == b'$' {
            self.push(b as char, 0);
            return;
        }
        if self.in_tok {
            if self.pending.is_none() && (b == b'\'' || b == b'!') {
                self.pending = Some(b as char);
                return;
            }
            let p = self.pending.take();
            self.end();
            if p == Some('!') {
                self.gap_char('!');
            }
        }
        if b == b' ' {
            if self.gap_len == 0 {
                self.gap_first = ' ';
            }
            self.gap_len += 1;
        } else {
            self.gap_char(b as char);
        }
    }

    /// General path: one folded character (non-ASCII input, or '@' / '$').
    fn push(&mut self, c: char, f: u8) {
        if c == '\u{0}' {
            // invisible character deleted: obfuscation if it sits inside/next to a word
            self.pending_drop = true;
            if self.in_tok {
                self.tok_flags |= F_OBF;
            }
            return;
        }
        if self.raw.len() >= self.budget {
            return;
        }
        if Self::is_word(c) {
            self.enter_word();
            if f & CF_OBF != 0 {
                self.tok_flags |= F_OBF;
            }
            self.nchars += 1;
            if c.is_ascii_digit() {
                self.kind |= K_DIGIT;
            } else if c == '@' || c == '$' {
                self.kind |= K_SYM;
            } else if !c.is_ascii() {
                self.kind |= K_NONASCII;
            }
            if c.is_alphabetic() {
                self.cased += 1;
                if f & CF_UPPER != 0 {
                    self.upper += 1;
                }
            }
            let mut buf = [0u8; 4];
            self.raw.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            self.runs = 2; // hash not tracked for folded characters
            return;
        }
        if c.is_ascii() {
            self.push_sep(c as u8);
            return;
        }
        if self.in_tok {
            let p = self.pending.take();
            self.end();
            if p == Some('!') {
                self.gap_char('!');
            }
        }
        self.gap_char(c);
    }

    fn begin(&mut self) {
        self.in_tok = true;
        self.start = self.raw.len();
        self.tok_flags = 0;
        self.upper = 0;
        self.cased = 0;
        self.nchars = 0;
        self.kind = 0;
        self.runs = 0;
        let g = self.gap;
        let single = self.gap_len == 1;
        let mut gap = g & (G_SENT | G_TAG_OPEN | G_NEWLINE);
        if single {
            gap |= match self.gap_first {
                '-' | '_' => G_SPACER | G_HYPHEN,
                ' ' | '.' | '*' | '~' | '/' | '|' | '+' | ',' | '\'' | '"' => G_SPACER,
                _ => 0,
            };
        }
        if g & G_SENT != 0 {
            self.tok_flags |= F_SSTART;
        }
        if g & G_TAG_OPEN != 0 {
            self.tok_flags |= F_TAG;
        }
        self.gap = gap;
    }

    fn end(&mut self) {
        self.in_tok = false;
        let mut flags = self.tok_flags;
        if self.cased >= 2 && self.upper == self.cased {
            flags |= F_CAPS;
        }
        self.toks.push(RawTok {
            start: self.start as u32,
            end: self.raw.len() as u32,
            flags,
            gap: self.gap,
            kind: self.kind,
            single: self.nchars == 1,
            hash: self.hash,
            runs: self.runs,
        });
        self.gap = 0;
        self.gap_len = 0;
    }

    fn gap_char(&mut self, c: char) {
        if self.gap_len == 0 {
            self.gap_first = c;
        }
        self.gap_len += 1;
        match c {
            '.' | '?' | '!' | ';' | ':' | '\n' | '\r' => {
                self.gap |= G_SENT;
                if c == '\n' {
                    self.gap |= G_NEWLINE;
                }
                if c == ':' && self.gap_len == 1 {
                    // "System:" at the start of a line is a transcript role marker
                    if let Some(t) = self.toks.last_mut()
                        && t.gap & G_NEWLINE != 0
                    {
                        t.flags |= F_TAG;
                    }
                }
            }
            '<' | '[' | '{' | '|' => self.gap |= G_TAG_OPEN,
            '>' | ']' | '}' => {
                if let Some(t) = self.toks.last_mut()
                    && self.gap_len <= 2
                {
                    t.flags |= F_TAG;
                }
                if c == '>' && self.gap_len <= 2 {
                    self.gap |= G_TAG_OPEN; // "<|im_start|>system"
                }
            }
            _ => {}
        }
        if c != ' ' && c != '\t' {
            self.pending_drop = false;
        }
    }

    fn finish(mut self) -> (String, Vec<RawTok>, bool) {
        if self.in_tok {
            self.end();
        }
        // Only whole UTF-8 characters were pushed, so this cannot fail.
        let raw = String::from_utf8(self.raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        (raw, self.toks, self.b64_candidate)
    }
}

/// Lex `text` into raw tokens: (folded token text, raw tokens, whether the
/// input may hold embedded base64).
pub(super) fn lex(text: &str) -> (String, Vec<RawTok>, bool) {
    let mut lx = Lexer::new(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphanumeric() {
            i += lx.push_run(&bytes[i..]);
        } else if b == b' ' {
            lx.space();
            i += 1;
        } else if b.is_ascii() {
            lx.push_sep(b);
            i += 1;
        } else if let Some(c) = text[i..].chars().next() {
            i += c.len_utf8();
            lx.b64_span = 0;
            fold_char(c, &mut |c, f| lx.push(c, f));
        } else {
            break;
        }
    }
    lx.finish()
}
