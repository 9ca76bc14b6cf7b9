//! The hop over QUIC (feature `quic`): the framed stream both ends read and write, the edge's
//! [`CoreClient`] and the core's side of a connection ([`server`]). The messages and the frame
//! format stay in the sans-IO part of the crate; this module only moves those frames over
//! quinn streams, so the edge and the core (and the benchmarks and tests that drive a core)
//! share one implementation of each end.

pub mod client;
pub mod server;

pub use client::{ClientError, CoreClient, ReplyStream};
pub use server::{ControlStream, RequestStream};

use quinn::{RecvStream, SendStream, VarInt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{FrameDecoder, FrameError, encode_to_vec};

/// The most bytes one read takes from a stream; the decoder holds them, not the future.
const READ_CHUNK: usize = 64 * 1024;

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer reset the stream or the connection went away.
    #[error("stream: {0}")]
    Gone(String),
    /// The bytes broke the protocol.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Why writing a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The message does not fit in a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer stopped reading, reset, or the connection went away.
    #[error("stream: {0}")]
    Gone(String),
}

/// The receiving half of a stream, read as frames.
pub struct FramedRecv {
    recv: RecvStream,
    dec: FrameDecoder,
}

impl std::fmt::Debug for FramedRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedRecv").field("buffered", &self.dec.buffered()).finish()
    }
}

impl FramedRecv {
    /// Frames from `recv`, each at most `max_frame` bytes.
    pub fn new(recv: RecvStream, max_frame: u32) -> Self {
        Self { recv, dec: FrameDecoder::new(max_frame) }
    }

    /// The next message; `Ok(None)` when the peer finished its side cleanly. Cancel-safe:
    /// received bytes live in the decoder, not in the future.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if let Some(m) = self.dec.decode()? {
                return Ok(Some(m));
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.dec.push(&chunk.bytes),
                Ok(None) => {
                    self.dec.finish()?;
                    return Ok(None);
                }
                Err(e) => return Err(ReadError::Gone(e.to_string())),
            }
        }
    }

    /// Stops reading: the peer's writes fail with `code`.
    pub fn stop(&mut self, code: u32) {
        let _ = self.recv.stop(VarInt::from_u32(code));
    }
}

/// The sending half of a stream, written as frames.
#[derive(Debug)]
pub struct FramedSend {
    send: SendStream,
    max_frame: u32,
}

impl FramedSend {
    /// Frames onto `send`, each at most `max_frame` bytes.
    pub fn new(send: SendStream, max_frame: u32) -> Self {
        Self { send, max_frame }
    }

    /// Encodes and sends one message.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), WriteError> {
        let bytes = encode_to_vec(msg, self.max_frame)?;
        self.send_raw(&bytes).await
    }

    /// Sends bytes as they are (tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.send.write_all(bytes).await.map_err(|e| WriteError::Gone(e.to_string()))
    }

    /// Ends our side cleanly once everything written is delivered.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }

    /// Abandons our side at once with `code`.
    pub fn reset(&mut self, code: u32) {
        let _ = self.send.reset(VarInt::from_u32(code));
    }
}
