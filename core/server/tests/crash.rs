//! Crash safety: a core process killed with SIGKILL between the durable and the hot write of a
//! turn loses no acknowledged turn; restarted, it serves the conversation from the durable tier
//! (ignoring the stale hot copy in Redis), and a retry of the interrupted request replays the
//! stored turn instead of generating it again.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chorus_core::config::CoreConfig;
use chorus_proto::quic::CoreClient;
use chorus_proto::{
    ConversationRef, Generate, Message, Reply, Role, Sampling, StoreOp, StoreReply, StoreRequest, Stored, Tier,
};

struct Child_ {
    child: Child,
    quic: SocketAddr,
    http: SocketAddr,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chorus-core --config cfg`; waits for its listening line.
fn spawn(cfg: &std::path::Path, failpoint: Option<&str>) -> Child_ {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chorus-core"));
    cmd.arg("--config").arg(cfg).env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped());
    match failpoint {
        Some(f) => cmd.env("CHORUS_FAILPOINT", f),
        None => cmd.env_remove("CHORUS_FAILPOINT"),
    };
    let mut child = cmd.spawn().expect("the chorus-core binary starts");
    let (tx, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[child] {line}");
            let _ = tx.send(line);
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // "chorus core: QUIC 127.0.0.1:P · metrics http://127.0.0.1:Q/metrics"
    let quic = line.split("QUIC ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or_else(|| panic!("{line:?}"));
    let http = line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap();
    Child_ { child, quic: quic.parse().unwrap(), http: http.parse().unwrap(), stderr }
}

fn turn(id: Option<&str>, request_id: &str, text: &str) -> Generate {
    Generate {
        request_id: request_id.into(),
        tenant: "tenant".into(),
        user: "user".into(),
        tier: Tier::Free,
        conversation: id.map_or(ConversationRef::New, |id| ConversationRef::Continue(id.into())),
        messages: vec![Message { role: Role::User, content: text.into() }],
        sampling: Sampling { temperature: Some(0.0), ..Sampling::default() },
        max_tokens: 12,
        ..Generate::default()
    }
}

fn metrics(http: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_the_durable_and_the_hot_write_loses_no_acknowledged_turn() {
    // The model is fetched (and verified) once before the child needs it.
    chorus_engine::model_store::ensure(chorus_engine::model_store::DEFAULT_MODEL, &mut |_| {}).unwrap();
    let redis = common::RedisServer::start();
    let dir = common::scratch_dir("crash");
    let pki = chorus_core::tls::mint_dev("crash CA", &["localhost".into()]).unwrap();
    let (core_files, _) = pki.write(&dir.join("certs")).unwrap();
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nthreads = 2\n\
         [tls]\nca = {}\ncert = {}\nkey = {}\n\
         [fleets.mini]\nkv_tokens = 4096\n[fleets.flagship]\nkv_tokens = 4096\n\
         [store]\npath = {}\n",
        q(&core_files.ca),
        q(&core_files.cert),
        q(&core_files.key),
        q(&dir.join("conversations.redb")),
    );
    match &redis {
        Some(r) => toml.push_str(&format!(
            "hot = \"redis\"\n[store.redis]\nurl = {:?}\nprefix = {:?}\n",
            r.url(),
            format!("{}:", common::unique("crash"))
        )),
        None => eprintln!("note: no redis-server here; the hot tier is in-process (and dies with the core)"),
    }
    let cfg: CoreConfig = toml::from_str(&toml).unwrap();
    cfg.validate().unwrap();
    let path = dir.join("core.toml");
    std::fs::write(&path, &toml).unwrap();
    let edge = pki.edge_identity().unwrap();

    // First life: turn 1 is acknowledged; the core dies right after turn 2's durable commit.
    let mut first = spawn(&path, Some("after_durable_commit@2"));
    let client = CoreClient::connect(first.quic, "localhost", &edge).await.unwrap();
    let replies = client.generate(turn(None, "r1", "Name a fruit.")).await.unwrap().collect().await.unwrap();
    let Some(Reply::Done(d1)) = replies.last() else { panic!("{replies:?}") };
    let Stored::Committed { conversation_id: id, version: 1 } = &d1.stored else { panic!("{:?}", d1.stored) };
    let answer1: String =
        replies.iter().filter_map(|r| if let Reply::Token(t) = r { Some(t.text.as_str()) } else { None }).collect();

    let mut second_turn = client.generate(turn(Some(id), "r2", "Name a vegetable.")).await.unwrap();
    loop {
        let line = first.stderr.recv_timeout(Duration::from_secs(120)).expect("the failpoint is reached");
        if line.contains("failpoint after_durable_commit") {
            break;
        }
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    // The dead peer is only noticed at the idle timeout; a short look is enough to see that
    // no `Done` came.
    let cut = tokio::time::timeout(Duration::from_secs(1), second_turn.collect()).await;
    assert!(
        !matches!(cut, Ok(Ok(ref r)) if matches!(r.last(), Some(Reply::Done(_)))),
        "turn 2 was never acknowledged: {cut:?}"
    );
    drop(client);

    // Second life: same files, same Redis.
    let second = spawn(&path, None);
    let client = CoreClient::connect(second.quic, "localhost", &edge).await.unwrap();
    let req = |op| StoreRequest { request_id: "get".into(), tenant: "tenant".into(), user: "user".into(), op };
    let r = client.store(req(StoreOp::Get { conversation_id: id.clone() })).await.unwrap();
    let [Reply::Store(StoreReply::Conversation(view))] = &r[..] else { panic!("{r:?}") };
    assert_eq!(view.summary.version, 2, "the durable turn 2 is there");
    assert_eq!(view.turns[0].answer, answer1, "the acknowledged turn is intact");
    if redis.is_some() {
        let page = metrics(second.http);
        assert!(page.contains("chorus_store_hot_lookups_total{result=\"stale\"} 1"), "{page}");
    }

    // The edge retries turn 2 with the same request id: the stored answer, not a new one.
    let replies = client.generate(turn(Some(id), "r2", "Name a vegetable.")).await.unwrap().collect().await.unwrap();
    let Some(Reply::Done(d2)) = replies.last() else { panic!("{replies:?}") };
    assert_eq!(d2.stored, Stored::Committed { conversation_id: id.clone(), version: 2 });
    let text: String =
        replies.iter().filter_map(|r| if let Reply::Token(t) = r { Some(t.text.as_str()) } else { None }).collect();
    assert_eq!(text, view.turns[1].answer);

    // And the conversation goes on from both turns.
    let replies = client.generate(turn(Some(id), "r3", "Which is sweeter?")).await.unwrap().collect().await.unwrap();
    let Some(Reply::Accepted(a)) = replies.first() else { panic!("{replies:?}") };
    assert_eq!(a.history_messages, 4);
    let Some(Reply::Done(d3)) = replies.last() else { panic!("{replies:?}") };
    assert_eq!(d3.stored, Stored::Committed { conversation_id: id.clone(), version: 3 });
}
