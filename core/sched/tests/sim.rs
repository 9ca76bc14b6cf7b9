//! A deterministic simulator: the scheduler on a virtual clock, driven by a scripted fake
//! model whose "KV cache" records, per slot, the token and a fingerprint of everything before
//! it. A sampled token is a function of the fingerprint read back through the block table, so
//! a block shared or reused wrongly, or a recompute that differs, changes the output — and the
//! output is compared with a run on an unbounded cache with no prefix cache.

use std::collections::HashMap;

use chorus_sched::{
    AdmitError, Event, FinishReason, Sample, SchedConfig, Scheduler, SeqId, SeqRequest, StepPlan, Tier,
};

const BS: usize = 4;
const VOCAB: u64 = 1000;
const STOP: u32 = 999;

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// The fake model: a KV store of (token, fingerprint of the prefix through it) per slot.
struct FakeModel {
    kv: Vec<Option<(u32, u64)>>,
    /// Tokens whose sample is STOP when `stop_every` divides the fingerprint.
    stop_every: u64,
}

impl FakeModel {
    fn new(blocks: usize, stop_every: u64) -> Self {
        Self { kv: vec![None; blocks * BS], stop_every }
    }

    fn slot(blocks: &[u32], pos: usize) -> usize {
        blocks[pos / BS] as usize * BS + pos % BS
    }

