//! `chorus plan`: how many nodes a target load needs, sized the way the seeds size a fleet —
//! by Little's law from measured per-node throughput and latency.
//!
//! A node's capacity is the most answers per second it gave in a measured run whose TTFT SLO
//! held (past that point queues grow and TTFT goes with them). Capacity is rescaled to the
//! target's token lengths by the work each request costs: its output tokens plus its uncached
//! prompt tokens weighted by `prefill_cost` (an uncached prompt token's cost relative to an
//! output token; prefill is batched matrix work, cheaper per token than decode). Then:
//!
//! - nodes = ⌈ target QPS / (capacity per node × max utilisation) ⌉;
//! - requests in flight = QPS × time in system (Little's law, L = λW), per node and in all;
//! - cost per request = nodes × price per hour / (3600 × QPS).

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::stats::littles_law_in_flight;

/// What one node was measured to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCapacity {
    /// Answers per second within the SLO.
    pub answers_per_s: f64,
    /// Mean tokens of those answers' workload.
    pub output_tokens: f64,
    pub prompt_tokens: f64,
    pub cache_hit: f64,
    /// Mean TTFT and time per output token at that load (time in system = TTFT + out × TPOT).
    pub ttft_mean_ms: f64,
    pub tpot_ms: f64,
    /// TTFT p95 at that load.
    pub ttft_p95_ms: Option<f64>,
    /// Where the figures came from.
    pub source: String,
    /// Whether the SLO held at that load (false: no measured run met it; capacity is a guess).
    pub slo_held: bool,
}

/// A bad planning input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{field} = {value}: {why}")]
    Invalid { field: &'static str, value: f64, why: &'static str },
    #[error("{0}: no run answered anything, so nothing was measured")]
    NothingMeasured(String),
}

/// The planner's inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInput {
    pub qps: f64,
    pub prompt_tokens: f64,
    pub output_tokens: f64,
    pub cache_hit: f64,
    /// Most of a node's SLO capacity to plan for (headroom for bursts and failures).
    pub max_utilisation: f64,
    pub prefill_cost: f64,
    pub node_price_per_hour: f64,
    pub node: NodeCapacity,
}

/// The plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub input: PlanInput,
    /// Answers per second one node gives at the target's lengths within the SLO.
    pub capacity_per_node: f64,
    pub nodes: u64,
    /// QPS over what the nodes can do within the SLO.
    pub utilisation: f64,
    /// Time in system per request at the target's lengths.
    pub time_in_system_s: f64,
    pub in_flight_total: f64,
    pub in_flight_per_node: f64,
    pub output_tok_s_total: f64,
    pub cost_per_hour: f64,
    pub cost_per_request: f64,
    pub cost_per_million_output_tokens: f64,
}

fn check(field: &'static str, value: f64, ok: bool, why: &'static str) -> Result<(), PlanError> {
    if ok && value.is_finite() { Ok(()) } else { Err(PlanError::Invalid { field, value, why }) }
}

/// The node capacity of a `chorus bench load` report: the run with the most answers per
/// second among those whose SLO held (else the run with the fewest errors, marked as not held).
pub fn capacity_from(report: &Report, source: &str) -> Result<NodeCapacity, PlanError> {
    let answered: Vec<_> = report.runs.iter().filter(|r| r.answered > 0).collect();
    let best = answered
        .iter()
        .filter(|r| r.slo_held())
        .max_by(|a, b| a.overall.answered_per_s.total_cmp(&b.overall.answered_per_s))
        .copied();
    let (run, slo_held) = match best {
        Some(r) => (r, true),
        None => (
            *answered
                .iter()
                .min_by(|a, b| a.overall.error_rate.total_cmp(&b.overall.error_rate))
                .ok_or_else(|| PlanError::NothingMeasured(source.into()))?,
            false,
        ),
    };
    let o = &run.overall;
    let ok: Vec<_> = run.records.iter().filter(|r| r.answered()).collect();
    let mean =
        |f: &dyn Fn(&crate::report::Record) -> f64| ok.iter().map(|r| f(r)).sum::<f64>() / ok.len().max(1) as f64;
    Ok(NodeCapacity {
        answers_per_s: o.answered_per_s,
        output_tokens: mean(&|r| f64::from(r.output_tokens)),
        prompt_tokens: o.prompt_tokens_mean.unwrap_or(0.0),
        cache_hit: run.server.prefix_cache_hit_rate.or(o.cached_fraction).unwrap_or(0.0),
        ttft_mean_ms: o.ttft_ms.mean.unwrap_or(0.0),
        tpot_ms: o.tpot_ms.mean.unwrap_or(0.0),
        ttft_p95_ms: o.ttft_ms.p95,
        source: format!("{source}: {} ({})", run.name, report.label),
        slo_held,
    })
}

