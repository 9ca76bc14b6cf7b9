//! A minimal HTTP/1.1 client for OpenAI-compatible servers: one connection per call (no pool
//! to skew latencies between calls), streamed responses read as they arrive, every body read
//! bounded. Plain `http://` only.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Largest body kept from a non-streamed response or an error.
const MAX_BODY: usize = 8 << 20;
/// Largest single SSE event.
const MAX_EVENT: usize = 1 << 20;

/// A bad endpoint URL.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{flag} {url:?}: {why}")]
pub struct EndpointError {
    pub flag: String,
    pub url: String,
    pub why: String,
}

/// Where an OpenAI-compatible API lives: `http://host:port/prefix` (the prefix usually `/v1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// The path the API's routes hang off, without a trailing slash (`/v1`).
    pub prefix: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]`; `flag` names the option in errors.
    pub fn parse(flag: &str, url: &str) -> Result<Self, EndpointError> {
        let err = |why: &str| EndpointError { flag: flag.into(), url: url.into(), why: why.into() };
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => return Err(err(&format!("scheme {scheme:?} is not supported (plain http only)"))),
            None => return Err(err("expected http://host:port/v1")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace()) {
            return Err(err("no host, or credentials in the URL (use --key)"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_owned()
        } else if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            return Err(err("bad port"));
        };
        if path.contains(['?', '#']) {
            return Err(err("no query or fragment expected"));
        }
        Ok(Self { authority, prefix: path.trim_end_matches('/').to_owned() })
    }

    /// `http://authority`: the origin, for `/metrics` next to the API.
    pub fn origin(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// Token usage an answer reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: Option<u32>,
}

/// What one call saw, with times relative to when it was sent.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The HTTP status; 0 when no response came (connection refused, reset, timed out).
    pub status: u16,
    /// Why it failed: the API's `error.code` (or `type`), or the transport's reason.
    pub error: Option<String>,
    /// `Retry-After` / `retry-after-ms` of a refusal.
    pub retry_after: Option<Duration>,
    /// The first non-empty content delta.
    pub ttft: Option<Duration>,
    /// When each content chunk arrived.
    pub chunks: Vec<Duration>,
    /// When the answer ended (the stream's end, or the whole body read).
    pub end: Duration,
    /// The answer's text.
    pub content: String,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    /// Response headers of interest (`x-chorus-*`, `server`), lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The whole JSON body of a non-streamed answer or of an error.
    pub body: Option<Value>,
    /// Chorus's own extension object (`chorus`: fleet, prompt, conversation id).
    pub chorus: Option<Value>,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Output tokens: the server's count when it gave one, else the content chunks.
    pub fn output_tokens(&self) -> u32 {
        self.usage.map_or(self.chunks.len() as u32, |u| u.completion_tokens)
    }

    fn fail(status: u16, why: impl Into<String>, end: Duration) -> Self {
        Call { status, error: Some(why.into()), end, ..Default::default() }
    }
}

/// A request: method, path under the endpoint's prefix (or from the origin when it starts with
/// `//`), headers and an optional JSON body.
#[derive(Debug, Clone)]
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub key: Option<&'a str>,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<&'a Value>,
    pub timeout: Duration,
}

/// Sends one request and reads the answer: an SSE stream event by event (content times, usage,
/// errors in the stream), or a JSON body. Never fails: what went wrong is in the [`Call`].
pub async fn call(ep: &Endpoint, req: &Req<'_>) -> Call {
    let started = Instant::now();
    let mut c = Call::default();
    if tokio::time::timeout(req.timeout, exchange(ep, req, started, &mut c)).await.is_err() {
        // What arrived before the deadline stays (status, first token): the error says why.
        c.error = Some("timeout".into());
        c.end = started.elapsed();
    }
    c
}

/// GETs a page as text (metrics, health); `None` when it cannot be had.
pub async fn get_text(ep: &Endpoint, path: &str, key: Option<&str>, timeout: Duration) -> Option<(u16, String)> {
    let req = Req { method: "GET", path, key, headers: vec![], body: None, timeout };
    let c = call(ep, &req).await;
    (c.status != 0).then_some((c.status, c.content))
}

async fn exchange(ep: &Endpoint, req: &Req<'_>, started: Instant, out: &mut Call) {
    *out = exchange_inner(ep, req, started, out).await;
}

/// Bytes of answer text kept; past it the answer is cut off with an error.
const MAX_CONTENT: usize = MAX_BODY;

