//! The README's first command as a user runs it: the `chorus up` binary on free ports with a
//! fresh `CHORUS_HOME`, driven by the official `openai` package through the key it prints,
//! then stopped with SIGINT (Ctrl-C), which must end it cleanly.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chorus_tests::{model_path, openai_python, scratch, write_file};

/// A port nothing listens on now (for TCP or UDP, as asked).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    } else {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}

#[test]
fn chorus_up_serves_the_openai_sdk_and_stops_on_ctrl_c() {
    let home = scratch("up-home");
    let model = model_path();
    let (quic, ops, http) = (free_port(true), free_port(false), free_port(false));
    let core = write_file(
        &home,
        "core.toml",
        &format!(
            "listen = \"127.0.0.1:{quic}\"\nhttp = \"127.0.0.1:{ops}\"\nthreads = 2\n\
             [store]\npath = {store:?}\n\
             [fleets.mini]\nmodel = {model:?}\nkv_tokens = 8192\n\
             [fleets.flagship]\nmodel = {model:?}\nkv_tokens = 8192\n",
            store = home.join("store.redb").display().to_string(),
            model = model.display().to_string(),
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(["up", "--listen", &format!("127.0.0.1:{http}"), "--core-config"])
        .arg(&core)
        .env("CHORUS_HOME", &home)
        .env("CHORUS_DATA_DIR", home.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chorus up starts");

    // Read what it prints until the SDK line names the URL and the key.
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let start = Instant::now();
    let (base_url, key) = loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("chorus up prints its URL within two minutes");
        if let Some(rest) = line.strip_prefix("OpenAI SDKs: base_url=") {
            let (url, key) = rest.split_once(" api_key=").expect("the SDK line names the key");
            break (url.to_string(), key.to_string());
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no SDK line yet");
    };
    assert_eq!(base_url, format!("http://127.0.0.1:{http}/v1"));
    assert!(key.starts_with("sk-chorus-demo-"), "{key}");

    let script = write_file(
        &home,
        "client.py",
        r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
stream = client.chat.completions.create(
    model="chorus", messages=[{"role": "user", "content": "Name three colours."}],
    max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage.model_dump()
print(json.dumps({"text": text, "usage": usage}))
"#,
    );
    let out = Command::new("python3")
        .arg(&script)
        .arg(&base_url)
        .arg(&key)
        .env("PYTHONPATH", openai_python())
        .output()
        .expect("python3 runs");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("client output: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(!r["text"].as_str().unwrap().is_empty(), "{r}");
    let completion = r["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=16).contains(&completion), "{r}");

    // Ctrl-C: the edge stops, the core drains, the process exits 0.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chorus up did not exit within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = logs.join().unwrap();
    assert!(status.success(), "exit {status}; logs:\n{logs}");
    // Logs to a pipe carry no colour codes.
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in piped logs:\n{logs}");
    assert!(logs.contains("core stopped"), "{logs}");
}
