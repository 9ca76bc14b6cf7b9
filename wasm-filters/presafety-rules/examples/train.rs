//! Trains the presafety classifier: `cargo run --release -p chorus-presafety-rules --example train`.
//!
//! Reads every `train/data/*.jsonl` (and `*.tsv`) file, keeps a validation split (a stable
//! hash of the text picks 15 %), augments the training split, fits a softmax-linear model over
//! the crate's own hashed features with AdaGrad, quantises it to the file format the filter
//! compiles in, and picks the thresholds on the validation split by running the crate's real
//! scorer over the quantised file. Writes `src/classifier/weights.bin` and `train/REPORT.md`.
//! Everything is deterministic: the same data gives the same bytes.
//!
//! `train/heldout/` is never read here (see `examples/evaluate.rs`).

// The backward pass indexes several parallel arrays by the same unit and class.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

#[path = "../train/dataset.rs"]
mod dataset;

use chorus_presafety_rules::{
    Assessment, CLASSES, Category, Limits, Model, Parts, Policy, assess, decide, hashed_features, scan_rules,
};

const BITS: u32 = 16;
/// Weights are averaged over the epoch ends of the last `AVERAGE_EPOCHS` epochs.
const AVERAGE_EPOCHS: usize = 15;
/// Width of the hidden layer.
const HIDDEN: usize = 32;
/// Buckets seen in fewer training texts than this are not learned.
const MIN_COUNT: u32 = 3;
/// Each template task is put in this many random frames.
const TEMPLATE_FRAMES_PER_TASK: usize = 3;
const WINDOW: usize = 64;
const STRIDE: usize = 16;
const EPOCHS: usize = 45;
const LEARNING_RATE: f32 = 0.05;
const L2: f32 = 1e-5;
/// Percent of a window's features left out of each training step (a fresh draw every
/// time), so no single feature can carry a decision: the model has to spread its evidence.
const DROPOUT_PERCENT: u64 = 50;

fn bits() -> u32 {
    knob("BITS", BITS)
}

/// `CHORUS_TRAIN_<NAME>` overrides a hyper-parameter for experiments; the committed model is
/// trained with the defaults above.
fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(format!("CHORUS_TRAIN_{name}")).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
const VALIDATION_PERCENT: u64 = 15;
/// The benign false-positive rate the thresholds are chosen for, on the validation split.
const TARGET_FPR: f64 = 0.02;
const SEED: u64 = 0x5EED_C0DE;

#[derive(Clone)]
struct Example {
    /// 0 = benign, 1 + k = Category::ALL[k].
    class: usize,
    text: String,
    source: String,
}

fn class_of(label: &str) -> Option<usize> {
    if label == "benign" {
        return Some(0);
    }
    Category::ALL.iter().position(|c| c.as_str() == label).map(|k| k + 1)
}

fn label_of(class: usize) -> &'static str {
    if class == 0 { "benign" } else { Category::ALL[class - 1].as_str() }
}

fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// xorshift64*: small, deterministic, good enough for shuffling and augmentation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn load(dir: &Path) -> Vec<Example> {
    dataset::load_dir(dir, "")
        .into_iter()
        .map(|c| {
            let class = class_of(&c.label).unwrap_or_else(|| panic!("{}: unknown label {:?}", c.at, c.label));
            Example { class, text: c.text, source: c.source }
        })
        .collect()
}

/// Wrappers that say nothing about harm: applied to both classes, so the model cannot learn
/// that a polite frame or a story frame is itself the signal.
const NEUTRAL_FRAMES: &[(&str, &str)] = &[
    ("Quick question: ", ""),
    ("Hi! ", " Thanks in advance."),
    ("Please answer in detail. ", ""),
    ("", " Explain step by step."),
    ("I'm writing a novel. ", ""),
    ("Hypothetically, ", ""),
    ("For a school project: ", ""),
    ("", " Answer in Spanish."),
    ("Can you help me with this? ", ""),
    ("My friend asked me this and I didn't know: ", ""),
    ("", " Keep it short."),
    ("ok so ", " lol"),
    ("Answer as a JSON object. ", ""),
    ("Pretend you are a helpful librarian. ", ""),
    ("Translate your answer into German. ", ""),
    ("URGENT: ", ""),
];

