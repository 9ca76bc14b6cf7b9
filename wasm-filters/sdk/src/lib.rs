//! The SDK for Chorus edge filters: the one `wit_bindgen::generate!` of `chorus:filter@0.2.0`,
//! ergonomic constructors for verdicts, typed wrappers over the host imports, and
//! [`export_filter!`] to export a type implementing [`Filter`].
//!
//! A filter is a pure function of the request and what the host offers: it runs in a fresh
//! instance for every call, so it keeps no state between requests (use the host's counters), and
//! it does no I/O of its own (the host links no filesystem, sockets or environment).
//!
//! ```ignore
//! use chorus_filter_sdk::{Filter, Request, Verdict, export_filter};
//! struct Hello;
//! impl Filter for Hello {
//!     fn on_request(req: Request) -> Verdict {
//!         if req.header("x-hello").is_some() { Verdict::allow() } else { Verdict::deny(400, "no_hello", "say hello") }
//!     }
//! }
//! export_filter!(Hello);
//! ```

#[doc(hidden)]
#[allow(unsafe_code)] // the generated canonical-ABI glue
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "::chorus_filter_sdk::bindings",
    });
}

pub use bindings::chorus::filter::host::{BudgetStatus, Level, WindowStatus};
pub use bindings::chorus::filter::types::{
    Annotation, Completion, Denial, Header, Outcome, Request, Rewrite, Usage, Verdict,
};

/// A filter: called once per request, and once more when a request it let through finishes.
pub trait Filter {
    /// Decide on one request. The chain stops at the first deny.
    fn on_request(req: Request) -> Verdict;

    /// Accounting after the answer (for example reconciling a token reservation). Called only
    /// for requests this filter allowed.
    fn on_complete(done: Completion) {
        let _ = done;
    }
}

/// Export `$ty: Filter` as this component's `on-request` / `on-complete`.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        #[doc(hidden)]
        struct __ChorusFilterExport;
        impl $crate::bindings::Guest for __ChorusFilterExport {
            fn on_request(req: $crate::Request) -> $crate::Verdict {
                <$ty as $crate::Filter>::on_request(req)
            }
            fn on_complete(done: $crate::Completion) {
                <$ty as $crate::Filter>::on_complete(done)
            }
        }
        $crate::bindings::__export_filter_world!(__ChorusFilterExport with_types_in $crate::bindings);
    };
}

/// An annotation `key = value`.
pub fn annotation(key: impl Into<String>, value: impl Into<String>) -> Annotation {
    Annotation { key: key.into(), value: value.into() }
}

fn find<'a>(list: &'a [Annotation], key: &str) -> Option<&'a str> {
    list.iter().rev().find(|a| a.key == key).map(|a| a.value.as_str())
}

impl Request {
    /// The value of header `name` (case-insensitive), if the filter can see it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// The latest value an earlier filter gave annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }
}

impl Completion {
    /// The latest value of annotation `key` on the finished request.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }
}

impl Verdict {
    /// Let the request through unchanged.
    pub fn allow() -> Verdict {
        Verdict::Allow(Vec::new())
    }

    /// Let the request through with annotations for later filters and the edge.
    pub fn allow_with(annotations: Vec<Annotation>) -> Verdict {
        Verdict::Allow(annotations)
    }

    /// Refuse the request with an HTTP status, a stable code and a short message.
    pub fn deny(status: u16, code: impl Into<String>, message: impl Into<String>) -> Verdict {
        Verdict::Deny(Denial { status, code: code.into(), message: message.into(), retry_after_ms: None })
    }

    /// Refuse the request, telling the client when to retry.
    pub fn deny_retry(
        status: u16,
        code: impl Into<String>,
        message: impl Into<String>,
        retry_after_ms: u64,
    ) -> Verdict {
        Verdict::Deny(Denial {
            status,
            code: code.into(),
            message: message.into(),
            retry_after_ms: Some(retry_after_ms),
        })
    }
}

/// Typed wrappers over the host imports.
pub mod host {
    use super::bindings::chorus::filter::host as raw;
    pub use raw::{BudgetStatus, Level, WindowStatus};

    /// Sliding window: admit and record one event if fewer than `limit` in the last `window_ms`.
    pub fn window_hit(key: &str, limit: u32, window_ms: u64) -> Result<WindowStatus, String> {
        raw::window_hit(key, limit, window_ms)
    }

    /// Sliding window: give back one event recorded under `key` at `at_ms` (the `now_ms` of the
    /// request that recorded it); false when none is left to give back.
    pub fn window_release(key: &str, at_ms: u64) -> Result<bool, String> {
        raw::window_release(key, at_ms)
    }

    /// Fixed window: add `delta` and return the new total.
    pub fn counter_add(key: &str, delta: i64, window_ms: u64) -> Result<i64, String> {
        raw::counter_add(key, delta, window_ms)
    }

    /// Fixed window: add `amount` only if the total stays within `limit`.
    pub fn budget_reserve(key: &str, amount: i64, limit: i64, window_ms: u64) -> Result<BudgetStatus, String> {
        raw::budget_reserve(key, amount, limit, window_ms)
    }

    /// Read-only operator data.
    pub fn kv_get(key: &str) -> Option<Vec<u8>> {
        raw::kv_get(key)
    }

    /// Milliseconds since the Unix epoch, frozen at request start.
    pub fn now_ms() -> u64 {
        raw::now_ms()
    }

    /// This filter's configuration value `name`.
    pub fn config(name: &str) -> Option<String> {
        raw::config(name)
    }

    /// Configuration value `name` parsed as `T`; `default` when absent, `Err` naming the key
    /// when present but unparsable.
    pub fn config_parse<T: core::str::FromStr>(name: &str, default: T) -> Result<T, String> {
        match raw::config(name) {
            None => Ok(default),
            Some(text) => text.trim().parse().map_err(|_| format!("config `{name}`: cannot parse {text:?}")),
        }
    }

    /// A conservative estimate of the model tokens in `text`.
    pub fn token_count(text: &str) -> u32 {
        raw::token_count(text)
    }

    /// Log a line attributed to this filter (the host rate-limits and truncates).
    pub fn log(level: Level, message: &str) {
        raw::log(level, message)
    }

    /// Add `value` to this filter's custom counter `name`.
    pub fn metric_add(name: &str, value: u64) {
        raw::metric_add(name, value)
    }
}
