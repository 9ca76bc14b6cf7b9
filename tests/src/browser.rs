//! A small Chrome DevTools Protocol driver: headless Chromium (Debian's `chromium`) started
//! with a private profile, one page, `navigate`, `reload` and `eval`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless browser with one page.
#[allow(missing_debug_implementations)] // holds a WebSocket stream
pub struct Browser {
    child: Child,
    ws: Ws,
    next_id: u64,
    _profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser binary: `CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
pub fn binary() -> Option<String> {
    if let Ok(b) = std::env::var("CHROMIUM") {
        return Some(b);
    }
    ["chromium", "chromium-browser", "google-chrome"].into_iter().map(str::to_owned).find(|b| {
        Command::new(b).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

impl Browser {
    pub async fn launch() -> anyhow::Result<Browser> {
        let bin =
            binary().ok_or_else(|| anyhow::anyhow!("no chromium on this machine (CI installs Debian's `chromium`)"))?;
        let profile = crate::scratch("chromium");
        let mut child = Command::new(bin)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let browser_url = rx.recv_timeout(Duration::from_secs(30))?;
        // ws://127.0.0.1:PORT/devtools/browser/ID → the page target from /json/list.
        let port: u16 = browser_url
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("DevTools URL {browser_url}"))?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let list = crate::http(addr, "GET", "/json/list", &[], "").await.json();
        let page = list
            .as_array()
            .and_then(|a| a.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .ok_or_else(|| anyhow::anyhow!("no page target: {list}"))?
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(page).await?;
        Ok(Browser { child, ws, next_id: 1, _profile: profile })
    }

    /// Sends a command and waits for its result.
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws.send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into())).await?;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("DevTools connection closed"))??;
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    anyhow::bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    pub async fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.navigate", json!({"url": url})).await?;
        Ok(())
    }

    pub async fn reload(&mut self) -> anyhow::Result<()> {
        self.call("Page.reload", json!({"ignoreCache": true})).await?;
        Ok(())
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    pub async fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true})).await?;
        if let Some(e) = r.get("exceptionDetails") {
            anyhow::bail!("{expr}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it returns something truthy (non-null, non-false, non-empty).
    pub async fn wait_for(&mut self, expr: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.eval(expr).await.unwrap_or(Value::Null);
            let truthy = !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0));
            if truthy {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {expr}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
