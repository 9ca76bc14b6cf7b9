//! The matcher: runs the rule table over the token stream in one left-to-right
//! pass.
//!
//! * Each token gets a concept [`Mask`] from the lexicon plus flag-derived
//!   concepts (sentence start, role tag, all-caps persona name, ages).
//! * A compile-time index maps each concept to the rules that can *complete* at
//!   a token carrying it (the last slot of a `seq` rule, any slot of a `near`
//!   rule), so a token only visits the handful of rules it can trigger.
//! * Matching only looks backwards a bounded number of tokens (`gap`/`span`
//!   ≤ 255), so the whole pass is O(tokens × rules-triggered × window).
//! * `Emit` rules add a derived concept to the current token (phrases such as
//!   "how do i" → `HowTo`); derived concepts trigger further rules at once.
//! * `Find` rules produce a finding; suppressor checks (`unless`) need the
//!   tokens after the match too, so candidates with suppressors are confirmed
//!   after the pass.

use crate::category::Category;
use crate::mask::{C, Mask};
use crate::normalize::{F_CAPS, F_OBF, F_SSTART, F_TAG, Tokens};
use crate::rule::{Out, Rule};
use crate::rules::RULES;

impl Rule {
    /// Concepts at which this rule can complete.
    const fn trigger(&self) -> Mask {
        if self.seq {
            self.slots[self.slots.len() - 1]
        } else {
            let mut m = Mask::EMPTY;
            let mut i = 0;
            while i < self.slots.len() {
                m = m.or(self.slots[i]);
                i += 1;
            }
            m
        }
    }

    /// Try to complete this rule at token `t`; returns the first matched position.
    /// `last[c]` = 1 + last position (≤ t) where concept `c` was seen (0 = never);
    /// it gives a cheap early reject before scanning the window.
    fn matches(&self, masks: &[Mask], last: &[u32], seen: &Mask, t: usize) -> Option<usize> {
        let k = self.slots.len();
        // cheapest reject first: some slot never occurred anywhere so far
        if !self.slots.iter().all(|s| seen.hits(s)) {
            return None;
        }
        let reach = t.saturating_sub(self.gap as usize * if self.seq { k } else { 1 } + k) as u32;
        for s in &self.slots[..k - 1] {
            if !seen_since(s, last, reach) {
                return None;
            }
        }
        if self.seq {
            if !masks[t].hits(&self.slots[k - 1]) {
                return None;
            }
            let mut pos = t;
            for s in (0..k - 1).rev() {
                let lo = pos.saturating_sub(self.gap as usize + 1);
                let p = (lo..pos).rev().find(|&p| masks[p].hits(&self.slots[s]))?;
                if !self.breakers.is_empty() && (p + 1..pos).any(|q| masks[q].hits(&self.breakers)) {
                    return None;
                }
                pos = p;
            }
            Some(pos)
        } else {
            let lo = t.saturating_sub(self.gap as usize);
            let mut first = t;
            for s in self.slots {
                if masks[t].hits(s) {
                    continue;
                }
                let p = (lo..t).rev().find(|&p| masks[p].hits(s))?;
                first = first.min(p);
            }
            Some(first)
        }
    }
}

/// Has any concept of `m` been seen at a position ≥ `from` (1-based in `last`)?
#[inline]
fn seen_since(m: &Mask, last: &[u32], from: u32) -> bool {
    for (w, &bits) in m.0.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            let c = w * 64 + b.trailing_zeros() as usize;
            b &= b - 1;
            if last[c] > from {
                return true;
            }
        }
    }
    false
}

#[inline]
fn note_seen(m: &Mask, last: &mut [u32], t: usize) {
    for (w, &bits) in m.0.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            let c = w * 64 + b.trailing_zeros() as usize;
            b &= b - 1;
            last[c] = t as u32 + 1;
        }
    }
}

// ---------------------------------------------------------------- rule index

const RULE_WORDS: usize = 4;
const _: () = assert!(RULES.len() <= RULE_WORDS * 64, "too many rules for the index");

type RuleSet = [u64; RULE_WORDS];

/// `INDEX[c]` = set of rules that can complete at a token carrying concept `c`.
static INDEX: [RuleSet; C::Count as usize] = {
    let mut idx = [[0u64; RULE_WORDS]; C::Count as usize];
    let mut r = 0;
    while r < RULES.len() {
        let trig = RULES[r].trigger();
        let mut c = 0;
        while c < C::Count as usize {
            if trig.0[c / 64] & (1u64 << (c % 64)) != 0 {
                idx[c][r / 64] |= 1u64 << (r % 64);
            }
            c += 1;
        }
        r += 1;
    }
    idx
};

/// Union of all concepts that can complete some rule.
static TRIGGERS: Mask = {
    let mut m = Mask::EMPTY;
    let mut r = 0;
    while r < RULES.len() {
        m = m.or(RULES[r].trigger());
        r += 1;
    }
    m
};

#[inline]
fn add_rules_for(todo: &mut RuleSet, m: &Mask) {
    for (w, &bits) in m.0.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            let c = w * 64 + b.trailing_zeros() as usize;
            b &= b - 1;
            for (t, i) in todo.iter_mut().zip(INDEX[c].iter()) {
                *t |= *i;
            }
        }
    }
}

