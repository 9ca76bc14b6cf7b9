//! Just enough of the Prometheus text format to read a server's counters and gauges: samples
//! as (name, labels, value), and the two figures the load report takes from them — the
//! prefix-cache hit rate and the queue depth — from Chorus's edge or core, or vLLM.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// Parses the sample lines of a page; comments and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(i) if line[..i].chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') => {
            let close = line.rfind('}')?;
            (&line[..i], parse_labels(line.get(i + 1..close)?)?, &line[close + 1..])
        }
        _ => {
            let (n, r) = line.split_once(char::is_whitespace)?;
            (n, Vec::new(), r)
        }
    };
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample { name: name.to_owned(), labels, value })
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (k, r) = rest.split_once('=')?;
        let r = r.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((k.trim().to_owned(), value));
        rest = r[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// Sum of the samples named `name` whose labels include every `(k, v)` of `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let total = samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.label(k) == Some(v)))
        .inspect(|_| found = true)
        .map(|s| s.value)
        .sum();
    found.then_some(total)
}

/// (cached prompt tokens, prompt tokens) so far, from whichever server this is: Chorus's edge
/// (`chorus_edge_tokens_total`), Chorus's core (`chorus_prefix_cache_*`) or vLLM
/// (`vllm:prefix_cache_hits` / `queries`).
pub fn prefix_cache_counters(samples: &[Sample]) -> Option<(f64, f64)> {
    if let (Some(c), Some(p)) = (
        sum(samples, "chorus_edge_tokens_total", &[("kind", "cached")]),
        sum(samples, "chorus_edge_tokens_total", &[("kind", "prompt")]),
    ) {
        return Some((c, p));
    }
    for (hits, queries) in [
        ("chorus_prefix_cache_hit_tokens_total", "chorus_prefix_cache_query_tokens_total"),
        ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
        ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"),
    ] {
        if let (Some(h), Some(q)) = (sum(samples, hits, &[]), sum(samples, queries, &[])) {
            return Some((h, q));
        }
    }
    None
}

/// Requests waiting to start across the deployment, from Chorus's edge (the cores' load
/// reports), Chorus's core, vLLM or llama.cpp's server.
pub fn queue_depth(samples: &[Sample]) -> Option<f64> {
    ["chorus_edge_upstream_waiting", "chorus_queue_depth", "vllm:num_requests_waiting", "llamacpp:requests_deferred"]
        .iter()
        .find_map(|n| sum(samples, n, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP chorus_edge_tokens_total Tokens.
# TYPE chorus_edge_tokens_total counter
chorus_edge_tokens_total{tier="free",kind="prompt"} 1000
chorus_edge_tokens_total{tier="free",kind="cached"} 600
chorus_edge_tokens_total{tier="plus",kind="prompt"} 500
chorus_edge_tokens_total{tier="plus",kind="cached"} 0
chorus_edge_upstream_waiting{core="core-1",fleet="mini",tier="free"} 3
chorus_edge_upstream_waiting{core="core-1",fleet="flagship",tier="plus"} 2
weird{a="x \"quoted\", y",b="2"} 7 1700000000
plain_gauge 4.5
not a sample line
"#;

    #[test]
    fn samples_parse_with_labels_escapes_and_timestamps() {
        let s = parse(PAGE);
        assert_eq!(s.len(), 8, "{s:?}");
        let w = s.iter().find(|x| x.name == "weird").unwrap();
        assert_eq!(w.label("a"), Some("x \"quoted\", y"));
        assert_eq!(w.label("b"), Some("2"));
        assert_eq!(w.value, 7.0);
        assert_eq!(sum(&s, "plain_gauge", &[]), Some(4.5));
        assert_eq!(sum(&s, "absent", &[]), None);
    }

    #[test]
    fn cache_and_queue_figures_come_from_the_families_present() {
        let s = parse(PAGE);
        assert_eq!(prefix_cache_counters(&s), Some((600.0, 1500.0)));
        assert_eq!(queue_depth(&s), Some(5.0));
        let core = parse(
            "chorus_prefix_cache_hit_tokens_total{model=\"m\"} 10\nchorus_prefix_cache_query_tokens_total{model=\"m\"} 40\nchorus_queue_depth{tier=\"free\"} 2\n",
        );
        assert_eq!(prefix_cache_counters(&core), Some((10.0, 40.0)));
        assert_eq!(queue_depth(&core), Some(2.0));
        assert_eq!(prefix_cache_counters(&parse("x 1")), None);
    }
}