async fn exchange_inner(ep: &Endpoint, req: &Req<'_>, started: Instant, call: &mut Call) -> Call {
    let path = match req.path.strip_prefix("//") {
        Some(p) => format!("/{p}"),
        None => format!("{}{}", ep.prefix, req.path),
    };
    let stream = match tokio::net::TcpStream::connect(&ep.authority).await {
        Ok(s) => s,
        Err(e) => return Call::fail(0, format!("connect: {e}"), started.elapsed()),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return Call::fail(0, format!("handshake: {e}"), started.elapsed()),
    };
    let conn = tokio::spawn(conn);
    let mut b = Request::builder().method(req.method).uri(&path).header("host", &ep.authority);
    if let Some(k) = req.key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    for (n, v) in &req.headers {
        b = b.header(*n, v);
    }
    let body = match req.body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let request = match b.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Call::fail(0, format!("request: {e}"), started.elapsed()),
    };
    let resp = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => return Call::fail(0, format!("send: {e}"), started.elapsed()),
    };
    let status = resp.status().as_u16();
    *call = Call { status, ..Default::default() };
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if n.starts_with("x-chorus-") || n == "server" || n == "retry-after" || n == "retry-after-ms" {
            call.headers.push((n.to_owned(), value.to_str().unwrap_or_default().to_owned()));
        }
    }
    call.retry_after = retry_after(call);
    let sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = resp.into_body();
    if sse && status == 200 {
        let mut buf: Vec<u8> = Vec::new();
        // Bytes of `buf` already searched for an event's end (less the terminator's length).
        let mut scanned: usize = 0;
        let mut done = false;
        while !done {
            let frame = match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    call.error = Some(format!("stream: {e}"));
                    break;
                }
                Some(Ok(f)) => f,
            };
            let Ok(data) = frame.into_data() else { continue };
            let at = started.elapsed();
            buf.extend_from_slice(&data);
            let mut consumed = 0;
            while let Some((end, skip)) = event_end(&buf[consumed..], scanned.saturating_sub(consumed)) {
                let event = String::from_utf8_lossy(&buf[consumed..consumed + end]).into_owned();
                consumed += end + skip;
                scanned = consumed;
                done |= on_event(call, &event, at);
                if done {
                    break;
                }
            }
            buf.drain(..consumed);
            scanned = buf.len().saturating_sub(3);
            if buf.len() > MAX_EVENT {
                call.error = Some(format!("an SSE event over {MAX_EVENT} bytes"));
                break;
            }
            if call.content.len() > MAX_CONTENT {
                call.error = Some(format!("an answer over {MAX_CONTENT} bytes"));
                break;
            }
        }
        if !done && call.error.is_none() {
            call.error = Some("stream ended without [DONE]".into());
        }
    } else {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(d) = f.into_data() {
                        if data.len() + d.len() > MAX_BODY {
                            call.error = Some(format!("a body over {MAX_BODY} bytes"));
                            break;
                        }
                        data.extend_from_slice(&d);
                    }
                }
                Err(e) => {
                    call.error = Some(format!("body: {e}"));
                    break;
                }
            }
        }
        let at = started.elapsed();
        match serde_json::from_slice::<Value>(&data) {
            Ok(v) => on_json_body(call, v, at),
            Err(_) => call.content = String::from_utf8_lossy(&data).into_owned(),
        }
        if status != 200 && call.error.is_none() {
            call.error = Some(format!("http_{status}"));
        }
    }
    call.end = started.elapsed();
    conn.abort();
    std::mem::take(call)
}

/// `retry-after-ms`, else `Retry-After` in seconds (the HTTP-date form is not read: a client
/// that waits a default is still counted as honouring it). Non-finite or negative values are
/// ignored; at most an hour.
fn retry_after(c: &Call) -> Option<Duration> {
    let secs =
        |v: &str, scale: f64| v.trim().parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).map(|x| x / scale);
    let s = c
        .header("retry-after-ms")
        .and_then(|v| secs(v, 1000.0))
        .or_else(|| c.header("retry-after").and_then(|v| secs(v, 1.0)))?;
    Some(Duration::from_secs_f64(s.min(3600.0)))
}

