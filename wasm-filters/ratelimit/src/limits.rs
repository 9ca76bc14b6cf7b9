//! `limit/window` rates as operators write them: `40/3h`, `2/1s`, `200000/1d`, `unlimited`.

/// At most `limit` per `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub window_ms: u64,
}

impl Rate {
    /// The limit as the host's window API takes it (the host caps windows far lower).
    pub fn limit_u32(self) -> u32 {
        u32::try_from(self.limit).unwrap_or(u32::MAX)
    }
}

/// `Ok(None)` for `unlimited`; errors name what is wrong.
pub fn parse_rate(text: &str) -> Result<Option<Rate>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("unlimited") || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (limit, window) =
        text.split_once('/').ok_or_else(|| format!("expected LIMIT/WINDOW such as 40/3h, got {text:?}"))?;
    let limit: u64 = limit.trim().parse().map_err(|_| format!("limit {limit:?} is not a whole number"))?;
    let window_ms = parse_duration_ms(window.trim())?;
    Ok(Some(Rate { limit, window_ms }))
}

fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = if digits.is_empty() { 1 } else { digits.parse().map_err(|_| format!("bad window {text:?}"))? };
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown window unit {other:?} in {text:?} (use ms, s, m, h or d)")),
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms > 0 && ms <= 366 * 86_400_000 => Ok(ms),
        _ => Err(format!("window {text:?} must be between 1 ms and 366 days")),
    }
}

/// `3 hours`, `1 second`, `1 day` — for messages.
pub fn format_window(ms: u64) -> String {
    let (n, unit) = if ms.is_multiple_of(86_400_000) {
        (ms / 86_400_000, "day")
    } else if ms.is_multiple_of(3_600_000) {
        (ms / 3_600_000, "hour")
    } else if ms.is_multiple_of(60_000) {
        (ms / 60_000, "minute")
    } else if ms.is_multiple_of(1000) {
        (ms / 1000, "second")
    } else {
        (ms, "millisecond")
    };
    if n == 1 { unit.to_string() } else { format!("{n} {unit}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("40/3h"), Ok(Some(Rate { limit: 40, window_ms: 10_800_000 })));
        assert_eq!(parse_rate(" 2 / 1s "), Ok(Some(Rate { limit: 2, window_ms: 1000 })));
        assert_eq!(parse_rate("5/s"), Ok(Some(Rate { limit: 5, window_ms: 1000 })));
        assert_eq!(parse_rate("unlimited"), Ok(None));
        assert!(parse_rate("40").is_err());
        assert!(parse_rate("x/3h").is_err());
        assert!(parse_rate("40/3y").is_err());
        assert!(parse_rate("40/0s").is_err());
        assert!(parse_rate("40/99999999999999999d").is_err());
        assert_eq!(format_window(10_800_000), "3 hours");
        assert_eq!(format_window(1000), "second");
    }
}
