//! Stage 3, token folding: spaced-out letters, hyphenated compounds,
//! leetspeak, repeated letters and concatenated words; each folded token gets
//! its lexicon concepts.

use super::lexer::{G_HYPHEN, G_SPACER, K_DIGIT, K_NONASCII, K_SYM, RawTok};
use super::tokens::{F_OBF, F_SSTART, F_TAG, Tok, Tokens};
use crate::lexicon::{self, FNV_INIT, MAX_WORD, fnv_step};
use crate::mask::{C, Mask};

/// Leet substitutions (applied only to tokens that also contain letters).
#[inline]
fn leet(b: u8) -> Option<u8> {
    Some(match b {
        b'0' => b'o',
        b'1' => b'i',
        b'3' => b'e',
        b'4' => b'a',
        b'5' => b's',
        b'7' => b't',
        b'@' => b'a',
        b'$' => b's',
        b'!' => b'i',
        _ => return None,
    })
}

struct Out {
    /// Build the normalised text (for `normalize()` / debugging); the scanner
    /// itself only needs flags and concept masks.
    keep_text: bool,
    text: String,
    toks: Vec<Tok>,
    masks: Vec<Mask>,
}

impl Out {
    fn push(&mut self, w: &str, flags: u8, mask: Option<Mask>) {
        if w.is_empty() {
            return;
        }
        let mut mask = mask.unwrap_or(Mask::EMPTY);
        if w.as_bytes()[0].is_ascii_digit() {
            age_concepts(w.as_bytes(), &mut mask);
        }
        self.masks.push(mask);
        if !self.keep_text {
            self.toks.push(Tok { start: 0, end: 0, flags });
            return;
        }
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        let start = self.text.len() as u32;
        self.text.push_str(w);
        self.toks.push(Tok { start, end: self.text.len() as u32, flags });
    }
}

/// Ages: "12" → `AgeNum` (1..=17), "12yo" / "12yrs" → `Minor`.
fn age_concepts(w: &[u8], mask: &mut Mask) {
    let digits = w.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=2).contains(&digits) {
        return;
    }
    let age = w[..digits].iter().fold(0u32, |a, &b| a * 10 + u32::from(b - b'0'));
    if !(1..18).contains(&age) {
        return;
    }
    match &w[digits..] {
        b"" => mask.insert(C::AgeNum),
        b"yo" | b"yr" | b"yrs" | b"y" | b"yearold" | b"yearsold" => mask.insert(C::Minor),
        _ => {}
    }
}

#[inline]
fn known(w: &[u8]) -> bool {
    lexicon::lookup(w).is_some()
}

/// `^\d+[a-z]{1,3}$` — a number with a unit ("400mg", "3rd", "10am", "5g").
fn is_number_unit(w: &[u8]) -> bool {
    let d = w.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = &w[d..];
    d > 0 && (1..=3).contains(&rest.len()) && rest.iter().all(|b| b.is_ascii_lowercase())
}

/// Fold leetspeak in an ASCII token. Returns `None` if nothing changed.
fn fold_leet(w: &[u8], buf: &mut Vec<u8>) -> Option<()> {
    let has_letter = w.iter().any(|b| b.is_ascii_lowercase());
    let has_leet = w.iter().any(|&b| leet(b).is_some());
    if !has_letter || !has_leet || is_number_unit(w) || known(w) {
        return None;
    }
    buf.clear();
    buf.extend(w.iter().map(|&b| leet(b).unwrap_or(b)));
    if w.contains(&b'1') && !known(buf) {
        // '1' is also a common stand-in for 'l' ("ki11")
        let alt: Vec<u8> = w.iter().map(|&b| if b == b'1' { b'l' } else { leet(b).unwrap_or(b) }).collect();
        if known(&alt) {
            *buf = alt;
        }
    }
    Some(())
}

