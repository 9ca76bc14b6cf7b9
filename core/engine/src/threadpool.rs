//! A persistent pool of compute threads for the kernels.
//!
//! One forward pass issues a few hundred parallel operations, each a fraction of a millisecond,
//! so per-operation cost matters more than generality: workers spin briefly on an epoch counter
//! before sleeping, a job is a borrowed closure (no boxing, no channel), and the calling thread
//! takes part as thread 0. The pool never spawns a thread after construction.
//!
//! One pool serves every model fleet of a process, so fleets never oversubscribe the cores: an
//! engine loop takes the pool for a whole step with [`ThreadPool::step`], and when several loops
//! want it the [`StepGrant`] goes to the largest claim, its tier weight times how long it has
//! waited (plus one mean step), so a higher tier's steps come first and a lower tier's are
//! delayed, never starved. The loop that just released the pool competes too: it is not waiting
//! yet (it is sampling and sending its tokens), so with two loops a plain hand-over would
//! alternate them whatever their weights. A release whose own claim (weight × one mean step)
//! beats every waiter's keeps the pool free for that loop's next step for a short grace; a
//! waiter's claim grows while it waits, so a weight-1 loop beside a weight-4 one gets about one
//! step in four. Between steps, with no loop waiting, the workers sleep at once instead
//! of spinning, leaving the cores to the threads that send the step's tokens.

#![allow(unsafe_code)] // lifetime erasure of the borrowed job; see `run`.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = dyn Fn(usize) + Sync;

/// How long an idle worker spins before it sleeps; long enough to cover the serial work between
/// two kernels of one forward pass, short enough not to burn a core between requests.
const SPIN_ITERS: u32 = 200_000;

struct Shared {
    /// Incremented to publish a job; workers run each epoch once.
    epoch: AtomicUsize,
    /// Workers still running the current job.
    pending: AtomicUsize,
    /// The current job; written only while no worker can be reading it (between epochs).
    job: UnsafeCell<Option<*const Job>>,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// Set between steps: idle workers sleep at once rather than spin.
    resting: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written by the owner only while every worker is idle (pending == 0) and read
// by workers only after they observe the new epoch (acquire), which the owner publishes after
// the write (release).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of threads that run one closure at a time, each with its thread index.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    /// Serializes callers: the pool runs one job at a time.
    busy: Mutex<()>,
    /// How the workers (and the threads that [`ThreadPool::enter`]) are scheduled.
    priority: ComputePriority,
    /// Who runs the next step.
    arbiter: Arbiter,
}

/// Hands whole steps to the engine loops that share the pool.
#[derive(Default)]
struct Arbiter {
    state: Mutex<Turns>,
    turn: Condvar,
}

#[derive(Default)]
struct Turns {
    /// A step holds the pool.
    held: bool,
    /// The ticket the last release handed the pool to, not yet taken up by its waiter.
    handed: Option<u64>,
    /// The pool is free but kept for the next step of the loop that released it, until then,
    /// unless a waiter's claim overtakes it first.
    reserved_until: Option<Instant>,
    next_ticket: u64,
    waiting: Vec<Waiter>,
    /// Mean hold time of a step (exponentially smoothed), the unit a wait is measured in.
    mean_step: Duration,
    grants: u64,
    contended: u64,
}

struct Waiter {
    ticket: u64,
    weight: u32,
    since: Instant,
}

impl Turns {
    /// The unit a wait is measured in: one mean step.
    fn unit(&self) -> f64 {
        self.mean_step.max(Duration::from_micros(100)).as_secs_f64()
    }

    /// `weight × (waited + mean step)`.
    fn claim(&self, w: &Waiter, now: Instant) -> f64 {
        f64::from(w.weight) * (now.saturating_duration_since(w.since).as_secs_f64() + self.unit())
    }

    /// The claim of a loop asking now, having waited nothing.
    fn fresh_claim(&self, weight: u32) -> f64 {
        f64::from(weight.max(1)) * self.unit()
    }