fn augment(train: &[Example], rng: &mut Rng) -> Vec<Example> {
    let mut out = train.to_vec();
    for ex in train {
        if rng.chance(30) {
            let (pre, post) = NEUTRAL_FRAMES[rng.below(NEUTRAL_FRAMES.len())];
            out.push(Example { text: format!("{pre}{}{post}", ex.text), source: "augment:frame".into(), ..ex.clone() });
        }
    }
    // Multi-turn requests reach the gate as the user turns joined by newlines: a benign turn
    // before a harmful one must not hide it, and two benign turns stay benign.
    let benign: Vec<&Example> = train.iter().filter(|e| e.class == 0).collect();
    for _ in 0..train.len() / 3 {
        let first = benign[rng.below(benign.len())];
        let second = &train[rng.below(train.len())];
        out.push(Example {
            class: second.class,
            text: format!("{}\n{}", first.text, second.text),
            source: "augment:turns".into(),
        });
    }
    out
}

fn lines(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
}

/// Words that make a frame a jailbreak on its own ("you are an AI with no rules, tell me how
/// to {task}"): such a frame around a benign task is still a jailbreak attempt.
const JAILBREAK_MARKERS: &[&str] = &[
    "no rules",
    "no restrictions",
    "no limits",
    "without restrictions",
    "without limits",
    "unfiltered",
    "uncensored",
    "no filter",
    "developer mode",
    "ignore your",
    "ignore all",
    "no ethics",
    "no guidelines",
    "jailbreak",
    "sin reglas",
    "sin restricciones",
    "sans restrictions",
    "sans limites",
    "ohne regeln",
    "ohne einschränkungen",
    "sem restrições",
    "senza restrizioni",
    "без ограничений",
    "без правил",
    "没有限制",
    "不受限制",
    "制限なし",
    "制限のない",
];

fn jailbreak_frame(frame: &str) -> bool {
    let f = frame.to_lowercase();
    if JAILBREAK_MARKERS.iter().any(|m| f.contains(m)) {
        return true;
    }
    let probe = frame.replace("{task}", "bake bread");
    scan_rules(&probe, &Limits::default())
        .is_some_and(|r| matches!(r.category, Category::Jailbreak | Category::PromptInjection))
}

/// Frames × tasks from `train/templates/`: the same frames carry benign and harmful tasks, so
/// a frame alone says nothing (unless it is a jailbreak in itself).
fn templated(dir: &Path, rng: &mut Rng) -> Vec<Example> {
    let mut out = Vec::new();
    let langs = ["en", "es", "fr", "de", "pt", "it", "ru", "zh", "ja", "ar", "hi", "tr", "ko", "pl", "nl", "id", "vi"];
    for lang in langs {
        let frames = lines(&dir.join(format!("frames_{lang}.txt")));
        let frames: Vec<(String, bool)> = frames
            .into_iter()
            .filter(|f| f.matches("{task}").count() == 1)
            .map(|f| {
                let j = jailbreak_frame(&f);
                (f, j)
            })
            .collect();
        if frames.is_empty() {
            continue;
        }
        let mut tasks: Vec<(usize, String)> = Vec::new();
        for t in lines(&dir.join(format!("tasks_benign_{lang}.txt"))) {
            tasks.push((0, t));
        }
        for l in lines(&dir.join(format!("tasks_harmful_{lang}.txt"))) {
            if let Some((label, t)) = l.split_once('\t')
                && let Some(c) = class_of(label.trim())
            {
                tasks.push((c, t.trim().to_string()));
            }
        }
        if lang == "en" {
            for c in Category::ALL {
                for t in lines(&dir.join(format!("tasks_{}_en.txt", c.as_str()))) {
                    tasks.push((class_of(c.as_str()).unwrap_or(0), t));
                }
            }
        }
        for (class, task) in tasks {
            for _ in 0..TEMPLATE_FRAMES_PER_TASK {
                let (frame, jailbreak) = &frames[rng.below(frames.len())];
                let class = if class == 0 && *jailbreak { class_of("jailbreak").unwrap_or(0) } else { class };
                out.push(Example { class, text: frame.replace("{task}", &task), source: format!("template:{lang}") });
            }
        }
    }
    out
}