/// Sizes the fleet.
pub fn plan(input: PlanInput) -> Result<Plan, PlanError> {
    check("qps", input.qps, input.qps > 0.0, "must be positive")?;
    check("prompt_tokens", input.prompt_tokens, input.prompt_tokens >= 0.0, "must not be negative")?;
    check("output_tokens", input.output_tokens, input.output_tokens >= 1.0, "must be at least 1")?;
    check("cache_hit", input.cache_hit, (0.0..=1.0).contains(&input.cache_hit), "must be within 0..=1")?;
    let u = input.max_utilisation;
    check("max_utilisation", u, u > 0.0 && u <= 1.0, "must be within (0, 1]")?;
    check("prefill_cost", input.prefill_cost, input.prefill_cost >= 0.0, "must not be negative")?;
    let price = input.node_price_per_hour;
    check("node_price_per_hour", price, price >= 0.0, "must not be negative")?;
    let n = &input.node;
    check("node.answers_per_s", n.answers_per_s, n.answers_per_s > 0.0, "must be positive")?;
    check("node.output_tokens", n.output_tokens, n.output_tokens > 0.0, "must be positive")?;
    check("node.prompt_tokens", n.prompt_tokens, n.prompt_tokens >= 0.0, "must not be negative")?;
    check("node.cache_hit", n.cache_hit, (0.0..=1.0).contains(&n.cache_hit), "must be within 0..=1")?;
    check("node.ttft_mean_ms", n.ttft_mean_ms, n.ttft_mean_ms >= 0.0, "must not be negative")?;
    check("node.tpot_ms", n.tpot_ms, n.tpot_ms >= 0.0, "must not be negative")?;
    let work = |out: f64, prompt: f64, hit: f64| out + input.prefill_cost * prompt * (1.0 - hit.clamp(0.0, 1.0));
    let measured = work(n.output_tokens, n.prompt_tokens, n.cache_hit);
    let target = work(input.output_tokens, input.prompt_tokens, input.cache_hit);
    let capacity_per_node = n.answers_per_s * measured / target;
    check("capacity_per_node", capacity_per_node, capacity_per_node > 0.0, "must come out positive and finite")?;
    let nodes = (input.qps / (capacity_per_node * u)).ceil().max(1.0);
    check("nodes", nodes, nodes < 1e12, "too many to count")?;
    let nodes = nodes as u64;
    // The first token, then one time-per-output-token for each after it.
    let time_in_system_s = (n.ttft_mean_ms + (input.output_tokens - 1.0).max(0.0) * n.tpot_ms) / 1e3;
    let in_flight_total = littles_law_in_flight(input.qps, time_in_system_s);
    let cost_per_hour = nodes as f64 * price;
    let cost_per_request = cost_per_hour / (3600.0 * input.qps);
    Ok(Plan {
        capacity_per_node,
        nodes,
        utilisation: input.qps / (nodes as f64 * capacity_per_node),
        time_in_system_s,
        in_flight_total,
        in_flight_per_node: in_flight_total / nodes as f64,
        output_tok_s_total: input.qps * input.output_tokens,
        cost_per_hour,
        cost_per_request,
        cost_per_million_output_tokens: cost_per_request / input.output_tokens * 1e6,
        input,
    })
}

