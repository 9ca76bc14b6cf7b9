//! Bounds on everything that crosses the host/filter boundary, in both directions.

/// Sizes the host enforces. Inputs over a bound are cut (prompt text) or dropped (headers);
/// outputs over a bound make the call a failure.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes of prompt text a filter sees (cut at a character boundary; `prompt-chars` still
    /// counts the whole prompt).
    pub max_prompt_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Annotations one verdict may carry, and all filters together.
    pub max_annotations: usize,
    pub max_total_annotations: usize,
    pub max_annotation_key_bytes: usize,
    pub max_annotation_value_bytes: usize,
    pub max_code_bytes: usize,
    pub max_message_bytes: usize,
    pub max_rewrite_headers: usize,
    pub max_key_bytes: usize,
    pub max_log_bytes: usize,
    pub max_logs_per_call: u32,
    /// Log lines per filter per second across all calls.
    pub max_logs_per_second: u32,
    /// Counter, budget and window calls per filter call.
    pub max_host_calls: u32,
    pub max_retry_after_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_bytes: 64 * 1024,
            max_headers: 64,
            max_header_bytes: 8 * 1024,
            max_annotations: 16,
            max_total_annotations: 64,
            max_annotation_key_bytes: 64,
            max_annotation_value_bytes: 1024,
            max_code_bytes: 64,
            max_message_bytes: 1024,
            max_rewrite_headers: 16,
            max_key_bytes: 256,
            max_log_bytes: 1024,
            max_logs_per_call: 8,
            max_logs_per_second: 100,
            max_host_calls: 64,
            max_retry_after_ms: 366 * 86_400_000,
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("héllo", 3), "hé");
        assert_eq!(super::truncate("abc", 10), "abc");
    }
}
