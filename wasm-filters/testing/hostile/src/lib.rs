//! A filter that misbehaves on demand, for the host's containment tests. Its operator config key
//! `mode` (or the request header `x-hostile-mode`, when it can see it) selects the misbehaviour:
//!
//! - `loop`: spin forever (the host's deadline must stop it)
//! - `grow`: allocate without bound (the memory cap must stop it)
//! - `trap`: hit `unreachable`
//! - `huge`: deny with a 4 MiB message (the host's verdict bounds must refuse it)
//! - `spoof`: set the `tier` annotation without the identity capability
//! - `reserved`: rewrite the `authorization` header
//! - `calls`: read the prompt as a script of host calls with arguments taken from its bytes,
//!   then return a verdict built from them (the host's guest-facing imports under fuzzing)
//! - `echo` (default): allow, annotating what the filter could see

use chorus_filter_sdk::host::Level;
use chorus_filter_sdk::{Denial, Filter, Header, Request, Rewrite, Verdict, annotation, export_filter, host};

struct Hostile;

impl Filter for Hostile {
    fn on_request(req: Request) -> Verdict {
        let mode = req.header("x-hostile-mode").map(str::to_owned).or_else(|| host::config("mode"));
        match mode.as_deref().unwrap_or("echo") {
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => std::process::abort(),
            "huge" => Verdict::deny(400, "huge", "x".repeat(4 << 20)),
            "spoof" => Verdict::allow_with(vec![annotation("tier", "enterprise")]),
            "reserved" => Verdict::Rewrite(Rewrite {
                set_headers: vec![Header { name: "authorization".into(), value: "Bearer stolen".into() }],
                remove_headers: vec![],
                annotations: vec![],
            }),
            "calls" => calls(req.prompt_text.as_bytes()),
            _ => {
                let names: Vec<&str> = req.headers.iter().map(|h| h.name.as_str()).collect();
                Verdict::allow_with(vec![
                    annotation("hostile.headers", names.join(",")),
                    annotation("hostile.now", host::now_ms().to_string()),
                    annotation("hostile.prompt_chars", req.prompt_chars.to_string()),
                ])
            }
        }
    }
}

/// The bytes of a `calls` script, read front to back; past the end everything is zero.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| n << 8 | u64::from(self.u8()))
    }

    /// A string: a length byte, then that many bytes (lossily UTF-8); length 255 means one
    /// more byte `k` and `k` KiB of a repeated byte, so the host also sees large arguments.
    fn string(&mut self) -> String {
        match self.u8() {
            255 => {
                let kib = usize::from(self.u8());
                let fill = self.u8() as char;
                std::iter::repeat_n(fill, kib * 1024).collect()
            }
            n => {
                let n = usize::from(n).min(self.0.len());
                let (s, rest) = self.0.split_at(n);
                self.0 = rest;
                String::from_utf8_lossy(s).into_owned()
            }
        }
    }
}

fn calls(bytes: &[u8]) -> Verdict {
    let mut s = Script(bytes);
    for _ in 0..64 {
        if s.0.is_empty() {
            break;
        }
        match s.u8() % 13 {
            0 => {
                let _ = host::window_hit(&s.string(), s.u64() as u32, s.u64());
            }
            1 => {
                let _ = host::window_release(&s.string(), s.u64());
            }
            2 => {
                let _ = host::counter_add(&s.string(), s.u64() as i64, s.u64());
            }
            3 => {
                let _ = host::budget_reserve(&s.string(), s.u64() as i64, s.u64() as i64, s.u64());
            }
            4 => {
                let _ = host::kv_get(&s.string());
            }
            5 => {
                let _ = host::config(&s.string());
            }
            6 => {
                let _ = host::token_count(&s.string());
            }
            7 => {
                let level = [Level::Debug, Level::Info, Level::Warn, Level::Error][usize::from(s.u8() % 4)];
                host::log(level, &s.string());
            }
            8 => host::metric_add(&s.string(), s.u64()),
            9 => {
                let _ = host::now_ms();
            }
            10 => {
                let (status, code, message) = (s.u64() as u16, s.string(), s.string());
                let retry_after_ms = (s.u8() & 1 == 1).then(|| s.u64());
                return Verdict::Deny(Denial { status, code, message, retry_after_ms });
            }
            11 => {
                let n = usize::from(s.u8() % 16);
                return Verdict::allow_with((0..n).map(|_| annotation(s.string(), s.string())).collect());
            }
            _ => {
                let n = usize::from(s.u8() % 16);
                let set_headers = (0..n).map(|_| Header { name: s.string(), value: s.string() }).collect();
                let remove_headers = (0..usize::from(s.u8() % 4)).map(|_| s.string()).collect();
                let annotations = (0..usize::from(s.u8() % 4)).map(|_| annotation(s.string(), s.string())).collect();
                return Verdict::Rewrite(Rewrite { set_headers, remove_headers, annotations });
            }
        }
    }
    Verdict::allow()
}

export_filter!(Hostile);