    /// The waiter with the largest claim; the earlier ticket on a tie.
    fn pick(&self, now: Instant) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, w) in self.waiting.iter().enumerate() {
            if best.is_none_or(|b| self.claim(w, now) > self.claim(&self.waiting[b], now)) {
                best = Some(i);
            }
        }
        best
    }

    /// The best waiter's claim, if any.
    fn best_claim(&self, now: Instant) -> Option<f64> {
        self.pick(now).map(|i| self.claim(&self.waiting[i], now))
    }

    /// Hands the free pool to the best waiter (`false` if none waits).
    fn hand_to_best(&mut self, now: Instant) -> bool {
        let Some(i) = self.pick(now) else { return false };
        let w = self.waiting.swap_remove(i);
        self.handed = Some(w.ticket);
        self.held = true;
        self.reserved_until = None;
        true
    }

    /// How long a release keeps the pool for its loop's next step: a fraction of a step, so a
    /// loop that has no next step costs the waiters little.
    fn grace(&self) -> Duration {
        (self.mean_step / 4).clamp(Duration::from_micros(200), Duration::from_millis(5))
    }
}

/// Counts of [`ThreadPool::step`] grants, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepCounts {
    /// Steps granted.
    pub grants: u64,
    /// Steps that waited for another loop's step.
    pub contended: u64,
}

/// The pool held for one step; dropping it hands the pool to the next waiting loop (or lets the
/// workers rest).
#[must_use = "the step holds the pool until the grant is dropped"]
pub struct StepGrant<'a> {
    pool: &'a ThreadPool,
    start: Instant,
    weight: u32,
}

impl std::fmt::Debug for StepGrant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGrant").field("held", &self.start.elapsed()).finish()
    }
}

impl Drop for StepGrant<'_> {
    fn drop(&mut self) {
        let a = &self.pool.arbiter;
        let mut t = lock(&a.state);
        let held = self.start.elapsed();
        t.mean_step = if t.grants <= 1 { held } else { (t.mean_step * 7 + held) / 8 };
        let now = Instant::now();
        t.held = false;
        let Some(best) = t.best_claim(now) else {
            t.reserved_until = None;
            drop(t);
            self.pool.rest();
            return;
        };
        if t.fresh_claim(self.weight) > best {
            // This loop's next step outweighs every waiter: keep the pool for it, briefly.
            t.reserved_until = Some(now + t.grace());
        } else {
            t.hand_to_best(now);
        }
        drop(t);
        a.turn.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").field("n_threads", &self.n_threads).finish()
    }
}

impl ThreadPool {
    /// A pool of `n_threads` (the caller counts as one; at least 1) at normal priority.
    pub fn new(n_threads: usize) -> Self {
        Self::with_priority(n_threads, ComputePriority::Normal)
    }