    /// Runs a step; returns one sample per sampling entry.
    fn run(&mut self, plan: &StepPlan) -> Vec<Sample> {
        let mut out = Vec::new();
        for p in &plan.seqs {
            assert!(p.blocks.len() * BS >= p.pos + p.tokens.len(), "block table too short");
            let mut fp = if p.pos == 0 {
                0
            } else {
                let (_, fp) = self.kv[Self::slot(&p.blocks, p.pos - 1)].expect("earlier position was computed");
                fp
            };
            for (k, &t) in p.tokens.iter().enumerate() {
                fp = mix(fp, u64::from(t));
                self.kv[Self::slot(&p.blocks, p.pos + k)] = Some((t, fp));
            }
            if p.sample {
                let token = if self.stop_every > 0 && fp % self.stop_every == 0 {
                    STOP
                } else {
                    (mix(fp, 7) % (VOCAB - 1)) as u32
                };
                out.push(Sample { token, stop: token == STOP });
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Req {
    at_ms: u64,
    id: SeqId,
    tier: Tier,
    prompt: Vec<u32>,
    max_tokens: usize,
    salt: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    tokens: Vec<u32>,
    arrived: u64,
    first_token_ms: Option<u64>,
    finished: Option<FinishReason>,
    cached: usize,
    dropped: bool,
    rejected: Option<AdmitError>,
    preempted: usize,
}

struct Sim {
    sched: Scheduler,
    model: FakeModel,
    now: u64,
    out: HashMap<SeqId, Outcome>,
    steps: u64,
}

/// Virtual cost of a step: fixed overhead plus per-token work.
fn step_cost(plan: &StepPlan) -> u64 {
    5 + plan.tokens() as u64 / 2
}

impl Sim {
    fn new(cfg: SchedConfig, stop_every: u64) -> Self {
        let blocks = cfg.num_blocks;
        Self {
            sched: Scheduler::new(cfg).unwrap(),
            model: FakeModel::new(blocks, stop_every),
            now: 0,
            out: HashMap::new(),
            steps: 0,
        }
    }

    fn add(&mut self, r: &Req) {
        let o = self.out.entry(r.id).or_default();
        o.arrived = self.now;
        let req = SeqRequest {
            id: r.id,
            tier: r.tier,
            prompt: r.prompt.clone(),
            max_tokens: r.max_tokens,
            cache_salt: r.salt.clone(),
        };
        if let Err(e) = self.sched.add(req, self.now) {
            o.rejected = Some(e);
        }
    }

    fn apply(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Started { id, cached_tokens, .. } => self.out.get_mut(id).unwrap().cached = *cached_tokens,
                Event::Token { id, token, index } => {
                    let o = self.out.get_mut(id).unwrap();
                    assert_eq!(*index, o.tokens.len(), "token indices are consecutive");
                    o.tokens.push(*token);
                    o.first_token_ms.get_or_insert(self.now);
                }
                Event::Finished { id, reason, output_tokens, .. } => {
                    let o = self.out.get_mut(id).unwrap();
                    assert_eq!(*output_tokens, o.tokens.len());
                    assert!(o.finished.replace(*reason).is_none(), "finished twice");
                }
                Event::Dropped { id, .. } => self.out.get_mut(id).unwrap().dropped = true,
                Event::Preempted { id } => self.out.get_mut(id).unwrap().preempted += 1,
            }
        }
    }

    /// One step; returns false when idle.
    fn step(&mut self) -> bool {
        let plan = self.sched.schedule(self.now);
        self.apply(&plan.events);
        self.sched.check_invariants().unwrap();
        if plan.is_empty() {
            return false;
        }
        let samples = self.model.run(&plan);
        self.now += step_cost(&plan);
        let events = self.sched.on_step_output(&plan, &samples).unwrap();
        self.apply(&events);
        self.sched.check_invariants().unwrap();
        self.steps += 1;
        true
    }

    /// Feeds `reqs` (sorted by arrival) and steps until everything is done.
    fn run(&mut self, reqs: &[Req]) {
        let mut next = 0;
        loop {
            while next < reqs.len() && reqs[next].at_ms <= self.now {
                self.add(&reqs[next]);
                next += 1;
            }
            if !self.step() {
                if next == reqs.len() && self.sched.is_idle() {
                    break;
                }
                // Idle until the next arrival.
                if next < reqs.len() {
                    self.now = self.now.max(reqs[next].at_ms);
                } else {
                    self.now += 1;
                }
            }
            assert!(self.steps < 1_000_000, "simulation does not terminate");
        }
        let (used, _) = self.sched.blocks_used();
        assert_eq!(used, 0, "blocks leaked after all sequences finished");
    }

    fn ttft(&self, id: SeqId) -> u64 {
        let o = &self.out[&id];
        o.first_token_ms.expect("has a first token") - o.arrived
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0, 0x1234_5678);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn prompt(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(VOCAB - 1) as u32).collect()
}

fn config(num_blocks: usize) -> SchedConfig {
    let mut c = SchedConfig::new("sim-model", BS, num_blocks, 4096);
    c.max_step_tokens = 64;
    c.max_running = 16;
    c
}

fn percentile(mut v: Vec<u64>, q: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Reference outputs: one sequence at a time, plenty of blocks, no prefix cache.
fn reference(reqs: &[Req], stop_every: u64) -> HashMap<SeqId, Vec<u32>> {
    let mut cfg = config(512);
    cfg.prefix_cache = false;
    let mut out = HashMap::new();
    for r in reqs {
        let mut sim = Sim::new(cfg.clone(), stop_every);
        sim.run(&[Req { at_ms: 0, ..r.clone() }]);
        out.insert(r.id, sim.out[&r.id].tokens.clone());
    }
    out
}

fn assert_outputs_match(sim: &Sim, reference: &HashMap<SeqId, Vec<u32>>) {
    for (id, want) in reference {
        let o = &sim.out[id];
        if o.rejected.is_none() && !o.dropped {
            assert_eq!(&o.tokens, want, "sequence {id} output differs from its solo run");
            assert!(o.finished.is_some(), "sequence {id} never finished");
        }
    }
}

#[test]
fn preempted_sequences_resume_with_unchanged_output() {
    let mut rng = Rng(1);
    let reqs: Vec<Req> = (0..40)
        .map(|i| Req {
            at_ms: i * 3,
            id: i,
            tier: Tier::ALL[(i % 4) as usize],
            prompt: prompt(&mut rng, 10 + (i as usize * 7) % 30),
            max_tokens: 40 + (i as usize * 13) % 50,
            salt: vec![],
        })
        .collect();
    let want = reference(&reqs, 0);
    // 48 blocks of 4 = 192 tokens: far less than 16 running sequences need.
    let mut sim = Sim::new(config(48), 0);
    sim.run(&reqs);
    let c = sim.sched.counters().clone();
    assert!(c.preemptions > 5, "the cache is small enough to force preemption: {c:?}");
    assert!(sim.out.values().any(|o| o.preempted > 0));
    assert_outputs_match(&sim, &want);
    // Preemption takes the lowest tiers first.
    let by_tier = |t: Tier| sim.out.iter().filter(|(id, o)| reqs[**id as usize].tier == t && o.preempted > 0).count();
    assert!(by_tier(Tier::Free) >= by_tier(Tier::Enterprise), "free is preempted before enterprise");
}

#[test]
fn shared_prefixes_are_reused_within_a_salt_only() {
    let mut rng = Rng(2);
    let system = prompt(&mut rng, 40);
    let mut reqs = Vec::new();
    for i in 0..12u64 {
        let mut p = system.clone();
        p.extend(prompt(&mut rng, 5 + i as usize));
        let salt = if i % 3 == 2 { b"other-tenant".to_vec() } else { b"tenant".to_vec() };
        reqs.push(Req { at_ms: i * 200, id: i, tier: Tier::Plus, prompt: p, max_tokens: 8, salt });
    }
    let want = reference(&reqs, 0);
    let mut sim = Sim::new(config(256), 0);
    sim.run(&reqs);
    assert_outputs_match(&sim, &want);
    assert_eq!(sim.out[&0].cached, 0, "the first request finds nothing cached");
    assert_eq!(sim.out[&1].cached, 40, "the second reuses the 40-token system prompt (10 blocks)");
    assert_eq!(sim.out[&2].cached, 0, "another salt never sees the first tenant's blocks");
    assert_eq!(sim.out[&5].cached, 40, "the other tenant reuses its own");
    let c = sim.sched.counters();
    assert!(c.prefix_hit_tokens >= 40 * 9, "{c:?}");
    assert!(c.prefix_query_tokens >= c.prefix_hit_tokens);

    // The same workload without the prefix cache gives the same tokens.
    let mut cfg = config(256);
    cfg.prefix_cache = false;
    let mut plain = Sim::new(cfg, 0);
    plain.run(&reqs);
    assert_outputs_match(&plain, &want);
    assert!(plain.out.values().all(|o| o.cached == 0));
}

#[test]
fn a_prompt_fully_cached_still_computes_its_last_token() {
    let mut rng = Rng(3);
    let p = prompt(&mut rng, 4 * BS);
    let reqs: Vec<Req> = (0..3)
        .map(|i| Req { at_ms: i * 100, id: i, tier: Tier::Free, prompt: p.clone(), max_tokens: 6, salt: vec![] })
        .collect();
    let want = reference(&reqs, 0);
    let mut sim = Sim::new(config(64), 0);
    sim.run(&reqs);
    assert_outputs_match(&sim, &want);
    assert_eq!(sim.out[&1].cached, 3 * BS, "every block but the last is reused");
    assert_eq!(sim.out[&0].tokens, sim.out[&1].tokens);
}

#[test]
fn free_flood_does_not_push_plus_past_its_share() {
    // Unloaded: plus requests alone.
    let mut rng = Rng(4);
    let plus: Vec<Req> = (0..20)
        .map(|i| Req {
            at_ms: 100 + i * 400,
            id: 10_000 + i,
            tier: Tier::Plus,
            prompt: prompt(&mut rng, 32),
            max_tokens: 16,
            salt: vec![],
        })
        .collect();
    let mut alone = Sim::new(config(1024), 0);
    alone.run(&plus);
    let unloaded: Vec<u64> = plus.iter().map(|r| alone.ttft(r.id)).collect();

    // Loaded: ten free requests for every plus one, far more than the server can serve.
    let mut reqs = plus.clone();
    for i in 0..200 {
        reqs.push(Req {
            at_ms: i * 40,
            id: i,
            tier: Tier::Free,
            prompt: prompt(&mut rng, 32),
            max_tokens: 64,
            salt: vec![],
        });
    }
    reqs.sort_by_key(|r| r.at_ms);
    let mut cfg = config(1024);
    cfg.tiers[Tier::Free.index()].queue_deadline_ms = 0;
    let mut sim = Sim::new(cfg, 0);
    sim.run(&reqs);
    let loaded: Vec<u64> = plus.iter().map(|r| sim.ttft(r.id)).collect();
    let free: Vec<u64> = reqs.iter().filter(|r| r.tier == Tier::Free).map(|r| sim.ttft(r.id)).collect();
    let (u95, l95, f95) = (percentile(unloaded, 0.95), percentile(loaded, 0.95), percentile(free.clone(), 0.95));
    eprintln!("plus p95 TTFT: unloaded {u95} ms, under flood {l95} ms; free p95 {f95} ms");
    assert!(f95 > 4 * l95, "the server is overloaded: free p95 {f95} ms vs plus {l95} ms");
    // Lower tiers step aside for a plus arrival; it waits at most for the step in flight.
    assert!(l95 <= 2 * u95, "plus p95 TTFT {l95} ms under flood vs {u95} ms unloaded");
    assert!(sim.out.values().all(|o| o.finished.is_some()), "everyone is served in the end");
}

#[test]
fn no_tier_is_starved() {
    // Every tier floods at once; each gets admissions in proportion to its weight, none zero.
    let mut rng = Rng(5);
    let mut reqs = Vec::new();
    for i in 0..400u64 {
        reqs.push(Req {
            at_ms: 0,
            id: i,
            tier: Tier::ALL[(i % 4) as usize],
            prompt: prompt(&mut rng, 24),
            max_tokens: 24,
            salt: vec![],
        });
    }
    let mut cfg = config(2048);
    for t in &mut cfg.tiers {
        t.queue_deadline_ms = 0;
    }
    let mut sim = Sim::new(cfg, 0);
    // Run until half the requests have started; count starts per tier.
    let mut next = 0;
    while next < reqs.len() {
        sim.add(&reqs[next]);
        next += 1;
    }
    let mut started = [0usize; 4];
    let mut total = 0;
    while total < 150 {
        let plan = sim.sched.schedule(sim.now);
        for e in &plan.events {
            if let Event::Started { id, .. } = e {
                started[reqs[*id as usize].tier.index()] += 1;
                total += 1;
            }
        }
        let samples = sim.model.run(&plan);
        sim.now += step_cost(&plan);
        sim.sched.on_step_output(&plan, &samples).unwrap();
    }
    assert!(started.iter().all(|&n| n > 0), "every tier is admitted: {started:?}");
    // Shares follow weights 1:2:4:8 up to the token granularity of admission.
    assert!(started[3] > started[2] && started[2] > started[1] && started[1] > started[0], "{started:?}");
    assert!(started[0] * 8 >= started[3] / 2, "free gets at least half its weighted share: {started:?}");
}

#[test]
fn requests_that_can_never_fit_are_rejected_at_once() {
    let mut cfg = config(16); // 64 tokens of cache
    cfg.tiers[Tier::Free.index()].max_input_tokens = 40;
    let mut s = Scheduler::new(cfg).unwrap();
    let req = |id, n, max| SeqRequest { id, tier: Tier::Free, prompt: vec![1; n], max_tokens: max, cache_salt: vec![] };
    assert!(matches!(s.add(req(1, 30, 40), 0), Err(AdmitError::NeverFits { limit: 64, what: "KV cache", .. })));
    assert!(matches!(s.add(req(2, 41, 1), 0), Err(AdmitError::InputTooLong { limit: 40, .. })));
    assert!(matches!(s.add(req(3, 0, 1), 0), Err(AdmitError::EmptyPrompt)));
    assert!(matches!(s.add(req(4, 3, 0), 0), Err(AdmitError::ZeroMaxTokens)));
    // A request exactly filling the cache is fine and runs to completion alone.
    s.add(req(5, 32, 32), 0).unwrap();
    assert!(matches!(s.add(req(5, 1, 1), 0), Err(AdmitError::DuplicateId(5))));
    let mut m = FakeModel::new(16, 0);
    let mut done = false;
    for now in 0..1000 {
        let plan = s.schedule(now);
        if plan.is_empty() {
            break;
        }
        let samples = m.run(&plan);
        done |= s.on_step_output(&plan, &samples).unwrap().iter().any(|e| matches!(e, Event::Finished { id: 5, .. }));
    }
    assert!(done);
    assert_eq!(s.counters().rejections.iter().sum::<u64>(), 5);
    let e = AdmitError::NeverFits { prompt: 30, max_tokens: 40, limit: 64, what: "KV cache" };
    assert_eq!(e.to_string(), "prompt of 30 tokens + max_tokens 40 exceeds the KV cache of 64 tokens");
}

#[test]
fn queue_bounds_reject_with_retry_after_and_deadlines_drop() {
    let mut cfg = config(64);
    let free = &mut cfg.tiers[Tier::Free.index()];
    free.max_queued_requests = 3;
    free.max_queued_tokens = 50;
    free.queue_deadline_ms = 100;
    let mut s = Scheduler::new(cfg).unwrap();
    let req = |id, n| SeqRequest { id, tier: Tier::Free, prompt: vec![1; n], max_tokens: 4, cache_salt: vec![] };
    s.add(req(1, 20), 0).unwrap();
    s.add(req(2, 20), 0).unwrap();
    let e = s.add(req(3, 20), 0).unwrap_err();
    assert!(matches!(e, AdmitError::QueueTokensFull { queued: 40, limit: 50, .. }), "{e}");
    assert!(e.retry_after_ms().unwrap() >= 1000);
    s.add(req(4, 5), 0).unwrap();
    assert!(matches!(s.add(req(5, 1), 0), Err(AdmitError::QueueFull { limit: 3, .. })));
    // Plus has its own queue.
    s.add(SeqRequest { id: 6, tier: Tier::Plus, prompt: vec![1; 20], max_tokens: 4, cache_salt: vec![] }, 0).unwrap();
    // At 101 ms nothing has started: every free request is past its deadline; plus has none.
    let plan = s.schedule(101);
    let dropped: Vec<SeqId> =
        plan.events.iter().filter_map(|e| if let Event::Dropped { id, .. } = e { Some(*id) } else { None }).collect();
    assert_eq!(dropped, vec![1, 2, 4]);
    assert_eq!(plan.seqs.len(), 1);
    assert_eq!(plan.seqs[0].id, 6);
    assert_eq!(s.counters().rejections[5], 3);
    s.check_invariants().unwrap();
}

#[test]
fn cancel_storm_keeps_invariants_and_leaks_nothing() {
    let mut rng = Rng(6);
    let mut sim = Sim::new(config(96), 97);
    let mut live: Vec<SeqId> = Vec::new();
    let mut next_id = 0;
    let shared = prompt(&mut rng, 16);
    for _ in 0..3000 {
        // Arrivals, some sharing a prefix.
        for _ in 0..rng.below(3) {
            let mut p = if rng.below(2) == 0 { shared.clone() } else { Vec::new() };
            let n = 1 + rng.below(40) as usize;
            p.extend(prompt(&mut rng, n));
            let r = Req {
                at_ms: sim.now,
                id: next_id,
                tier: Tier::ALL[rng.below(4) as usize],
                prompt: p,
                max_tokens: 1 + rng.below(60) as usize,
                salt: vec![rng.below(2) as u8],
            };
            sim.add(&r);
            live.push(next_id);
            next_id += 1;
        }
        // Cancels at any point: queued, mid-prefill, decoding.
        for _ in 0..rng.below(3) {
            if !live.is_empty() {
                let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                let was = sim.sched.contains(id);
                let (before, _) = sim.sched.blocks_used();
                assert_eq!(sim.sched.cancel(id), was);
                let (after, _) = sim.sched.blocks_used();
                assert!(after <= before);
                sim.sched.check_invariants().unwrap();
            }
        }
        sim.step();
        if sim.steps.is_multiple_of(5) {
            sim.now += 1;
        }
    }
    for id in live {
        sim.sched.cancel(id);
    }
    sim.sched.check_invariants().unwrap();
    assert_eq!(sim.sched.blocks_used().0, 0);
    assert!(sim.sched.is_idle());
    assert!(sim.steps >= 2500, "thousands of steps ran: {}", sim.steps);
}

#[test]
fn stale_or_mismatched_step_output_is_refused() {
    let mut s = Scheduler::new(config(64)).unwrap();
    s.add(SeqRequest { id: 1, tier: Tier::Team, prompt: vec![5; 9], max_tokens: 3, cache_salt: vec![] }, 0).unwrap();
    let plan = s.schedule(0);
    assert_eq!(plan.samples().count(), 1);
    assert!(s.on_step_output(&plan, &[]).is_err());
    let ev = s.on_step_output(&plan, &[Sample { token: 2, stop: false }]).unwrap();
    assert!(matches!(ev[0], Event::Token { id: 1, token: 2, index: 0 }));
    assert!(s.on_step_output(&plan, &[Sample { token: 2, stop: false }]).is_err(), "a plan applies once");
    // The stop flag finishes the sequence with its token reported.
    let plan = s.schedule(1);
    let ev = s.on_step_output(&plan, &[Sample { token: 9, stop: true }]).unwrap();
    assert!(matches!(ev[1], Event::Finished { reason: FinishReason::Stop, output_tokens: 2, .. }), "{ev:?}");
    assert!(s.is_idle());
}

#[test]
fn lower_tiers_prefill_in_their_chunk_size() {
    let mut cfg = config(256);
    cfg.max_step_tokens = 64;
    cfg.tiers[Tier::Free.index()].prefill_chunk = 16;
    let mut s = Scheduler::new(cfg).unwrap();
    let req = |id, tier| SeqRequest { id, tier, prompt: vec![3; 40], max_tokens: 2, cache_salt: vec![] };
    s.add(req(1, Tier::Free), 0).unwrap();
    s.add(req(2, Tier::Free), 0).unwrap();
    s.add(req(3, Tier::Plus), 0).unwrap();
    let plan = s.schedule(0);
    let chunk = |id| plan.seqs.iter().find(|p| p.id == id).map(|p| p.tokens.len());
    assert_eq!(chunk(3), Some(40), "plus prefills its whole prompt");
    assert_eq!(chunk(1), Some(16), "free takes at most its chunk per step, across its sequences");
    assert_eq!(chunk(2), None);
    let mut m = FakeModel::new(256, 0);
    let samples = m.run(&plan);
    s.on_step_output(&plan, &samples).unwrap();
    let plan = s.schedule(1);
    assert_eq!(plan.seqs.iter().map(|p| p.tokens.len()).sum::<usize>(), 1 + 16, "plus decodes, free continues");
}

#[test]
fn past_capacity_free_is_shed_at_admission_with_its_own_retry_after() {
    // Four slots, 40-token answers: about one start every 70 virtual ms. Free arrives every
    // 35 ms (twice what the slots serve), plus every 280 ms.
    let mut rng = Rng(8);
    let mut reqs = Vec::new();
    for i in 0..600u64 {
        let tier = if i % 8 == 7 { Tier::Plus } else { Tier::Free };
        reqs.push(Req { at_ms: i * 35, id: i, tier, prompt: prompt(&mut rng, 20), max_tokens: 40, salt: vec![] });
    }
    let mut cfg = config(1024);
    cfg.max_running = 4;
    for t in [Tier::Free, Tier::Plus] {
        cfg.tiers[t.index()].queue_deadline_ms = 3000;
    }
    let mut sim = Sim::new(cfg, 0);
    // The estimate a request was given on arrival, against the wait it then had.
    let mut estimated: HashMap<SeqId, u64> = HashMap::new();
    let mut next = 0;
    while next < reqs.len() || !sim.sched.is_idle() {
        while next < reqs.len() && reqs[next].at_ms <= sim.now {
            if let Some(e) = sim.sched.queue_estimate_ms(reqs[next].tier, 1) {
                estimated.insert(reqs[next].id, e);
            }
            sim.add(&reqs[next]);
            next += 1;
        }
        if !sim.step() {
            sim.now = if next < reqs.len() { sim.now.max(reqs[next].at_ms) } else { sim.now + 1 };
        }
    }
    let of = |tier: Tier| reqs.iter().filter(move |r| r.tier == tier).map(|r| &sim.out[&r.id]);
    let shed: Vec<&AdmitError> = of(Tier::Free).filter_map(|o| o.rejected.as_ref()).collect();
    let dropped = of(Tier::Free).filter(|o| o.dropped).count();
    eprintln!("free: {} requests, {} shed, {} dropped after waiting", of(Tier::Free).count(), shed.len(), dropped);
    assert!(shed.len() > 100, "at twice the capacity free is shed ({} were)", shed.len());
    for e in &shed {
        let AdmitError::WouldMissDeadline { estimate_ms, deadline_ms: 3000, retry_after_ms, .. } = e else {
            panic!("free is shed by its queue estimate, not a bound: {e}");
        };
        assert!(*estimate_ms > 3000);
        assert!((1000..=120_000).contains(retry_after_ms), "{e}");
    }
    assert!(dropped * 20 < shed.len(), "free is refused at once rather than dropped after waiting ({dropped} dropped)");
    // Plus is never refused and starts within a few steps.
    assert!(of(Tier::Plus).all(|o| o.rejected.is_none() && !o.dropped));
    let plus_ttft: Vec<u64> = reqs.iter().filter(|r| r.tier == Tier::Plus).map(|r| sim.ttft(r.id)).collect();
    let p95 = percentile(plus_ttft, 0.95);
    assert!(p95 < 300, "plus p95 TTFT {p95} virtual ms");
    // The estimates free was given are the waits it then had, within a factor of two (median).
    let mut ratios: Vec<f64> = of(Tier::Free)
        .zip(reqs.iter().filter(|r| r.tier == Tier::Free))
        .filter(|(o, r)| o.rejected.is_none() && !o.dropped && estimated.get(&r.id).is_some_and(|e| *e > 500))
        .map(|(o, r)| (o.first_token_ms.unwrap() - o.arrived) as f64 / estimated[&r.id] as f64)
        .collect();
    ratios.sort_by(f64::total_cmp);
    assert!(ratios.len() > 50, "{} accepted free requests had an estimate", ratios.len());
    let median = ratios[ratios.len() / 2];
    eprintln!("free wait / estimate: median {median:.2} over {}", ratios.len());
    assert!((0.5..=2.0).contains(&median), "median wait / estimate {median:.2}");
}