#[inline]
fn pop_lowest(todo: &mut RuleSet) -> Option<usize> {
    for (w, bits) in todo.iter_mut().enumerate() {
        if *bits != 0 {
            let r = bits.trailing_zeros() as usize;
            *bits &= *bits - 1;
            return Some(w * 64 + r);
        }
    }
    None
}

// ------------------------------------------------------------ token concepts

/// Concepts of a token: lexicon (+ ages, added during folding) + flag-derived ones.
#[inline]
fn token_mask(mut m: Mask, f: u8) -> Mask {
    if f & (F_SSTART | F_TAG | F_CAPS | F_OBF) == 0 {
        return m;
    }
    if f & F_SSTART != 0 {
        m.insert(C::SStart);
    }
    if f & F_TAG != 0 && m.has(C::RoleW) {
        m.insert(C::RoleTag);
    }
    if f & F_CAPS != 0 && m.has(C::PersonaW) {
        m.insert(C::PersonaName);
    }
    if f & F_CAPS != 0 && m.has(C::MalwareCaps) {
        m.insert(C::Malware); // "RAT" (remote access trojan), not the animal
    }
    if f & F_OBF != 0 {
        m.insert(C::Obfuscated);
    }
    m
}

/// A finding before suppressor confirmation.
struct Candidate {
    rule: usize,
    first: usize,
    last: usize,
    obf: bool,
}

/// Run all rules over `tokens`. Returns (category, rule id, obfuscated).
pub(crate) fn evaluate(tokens: &mut Tokens) -> Option<(Category, &'static str, bool)> {
    let n = tokens.toks.len();
    let masks = &mut tokens.masks;
    let mut pending: Vec<Candidate> = Vec::new();
    let mut last = [0u32; C::Count as usize];
    let mut seen = Mask::EMPTY;
    for t in 0..n {
        let m = token_mask(masks[t], tokens.toks[t].flags);
        masks[t] = m;
        if m.is_empty() {
            continue;
        }
        note_seen(&m, &mut last, t);
        seen = seen.or(m);
        if !m.hits(&TRIGGERS) {
            continue;
        }
        let mut todo: RuleSet = [0; RULE_WORDS];
        add_rules_for(&mut todo, &m);
        while let Some(ri) = pop_lowest(&mut todo) {
            let rule = &RULES[ri];
            if !rule.slots.iter().all(|s| seen.hits(s)) {
                continue; // some slot never occurred so far
            }
            let Some(first) = rule.matches(masks, &last, &seen, t) else { continue };
            let span_obf = masks[first..=t].iter().any(|m| m.has(C::Obfuscated));
            match rule.out {
                Out::Emit(c) => {
                    if !masks[t].has(c) {
                        masks[t].insert(c);
                        if span_obf {
                            masks[t].insert(C::Obfuscated);
                        }
                        last[c as usize] = t as u32 + 1;
                        seen.insert(c);
                        add_rules_for(&mut todo, &Mask::bit(c));
                    }
                }
                Out::Find(cat, id) => {
                    if rule.unless.is_empty() {
                        return Some((cat, id, span_obf));
                    }
                    pending.push(Candidate { rule: ri, first, last: t, obf: span_obf });
                }
            }
        }
    }
    for c in pending {
        let rule = &RULES[c.rule];
        let lo = c.first.saturating_sub(rule.ctx as usize);
        let hi = (c.last + rule.ctx as usize).min(n - 1);
        if !masks[lo..=hi].iter().any(|m| m.hits(&rule.unless))
            && let Out::Find(cat, id) = rule.out
        {
            return Some((cat, id, c.obf));
        }
    }
    None
}

/// Debug helper: the concept masks after phrase rules.
#[cfg(feature = "debug-concepts")]
pub(crate) fn debug_concepts(tokens: &Tokens) -> Vec<(String, Vec<usize>)> {
    let mut masks: Vec<Mask> = Vec::new();
    let mut last = [0u32; C::Count as usize];
    let mut seen = Mask::EMPTY;
    for t in 0..tokens.toks.len() {
        masks.push(token_mask(tokens.masks[t], tokens.toks[t].flags));
        note_seen(&masks[t], &mut last, t);
        seen = seen.or(masks[t]);
        let mut todo: RuleSet = [0; RULE_WORDS];
        add_rules_for(&mut todo, &masks[t]);
        while let Some(ri) = pop_lowest(&mut todo) {
            if let (Out::Emit(c), Some(_)) = (RULES[ri].out, RULES[ri].matches(&masks, &last, &seen, t))
                && !masks[t].has(c)
            {
                masks[t].insert(c);
                last[c as usize] = t as u32 + 1;
                seen.insert(c);
                add_rules_for(&mut todo, &Mask::bit(c));
            }
        }
    }
    masks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let bits = (0..C::Count as usize).filter(|&b| m.0[b / 64] & (1u64 << (b % 64)) != 0).collect();
            (tokens.word(i).to_string(), bits)
        })
        .collect()
}
