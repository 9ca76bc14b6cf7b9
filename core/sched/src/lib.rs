//! The continuous-batching scheduler: which sequences run in the next step, which KV blocks they
//! use, and who waits.
//!
//! [`Scheduler`] is a pure state machine — no I/O, no threads, no clock reads; time comes in as
//! an argument — so a simulator can drive thousands of steps on a virtual clock. The engine loop
//! in `chorus-engine` drives it: [`Scheduler::schedule`] → run the [`StepPlan`] through the model
//! → sample → [`Scheduler::on_step_output`] → deliver the [`Event`]s.
//!
//! - [`block`]: the reference-counted block pool and the prefix cache. The scheduler holds
//!   opaque [`block::BlockTable`]s; the free list and the eviction order are the pool's.
//! - [`config`]: tiers, their weights and limits, and the step budget.
//! - [`metrics`]: counters the scheduler keeps and the latency histogram the engine loop fills.

pub mod block;
pub mod config;
pub mod metrics;
mod scheduler;

pub use config::{SchedConfig, Tier, TierConfig};
pub use scheduler::{
    AdmitError, DropError, Event, FinishReason, PlanMismatch, PlannedSeq, Sample, Scheduler, SeqId, SeqRequest,
    StepPlan,
};
