//! The edge's end of the hop: connect (mutual TLS, version handshake on the control stream),
//! follow load reports, open one stream per request. The edge's upstream pool keeps one per
//! core; the core's tests and `chorus bench quic` use it directly.

use std::net::SocketAddr;

use quinn::{Connection, Endpoint};
use tokio::sync::watch;

use super::{FramedRecv, FramedSend, ReadError, WriteError};
use crate::tls::{self, Identity};
use crate::{
    CLOSE_PROTOCOL_ERROR, Control, DEFAULT_MAX_FRAME, FleetInfo, FrameError, Generate, Hello, LoadReport,
    PROTOCOL_VERSION, RESET_CANCEL, Reply, Request, StoreRequest,
};

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

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Gone(why) => Self::Stream(why),
            ReadError::Frame(e) => Self::Frame(e),
        }
    }
}

impl From<WriteError> for ClientError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Gone(why) => Self::Stream(why),
            WriteError::Frame(e) => Self::Frame(e),
        }
    }
}

/// A connection to one core.
#[derive(Debug)]
pub struct CoreClient {
    pub endpoint: Endpoint,
    pub conn: Connection,
    /// From the core's `Welcome`.
    pub core_id: String,
    pub version: u16,
    pub fleets: Vec<FleetInfo>,
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
        let hello = Hello { min_version: PROTOCOL_VERSION, max_version: PROTOCOL_VERSION, edge_id: edge_id.into() };
        Self::handshake(addr, server_name, id, hello).await
    }

    /// Connects offering versions `min..=max`.
    pub async fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        id: &Identity,
        min_version: u16,
        max_version: u16,
    ) -> Result<Self, ClientError> {
        let hello = Hello { min_version, max_version, edge_id: "chorus-client".into() };
        Self::handshake(addr, server_name, id, hello).await
    }

    async fn handshake(addr: SocketAddr, server_name: &str, id: &Identity, hello: Hello) -> Result<Self, ClientError> {
        let bind = SocketAddr::new(
            if addr.is_ipv6() {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            },
            0,
        );
        let mut endpoint = Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(tls::client_config(id)?);
        let conn = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let max_frame = DEFAULT_MAX_FRAME;
        let (send, recv) = conn.open_bi().await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut send = FramedSend::new(send, max_frame);
        send.send(&hello).await.map_err(|e| closed_or(&conn, e.into()))?;
        let mut reader = FramedRecv::new(recv, max_frame);
        let welcome = reader.next::<Control>().await.map_err(|e| closed_or(&conn, e.into()))?;
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
            control_conn.close(CLOSE_PROTOCOL_ERROR.into(), b"control stream ended");
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
    pub async fn store(&self, r: StoreRequest) -> Result<Vec<Reply>, ClientError> {
        let mut s = self.open().await?;
        s.send(&Request::Store(Box::new(r))).await?;
        s.collect().await
    }

    /// Opens a request stream without sending anything.
    pub async fn open(&self) -> Result<ReplyStream, ClientError> {
        let (send, recv) =
            self.conn.open_bi().await.map_err(|e| closed_or(&self.conn, ClientError::Stream(e.to_string())))?;
        Ok(ReplyStream { send: FramedSend::new(send, self.max_frame), recv: FramedRecv::new(recv, self.max_frame) })
    }
}

/// The connection's close reason when it has one (it says more than the stream error).
fn closed_or(conn: &Connection, e: ClientError) -> ClientError {
    match conn.close_reason() {
        Some(r) => ClientError::Closed(r.to_string()),
        None => e,
    }
}

/// One request's stream.
#[derive(Debug)]
pub struct ReplyStream {
    send: FramedSend,
    recv: FramedRecv,
}

impl ReplyStream {
    /// Sends a request frame.
    pub async fn send(&mut self, r: &Request) -> Result<(), ClientError> {
        Ok(self.send.send(r).await?)
    }

    /// Sends raw bytes (tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        Ok(self.send.send_raw(bytes).await?)
    }

    /// The next reply; `None` when the core finished the stream.
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        Ok(self.recv.next().await?)
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
        self.send.reset(RESET_CANCEL);
        self.recv.stop(RESET_CANCEL);
    }
}
