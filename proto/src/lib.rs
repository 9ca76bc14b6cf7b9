//! The wire protocol between edges and cores (DESIGN §3): the messages, the length-prefixed
//! bincode framing with a hard size limit, the version handshake and the stable error codes.
//!
//! Without features the crate is sans-IO: it turns messages into bytes and bytes into messages
//! and never touches a socket, a runtime or a clock (the fuzzer builds it so). The edge and the
//! core share this crate for everything about the hop.
//! With the `tls` feature it also holds the hop's security contract ([`tls`]): TLS 1.3 only,
//! the ALPN, mutual authentication against the region CA and the QUIC transport settings, so
//! both sides build their configuration from one definition, and the development PKI
//! directory both use. With the `quic` feature it also moves frames over quinn streams
//! ([`quic`]): the framed stream, the edge's [`quic::CoreClient`] and the core's
//! [`quic::RequestStream`], so the hop has one implementation of each end.
//!
//! A connection (QUIC, ALPN [`ALPN`], mutual TLS) carries:
//! - one **control stream**, the first bidirectional stream the edge opens: the edge sends
//!   [`Hello`], the core answers [`Control::Welcome`] (or closes the connection with
//!   [`CLOSE_UNSUPPORTED_VERSION`] and a reason) and then sends [`Control::Load`] reports;
//! - one **request stream** per request: the edge sends [`Request::Generate`] (later perhaps
//!   [`Request::Cancel`]); the core answers [`Reply::Accepted`], any number of [`Reply::Token`]
//!   and then exactly one of [`Reply::Done`] or [`Reply::Error`]. A stream reset in either
//!   direction cancels the request. A request stream may instead carry one
//!   [`Request::Store`], answered by one [`Reply::Store`] (an export: several pieces) or an
//!   [`Reply::Error`].

mod codec;
mod msg;
#[cfg(feature = "quic")]
pub mod quic;
#[cfg(feature = "tls")]
pub mod tls;
pub mod tools;

pub use codec::{
    DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HEADER_LEN, MAX_FRAME_CEILING, body_len, decode_body, encode,
    encode_to_vec,
};
pub use msg::*;

/// The protocol version this build speaks.
/// 2: the conversation store (`ConversationRef`, `StoreRequest`, `Accepted.store`, `Done.stored`).
/// 3: prompt echo for evaluation (`Generate.echo_prompt`, `Accepted.prompt`).
/// 4: structured output and tools (`Generate.constraint`, `tools`, `tool_choice`,
///    `parallel_tool_calls`, `Sampling.logit_bias`, `Role::Tool`, `ErrorReply.param`) and raw
///    prompts (`Generate.prompt`).
pub const PROTOCOL_VERSION: u16 = 4;

/// The QUIC ALPN identifier.
pub const ALPN: &[u8] = b"chorus/1";

/// QUIC application close code: the peer speaks no version we do.
pub const CLOSE_UNSUPPORTED_VERSION: u32 = 0x10;
/// QUIC application close code: a frame on the control stream broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u32 = 0x11;
/// QUIC application close code: the core is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0x12;
/// QUIC application close code: a normal close.
pub const CLOSE_NORMAL: u32 = 0;

/// QUIC stream reset code the edge uses to cancel a request (the client went away).
pub const RESET_CANCEL: u32 = 0x1;

/// The version both sides will use, or `None` when the ranges do not meet.
pub fn negotiate(hello: &Hello, ours: std::ops::RangeInclusive<u16>) -> Option<u16> {
    let hi = (*ours.end()).min(hello.max_version);
    let lo = (*ours.start()).max(hello.min_version);
    (lo <= hi).then_some(hi)
}
