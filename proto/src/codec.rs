//! Frames: a little-endian `u32` body length, then the bincode body. The length is checked
//! against the limit before a byte of the body is buffered, and the body decoder refuses any
//! length inside it that claims more bytes than the body holds, so no input makes the decoder
//! allocate more than the frame limit.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// The frame limit unless configured otherwise.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// No configuration may raise the frame limit past this.
pub const MAX_FRAME_CEILING: u32 = 16 << 20;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ MAX_FRAME_CEILING as usize }>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<{ MAX_FRAME_CEILING as usize }>()
}

/// A frame that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u32 },
    #[error("malformed frame body: {0}")]
    Malformed(String),
    #[error("frame body has {extra} bytes after the message")]
    Trailing { extra: usize },
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("message cannot be encoded: {0}")]
    Encode(String),
}

/// Appends one frame holding `msg` to `out`. On error `out` is left as it was.
pub fn encode<T: Serialize>(msg: &T, max: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let res = bincode::serde::encode_into_std_write(msg, out, config());
    let len = out.len() - start - HEADER_LEN;
    match res {
        Err(e) => {
            out.truncate(start);
            Err(FrameError::Encode(e.to_string()))
        }
        Ok(_) if len > max.min(MAX_FRAME_CEILING) as usize => {
            out.truncate(start);
            Err(FrameError::TooLarge { len: len as u64, max })
        }
        Ok(_) => {
            out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
            Ok(())
        }
    }
}

/// One frame holding `msg`.
pub fn encode_to_vec<T: Serialize>(msg: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut v = Vec::new();
    encode(msg, max, &mut v)?;
    Ok(v)
}

/// The body length a header announces, refused when over `max`.
pub fn body_len(header: [u8; HEADER_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header);
    if len > max.min(MAX_FRAME_CEILING) {
        return Err(FrameError::TooLarge { len: len.into(), max });
    }
    Ok(len as usize)
}

/// Decodes a frame body; every byte must belong to the message.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Trailing { extra: body.len() - used });
    }
    Ok(msg)
}

/// Push-style decoder: feed it bytes as they arrive, take messages out. It never buffers more
/// than one frame plus the last chunk pushed, and after an error it stays failed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: u32,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(max: u32) -> Self {
        Self { buf: Vec::new(), max, failed: None }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let res = self.take();
        if let Err(e) = &res {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        res
    }

    fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER_LEN>() else { return Ok(None) };
        let len = body_len(*header, self.max)?;
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let msg = decode_body(&self.buf[HEADER_LEN..HEADER_LEN + len])?;
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(msg))
    }

    /// Call when the stream ended: an error when it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = match self.buf.first_chunk::<HEADER_LEN>() {
            Some(h) => HEADER_LEN + u32::from_le_bytes(*h) as usize,
            None => HEADER_LEN,
        };
        Err(FrameError::Truncated { have: self.buf.len(), need })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, ErrorReply, Reply};

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&(DEFAULT_MAX_FRAME + 1).to_le_bytes());
        assert_eq!(
            d.decode::<Reply>(),
            Err(FrameError::TooLarge { len: DEFAULT_MAX_FRAME as u64 + 1, max: DEFAULT_MAX_FRAME })
        );
        // Failed for good, and holds nothing.
        d.push(&[0; 100]);
        assert_eq!(d.buffered(), 0);
        assert!(d.decode::<Reply>().is_err());
    }

    #[test]
    fn encoding_over_the_limit_leaves_the_buffer_alone() {
        let big = Reply::Error(ErrorReply {
            code: ErrorCode::Internal,
            message: "x".repeat(2000),
            retry_after_ms: None,
            param: None,
        });
        let mut out = vec![7];
        assert!(matches!(encode(&big, 1000, &mut out), Err(FrameError::TooLarge { max: 1000, .. })));
        assert_eq!(out, [7]);
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let msgs: Vec<Reply> = (0..5)
            .map(|i| {
                Reply::Error(ErrorReply {
                    code: ErrorCode::Other(1000 + i),
                    message: "m".repeat(i as usize * 7),
                    retry_after_ms: Some(i.into()),
                    param: None,
                })
            })
            .collect();
        let mut bytes = Vec::new();
        for m in &msgs {
            encode(m, DEFAULT_MAX_FRAME, &mut bytes).unwrap();
        }
        for step in [1, 2, 3, 7, 64, bytes.len()] {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for c in bytes.chunks(step) {
                d.push(c);
                while let Some(m) = d.decode::<Reply>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs);
            d.finish().unwrap();
        }
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_reported() {
        let bytes = encode_to_vec(
            &Reply::Error(ErrorReply {
                code: ErrorCode::Internal,
                message: "abc".into(),
                retry_after_ms: None,
                param: None,
            }),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        d.push(&bytes[..bytes.len() - 1]);
        assert_eq!(d.decode::<Reply>(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: bytes.len() - 1, need: bytes.len() }));
    }

    #[test]
    fn trailing_bytes_and_bad_variants_are_malformed() {
        let mut body = encode_to_vec(&crate::Request::Cancel, DEFAULT_MAX_FRAME).unwrap()[HEADER_LEN..].to_vec();
        body.push(0);
        assert_eq!(decode_body::<crate::Request>(&body), Err(FrameError::Trailing { extra: 1 }));
        assert!(matches!(decode_body::<crate::Request>(&[99]), Err(FrameError::Malformed(_))));
        // A string claiming far more bytes than the body has: refused, not allocated.
        let mut huge = vec![0u8]; // Request::Generate
        huge.extend_from_slice(&[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(decode_body::<crate::Request>(&huge), Err(FrameError::Malformed(_))));
    }
}