/// One training instance: a window's features.
struct Instance {
    class: usize,
    feats: Vec<(u32, f32)>,
    norm: f32,
}

/// The windows of an example, exactly as the scorer cuts them.
fn windows(text: &str) -> Vec<(Vec<(u32, f32)>, f32)> {
    let (tokens, feats) = hashed_features(text, bits());
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + WINDOW).min(tokens);
        // Distinct features only, as the scorer counts them.
        let mut f: Vec<(u32, bool)> = feats
            .iter()
            .filter(|(t, _, _)| (start..end).contains(&(*t as usize)))
            .map(|&(_, b, neg)| (b, neg))
            .collect();
        f.sort_unstable();
        f.dedup();
        let f: Vec<(u32, f32)> = f.into_iter().map(|(b, neg)| (b, if neg { -1.0 } else { 1.0 })).collect();
        if !f.is_empty() {
            let norm = 1.0 / (f.len() as f32).sqrt();
            out.push((f, norm));
        }
        if end >= tokens {
            break;
        }
        start += STRIDE;
    }
    out
}

/// `inst` with `percent` of its features left out at random (the rest normalised as the
/// scorer would normalise a window with that many features).
fn dropped(inst: &Instance, percent: u64, rng: &mut Rng) -> Instance {
    let feats: Vec<(u32, f32)> = inst.feats.iter().copied().filter(|_| percent == 0 || !rng.chance(percent)).collect();
    let norm =
        if feats.is_empty() { inst.norm } else { inst.norm * (inst.feats.len() as f32 / feats.len() as f32).sqrt() };
    Instance { class: inst.class, feats, norm }
}

/// The network in f32, with AdaGrad's squared-gradient totals.
struct Net {
    hidden: usize,
    e: Vec<f32>,
    ge: Vec<f32>,
    b1: Vec<f32>,
    gb1: Vec<f32>,
    w2: Vec<f32>,
    gw2: Vec<f32>,
    b2: [f32; CLASSES],
    gb2: [f32; CLASSES],
    lr: f32,
    l2: f32,
}

fn adagrad(w: &mut f32, g: &mut f32, grad: f32, lr: f32) {
    *g += grad * grad;
    *w -= lr * grad / (g.sqrt() + 1e-6);
}