/// Squeeze runs of ≥ 3 identical letters to 1 or 2 letters when that yields a
/// known word ("kiiiill" → "kill", "boooomb" → "bomb").
fn squeeze(w: &[u8]) -> Option<Vec<u8>> {
    let mut runs: Vec<(usize, usize)> = Vec::new(); // (start, len) of runs >= 3
    let mut i = 0;
    while i < w.len() {
        let mut j = i;
        while j < w.len() && w[j] == w[i] {
            j += 1;
        }
        if j - i >= 3 {
            runs.push((i, j - i));
        }
        i = j;
    }
    if runs.is_empty() || runs.len() > 3 {
        return None;
    }
    for pattern in 0..(1u32 << runs.len()) {
        let mut out = Vec::with_capacity(w.len());
        let mut pos = 0;
        for (k, &(s, l)) in runs.iter().enumerate() {
            out.extend_from_slice(&w[pos..s]);
            let keep = if pattern & (1 << k) != 0 { 2 } else { 1 };
            out.extend(std::iter::repeat_n(w[s], keep));
            pos = s + l;
        }
        out.extend_from_slice(&w[pos..]);
        if known(&out) {
            return Some(out);
        }
    }
    None
}

/// Segment `w` into lexicon words (min #pieces). With `allow_junk`, characters
/// that start no word become junk pieces (used for collapsed spaced-out text);
/// otherwise the whole word must be covered by ≥ 2 known words.
fn segment(w: &[u8], allow_junk: bool) -> Option<Vec<(usize, usize, bool)>> {
    const MAX: usize = 64;
    let n = w.len();
    if !(2..=MAX).contains(&n) {
        return None;
    }
    // cost[i] = (junk chars, pieces) to cover w[..i]; back[i] = (start, is_word)
    let inf = (u16::MAX, u16::MAX);
    let mut cost = [inf; MAX + 1];
    let mut back = [(0usize, false); MAX + 1];
    cost[0] = (0, 0);
    for i in 0..n {
        if cost[i] == inf {
            continue;
        }
        let (junk, pieces) = cost[i];
        if allow_junk {
            let c = (junk + 1, pieces + 1);
            if c < cost[i + 1] {
                cost[i + 1] = c;
                back[i + 1] = (i, false);
            }
        }
        let mut h = FNV_INIT;
        for j in i..n.min(i + MAX_WORD) {
            h = fnv_step(h, w[j]);
            let len = j + 1 - i;
            let single_ok = len > 1 || matches!(w[i], b'a' | b'i' | b'u');
            if single_ok && lexicon::lookup_hashed(&w[i..=j], h).is_some() {
                let c = (junk, pieces + 1);
                if c < cost[j + 1] {
                    cost[j + 1] = c;
                    back[j + 1] = (i, true);
                }
            }
        }
    }
    if cost[n] == inf || cost[n].1 < 2 || (!allow_junk && cost[n].0 > 0) {
        return None;
    }
    if allow_junk && cost[n].0 as usize * 2 > n {
        return None; // mostly junk: not worth splitting
    }
    let mut pieces = Vec::new();
    let mut i = n;
    while i > 0 {
        let (s, is_word) = back[i];
        pieces.push((s, i, is_word));
        i = s;
    }
    pieces.reverse();
    // merge adjacent junk characters
    let mut merged: Vec<(usize, usize, bool)> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match merged.last_mut() {
            Some(last) if !last.2 && !p.2 => last.1 = p.1,
            _ => merged.push(p),
        }
    }
    Some(merged)
}

