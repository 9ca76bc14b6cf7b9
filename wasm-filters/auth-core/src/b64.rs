//! Small, strict base64 / hex helpers (no tables built at run time).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Alphabet {
    /// RFC 4648 §5 (`-`, `_`).
    Url,
    /// RFC 4648 §4 (`+`, `/`).
    Std,
}

fn sextet(c: u8, alphabet: Alphabet) -> Option<u8> {
    match (c, alphabet) {
        (b'A'..=b'Z', _) => Some(c - b'A'),
        (b'a'..=b'z', _) => Some(c - b'a' + 26),
        (b'0'..=b'9', _) => Some(c - b'0' + 52),
        (b'-', Alphabet::Url) | (b'+', Alphabet::Std) => Some(62),
        (b'_', Alphabet::Url) | (b'/', Alphabet::Std) => Some(63),
        _ => None,
    }
}

/// Decodes unpadded base64 in the given alphabet. Rejects characters outside the alphabet (padding
/// included), impossible lengths (`len % 4 == 1`) and non-canonical encodings (non-zero trailing bits).
pub(crate) fn decode(input: &[u8], alphabet: Alphabet) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &c in input {
        acc = (acc << 6) | u32::from(sextet(c, alphabet)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 0, 2 or 4 bits are left over; a canonical encoding leaves them zero.
    if acc != 0 {
        return None;
    }
    Some(out)
}

/// Strict base64url without padding, as used by JWS compact serialization (RFC 7515 §2).
pub(crate) fn decode_url(input: &str) -> Option<Vec<u8>> {
    decode(input.as_bytes(), Alphabet::Url)
}

/// Lenient-on-form, strict-on-content decoding for operator config: base64url or standard base64
/// (not mixed), with or without correct `=` padding. Trailing bits must still be canonical.
pub(crate) fn decode_config(input: &str) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    let url = bytes.iter().any(|&c| c == b'-' || c == b'_');
    let std = bytes.iter().any(|&c| c == b'+' || c == b'/');
    if url && std {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&c| c == b'=').count();
    let body = &bytes[..bytes.len() - pad];
    if pad > 0 && (pad > 2 || !bytes.len().is_multiple_of(4) || body.len() % 4 + pad != 4) {
        return None;
    }
    decode(body, if std { Alphabet::Std } else { Alphabet::Url })
}

/// Unpadded base64url encoding.
#[cfg(any(test, feature = "signing"))]
pub(crate) fn encode_url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let v = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        // 1 byte → 2 chars, 2 → 3, 3 → 4.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Lower-case hex encoding.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