/// Where the first SSE event in `buf` ends (its length and the terminator's), searching from
/// `from` (bytes before it are known to hold no terminator).
fn event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    (from.min(buf.len())..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

#[cfg(test)]
fn split_event(buf: &[u8]) -> Option<(String, Vec<u8>)> {
    let (end, skip) = event_end(buf, 0)?;
    Some((String::from_utf8_lossy(&buf[..end]).into_owned(), buf[end + skip..].to_vec()))
}

/// Applies one SSE event; true at `[DONE]`.
fn on_event(call: &mut Call, event: &str, at: Duration) -> bool {
    let data: Vec<&str> =
        event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    if data.is_empty() {
        return false; // a comment (keep-alive) or an id-only event
    }
    let data = data.join("\n");
    if data.trim() == "[DONE]" {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(&data) else {
        call.error.get_or_insert_with(|| "an SSE event that is not JSON".into());
        return false;
    };
    if let Some(e) = v.get("error") {
        // An error inside the stream ends the answer.
        call.error = Some(error_code(e));
        call.body = Some(v);
        return true;
    }
    if let Some(c) = v.get("chorus").filter(|c| c.is_object()) {
        merge(call.chorus.get_or_insert_with(|| Value::Object(Default::default())), c);
    }
    if let Some(u) = v.get("usage").and_then(usage) {
        call.usage = Some(u);
    }
    let choice = v.get("choices").and_then(|c| c.get(0));
    if let Some(text) = choice.and_then(|c| c.pointer("/delta/content")).and_then(Value::as_str)
        && !text.is_empty()
    {
        call.ttft.get_or_insert(at);
        call.chunks.push(at);
        call.content.push_str(text);
    }
    if let Some(f) = choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str) {
        call.finish_reason = Some(f.to_owned());
    }
    false
}

fn on_json_body(call: &mut Call, v: Value, at: Duration) {
    if let Some(e) = v.get("error") {
        call.error = Some(error_code(e));
    } else if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        if let Some(text) = choice.pointer("/message/content").and_then(Value::as_str) {
            call.content = text.to_owned();
            if !text.is_empty() {
                call.ttft = Some(at);
                call.chunks.push(at);
            }
        }
        call.finish_reason = choice.get("finish_reason").and_then(Value::as_str).map(str::to_owned);
        call.usage = v.get("usage").and_then(usage);
        call.chorus = v.get("chorus").filter(|c| c.is_object()).cloned();
    }
    call.body = Some(v);
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}

fn error_code(e: &Value) -> String {
    let field = |k: &str| e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    field("code").or_else(|| field("type")).or_else(|| field("message")).unwrap_or_else(|| "error".into())
}

fn usage(u: &Value) -> Option<Usage> {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).map(|x| x.min(u64::from(u32::MAX)) as u32);
    Some(Usage {
        prompt_tokens: n("/prompt_tokens")?,
        completion_tokens: n("/completion_tokens")?,
        cached_tokens: n("/prompt_tokens_details/cached_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_refuse_clearly() {
        let e = Endpoint::parse("--url", "http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!(e, Endpoint { authority: "127.0.0.1:8080".into(), prefix: "/v1".into() });
        assert_eq!(e.origin(), "http://127.0.0.1:8080");
        assert_eq!(Endpoint::parse("--url", "http://localhost").unwrap().authority, "localhost:80");
        assert_eq!(Endpoint::parse("--url", "http://[::1]:9/v1").unwrap().authority, "[::1]:9");
        for bad in ["https://x/v1", "x:80", "http:///v1", "http://u:p@x/v1", "http://x:99999/v1", "http://x/v1?a=b"] {
            let err = Endpoint::parse("--url", bad).unwrap_err();
            assert!(err.to_string().starts_with("--url"), "{err}");
        }
    }

    #[test]
    fn sse_events_split_across_reads_and_parse() {
        let mut call = Call::default();
        let stream = concat!(
            ": keep-alive\n\n",
            "id: r.0\ndata: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"chorus\":{\"fleet\":\"mini\"}}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        let mut buf = Vec::new();
        let mut done = false;
        // One byte at a time: events straddle reads.
        for (i, b) in stream.iter().enumerate() {
            buf.push(*b);
            while let Some((ev, rest)) = split_event(&buf) {
                done |= on_event(&mut call, &ev, Duration::from_millis(i as u64));
                buf = rest;
            }
        }
        assert!(done);
        assert_eq!(call.content, "Hello");
        assert_eq!(call.chunks.len(), 2);
        assert!(call.ttft.unwrap() < call.chunks[1]);
        assert_eq!(call.usage, Some(Usage { prompt_tokens: 9, completion_tokens: 2, cached_tokens: Some(4) }));
        assert_eq!(call.output_tokens(), 2);
        assert_eq!(call.finish_reason.as_deref(), Some("stop"));
        assert_eq!(call.chorus.as_ref().and_then(|c| c.get("fleet")).and_then(Value::as_str), Some("mini"));
        assert!(call.error.is_none());
    }

    #[test]
    fn errors_in_streams_and_bodies_are_named() {
        let mut call = Call::default();
        on_event(
            &mut call,
            "data: {\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"code\":\"unavailable\"}}",
            Duration::ZERO,
        );
        assert_eq!(call.error.as_deref(), Some("unavailable"));
        let mut call = Call::default();
        on_event(&mut call, "data: not json", Duration::ZERO);
        assert!(call.error.is_some());
        let mut call = Call { status: 429, ..Default::default() };
        call.headers.push(("retry-after".into(), "2".into()));
        assert_eq!(retry_after(&call), Some(Duration::from_secs(2)));
        call.headers.push(("retry-after-ms".into(), "1500".into()));
        assert_eq!(retry_after(&call), Some(Duration::from_millis(1500)));
        on_json_body(&mut call, serde_json::json!({"error": {"type": "rate_limit", "code": null}}), Duration::ZERO);
        assert_eq!(call.error.as_deref(), Some("rate_limit"));
    }
}
