//! The edge in front of real cores (real model, real QUIC with mutual TLS): the OpenAI SDK,
//! curl and a WebSocket client stream; idempotency; resumable streams; conversations;
//! failover between regions when a core is killed; the web chat in headless Chromium.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chorus_tests::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

fn chat_body(text: &str, max_tokens: u32, stream: bool) -> String {
    json!({
        "model": "chorus", "stream": stream, "stream_options": {"include_usage": true},
        "temperature": 0, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_curl_and_a_websocket_client_stream_through_the_edge() {
    let sys = System::up("sdk").await;
    let dir = scratch("sdk");
    let script = write_file(
        &dir,
        "client.py",
        r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
stream = client.chat.completions.create(
    model="chorus", messages=[{"role": "user", "content": "Name three colours."}],
    max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
text, usage, chunks = "", None, 0
for chunk in stream:
    chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage.model_dump()
whole = client.chat.completions.create(
    model="chorus", messages=[{"role": "user", "content": "Name three colours."}], max_tokens=24, temperature=0)
models = [m.id for m in client.models.list().data]
try:
    client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    err = None
except Exception as e:
    err = type(e).__name__
print(json.dumps({"text": text, "usage": usage, "chunks": chunks, "whole": whole.choices[0].message.content,
                  "whole_usage": whole.usage.model_dump(), "models": models, "err": err}))
"#,
    );
    let r = run_openai_script(&sys, &script).await;
    let text = r["text"].as_str().unwrap();
    assert!(!text.is_empty(), "{r}");
    assert!(r["chunks"].as_u64().unwrap() >= 3, "{r}");
    let usage = &r["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5, "{r}");
    assert!((1..=24).contains(&usage["completion_tokens"].as_u64().unwrap()), "{r}");
    assert_eq!(
        usage["total_tokens"],
        json!(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
    );
    assert_eq!(r["whole"].as_str().unwrap(), text, "greedy: the streamed and the whole answer agree");
    assert!(r["models"].as_array().unwrap().contains(&json!("chorus")), "{r}");
    assert_eq!(r["err"], json!("NotFoundError"), "an unknown model is a 404 the SDK understands");

    // curl -N sees SSE as it is produced.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "-i", "-X", "POST"])
        .arg(sys.url("/v1/chat/completions"))
        .args(["-H", &format!("Authorization: {}", auth(KEY)), "-H", "Content-Type: application/json"])
        .args(["-d", &chat_body("Name three colours.", 24, true)])
        .output()
        .await
        .expect("curl runs");
    let raw = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("content-type: text/event-stream"), "{raw}");
    let events = sse_events(raw.split_once("\n\n").unwrap().1);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert_eq!(sse_text(&events), text);
    assert!(events.iter().all(|(id, _)| id.starts_with("chatcmpl-")), "every event has an id");
    let usage_event: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage_event["usage"]["completion_tokens"], r["usage"]["completion_tokens"]);

    // A WebSocket upgrade without credentials is refused.
    let anonymous = tokio_tungstenite::connect_async(format!("ws://{}/v1/realtime", sys.edge.addr)).await;
    match anonymous {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A WebSocket client.
    let (mut ws, _) = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/v1/realtime",
            sys.edge.addr
        ))
        .map(|mut r| {
            r.headers_mut().insert("authorization", auth(KEY).parse().unwrap());
            r
        })
        .unwrap(),
    )
    .await
    .expect("WebSocket upgrade");
    ws.send(Message::Text(chat_body("Name three colours.", 24, true).into())).await.unwrap();
    let mut ws_text = String::new();
    let mut frames = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        frames += 1;
        if v["type"] == "done" {
            break;
        }
        assert!(v.get("error").is_none(), "{v}");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            ws_text.push_str(c);
        }
    }
    assert_eq!(ws_text, text);
    assert!(frames >= 4, "streamed in pieces: {frames}");
    // The same socket takes a bad request and says why.
    ws.send(Message::Text("{\"model\": \"chorus\", \"messages\": 7}".into())).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["param"], "messages", "{v}");

    // Metrics saw all of it.
    let m = http(sys.edge.addr, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("chorus_edge_requests_total{route=\"chat\",status=\"200\",tier=\"enterprise\"}"), "{m}");
    assert!(m.contains("chorus_edge_ttft_seconds_count{tier=\"enterprise\"}"), "{m}");
    assert!(m.contains("chorus_filter_"), "the filter host's metrics are on the same page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_generates_once_concurrently_and_sequentially() {
    let sys = System::up("idem").await;
    let addr = sys.edge.addr;
    let streams = || sys.core.core.metrics.streams_total.load(Ordering::Relaxed);
    let before = streams();
    let body = chat_body("Write one short sentence about rain.", 32, false);
    let a = auth(KEY);
    let headers =
        [("Authorization", a.as_str()), ("Content-Type", "application/json"), ("Idempotency-Key", "order-42")];
    let (r1, r2) = tokio::join!(
        http(addr, "POST", "/v1/chat/completions", &headers, &body),
        http(addr, "POST", "/v1/chat/completions", &headers, &body)
    );
    assert_eq!((r1.status, r2.status), (200, 200), "{r1:?} {r2:?}");
    let (j1, j2) = (r1.json(), r2.json());
    assert_eq!(j1["id"], j2["id"], "both answers are the same answer");
    assert_eq!(j1["choices"][0]["message"]["content"], j2["choices"][0]["message"]["content"]);
    assert_eq!(streams() - before, 1, "one generation upstream");

    // Later, streamed: the stored answer is replayed as a stream.
    let mut sbody: Value = serde_json::from_str(&body).unwrap();
    sbody["stream"] = json!(true);
    let r3 = http(addr, "POST", "/v1/chat/completions", &headers, &body).await;
    assert_eq!(r3.json()["id"], j1["id"]);
    assert_eq!(streams() - before, 1, "a finished answer is replayed, not generated again");
    // A streamed replay needs the same body (a different one is refused, not served).
    let r4 = http(addr, "POST", "/v1/chat/completions", &headers, &sbody.to_string()).await;
    assert_eq!(r4.status, 422, "{r4:?}");
    assert_eq!(r4.json()["error"]["code"], "idempotency_key_reused");
    // Another user's identical key is theirs.
    let b = auth(OTHER_KEY);
    let other = [("Authorization", b.as_str()), ("Content-Type", "application/json"), ("Idempotency-Key", "order-42")];
    let r5 = http(addr, "POST", "/v1/chat/completions", &other, &body).await;
    assert_eq!(r5.status, 200);
    assert_ne!(r5.json()["id"], j1["id"]);
    assert_eq!(streams() - before, 2);
    let m = http(addr, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("chorus_edge_idempotent_replays_total 1"), "{m}");
    assert!(m.contains("chorus_edge_idempotent_attaches_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_from_last_event_id_exactly() {
    let sys = System::up("resume").await;
    let addr = sys.edge.addr;
    let a = auth(KEY);
    let headers = [("Authorization", a.as_str()), ("Content-Type", "application/json")];
    let mut body: Value = serde_json::from_str(&chat_body("Count from one to forty in words.", 96, true)).unwrap();
    body["store"] = json!(true);
    // Read until a few tokens have arrived, then drop the connection.
    let (first, text) = read_some_then_drop(addr, &headers, &body.to_string(), 6).await;
    let last_id = first.last().unwrap().0.clone();
    let conversation = conversation_header(&text);

    let h2 = [("Authorization", a.as_str()), ("Content-Type", "application/json"), ("Last-Event-ID", last_id.as_str())];
    let rest = http(addr, "POST", "/v1/chat/completions", &h2, &body.to_string()).await;
    assert_eq!(rest.status, 200, "{rest:?}");
    let second = sse_events(&rest.body);
    assert_eq!(second.last().unwrap().1, "[DONE]");
    // The ids continue exactly where the first connection stopped.
    let index = |id: &str| id.rsplit_once('.').unwrap().1.parse::<usize>().unwrap();
    assert_eq!(index(&second[0].0), index(&last_id) + 1, "{last_id} then {}", second[0].0);
    let resumed = format!("{}{}", sse_text(&first), sse_text(&second));

    // The stored turn is the answer exactly as generated, once.
    let conv = http(addr, "GET", &format!("/v1/conversations/{conversation}"), &headers, "").await;
    assert_eq!(conv.status, 200, "{conv:?}");
    let stored = conv.json()["turns"][0]["answer"].as_str().unwrap().to_owned();
    assert_eq!(resumed, stored);
    assert_eq!(conv.json()["turns"].as_array().unwrap().len(), 1);

    // Resuming right after the finish chunk still brings the usage chunk and the end marker.
    let all: Vec<(String, String)> = first.iter().chain(second.iter()).cloned().collect();
    let finish = all
        .iter()
        .find(|(_, d)| serde_json::from_str::<Value>(d).is_ok_and(|v| v["choices"][0]["finish_reason"].is_string()))
        .map(|(id, _)| id.clone())
        .expect("a finish chunk");
    let h4 = [("Authorization", a.as_str()), ("Last-Event-ID", finish.as_str())];
    let tail = sse_events(&http(addr, "POST", "/v1/chat/completions", &h4, "").await.body);
    assert_eq!(tail.len(), 2, "{tail:?}");
    assert!(serde_json::from_str::<Value>(&tail[0].1).unwrap()["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(tail[1].1, "[DONE]");
    assert_ne!(tail[0].0, finish, "every frame has its own id");

    // Someone else cannot resume it; an unknown id is a clear 410.
    let b = auth(OTHER_KEY);
    let h3 = [("Authorization", b.as_str()), ("Last-Event-ID", last_id.as_str())];
    let r = http(addr, "POST", "/v1/chat/completions", &h3, "").await;
    assert_eq!(r.status, 410, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "resume_unavailable");
}

/// The `x-chorus-conversation-id` of a raw HTTP response head.
fn conversation_header(raw: &str) -> String {
    raw.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-chorus-conversation-id:")
                .then(|| l.split(':').nth(1).unwrap().trim().to_owned())
        })
        .expect("the conversation id header")
}

/// Reads a stream until `events` data lines arrived, then drops the connection; the complete
/// events seen, the raw head and body.
async fn read_some_then_drop(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &str,
    events: usize,
) -> (Vec<(String, String)>, String) {
    let mut s = send_request(addr, "POST", "/v1/chat/completions", headers, body.as_bytes()).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while raw.windows(7).filter(|w| w == b"\ndata: ").count() < events {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the stream ended early");
        raw.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let text = String::from_utf8_lossy(&raw).to_string();
    let body_part = text.split_once("\r\n\r\n").unwrap().1;
    let complete = &body_part[..body_part.rfind("\n\n").unwrap() + 2];
    (sse_events(complete).into_iter().filter(|(id, _)| !id.is_empty()).collect(), text)
}

/// With Redis, the edges of a region share answers: a stream dropped on one edge resumes on
/// another (while the first still generates it, and after the first has stopped), and a retried
/// `Idempotency-Key` on another edge attaches to the running answer instead of a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_sharing_redis_resume_and_attach_each_others_answers() {
    let redis = TestRedis::start();
    let core = start_core(core_config("shared")).await;
    let prefix = format!("chorus:test:{}", chorus_edge::random_hex(6));
    let edge_on = |id: &str| {
        let mut cfg = edge_config(vec![site("core-1", &core)]);
        cfg.edge_id = id.into();
        cfg.state.redis = Some(redis.url.clone());
        cfg.state.prefix = prefix.clone();
        cfg
    };
    let one = start_edge(edge_on("edge-1")).await;
    let two = start_edge(edge_on("edge-2")).await;
    let a = auth(KEY);
    let headers = [("Authorization", a.as_str()), ("Content-Type", "application/json")];
    let streams = || core.core.metrics.streams_total.load(Ordering::Relaxed);
    let index = |id: &str| id.rsplit_once('.').unwrap().1.parse::<usize>().unwrap();

    // 1. Dropped on edge 1 mid-answer, resumed on edge 2 while edge 1 still generates.
    let mut body: Value = serde_json::from_str(&chat_body("Count from one to thirty in words.", 80, true)).unwrap();
    body["store"] = json!(true);
    let before = streams();
    let (first, raw) = read_some_then_drop(one.addr, &headers, &body.to_string(), 4).await;
    let last_id = first.last().unwrap().0.clone();
    let h2 = [("Authorization", a.as_str()), ("Content-Type", "application/json"), ("Last-Event-ID", last_id.as_str())];
    let rest = http(two.addr, "POST", "/v1/chat/completions", &h2, &body.to_string()).await;
    assert_eq!(rest.status, 200, "{rest:?}");
    let second = sse_events(&rest.body);
    assert_eq!(second.last().unwrap().1, "[DONE]");
    assert_eq!(index(&second[0].0), index(&last_id) + 1, "ids continue across edges: {last_id} then {}", second[0].0);
    let resumed = format!("{}{}", sse_text(&first), sse_text(&second));
    assert_eq!(streams() - before, 1, "resuming elsewhere generates nothing again");
    let conversation = conversation_header(&raw);
    let conv = http(two.addr, "GET", &format!("/v1/conversations/{conversation}"), &headers, "").await;
    assert_eq!(conv.json()["turns"][0]["answer"].as_str().unwrap(), resumed, "the answer as generated, once");
    // Someone else cannot resume it through another edge either.
    let b = auth(OTHER_KEY);
    let h3 = [("Authorization", b.as_str()), ("Last-Event-ID", last_id.as_str())];
    assert_eq!(http(two.addr, "POST", "/v1/chat/completions", &h3, "").await.status, 410);

    // 2. An idempotent retry on edge 2 while edge 1 answers: attached, one generation.
    let before = streams();
    let body = chat_body("Write two short sentences about the sea.", 48, false);
    let hk = [("Authorization", a.as_str()), ("Content-Type", "application/json"), ("Idempotency-Key", "shared-7")];
    let first = http(one.addr, "POST", "/v1/chat/completions", &hk, &body);
    let retry = async {
        // Once edge 1 has claimed the key and started.
        tokio::time::sleep(Duration::from_millis(300)).await;
        http(two.addr, "POST", "/v1/chat/completions", &hk, &body).await
    };
    let (r1, r2) = tokio::join!(first, retry);
    assert_eq!((r1.status, r2.status), (200, 200), "{r1:?} {r2:?}");
    assert_eq!(r1.json()["id"], r2.json()["id"], "the same answer");
    assert_eq!(r1.json()["choices"][0]["message"]["content"], r2.json()["choices"][0]["message"]["content"]);
    assert_eq!(streams() - before, 1, "one generation");

    // 3. Edge 1 stops after an answer it held finished; the client resumes on edge 2.
    let sbody = chat_body("Name five fruits.", 24, true);
    let (first, _) = read_some_then_drop(one.addr, &headers, &sbody, 2).await;
    let last_id = first.last().unwrap().0.clone();
    tokio::time::sleep(Duration::from_secs(3)).await; // it finishes on edge 1 meanwhile
    one.stop().await;
    let h4 = [("Authorization", a.as_str()), ("Content-Type", "application/json"), ("Last-Event-ID", last_id.as_str())];
    let rest = http(two.addr, "POST", "/v1/chat/completions", &h4, &sbody).await;
    assert_eq!(rest.status, 200, "{rest:?}");
    let second = sse_events(&rest.body);
    assert_eq!(index(&second[0].0), index(&last_id) + 1);
    assert_eq!(second.last().unwrap().1, "[DONE]");
    let m = http(two.addr, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("chorus_edge_resumes_total 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_continue_list_export_feedback_and_erase() {
    let sys = System::up("conv").await;
    let addr = sys.edge.addr;
    let a = auth(KEY);
    let headers = [("Authorization", a.as_str()), ("Content-Type", "application/json")];
    let mut body: Value = serde_json::from_str(&chat_body("My name is Ada. Say hi.", 16, false)).unwrap();
    body["store"] = json!(true);
    let r = http(addr, "POST", "/v1/chat/completions", &headers, &body.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.header("x-chorus-conversation-id").expect("conversation id header").to_owned();
    assert_eq!(r.json()["chorus"]["conversation_id"], json!(id));
    assert_eq!(r.json()["chorus"]["turn_version"], json!(1));
    let next = json!({"model": "chorus", "max_tokens": 16, "temperature": 0, "conversation_id": id,
                      "messages": [{"role": "user", "content": "What is my name?"}]});
    let r = http(addr, "POST", "/v1/chat/completions", &headers, &next.to_string()).await;
    assert_eq!(r.json()["chorus"]["turn_version"], json!(2), "{}", r.body);
    assert!(r.json()["usage"]["prompt_tokens"].as_u64().unwrap() > 20, "history was spliced in");

    let list = http(addr, "GET", "/v1/conversations", &headers, "").await.json();
    assert_eq!(list["data"][0]["id"], json!(id));
    assert_eq!(list["data"][0]["turns"], json!(2));
    let fb = http(
        addr,
        "POST",
        "/v1/feedback",
        &headers,
        &json!({"conversation_id": id, "version": 2, "rating": "up"}).to_string(),
    )
    .await;
    assert_eq!(fb.status, 201, "{fb:?}");
    let bad = http(
        addr,
        "POST",
        "/v1/feedback",
        &headers,
        &json!({"conversation_id": id, "version": 2, "rating": "meh"}).to_string(),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "rating");
    let export = http(addr, "GET", "/v1/conversations/export", &headers, "").await;
    assert_eq!(export.status, 200);
    assert!(export.body.contains(&id) && export.body.contains("What is my name?"), "{}", export.body);
    // Another user sees none of it.
    let b = auth(OTHER_KEY);
    let other = [("Authorization", b.as_str())];
    assert_eq!(http(addr, "GET", &format!("/v1/conversations/{id}"), &other, "").await.status, 404);

    // An idempotent request, then erasure removes the edge's record of it too.
    let h = [("Authorization", a.as_str()), ("Content-Type", "application/json"), ("Idempotency-Key", "erase-me")];
    assert_eq!(http(addr, "POST", "/v1/chat/completions", &h, &chat_body("Hi", 4, false)).await.status, 200);
    let erased = http(addr, "DELETE", "/v1/conversations", &headers, "").await;
    assert_eq!(erased.status, 200, "{erased:?}");
    let e = erased.json();
    assert_eq!(e["conversations"], json!(1));
    assert_eq!(e["feedback"], json!(1));
    assert!(e["idempotency_records"].as_u64().unwrap() >= 1, "{e}");
    assert_eq!(http(addr, "GET", &format!("/v1/conversations/{id}"), &headers, "").await.status, 404);
    let streams = sys.core.core.metrics.streams_total.load(Ordering::Relaxed);
    assert_eq!(http(addr, "POST", "/v1/chat/completions", &h, &chat_body("Hi", 4, false)).await.status, 200);
    assert!(sys.core.core.metrics.streams_total.load(Ordering::Relaxed) > streams, "the erased key generates anew");
    let me = http(addr, "GET", "/v1/me", &headers, "").await.json();
    assert_eq!(me, json!({"tenant": "acme", "user": "alice", "tier": "enterprise"}));
    let denied = http(addr, "GET", "/v1/me", &[("Authorization", "Bearer sk-wrong-key-000000000000")], "").await;
    assert_eq!(denied.status, 401);
}

/// A core process of its own.
struct CoreProc {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for CoreProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // A port free for both UDP (QUIC) and TCP right now.
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn core_proc(
    dir: &std::path::Path,
    name: &str,
    region: &str,
    quic: SocketAddr,
    ops: SocketAddr,
    failpoint: Option<&str>,
) -> CoreProc {
    let store = format!("[store]\npath = {:?}\n", dir.join(format!("{name}.redb")).display().to_string());
    core_proc_with_store(dir, name, region, quic, ops, failpoint, &store)
}

/// [`core_proc`] with its own `[store]` table.
fn core_proc_with_store(
    dir: &std::path::Path,
    name: &str,
    region: &str,
    quic: SocketAddr,
    ops: SocketAddr,
    failpoint: Option<&str>,
    store: &str,
) -> CoreProc {
    let (core_files, _) = pki().write(&dir.join("certs")).unwrap();
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let toml = format!(
        "core_id = {name:?}\nregion = {region:?}\nlisten = \"{quic}\"\nhttp = \"{ops}\"\nthreads = 1\nload_report_ms = 50\n\
         [tls]\nca = {}\ncert = {}\nkey = {}\n\
         [fleets.mini]\nkv_tokens = 4096\nmodel = {}\n[fleets.flagship]\nkv_tokens = 4096\nmodel = {}\n{store}",
        q(&core_files.ca),
        q(&core_files.cert),
        q(&core_files.key),
        q(&model_path()),
        q(&model_path()),
    );
    let path = write_file(dir, &format!("{name}.toml"), &toml);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chorus-test-core"));
    cmd.arg("--config").arg(&path).env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped());
    match failpoint {
        Some(f) => cmd.env("CHORUS_FAILPOINT", f),
        None => cmd.env_remove("CHORUS_FAILPOINT"),
    };
    let mut child = cmd.spawn().expect("the core process starts");
    let (tx, stderr) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("QUIC"), "{line:?}");
    CoreProc { child, stderr }
}

fn wait_line(p: &CoreProc, needle: &str) {
    loop {
        let l = p.stderr.recv_timeout(Duration::from_secs(60)).expect("the core logs the failpoint");
        if l.contains(needle) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_region_a_dies_region_b_serves_retrying_only_before_the_first_token() {
    let dir = scratch("failover");
    let (qa, oa, qb, ob) = (free_port(), free_port(), free_port(), free_port());
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let regions = format!(
        "[[region]]\nname = \"region-a\"\nrtt_ms = {{ region-b = 40 }}\n[[region.core]]\nname = \"core-a\"\nquic = \"{}\"\nops = \"{}\"\n\n\
         [[region]]\nname = \"region-b\"\nrtt_ms = {{ region-a = 40 }}\n[[region.core]]\nname = \"core-b\"\nquic = \"{}\"\nops = \"{}\"\n",
        addr(qa),
        addr(oa),
        addr(qb),
        addr(ob)
    );
    let regions_file = write_file(&dir, "regions.toml", &regions);
    let _b = core_proc(&dir, "core-b", "region-b", addr(qb), addr(ob), None);
    // Region A answers three tokens of anything and then hangs.
    let a = core_proc(&dir, "core-a", "region-a", addr(qa), addr(oa), Some("stall_after_tokens@3"));
    let mut cfg = edge_config(vec![]);
    cfg.region = "region-a".into();
    cfg.regions_file = Some(regions_file);
    let edge = start_edge(cfg).await;
    let e = edge.addr;
    let k = auth(KEY);
    let headers = [("Authorization", k.as_str()), ("Content-Type", "application/json")];

    // In flight after its first token when A dies: a clear error event ends the stream.
    let req =
        send_request(e, "POST", "/v1/chat/completions", &headers, chat_body("Tell me a story.", 40, true).as_bytes())
            .await;
    wait_line(&a, "failpoint stall_after_tokens");
    drop(a); // SIGKILL
    let r = tokio::time::timeout(Duration::from_secs(30), read_response(req)).await.expect("the stream ends promptly");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-chorus-model").map(|_| ()), Some(()));
    let events = sse_events(&r.body);
    assert!(!sse_text(&events).is_empty(), "tokens came before the failure: {}", r.body);
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("failed mid-answer"), "{last}");
    assert!(!r.body.contains("[DONE]"));

    // New requests go to region B.
    let r = http(e, "POST", "/v1/chat/completions", &headers, &chat_body("Say hi.", 8, false)).await;
    assert_eq!(r.status, 200, "{r:?}");

    // A comes back, hanging before any token; in flight when it dies, the request is retried on
    // B and the client never notices.
    let a = core_proc(&dir, "core-a", "region-a", addr(qa), addr(oa), Some("stall_after_tokens@0"));
    let healthy = |edge: &chorus_edge::RunningEdge| edge.state.pool.health().iter().all(|h| h.1 == 1);
    let t = std::time::Instant::now();
    while !healthy(&edge) {
        assert!(t.elapsed() < Duration::from_secs(30), "the edge reconnects to region A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req =
        send_request(e, "POST", "/v1/chat/completions", &headers, chat_body("Say hello.", 12, true).as_bytes()).await;
    wait_line(&a, "failpoint stall_after_tokens");
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(30), read_response(req)).await.expect("answered promptly");
    assert_eq!(r.status, 200, "{r:?}");
    let events = sse_events(&r.body);
    assert_eq!(events.last().unwrap().1, "[DONE]", "{}", r.body);
    assert!(!sse_text(&events).is_empty());
    let m = http(e, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("chorus_edge_upstream_retries_total 1"), "{m}");
    assert!(m.contains("chorus_edge_upstream_healthy_cores{region=\"region-a\"} 0"), "{m}");
}

/// A region file for eu-west and us-east with one core each on free local ports: the cores'
/// QUIC and ops addresses (eu's, then us's) and the file.
fn eu_and_us(dir: &std::path::Path) -> ([SocketAddr; 4], std::path::PathBuf) {
    let a = [free_port(), free_port(), free_port(), free_port()].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let regions = format!(
        "[[region]]\nname = \"eu-west\"\nrtt_ms = {{ us-east = 80 }}\n[[region.core]]\nname = \"eu-west-1\"\nquic = \"{}\"\nops = \"{}\"\n\n\
         [[region]]\nname = \"us-east\"\nrtt_ms = {{ eu-west = 80 }}\n[[region.core]]\nname = \"us-east-1\"\nquic = \"{}\"\nops = \"{}\"\n",
        a[0], a[1], a[2], a[3]
    );
    (a, write_file(dir, "regions.toml", &regions))
}

/// A conversation has a home region (its id names it): continued through another region's
/// edge it is read and appended in its home region; with its home down it is answered
/// single-turn, flagged, and nothing is stored elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_follows_its_user_to_another_region() {
    let dir = scratch("home");
    let ([qa, oa, qb, ob], regions_file) = eu_and_us(&dir);
    let eu = core_proc(&dir, "eu-west-1", "eu-west", qa, oa, None);
    let _us = core_proc(&dir, "us-east-1", "us-east", qb, ob, None);
    let edge_in = |region: &str| {
        let mut cfg = edge_config(vec![]);
        cfg.region = region.into();
        cfg.regions_file = Some(regions_file.clone());
        cfg
    };
    let eu_edge = start_edge(edge_in("eu-west")).await;
    let us_edge = start_edge(edge_in("us-east")).await;
    let healthy = |edge: &chorus_edge::RunningEdge| edge.state.pool.health().iter().all(|h| h.1 == 1);
    let t = std::time::Instant::now();
    while !(healthy(&eu_edge) && healthy(&us_edge)) {
        assert!(t.elapsed() < Duration::from_secs(60), "both edges reach both cores");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let k = auth(KEY);
    let headers = [("Authorization", k.as_str()), ("Content-Type", "application/json")];
    let turn = |conversation: Option<&str>, text: &str| {
        let mut b = json!({"model": "chorus", "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": text}]});
        match conversation {
            Some(id) => b["conversation_id"] = json!(id),
            None => b["store"] = json!(true),
        }
        b.to_string()
    };

    // Started in eu-west: the id names its home.
    let r = http(eu_edge.addr, "POST", "/v1/chat/completions", &headers, &turn(None, "My name is Ada.")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.json()["chorus"]["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(chorus_proto::conversation_home(&id), Some("eu-west"), "{id}");

    // The user is now nearest us-east: the edge there sends the turn to the home region.
    let r = http(us_edge.addr, "POST", "/v1/chat/completions", &headers, &turn(Some(&id), "What is my name?")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-chorus-degraded"), None, "{r:?}");
    assert_eq!(r.json()["chorus"]["turn_version"], 2, "appended to the stored conversation: {}", r.body);
    let conv = http(us_edge.addr, "GET", &format!("/v1/conversations/{id}"), &headers, "").await;
    assert_eq!(conv.status, 200, "{conv:?}");
    assert_eq!(conv.json()["turns"].as_array().unwrap().len(), 2);

    // Its home region goes down: answered single-turn from us-east, flagged, not stored there.
    drop(eu);
    let t = std::time::Instant::now();
    while us_edge.state.pool.health().iter().any(|h| h.0 == "eu-west" && h.1 == 1) {
        assert!(t.elapsed() < Duration::from_secs(30), "the edge notices eu-west is down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http(us_edge.addr, "POST", "/v1/chat/completions", &headers, &turn(Some(&id), "Are you there?")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("x-chorus-degraded").is_some_and(|d| d.contains("store")), "{r:?}");
    assert!(r.json()["chorus"]["store_error"].is_string(), "{}", r.body);
    assert!(r.json()["chorus"]["turn_version"].is_null(), "{}", r.body);
}

/// Where the operator gives several regions one PostgreSQL, a conversation continues with its
/// history in another region after its home region's core is killed (durable first, as ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_continues_in_another_region_sharing_one_postgresql() {
    if std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_millis(300)).is_err() {
        eprintln!("note: no PostgreSQL at 127.0.0.1:5432; the shared durable tier is not exercised here");
        return;
    }
    let dir = scratch("home-pg");
    let schema = format!("home_{}", chorus_edge::random_hex(6));
    let store = format!(
        "[store]\ndurable = \"postgres\"\n[store.postgres]\nurl = \"host=127.0.0.1 port=5432 user=postgres dbname=test\"\nschema = \"{schema}\"\n"
    );
    let ([qa, oa, qb, ob], regions_file) = eu_and_us(&dir);
    let eu = core_proc_with_store(&dir, "eu-west-1", "eu-west", qa, oa, None, &store);
    let _us = core_proc_with_store(&dir, "us-east-1", "us-east", qb, ob, None, &store);
    let mut cfg = edge_config(vec![]);
    cfg.region = "eu-west".into();
    cfg.regions_file = Some(regions_file);
    let edge = start_edge(cfg).await;
    let k = auth(KEY);
    let headers = [("Authorization", k.as_str()), ("Content-Type", "application/json")];
    let body = json!({"model": "chorus", "temperature": 0, "max_tokens": 8, "store": true,
        "messages": [{"role": "user", "content": "My name is Ada."}]});
    let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &body.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.json()["chorus"]["conversation_id"].as_str().unwrap().to_owned();
    drop(eu);
    let t = std::time::Instant::now();
    while edge.state.pool.health().iter().any(|h| h.0 == "eu-west" && h.1 == 1) {
        assert!(t.elapsed() < Duration::from_secs(30), "the edge notices eu-west is down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = json!({"model": "chorus", "temperature": 0, "max_tokens": 8, "conversation_id": id,
        "messages": [{"role": "user", "content": "What is my name?"}]});
    let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &next.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-chorus-degraded"), None, "{r:?}");
    assert_eq!(r.json()["chorus"]["turn_version"], 2, "continued with its history in us-east: {}", r.body);
    let conv = http(edge.addr, "GET", &format!("/v1/conversations/{id}"), &headers, "").await;
    assert_eq!(conv.json()["turns"].as_array().unwrap().len(), 2, "{conv:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_chat_streams_and_shows_the_conversation_after_a_reload() {
    let sys = System::up("web").await;
    let mut b = chorus_tests::browser::Browser::launch().await.expect("headless chromium starts");
    b.navigate(&format!("http://{}/#key={KEY}", sys.edge.addr)).await.unwrap();
    let tier = b.wait_for("document.getElementById('tier-badge')?.textContent", Duration::from_secs(20)).await.unwrap();
    assert_eq!(tier, json!("enterprise"));
    b.eval("document.getElementById('prompt').value = 'Name a colour.'; document.getElementById('composer').requestSubmit(); true")
        .await
        .unwrap();
    // Watch the answer grow while it is marked streaming.
    let mut seen_streaming = 0;
    let mut last = String::new();
    let t = std::time::Instant::now();
    loop {
        let v = b
            .eval("(() => { const m = [...document.querySelectorAll('.message.assistant')].pop(); return m ? [m.classList.contains('streaming'), m.textContent] : null; })()")
            .await
            .unwrap();
        if let Some([streaming, text]) = v.as_array().map(|a| [a[0].clone(), a[1].clone()]) {
            let text = text.as_str().unwrap_or("").to_owned();
            if streaming == json!(true) && !text.is_empty() && text != last {
                seen_streaming += 1;
            }
            last = text;
            if streaming == json!(false) && !last.is_empty() {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(60), "the answer finishes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen_streaming >= 1, "tokens appeared while the answer was streaming");
    let answer = last;
    b.wait_for("document.querySelector('.conversation') !== null", Duration::from_secs(10)).await.unwrap();
    b.reload().await.unwrap();
    let after = b
        .wait_for(
            "(() => { const u = document.querySelector('.message.user'); const a = document.querySelector('.message.assistant'); return u && a ? [u.textContent, a.textContent] : null; })()",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(after, json!(["Name a colour.", answer]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_store_is_flagged_in_the_headers() {
    // The hot tier points at a Redis that is not there: answers come from the durable tier,
    // flagged `store`.
    let mut cfg = core_config("degraded");
    cfg.store.hot = chorus_core::config::HotKind::Redis;
    cfg.store.redis.url = "redis://127.0.0.1:1/".into();
    cfg.store.op_timeout_ms = 200;
    let core = start_core(cfg).await;
    let edge = start_edge(edge_config(vec![site("core-1", &core)])).await;
    let a = auth(KEY);
    let headers = [("Authorization", a.as_str()), ("Content-Type", "application/json")];
    let mut body: Value = serde_json::from_str(&chat_body("Hi", 4, false)).unwrap();
    body["store"] = json!(true);
    let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &body.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.header("x-chorus-conversation-id").expect("a stored conversation").to_owned();
    // Continuing reads the history: the hot tier is down, the durable tier serves it.
    let next = json!({"model": "chorus", "max_tokens": 4, "conversation_id": id,
                      "messages": [{"role": "user", "content": "And again?"}]});
    let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &next.to_string()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-chorus-degraded"), Some("store"), "{r:?}");
    assert_eq!(r.json()["chorus"]["turn_version"], json!(2), "the turn is still stored durably");
    let stateless = http(edge.addr, "POST", "/v1/chat/completions", &headers, &chat_body("Hi", 4, false)).await;
    assert_eq!(stateless.header("x-chorus-degraded"), None, "a stateless answer is not degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_share_the_prefix_cache() {
    let sys = System::up("tenants").await;
    let addr = sys.edge.addr;
    let block = chorus_engine::engine::BLOCK_SIZE as u64;
    // One prompt several KV blocks long, sent word for word by two tenants.
    let prompt = format!(
        "Here is a list to remember: {}. Which word came first?",
        (1..=60).map(|i| format!("item{i}")).collect::<Vec<_>>().join(", ")
    );
    let body = chat_body(&prompt, 1, false);
    let ask = |key: &'static str| {
        let body = body.clone();
        async move {
            let a = auth(key);
            let headers = [("Authorization", a.as_str()), ("Content-Type", "application/json")];
            let r = http(addr, "POST", "/v1/chat/completions", &headers, &body).await;
            assert_eq!(r.status, 200, "{r:?}");
            let usage = r.json()["usage"].clone();
            (
                usage["prompt_tokens"].as_u64().unwrap(),
                usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(),
            )
        }
    };
    let (prompt_tokens, first) = ask(KEY).await;
    assert!(prompt_tokens >= 4 * block, "the prompt fills several blocks: {prompt_tokens} tokens");
    assert_eq!(first, 0, "a fresh core has nothing cached");
    let (_, other_tenant) = ask(OTHER_TENANT_KEY).await;
    assert_eq!(other_tenant, 0, "tenant globex never reads tenant acme's KV blocks");
    let (_, again) = ask(KEY).await;
    assert!(
        again >= (prompt_tokens / block - 1) * block,
        "tenant acme's repeat reuses its own blocks: {again} of {prompt_tokens} prompt tokens cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_completed_or_that_the_caller_cancelled_stay_charged() {
    let core = start_core(core_config("charged")).await;
    let mut cfg = edge_config(vec![site("core-1", &core)]);
    // A client that goes away cancels its answer at once.
    cfg.resume.window_secs = 0;
    cfg.filters.config.entry("ratelimit".into()).or_default().insert("messages.team".into(), "2/3h".into());
    let edge = start_edge(cfg).await;
    let a = auth(TEAM_KEY);
    let headers = [("Authorization", a.as_str()), ("Content-Type", "application/json")];
    let done = http(edge.addr, "POST", "/v1/chat/completions", &headers, &chat_body("Hi", 4, false)).await;
    assert_eq!(done.status, 200, "{done:?}");

    // A long answer, dropped after its first tokens.
    let mut long: Value =
        serde_json::from_str(&chat_body("Count from one to five hundred in words.", 512, true)).unwrap();
    long["ignore_eos"] = json!(true);
    let mut s = send_request(edge.addr, "POST", "/v1/chat/completions", &headers, long.to_string().as_bytes()).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while raw.windows(7).filter(|w| w == b"\ndata: ").count() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the stream ended early");
        raw.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let cancelled = || edge.state.metrics.cancelled.load(Ordering::Relaxed);
    let start = std::time::Instant::now();
    while cancelled() == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the edge cancels the dropped answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both were charged: the window of two is spent.
    let r = http(edge.addr, "POST", "/v1/chat/completions", &headers, &chat_body("Hi", 4, false)).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (429, Some("rate_limited")), "{r:?}");
}