/// The plan as a short text.
pub fn render(p: &Plan) -> String {
    let i = &p.input;
    let mut o = String::new();
    let _ = writeln!(o, "measured node: {}", i.node.source);
    let _ = writeln!(
        o,
        "  {:.2} answers/s within the SLO (TTFT p95 {}), {:.0} output + {:.0} prompt tokens ({:.0}% cached) each",
        i.node.answers_per_s,
        i.node.ttft_p95_ms.map_or("n/a".into(), |v| format!("{v:.0} ms")),
        i.node.output_tokens,
        i.node.prompt_tokens,
        i.node.cache_hit * 100.0
    );
    if !i.node.slo_held {
        let _ = writeln!(o, "  WARNING: no measured run met its SLO; this capacity is past the SLO's knee");
    }
    let _ = writeln!(
        o,
        "target: {} req/s, {:.0} prompt tokens ({:.0}% cached), {:.0} output tokens, ≤ {:.0}% of capacity",
        i.qps,
        i.prompt_tokens,
        i.cache_hit * 100.0,
        i.output_tokens,
        i.max_utilisation * 100.0
    );
    let _ = writeln!(o, "  capacity per node at these lengths: {:.2} req/s", p.capacity_per_node);
    let _ = writeln!(o, "  nodes: {} at {:.0}% utilisation", p.nodes, p.utilisation * 100.0);
    let _ = writeln!(
        o,
        "  in flight (Little's law, {:.0} req/s × {:.2} s): {:.1} in all, {:.1} per node",
        i.qps, p.time_in_system_s, p.in_flight_total, p.in_flight_per_node
    );
    let _ = writeln!(o, "  output: {:.0} tok/s in all", p.output_tok_s_total);
    let _ = writeln!(
        o,
        "  cost: {:.2}/hour, {:.6} per request, {:.2} per million output tokens (at {:.2} per node-hour)",
        p.cost_per_hour, p.cost_per_request, p.cost_per_million_output_tokens, i.node_price_per_hour
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeCapacity {
        NodeCapacity {
            answers_per_s: 2.0,
            output_tokens: 100.0,
            prompt_tokens: 400.0,
            cache_hit: 0.5,
            ttft_mean_ms: 200.0,
            tpot_ms: 20.0,
            ttft_p95_ms: Some(600.0),
            source: "test".into(),
            slo_held: true,
        }
    }

    fn input(qps: f64) -> PlanInput {
        PlanInput {
            qps,
            prompt_tokens: 400.0,
            output_tokens: 100.0,
            cache_hit: 0.5,
            max_utilisation: 0.8,
            prefill_cost: 0.25,
            node_price_per_hour: 2.0,
            node: node(),
        }
    }

    #[test]
    fn nodes_follow_capacity_and_headroom() {
        // Same lengths as measured: 2 req/s per node, planned to 80%: 1.6 → 10 req/s needs 7.
        let p = plan(input(10.0)).unwrap();
        assert!((p.capacity_per_node - 2.0).abs() < 1e-12);
        assert_eq!(p.nodes, 7);
        assert!((p.utilisation - 10.0 / 14.0).abs() < 1e-12);
        // Little's law: 10 req/s × (0.2 s + 99 × 20 ms) = 21.8 in flight.
        assert!((p.time_in_system_s - 2.18).abs() < 1e-12);
        assert!((p.in_flight_total - 21.8).abs() < 1e-9);
        assert!((p.in_flight_per_node - 21.8 / 7.0).abs() < 1e-9);
        // 7 nodes × 2/hour over 36,000 requests an hour.
        assert!((p.cost_per_request - 14.0 / 36_000.0).abs() < 1e-12);
        assert!((p.cost_per_million_output_tokens - 14.0 / 36_000.0 / 100.0 * 1e6).abs() < 1e-6);
        assert_eq!(plan(input(0.1)).unwrap().nodes, 1);
        assert!(render(&p).contains("nodes: 7"));
    }

    #[test]
    fn longer_answers_and_colder_prompts_need_more_nodes() {
        // Measured work: 100 + 0.25 × 400 × 0.5 = 150 per request.
        let mut i = input(10.0);
        i.output_tokens = 250.0; // 250 + 50 = 300: half the capacity
        let p = plan(i.clone()).unwrap();
        assert!((p.capacity_per_node - 1.0).abs() < 1e-12);
        assert_eq!(p.nodes, 13);
        i.output_tokens = 100.0;
        i.cache_hit = 0.0; // 100 + 100 = 200
        assert!((plan(i).unwrap().capacity_per_node - 1.5).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        for (field, f) in [
            ("qps", Box::new(|i: &mut PlanInput| i.qps = 0.0) as Box<dyn Fn(&mut PlanInput)>),
            ("cache_hit", Box::new(|i: &mut PlanInput| i.cache_hit = 1.5)),
            ("max_utilisation", Box::new(|i: &mut PlanInput| i.max_utilisation = 0.0)),
            ("output_tokens", Box::new(|i: &mut PlanInput| i.output_tokens = f64::NAN)),
            ("node.answers_per_s", Box::new(|i: &mut PlanInput| i.node.answers_per_s = 0.0)),
            ("node.tpot_ms", Box::new(|i: &mut PlanInput| i.node.tpot_ms = f64::NAN)),
            ("node.cache_hit", Box::new(|i: &mut PlanInput| i.node.cache_hit = -0.1)),
            ("capacity_per_node", Box::new(|i: &mut PlanInput| i.node.answers_per_s = f64::MAX)),
        ] {
            let mut i = input(1.0);
            f(&mut i);
            let e = plan(i).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
