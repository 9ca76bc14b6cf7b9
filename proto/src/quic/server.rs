//! The core's end of the hop: the control stream a connection opens with, and the request
//! streams after it. What the core does with a request is its own business; this module only
//! knows the order of frames.

use quinn::Connection;

use super::{FramedRecv, FramedSend, ReadError, WriteError};
use crate::{Control, Hello};

/// The first stream of a connection, after the edge's `Hello`: the core writes `Welcome`,
/// then load reports, on it.
#[derive(Debug)]
pub struct ControlStream {
    send: FramedSend,
    /// Held so the edge's side stays open; nothing more is read from it.
    _recv: FramedRecv,
}

impl ControlStream {
    /// Accepts the control stream (the first stream the edge opens) and reads its `Hello`.
    /// The caller bounds the wait; an error says why in words for the connection close.
    pub async fn accept(conn: &Connection, max_frame: u32) -> Result<(Self, Hello), String> {
        let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut recv = FramedRecv::new(recv, max_frame);
        match recv.next::<Hello>().await {
            Ok(Some(h)) => Ok((Self { send: FramedSend::new(send, max_frame), _recv: recv }, h)),
            Ok(None) => Err("the control stream ended before Hello".to_string()),
            Err(ReadError::Frame(e)) => Err(format!("malformed Hello: {e}")),
            Err(ReadError::Gone(e)) => Err(e),
        }
    }

    /// Sends `Welcome` or a load report.
    pub async fn send(&mut self, c: &Control) -> Result<(), WriteError> {
        self.send.send(c).await
    }
}

/// One request stream: `Request` frames in, `Reply` frames out. The halves are separate so a
/// core can wait for a `Cancel` while it writes tokens.
#[derive(Debug)]
pub struct RequestStream {
    pub requests: FramedRecv,
    pub replies: FramedSend,
}

impl RequestStream {
    /// The next stream the edge opens; `Err` when the connection has ended.
    pub async fn accept(conn: &Connection, max_frame: u32) -> Result<Self, quinn::ConnectionError> {
        let (send, recv) = conn.accept_bi().await?;
        Ok(Self { requests: FramedRecv::new(recv, max_frame), replies: FramedSend::new(send, max_frame) })
    }
}
