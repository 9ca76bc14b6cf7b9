//! `chorus-process`: what every Chorus binary (`chorus`, `chorus-core`, `chorus-edge`, the
//! test core) does the same way — log to stderr, and wait for the signal to stop.
//!
//! It knows nothing of the edge, the core or the wire; they depend on it, never the reverse.
//! It never reads configuration files: the binaries pass what their flags say.

use std::io::IsTerminal;
use std::str::FromStr;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}; expected text or json")),
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Colour codes are written only to a
/// terminal, so `chorus up 2> file` leaves a clean file. A second call does nothing (the first
/// subscriber stays), so libraries and tests may call it freely.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Why the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM (an orchestrator, `kill`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
}

/// Resolves on SIGTERM or Ctrl-C, logging which. Where SIGTERM cannot be watched (not Unix, or
/// the handler could not be installed) only Ctrl-C is.
pub async fn shutdown_signal() -> Stop {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            let stop = tokio::select! {
                _ = term.recv() => Stop::Terminate,
                _ = tokio::signal::ctrl_c() => Stop::Interrupt,
            };
            tracing::info!(signal = ?stop, "stopping");
            return stop;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!(signal = ?Stop::Interrupt, "stopping");
    Stop::Interrupt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse_by_name() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("text or json"));
    }
}