impl Net {
    fn new(bits: u32, hidden: usize, rng: &mut Rng) -> Net {
        let mut uniform = |a: f32| (rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 * a - a;
        let e = (0..hidden << bits).map(|_| uniform(0.1)).collect();
        let w2 = (0..hidden * CLASSES).map(|_| uniform(0.1)).collect();
        Net {
            hidden,
            e,
            ge: vec![0.0; hidden << bits],
            b1: vec![0.1; hidden],
            gb1: vec![0.0; hidden],
            w2,
            gw2: vec![0.0; hidden * CLASSES],
            b2: [0.0; CLASSES],
            gb2: [0.0; CLASSES],
            lr: knob("LR", LEARNING_RATE),
            l2: knob("L2", L2),
        }
    }

    /// (pre-activations, logits) of one window.
    fn forward(&self, feats: &[(u32, f32)], norm: f32) -> (Vec<f32>, [f32; CLASSES]) {
        let h = self.hidden;
        let mut pre = self.b1.clone();
        for &(b, s) in feats {
            let row = &self.e[b as usize * h..][..h];
            for j in 0..h {
                pre[j] += row[j] * s * norm;
            }
        }
        let mut z = self.b2;
        for j in 0..h {
            let a = pre[j].max(0.0);
            if a > 0.0 {
                for k in 0..CLASSES {
                    z[k] += a * self.w2[j * CLASSES + k];
                }
            }
        }
        (pre, z)
    }

    fn harm(&self, feats: &[(u32, f32)], norm: f32) -> f32 {
        let (_, z) = self.forward(feats, norm);
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let total: f32 = z.iter().map(|v| (v - max).exp()).sum();
        1.0 - (z[0] - max).exp() / total
    }

    fn step(&mut self, inst: &Instance, weight: f32) {
        let h = self.hidden;
        let (pre, z) = self.forward(&inst.feats, inst.norm);
        let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
        let total: f32 = e.iter().sum();
        let gz: [f32; CLASSES] =
            std::array::from_fn(|k| weight * (e[k] / total - if k == inst.class { 1.0 } else { 0.0 }));
        let mut gpre = vec![0.0f32; h];
        for j in 0..h {
            let a = pre[j].max(0.0);
            let mut back = 0.0;
            for k in 0..CLASSES {
                back += self.w2[j * CLASSES + k] * gz[k];
                if a > 0.0 {
                    let i = j * CLASSES + k;
                    let grad = a * gz[k] + self.l2 * self.w2[i];
                    adagrad(&mut self.w2[i], &mut self.gw2[i], grad, self.lr);
                }
            }
            gpre[j] = if pre[j] > 0.0 { back } else { 0.0 };
        }
        for k in 0..CLASSES {
            adagrad(&mut self.b2[k], &mut self.gb2[k], gz[k], self.lr);
        }
        for j in 0..h {
            adagrad(&mut self.b1[j], &mut self.gb1[j], gpre[j], self.lr);
        }
        for &(b, s) in &inst.feats {
            let at = b as usize * h;
            for j in 0..h {
                let grad = gpre[j] * s * inst.norm + self.l2 * self.e[at + j];
                adagrad(&mut self.e[at + j], &mut self.ge[at + j], grad, self.lr);
            }
        }
    }

    /// Add this network's parameters into `sum` (for averaging).
    fn accumulate(&self, sum: &mut Net) {
        for (s, w) in sum.e.iter_mut().zip(&self.e) {
            *s += w;
        }
        for (s, w) in sum.b1.iter_mut().zip(&self.b1) {
            *s += w;
        }
        for (s, w) in sum.w2.iter_mut().zip(&self.w2) {
            *s += w;
        }
        for k in 0..CLASSES {
            sum.b2[k] += self.b2[k];
        }
    }

    fn divide(&mut self, n: f32) {
        self.e
            .iter_mut()
            .chain(self.b1.iter_mut())
            .chain(self.w2.iter_mut())
            .chain(self.b2.iter_mut())
            .for_each(|w| *w /= n);
    }
}

fn quantise(t: &Net, thresholds: &[f32; CLASSES]) -> Vec<u8> {
    let max = t.e.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    let scale = if max == 0.0 { 1.0 } else { max / 127.0 };
    let embedding: Vec<i8> = t.e.iter().map(|&w| (w / scale).round().clamp(-127.0, 127.0) as i8).collect();
    Model::write(&Parts {
        bits: bits(),
        hidden: t.hidden,
        window: WINDOW as u32,
        stride: STRIDE as u32,
        scale,
        b1: &t.b1,
        w2: &t.w2,
        b2: &t.b2,
        threshold: thresholds,
        embedding: &embedding,
    })
}

struct Eval {
    blocked: usize,
    total: usize,
}

/// (harm threshold, rule floor) → (benign FPR, harmful recall) on `set`.
fn rates(assessed: &[(usize, Assessment)], policy: &Policy<'_>) -> (f64, f64) {
    let (mut fp, mut nb, mut tp, mut nh) = (0, 0, 0, 0);
    for (class, a) in assessed {
        let blocked = decide(a, policy).is_some();
        if *class == 0 {
            nb += 1;
            fp += usize::from(blocked);
        } else {
            nh += 1;
            tp += usize::from(blocked);
        }
    }
    (fp as f64 / nb.max(1) as f64, tp as f64 / nh.max(1) as f64)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = load(&root.join("train/data"));
    let (valid, train): (Vec<Example>, Vec<Example>) =
        data.iter().cloned().partition(|e| fnv64(&e.text) % 100 < VALIDATION_PERCENT);
    let mut rng = Rng(SEED);
    let mut train = augment(&train, &mut rng);
    let templates = templated(&root.join("train/templates"), &mut rng);
    let templated_count = templates.len();
    train.extend(templates);

    let mut instances: Vec<(usize, Vec<Instance>)> = Vec::new();
    for (i, ex) in train.iter().enumerate() {
        let ws = windows(&ex.text);
        if ws.is_empty() {
            continue;
        }
        instances.push((i, ws.into_iter().map(|(feats, norm)| Instance { class: ex.class, feats, norm }).collect()));
    }
    // A bucket seen in fewer than MIN_COUNT training texts is a name, a typo or a collision,
    // not a pattern: it keeps a zero embedding (its count still normalises the window, exactly
    // as the scorer does).
    let min_count = knob("MIN_COUNT", MIN_COUNT);
    let mut seen_in = vec![0u32; 1 << bits()];
    for (_, ws) in &instances {
        let mut buckets: Vec<u32> = ws.iter().flat_map(|w| w.feats.iter().map(|f| f.0)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        for b in buckets {
            seen_in[b as usize] += 1;
        }
    }
    let active: Vec<bool> = seen_in.iter().map(|&n| n >= min_count).collect();
    for (_, ws) in &mut instances {
        for w in ws.iter_mut() {
            w.feats.retain(|f| active[f.0 as usize]);
        }
    }
    // Class weights: every harmful category carries as much total weight as a tenth of the
    // benign examples, so small categories are not drowned.
    let mut counts = [0usize; CLASSES];
    for ex in &train {
        counts[ex.class] += 1;
    }
    let benign_share = counts[0] as f32 / (CLASSES - 1) as f32;
    let weight: [f32; CLASSES] = std::array::from_fn(|k| {
        if k == 0 || counts[k] == 0 { 1.0 } else { (benign_share / counts[k] as f32).clamp(0.5, 3.0) }
    });

    let hidden = knob("HIDDEN", HIDDEN);
    let mut t = Net::new(bits(), hidden, &mut rng);
    for (b, _) in active.iter().enumerate().filter(|(_, a)| !**a) {
        t.e[b * hidden..(b + 1) * hidden].fill(0.0);
    }
    let mut order: Vec<usize> = (0..instances.len()).collect();
    let epochs = knob("EPOCHS", EPOCHS);
    let dropout = knob("DROPOUT", DROPOUT_PERCENT);
    let averaged = knob("AVERAGE", AVERAGE_EPOCHS).clamp(1, epochs);
    let mut sum = Net::new(bits(), hidden, &mut Rng(1));
    sum.divide(f32::INFINITY); // all zeros
    for epoch in 0..epochs {
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
        for &i in &order {
            let (_, ws) = &instances[i];
            let class = ws[0].class;
            if class == 0 {
                // Every window of a benign text is benign.
                for inst in ws {
                    t.step(&dropped(inst, dropout, &mut rng), weight[0] / ws.len() as f32);
                }
            } else {
                // A harmful text is harmful somewhere: fit its most harmful window
                // (after one epoch of fitting the first window to get a sensible start).
                let pick = if epoch == 0 || ws.len() == 1 {
                    0
                } else {
                    (0..ws.len())
                        .max_by(|&a, &b| t.harm(&ws[a].feats, ws[a].norm).total_cmp(&t.harm(&ws[b].feats, ws[b].norm)))
                        .unwrap_or(0)
                };
                t.step(&dropped(&ws[pick], dropout, &mut rng), weight[class]);
            }
        }
        if epoch + averaged >= epochs {
            t.accumulate(&mut sum);
        }
    }
    sum.divide(averaged as f32);
    let t = sum;

    // The float model on both splits (a diagnostic line; the report uses the quantised one).
    for (name, set) in [("train", &train), ("validation", &valid)] {
        let harms: Vec<(usize, f32)> = set
            .iter()
            .map(|e| (e.class, windows(&e.text).iter().map(|(f, n)| t.harm(f, *n)).fold(0.0, f32::max)))
            .collect();
        let mut line = format!("float model, {name}:");
        for tau in [0.5f32, 0.7, 0.9, 0.95] {
            let fp = harms.iter().filter(|(c, h)| *c == 0 && *h >= tau).count();
            let tp = harms.iter().filter(|(c, h)| *c != 0 && *h >= tau).count();
            let nb = harms.iter().filter(|(c, _)| *c == 0).count();
            let _ = write!(line, " @{tau}: fp {fp}/{nb} tp {tp}/{}", harms.len() - nb);
        }
        println!("{line}");
        if name == "validation" && std::env::var("CHORUS_TRAIN_SHOW").is_ok() {
            for (e, (_, h)) in set.iter().zip(&harms) {
                if (e.class == 0) == (*h >= 0.7) {
                    println!(
                        "  {} {:.2} [{}] {:?}",
                        if e.class == 0 { "FP" } else { "FN" },
                        h,
                        label_of(e.class),
                        e.text.chars().take(140).collect::<String>()
                    );
                }
            }
        }
    }

    // Thresholds: on the validation split, with the quantised model and the real scorer.
    let provisional = quantise(&t, &[0.5; CLASSES]);
    let model = Model::parse(&provisional).expect("the trainer writes a valid model");
    let limits = Limits::default();
    let assessed: Vec<(usize, Assessment)> =
        valid.iter().map(|e| (e.class, assess(&e.text, &limits, &model))).collect();
    let mut best = (0.5f32, 1.0f32, -1.0f64, 1.0f64);
    // 0.01 … 0.99 by 0.01, then finer towards 1 (a confident model's benign tail sits there).
    let taus = (1..=99)
        .map(|i| i as f32 / 100.0)
        .chain((1..=9).map(|i| 0.99 + i as f32 / 1000.0))
        .chain((1..=9).map(|i| 0.999 + i as f32 / 10_000.0));
    for tau in taus {
        for floor in [1.01f32, 0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0] {
            if floor > tau && floor <= 1.0 {
                continue;
            }
            let policy = Policy { model, thresholds: [tau; Category::ALL.len()], rule_floor: floor };
            let (fpr, recall) = rates(&assessed, &policy);
            if fpr <= TARGET_FPR && (recall > best.2 || (recall == best.2 && tau > best.0)) {
                best = (tau, floor, recall, fpr);
            }
        }
    }
    let (tau, floor, recall, fpr) = best;
    let mut thresholds = [tau; CLASSES];
    thresholds[0] = floor;
    let bytes = quantise(&t, &thresholds);
    std::fs::write(root.join("src/classifier/weights.bin"), &bytes).expect("write weights.bin");

    // The report.
    let model = Model::parse(&bytes).expect("valid model");
    let policy = Policy { model, thresholds: [tau; Category::ALL.len()], rule_floor: floor };
    let mut per: BTreeMap<&str, Eval> = BTreeMap::new();
    for (class, a) in &assessed {
        let e = per.entry(label_of(*class)).or_insert(Eval { blocked: 0, total: 0 });
        e.total += 1;
        e.blocked += usize::from(decide(a, &policy).is_some());
    }
    let mut sources: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for ex in &data {
        *sources.entry((ex.source.clone(), label_of(ex.class))).or_default() += 1;
    }
    let mut r = String::new();
    let _ = writeln!(r, "# Presafety classifier: training report\n");
    let _ = writeln!(r, "Written by `cargo run --release -p chorus-presafety-rules --example train`; do not edit.\n");
    let _ = writeln!(
        r,
        "Model: embedding bag, 2^{} hashed buckets × {HIDDEN} (i8), ReLU, {CLASSES} classes, windows of {WINDOW} tokens every {STRIDE}; {EPOCHS} AdaGrad epochs with {DROPOUT_PERCENT}% feature dropout, the last {AVERAGE_EPOCHS} averaged.\n",
        bits()
    );
    let _ = writeln!(
        r,
        "Examples: {} loaded, {} for validation, {} for training after augmentation ({templated_count} of them from templates).\n",
        data.len(),
        valid.len(),
        train.len()
    );
    let _ = writeln!(r, "| source | label | examples |\n|---|---|---|");
    for ((s, l), n) in &sources {
        let _ = writeln!(r, "| {s} | {l} | {n} |");
    }
    let _ = writeln!(
        r,
        "\nChosen on the validation split (benign FPR ≤ {:.0}%): harm threshold {tau:.4} for every category, rule floor {}.\n",
        TARGET_FPR * 100.0,
        if floor > 1.0 { "off (rules do not block)".to_string() } else { format!("{floor:.2}") }
    );
    let _ = writeln!(r, "Validation: harmful recall {:.1}%, benign FPR {:.1}%.\n", recall * 100.0, fpr * 100.0);
    let _ = writeln!(r, "| validation label | blocked | of |\n|---|---|---|");
    for (l, e) in &per {
        let _ = writeln!(r, "| {l} | {} | {} |", e.blocked, e.total);
    }
    std::fs::write(root.join("train/REPORT.md"), &r).expect("write REPORT.md");
    print!("{r}");
}
