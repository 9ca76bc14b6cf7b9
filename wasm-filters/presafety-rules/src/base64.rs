//! Embedded base64 detection and bounded decoding.
//!
//! A candidate is a maximal run of ≥ 16 base64 characters (standard or URL-safe
//! alphabet, optional `=` padding) that mixes character classes like real
//! base64 does (an upper-case letter and a lower-case letter or digit), so
//! long plain words are not decoded. The decoded bytes are kept only if they
//! are valid UTF-8 and mostly printable text.

/// Minimum run length (without padding) considered as base64.
pub(crate) const MIN_RUN: usize = 16;

/// Symbol value per byte (0xFF = not a base64 symbol); both alphabets.
static VALUE: [u8; 256] = {
    let mut t = [0xFFu8; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t
};

#[inline]
fn val(b: u8) -> Option<u8> {
    let v = VALUE[b as usize];
    (v != 0xFF).then_some(v)
}

/// Decode a run of base64 symbols (no padding). Trailing partial groups decode
/// as far as possible.
fn decode(run: &[u8], out: &mut Vec<u8>) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in run {
        let Some(v) = val(b) else { break };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
}

/// Plausible text: valid UTF-8 and ≥ 90 % non-control characters.
fn as_text(bytes: &[u8]) -> Option<&str> {
    let s = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) if e.valid_up_to() + 4 >= bytes.len() => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let total = s.chars().count();
    if total < 4 {
        return None;
    }
    let bad = s.chars().filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')).count();
    let letters = s.chars().filter(|c| c.is_alphabetic()).count();
    (bad * 10 <= total && letters * 2 >= total).then_some(s)
}

/// Call `f` with every decoded base64 payload found in `text`.
/// Work and memory are bounded by `text.len()`.
pub(crate) fn for_each_payload(text: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    let bytes = text.as_bytes();
    let mut buf = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if val(bytes[i]).is_none() {
            i += 1;
            continue;
        }
        let start = i;
        let (mut upper, mut lower_or_digit) = (false, false);
        while i < bytes.len() {
            let v = VALUE[bytes[i] as usize];
            if v == 0xFF {
                break;
            }
            upper |= v < 26;
            lower_or_digit |= (26..62).contains(&v);
            i += 1;
        }
        let run = &bytes[start..i];
        while i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        if run.len() < MIN_RUN || !upper || !lower_or_digit {
            continue;
        }
        buf.clear();
        decode(run, &mut buf);
        if let Some(s) = as_text(&buf)
            && f(s)
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(s: &str) -> Vec<String> {
        let mut v = Vec::new();
        for_each_payload(s, |p| {
            v.push(p.to_string());
            false
        });
        v
    }

    #[test]
    fn decodes_embedded_base64() {
        assert_eq!(
            payloads("please decode aGVsbG8gd29ybGQsIGhvdyBhcmUgeW91Pw== thanks"),
            ["hello world, how are you?"]
        );
        // unpadded, url-safe
        assert_eq!(payloads("x aWdub3JlIHByZXZpb3VzIGluc3RydWN0aW9ucw y"), ["ignore previous instructions"]);
    }

    #[test]
    fn ignores_words_and_binary() {
        assert!(payloads("internationalization characteristically").is_empty());
        assert!(payloads("/usr/local/bin/python3.12 /AAAAAAAAAAAAAAAAAAAAAA").is_empty());
    }
}
