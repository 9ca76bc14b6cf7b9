//! The rule vocabulary: what a rule is and the `const` constructors the rule
//! table is written in (`seq`, `near`, `emit`, `find`, `.breakers()`,
//! `.unless()`).
//!
//! A leaf module, so the dependencies run one way: the matcher (`engine`) reads
//! the table (`rules`), and both are written in this vocabulary.

use crate::category::Category;
use crate::mask::{C, Mask};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Out {
    /// Add a derived concept to the token where the rule completes.
    Emit(C),
    /// Report a finding.
    Find(Category, &'static str),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Rule {
    pub out: Out,
    /// `true`: slots must occur in order, each within `gap` tokens of the previous
    /// one. `false`: all slots must occur (any order) within a span of `gap` tokens.
    pub seq: bool,
    pub slots: &'static [Mask],
    pub gap: u8,
    /// (`seq` only) concepts that must not occur strictly between matched slots.
    pub breakers: Mask,
    /// Suppressors: the match is dropped if any token within `ctx` tokens of the
    /// matched span carries one of these concepts.
    pub unless: Mask,
    pub ctx: u8,
}

pub(crate) const fn emit(c: C) -> Out {
    Out::Emit(c)
}
pub(crate) const fn find(cat: Category, id: &'static str) -> Out {
    Out::Find(cat, id)
}
/// Ordered phrase: slot *k+1* within `gap` tokens after slot *k*.
pub(crate) const fn seq(out: Out, gap: u8, slots: &'static [Mask]) -> Rule {
    Rule { out, seq: true, slots, gap, breakers: Mask::EMPTY, unless: Mask::EMPTY, ctx: 0 }
}
/// Co-occurrence: every slot within a window of `span` tokens, any order.
pub(crate) const fn near(out: Out, span: u8, slots: &'static [Mask]) -> Rule {
    Rule { out, seq: false, slots, gap: span, breakers: Mask::EMPTY, unless: Mask::EMPTY, ctx: 0 }
}
impl Rule {
    pub(crate) const fn breakers(mut self, m: Mask) -> Rule {
        self.breakers = m;
        self
    }
    pub(crate) const fn unless(mut self, m: Mask, ctx: u8) -> Rule {
        self.unless = m;
        self.ctx = ctx;
        self
    }
}
