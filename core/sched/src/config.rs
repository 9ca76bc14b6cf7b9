//! Scheduler configuration: service tiers, their weights and limits, and the step budget.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A service tier. Higher tiers have higher priority (`Enterprise` highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Team,
    Plus,
    Enterprise,
}

impl Tier {
    /// Every tier, lowest priority first.
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Team, Tier::Plus, Tier::Enterprise];

    /// The lower-case name used in config, headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Team => "team",
            Tier::Plus => "plus",
            Tier::Enterprise => "enterprise",
        }
    }

    /// Position in [`Tier::ALL`] (also the priority rank: larger is more important).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier name that is not one of `free`, `team`, `plus`, `enterprise`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}; expected one of free, team, plus, enterprise")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownTier(s.chars().take(64).collect()))
    }
}

/// Per-tier scheduling limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// Share of prefill admission relative to other backlogged tiers (≥ 1).
    pub weight: u32,
    /// Longest prompt accepted, in tokens.
    pub max_input_tokens: usize,
    /// Requests allowed to wait at once; more are rejected with a retry-after.
    pub max_queued_requests: usize,
    /// Prompt tokens allowed to wait at once; more are rejected with a retry-after.
    pub max_queued_tokens: usize,
    /// A request that has waited this long without starting is dropped (0 disables).
    pub queue_deadline_ms: u64,
    /// Most prompt tokens this tier prefills in one step while a higher tier has work waiting
    /// or running. Lower tiers then take small chunks, so the step a higher-tier arrival waits
    /// behind, and the step that prefills it, stay short; with no higher tier about, the whole
    /// step budget is theirs. A cap at or above `max_step_tokens` means no cap.
    pub prefill_chunk: usize,
}

impl TierConfig {
    /// DESIGN §6 defaults for `tier`.
    pub fn default_for(tier: Tier) -> Self {
        let (weight, max_input_tokens, prefill_chunk) = match tier {
            Tier::Free => (1, 4096, 16),
            Tier::Team => (2, 8192, 32),
            Tier::Plus => (4, 8192, usize::MAX),
            Tier::Enterprise => (8, 8192, usize::MAX),
        };
        Self {
            weight,
            max_input_tokens,
            max_queued_requests: 256,
            max_queued_tokens: 256 * 1024,
            queue_deadline_ms: 60_000,
            prefill_chunk,
        }
    }
}

impl Default for TierConfig {
    fn default() -> Self {
        Self::default_for(Tier::Free)
    }
}

/// How one scheduler (one model fleet) runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the cache.
    pub num_blocks: usize,
    /// The model's context length: prompt + output of one sequence.
    pub max_context: usize,
    /// Tokens computed per step (decode tokens first, then prefill chunks).
    pub max_step_tokens: usize,
    /// Sequences running at once.
    pub max_running: usize,
    /// Identifies the weights, so cached KV is never shared across models.
    pub model_id: String,
    /// Reuse KV of identical leading blocks across sequences with the same cache salt.
    pub prefix_cache: bool,
    /// Limits per tier, indexed by [`Tier::index`].
    pub tiers: [TierConfig; 4],
}

/// Why a [`SchedConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scheduler config: {field} is {value}; {expected}")]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    pub expected: &'static str,
}

impl SchedConfig {
    /// Defaults for a cache of `num_blocks` blocks of `block_size` and a model of `max_context`.
    pub fn new(model_id: impl Into<String>, block_size: usize, num_blocks: usize, max_context: usize) -> Self {
        Self {
            block_size,
            num_blocks,
            max_context,
            max_step_tokens: 256,
            max_running: 64,
            model_id: model_id.into(),
            prefix_cache: true,
            tiers: Tier::ALL.map(TierConfig::default_for),
        }
    }

    /// The limits of `tier`.
    pub fn tier(&self, tier: Tier) -> &TierConfig {
        &self.tiers[tier.index()]
    }

    /// Checks every field; the message names the field and its allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, value: &dyn fmt::Display, expected| {
            Err(ConfigError { field: field.to_string(), value: value.to_string(), expected })
        };
        if !(1..=1024).contains(&self.block_size) {
            return bad("block_size", &self.block_size, "expected 1..=1024");
        }
        if self.num_blocks == 0 || self.num_blocks > u32::MAX as usize {
            return bad("num_blocks", &self.num_blocks, "expected 1..=2^32-1");
        }
        if self.max_context == 0 {
            return bad("max_context", &self.max_context, "expected at least 1");
        }
        if self.max_step_tokens == 0 {
            return bad("max_step_tokens", &self.max_step_tokens, "expected at least 1");
        }
        if self.max_running == 0 || self.max_running > self.max_step_tokens {
            return bad("max_running", &self.max_running, "expected 1..=max_step_tokens (each needs a decode token)");
        }
        for t in Tier::ALL {
            let c = self.tier(t);
            if !(1..=1000).contains(&c.weight) {
                return bad(&format!("tiers.{t}.weight"), &c.weight, "expected 1..=1000");
            }
            if c.max_input_tokens == 0 {
                return bad(&format!("tiers.{t}.max_input_tokens"), &c.max_input_tokens, "expected at least 1");
            }
            if c.prefill_chunk == 0 {
                return bad(&format!("tiers.{t}.prefill_chunk"), &c.prefill_chunk, "expected at least 1");
            }
        }
        Ok(())
    }
}