/// Fold one word (leet, repeats, concatenation) and append it to `out`.
fn emit_word(out: &mut Out, w: &str, mut flags: u8, kind: u8, collapsed: bool, hash: Option<u32>) {
    if kind & K_NONASCII != 0 {
        // Non-Latin words: nothing to fold; keep them (they never match ASCII rules).
        out.push(w, flags, None);
        return;
    }
    let bytes = w.as_bytes();
    let mut mask = None;
    if kind == 0 {
        // plain lowercase ASCII word: the common case
        mask = match hash {
            Some(h) => lexicon::lookup_with_hash(bytes, h),
            None => lexicon::lookup(bytes),
        };
        if mask.is_some() || (w.len() < 4 && !collapsed) {
            out.push(w, flags, mask);
            return;
        }
    }
    let mut buf = Vec::new();
    let mut cur: &[u8] = bytes;
    if kind & (K_DIGIT | K_SYM) != 0 {
        if fold_leet(bytes, &mut buf).is_some() {
            flags |= F_OBF;
            cur = &buf;
        } else if !bytes.iter().any(|b| b.is_ascii_alphanumeric()) {
            return; // only '@' / '$' / '!'
        } else if bytes.iter().any(|b| matches!(b, b'@' | b'$' | b'!')) {
            buf.extend(bytes.iter().copied().filter(|b| b.is_ascii_alphanumeric()));
            cur = &buf;
        }
        mask = lexicon::lookup(cur);
    }
    let owned;
    if mask.is_none() {
        if let Some(s) = squeeze(cur) {
            owned = s;
            cur = &owned;
            flags |= F_OBF;
            mask = lexicon::lookup(cur);
        } else if cur.iter().all(|b| b.is_ascii_lowercase())
            && (collapsed || cur.len() >= 12)
            && let Some(pieces) = segment(cur, collapsed)
        {
            let text = std::str::from_utf8(cur).unwrap_or_default();
            for (k, (s, e, _)) in pieces.into_iter().enumerate() {
                let f = if k == 0 { flags } else { flags & !F_SSTART };
                out.push(&text[s..e], f | F_OBF, lexicon::lookup(&cur[s..e]));
            }
            return;
        }
    }
    if cur.len() == bytes.len() && std::ptr::eq(cur.as_ptr(), bytes.as_ptr()) {
        out.push(w, flags, mask);
    } else {
        out.push(std::str::from_utf8(cur).unwrap_or_default(), flags, mask);
    }
}

/// Fold the raw tokens into normalised tokens with their lexicon concepts.
pub(super) fn finish(raw: &str, rt: &[RawTok], keep_text: bool) -> Tokens {
    let mut out = Out {
        keep_text,
        text: String::with_capacity(raw.len() + 8),
        toks: Vec::with_capacity(rt.len()),
        masks: Vec::with_capacity(rt.len()),
    };
    let word = |i: usize| &raw[rt[i].start as usize..rt[i].end as usize];
    let single = |i: usize| rt[i].single;
    let n = rt.len();
    let mut joined = String::new();
    let mut i = 0;
    'outer: while i < n {
        // 1. spaced-out letters: "h o w  t o", "b.o.m.b", "b-o-m-b"
        if single(i) {
            let mut j = i;
            while j + 1 < n && single(j + 1) && rt[j + 1].gap & G_SPACER != 0 {
                j += 1;
            }
            if j > i {
                joined.clear();
                for k in i..=j {
                    joined.push_str(word(k));
                }
                let flags = (rt[i].flags & (F_SSTART | F_TAG)) | F_OBF;
                let kind = rt[i..=j].iter().fold(0, |k, t| k | t.kind);
                emit_word(&mut out, &joined.clone(), flags, kind, true, None);
                i = j + 1;
                continue;
            }
        }
        // 2. hyphen/underscore compounds, joined if the joined word is known
        if i + 1 < n && rt[i + 1].gap & G_HYPHEN != 0 {
            let mut last = i + 1;
            while last + 1 < n && last - i < 3 && rt[last + 1].gap & G_HYPHEN != 0 {
                last += 1;
            }
            for end in (i + 1..=last).rev() {
                joined.clear();
                for k in i..=end {
                    joined.push_str(word(k));
                }
                let mut b = Vec::new();
                let probe: &[u8] = if fold_leet(joined.as_bytes(), &mut b).is_some() { &b } else { joined.as_bytes() };
                if known(probe) {
                    let flags = rt[i].flags & (F_SSTART | F_TAG | F_OBF);
                    let kind = rt[i..=end].iter().fold(0, |k, t| k | t.kind);
                    emit_word(&mut out, &joined.clone(), flags, kind, false, None);
                    i = end + 1;
                    continue 'outer;
                }
            }
        }
        let t = rt[i];
        if t.kind == 0 && t.runs == 1 {
            // fast path: one plain lowercase ASCII run, hash known from the lexer
            let w = word(i);
            if let Some(m) = lexicon::lookup_with_hash(w.as_bytes(), t.hash) {
                out.push(w, t.flags, Some(m));
                i += 1;
                continue;
            }
            if w.len() < 4 {
                out.push(w, t.flags, None);
                i += 1;
                continue;
            }
        }
        let hash = (t.runs == 1).then_some(t.hash);
        emit_word(&mut out, word(i), t.flags, t.kind, false, hash);
        i += 1;
    }
    Tokens { text: out.text, toks: out.toks, masks: out.masks, maybe_base64: false }
}