    /// A pool of `n_threads` whose workers run at `priority`; a thread that runs jobs as thread 0
    /// takes it with [`ThreadPool::enter`].
    pub fn with_priority(n_threads: usize, priority: ComputePriority) -> Self {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            resting: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|idx| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("chorus-compute-{idx}"))
                    .spawn(move || worker(&s, idx, priority))
                    .expect("spawning a compute thread at start-up")
            })
            .collect();
        Self { shared, workers, n_threads, priority, busy: Mutex::new(()), arbiter: Arbiter::default() }
    }

    /// Takes the pool for one step of an engine loop whose most important sequence has tier
    /// `weight` (≥ 1). Returns at once when no other step holds or waits for the pool; otherwise
    /// waits its turn (see the module docs). Jobs may also be run without a grant (a single
    /// session, a benchmark); they then interleave with granted steps kernel by kernel.
    pub fn step(&self, weight: u32) -> StepGrant<'_> {
        let a = &self.arbiter;
        let weight = weight.max(1);
        let mut t = lock(&a.state);
        t.grants += 1;
        let now = Instant::now();
        if !t.held {
            // Free: at once if nobody waits, or (during a release's grace) if this claim beats
            // every waiter's; otherwise the best waiter's turn has come.
            if t.best_claim(now).is_none_or(|best| t.fresh_claim(weight) > best) {
                t.held = true;
                t.reserved_until = None;
                return StepGrant { pool: self, start: now, weight };
            }
            t.hand_to_best(now);
            a.turn.notify_all();
        }
        t.contended += 1;
        let ticket = t.next_ticket;
        t.next_ticket += 1;
        t.waiting.push(Waiter { ticket, weight, since: now });
        loop {
            // During a grace the waiters wake when it ends; otherwise a release wakes them (the
            // timeout only bounds how long a missed wake-up could last).
            let wait =
                t.reserved_until.map_or(Duration::from_millis(50), |u| u.saturating_duration_since(Instant::now()));
            t = a.turn.wait_timeout(t, wait).unwrap_or_else(|e| e.into_inner()).0;
            // A grace that ran out with the pool still free: the best waiter's turn.
            let now = Instant::now();
            if !t.held && t.reserved_until.is_none_or(|u| now >= u) && t.hand_to_best(now) {
                a.turn.notify_all();
            }
            if t.handed == Some(ticket) {
                t.handed = None;
                return StepGrant { pool: self, start: now, weight };
            }
        }
    }

    /// Grants so far.
    pub fn step_counts(&self) -> StepCounts {
        let t = lock(&self.arbiter.state);
        StepCounts { grants: t.grants, contended: t.contended }
    }

    /// Lets idle workers sleep now instead of spinning for the next job.
    fn rest(&self) {
        self.shared.resting.store(true, Ordering::Relaxed);
    }

    /// Gives the calling thread, which will run jobs as thread 0, the workers' priority.
    pub fn enter(&self) {
        self.priority.apply_to_current_thread();
    }

    /// Threads that run a job, the caller included.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Runs `f(thread_index)` on every thread and returns when all are done. `f` must not call
    /// back into the same pool (jobs do not nest; a nested call would wait on itself).
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.n_threads == 1 {
            f(0);
            return;
        }
        let _guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: all workers finished the previous epoch (we waited for pending == 0 below), so
        // none reads `job` now. The transmute only erases the borrow's lifetime: we do not return
        // until every worker has finished calling it.
        unsafe {
            let ptr: *const Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f);
            *s.job.get() = Some(ptr);
        }
        s.pending.store(self.n_threads - 1, Ordering::Relaxed);
        s.resting.store(false, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::Release);
        {
            // Taking the lock orders this notify after any worker's check-then-wait.
            let _l = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let caller = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            // A worker that lost its core (more threads than cores, a busy host) would otherwise
            // leave us spinning through a whole scheduler slice.
            spins += 1;
            if spins.is_multiple_of(1 << 14) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // Clear the flag before re-raising, so a later healthy job does not inherit it.
        let worker_panicked = s.panicked.swap(false, Ordering::Relaxed);
        if let Err(p) = caller {
            std::panic::resume_unwind(p);
        }
        if worker_panicked {
            panic!("a compute thread panicked inside a kernel");
        }
    }

    /// Splits `0..n` into chunks of `chunk` and hands them out dynamically, so a thread that was
    /// pre-empted does not hold the others back.
    pub fn for_chunks(&self, n: usize, chunk: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        let chunk = chunk.max(1);
        if self.n_threads == 1 || n <= chunk {
            if n > 0 {
                f(0..n);
            }
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(&|_| {
            loop {
                let start = next.fetch_add(chunk, Ordering::Relaxed);
                if start >= n {
                    break;
                }
                f(start..(start + chunk).min(n));
            }
        });
    }
}

/// How the compute threads are scheduled against the rest of the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputePriority {
    /// Ordinary threads: the OS shares the cores between compute and everything else.
    #[default]
    Normal,
    /// Compute runs only when nothing else wants a core (Linux `SCHED_IDLE`; elsewhere the
    /// same as `normal`). A thread that wakes to send tokens or answer a request then runs at
    /// once instead of waiting out a compute thread's time slice, which cuts the hop's tail
    /// latency on a machine whose every core computes; but any other busy process on the
    /// machine slows the model, so it is for machines that serve and do little else.
    Background,
}

impl ComputePriority {
    /// Puts the calling thread in this class. Failure (a platform or policy that refuses)
    /// leaves the thread as it was: priority is an optimisation, never a requirement.
    pub fn apply_to_current_thread(self) {
        #[cfg(target_os = "linux")]
        if self == ComputePriority::Background {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a plain system call on the calling thread (pid 0) with a valid parameter.
            let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        }
    }
}

