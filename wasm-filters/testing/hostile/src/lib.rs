//! A filter that misbehaves on demand, for the host's containment tests. Its operator config key
//! `mode` (or the request header `x-hostile-mode`, when it can see it) selects the misbehaviour:
//!
//! - `loop`: spin forever (the host's deadline must stop it)
//! - `grow`: allocate without bound (the memory cap must stop it)
//! - `trap`: hit `unreachable`
//! - `huge`: deny with a 4 MiB message (the host's verdict bounds must refuse it)
//! - `spoof`: set the `tier` annotation without the identity capability
//! - `reserved`: rewrite the `authorization` header
//! - `echo` (default): allow, annotating what the filter could see

use chorus_filter_sdk::{Filter, Header, Request, Rewrite, Verdict, annotation, export_filter, host};

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

export_filter!(Hostile);
