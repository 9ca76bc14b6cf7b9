//! The edge's client of the core protocol: connect (mutual TLS, version handshake), follow
//! load reports, open one stream per request. [`super::UpstreamPool`] keeps one per core; the
//! core's tests and the `chorus` benchmarks use it directly.

use std::net::SocketAddr;
use std::sync::Arc;

use chorus_proto::{Control, FrameDecoder, FrameError, Generate, Hello, LoadReport, PROTOCOL_VERSION, Reply, Request};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::watch;

use chorus_proto::tls::{self, Identity};

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("connecting: {0}")]
    Connect(String),
    #[error("the core closed the connection: {0}")]
    Closed(String),
    #[error("stream: {0}")]
    Stream(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("protocol: {0}")]
    Protocol(String),
}

/// A connection to one core.
#[derive(Debug)]
pub struct CoreClient {
    pub endpoint: Endpoint,
    pub conn: Connection,
    /// From the core's `Welcome`.
    pub core_id: String,
    pub version: u16,
    pub fleets: Vec<chorus_proto::FleetInfo>,
    load: watch::Receiver<Option<LoadReport>>,
    max_frame: u32,
}

impl CoreClient {
    /// Connects and completes the handshake for this build's version.
    pub async fn connect(addr: SocketAddr, server_name: &str, id: &Identity) -> Result<Self, ClientError> {
        Self::connect_with(addr, server_name, id, PROTOCOL_VERSION, PROTOCOL_VERSION).await
    }

    /// Connects as `edge_id` with this build's version.
    pub async fn connect_as(
        addr: SocketAddr,
        server_name: &str,
        id: &Identity,
        edge_id: &str,
    ) -> Result<Self, ClientError> {
        Self::handshake(addr, server_name, id, PROTOCOL_VERSION, PROTOCOL_VERSION, edge_id).await
    }

    /// Connects offering versions `min..=max`.
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        id: &Identity,
        min_version: u16,
        max_version: u16,
    ) -> Result<Self, ClientError> {
        Self::handshake(addr, server_name, id, min_version, max_version, "chorus-client").await
    }

    async fn handshake(
        addr: SocketAddr,
        server_name: &str,
        id: &Identity,
        min_version: u16,
        max_version: u16,
        edge_id: &str,
    ) -> Result<Self, ClientError> {
        let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal address");
        let mut endpoint = Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(tls::client_config(id)?);
        let conn = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let max_frame = chorus_proto::DEFAULT_MAX_FRAME;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let hello = Hello { min_version, max_version, edge_id: edge_id.into() };
        send.write_all(&chorus_proto::encode_to_vec(&hello, max_frame)?).await.map_err(|e| closed(&conn, e))?;
        let mut reader = Reader { recv, dec: FrameDecoder::new(max_frame) };
        let welcome = reader.next::<Control>().await.map_err(|e| match conn.close_reason() {
            Some(r) => ClientError::Closed(r.to_string()),
            None => e,
        })?;
        let Some(Control::Welcome { version, core_id, fleets, .. }) = welcome else {
            return Err(ClientError::Protocol("expected Welcome on the control stream".into()));
        };
        let (tx, load) = watch::channel(None);
        let control_conn = conn.clone();
        tokio::spawn(async move {
            // Keep the control stream's send side open for the connection's life.
            let _send = send;
            while let Ok(Some(Control::Load(r))) = reader.next::<Control>().await {
                if tx.send(Some(r)).is_err() {
                    return;
                }
            }
            // Without its control stream the connection reports nothing more: a stale last
            // report must not keep the core looking healthy.
            control_conn.close(chorus_proto::CLOSE_PROTOCOL_ERROR.into(), b"control stream ended");
        });
        Ok(Self { endpoint, conn, core_id, version, fleets, load, max_frame })
    }

    /// The latest load report (updated every few hundred milliseconds).
    pub fn load(&self) -> watch::Receiver<Option<LoadReport>> {
        self.load.clone()
    }

    /// Opens a stream and sends `Generate`.
    pub async fn generate(&self, g: Generate) -> Result<ReplyStream, ClientError> {
        let mut s = self.open().await?;
        s.send(&Request::Generate(Box::new(g))).await?;
        Ok(s)
    }

    /// Runs one store request; returns its replies (one, or an export's pieces).
    pub async fn store(&self, r: chorus_proto::StoreRequest) -> Result<Vec<Reply>, ClientError> {
        let mut s = self.open().await?;
        s.send(&Request::Store(Box::new(r))).await?;
        s.collect().await
    }

    /// Opens a request stream without sending anything.
    pub async fn open(&self) -> Result<ReplyStream, ClientError> {
        let (send, recv) = self.conn.open_bi().await.map_err(|e| closed(&self.conn, e))?;
        Ok(ReplyStream {
            send,
            reader: Reader { recv, dec: FrameDecoder::new(self.max_frame) },
            max_frame: self.max_frame,
        })
    }
}

fn closed(conn: &Connection, e: impl std::fmt::Display) -> ClientError {
    match conn.close_reason() {
        Some(r) => ClientError::Closed(r.to_string()),
        None => ClientError::Stream(e.to_string()),
    }
}

struct Reader {
    recv: RecvStream,
    dec: FrameDecoder,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("buffered", &self.dec.buffered()).finish()
    }
}

impl Reader {
    async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            if let Some(m) = self.dec.decode()? {
                return Ok(Some(m));
            }
            match self.recv.read_chunk(64 * 1024, true).await {
                Ok(Some(c)) => self.dec.push(&c.bytes),
                Ok(None) => {
                    self.dec.finish()?;
                    return Ok(None);
                }
                Err(e) => return Err(ClientError::Stream(e.to_string())),
            }
        }
    }
}

/// One request's stream.
#[derive(Debug)]
pub struct ReplyStream {
    send: SendStream,
    reader: Reader,
    max_frame: u32,
}

impl ReplyStream {
    /// Sends a request frame.
    pub async fn send(&mut self, r: &Request) -> Result<(), ClientError> {
        let bytes = chorus_proto::encode_to_vec(r, self.max_frame)?;
        self.send.write_all(&bytes).await.map_err(|e| ClientError::Stream(e.to_string()))
    }

    /// Sends raw bytes (tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send.write_all(bytes).await.map_err(|e| ClientError::Stream(e.to_string()))
    }

    /// The next reply; `None` when the core finished the stream.
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        self.reader.next().await
    }

    /// Every remaining reply up to and including the final one.
    pub async fn collect(&mut self) -> Result<Vec<Reply>, ClientError> {
        let mut out = Vec::new();
        while let Some(r) = self.next().await? {
            let last = r.is_final();
            out.push(r);
            if last {
                break;
            }
        }
        Ok(out)
    }

    /// Abandons the request: resets our side and stops reading (the core cancels at once).
    pub fn reset(mut self) {
        let _ = self.send.reset(chorus_proto::RESET_CANCEL.into());
        let _ = self.reader.recv.stop(chorus_proto::RESET_CANCEL.into());
    }
}

/// A shared client for many tasks.
pub type SharedClient = Arc<CoreClient>;