fn worker(s: &Shared, idx: usize, priority: ComputePriority) {
    priority.apply_to_current_thread();
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                break e;
            }
            if s.shutdown.load(Ordering::Relaxed) {
                return;
            }
            spins += 1;
            if spins < SPIN_ITERS && !s.resting.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            } else {
                let guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
                if s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Relaxed) {
                    drop(s.wake.wait(guard));
                }
                spins = 0;
            }
        };
        seen = epoch;
        // SAFETY: published before the epoch we observed with acquire; valid until we decrement
        // `pending`, which the owner waits for.
        let job = unsafe { (*s.job.get()).expect("job published with the epoch") };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*job)(idx) }));
        if r.is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        {
            let _l = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_every_job() {
        let pool = ThreadPool::new(3);
        for round in 0..1000 {
            let hits = AtomicUsize::new(0);
            pool.run(&|i| {
                hits.fetch_add(1 << (i * 8), Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), 0x010101, "round {round}");
        }
    }

    #[test]
    fn chunks_cover_the_range_once() {
        let pool = ThreadPool::new(2);
        let seen: Vec<AtomicUsize> = (0..1001).map(|_| AtomicUsize::new(0)).collect();
        pool.for_chunks(1001, 7, &|r| {
            for i in r {
                seen[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn the_largest_weighted_wait_goes_first_and_a_long_wait_overtakes_weight() {
        let now = Instant::now();
        let ago = |ms: u64| now - Duration::from_millis(ms);
        let mut t = Turns { mean_step: Duration::from_millis(10), ..Turns::default() };
        t.waiting.push(Waiter { ticket: 0, weight: 1, since: ago(5) });
        t.waiting.push(Waiter { ticket: 1, weight: 4, since: ago(0) });
        assert_eq!(t.pick(now), Some(1), "4 × 10 ms beats 1 × 15 ms");
        t.waiting[0].since = ago(31);
        assert_eq!(t.pick(now), Some(0), "1 × 41 ms beats 4 × 10 ms: a lower tier is delayed, not starved");
        t.waiting[1] = Waiter { ticket: 1, weight: 1, since: ago(31) };
        assert_eq!(t.pick(now), Some(0), "a tie goes to the earlier ticket");
        t.waiting.clear();
        assert_eq!(t.pick(now), None);
    }

    #[test]
    fn steps_hold_the_pool_alone_and_every_loop_gets_its_turns() {
        let pool = Arc::new(ThreadPool::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = [1u32, 4, 8]
            .into_iter()
            .map(|weight| {
                let (pool, inside) = (pool.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _g = pool.step(weight);
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two steps hold the pool");
                        pool.run(&|_| std::hint::black_box(()));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let c = pool.step_counts();
        assert_eq!(c.grants, 600);
        // The pool is free again: an uncontended step is granted at once.
        drop(pool.step(1));
        assert_eq!(pool.step_counts().contended, c.contended);
    }

    #[test]
    fn two_loops_share_the_pool_by_weight_not_by_turns() {
        // Each loop holds the pool ~2 ms per step and spends ~0.3 ms between steps (sampling,
        // sending), so the releaser is never waiting when it releases: a plain hand-over would
        // alternate them 1:1.
        let pool = Arc::new(ThreadPool::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let loops: Vec<_> = [1u32, 4]
            .into_iter()
            .map(|weight| {
                let (pool, stop) = (pool.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut steps = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let g = pool.step(weight);
                        std::thread::sleep(Duration::from_millis(2));
                        drop(g);
                        steps += 1;
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    steps
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(600));
        stop.store(true, Ordering::Relaxed);
        let steps: Vec<u32> = loops.into_iter().map(|l| l.join().unwrap()).collect();
        let (low, high) = (f64::from(steps[0]), f64::from(steps[1]));
        assert!(high >= 2.0 * low, "weight 4 should get well over weight 1's steps: {steps:?}");
        assert!(low >= 0.05 * high, "weight 1 is delayed, not starved: {steps:?}");
    }

    #[test]
    fn a_step_that_panics_hands_the_pool_on() {
        let pool = ThreadPool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = pool.step(1);
            panic!("inside a step");
        }));
        assert!(r.is_err());
        let _g = pool.step(1);
    }

    #[test]
    fn survives_sleeping_workers_and_a_panicking_job() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let n = AtomicUsize::new(0);
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|i| assert!(i == 0, "worker fails"));
        }));
        assert!(r.is_err());
        pool.run(&|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }
}
