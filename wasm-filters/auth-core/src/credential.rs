use core::fmt;

use sha2::{Digest, Sha256};

use crate::{AuthError, MAX_TOKEN_BYTES, b64};

/// A credential extracted from request headers. Borrowed from the header values; never logged by
/// `Debug` (which redacts the secret part).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// An opaque API key; look it up by [`api_key_hash`].
    ApiKey(&'a str),
    /// A compact JWS (three dot-separated parts); check it with [`crate::verify_jwt`].
    Jwt(&'a str),
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey(k) => write!(f, "ApiKey(<redacted, {} bytes>)", k.len()),
            Credential::Jwt(t) => write!(f, "Jwt(<redacted, {} bytes>)", t.len()),
        }
    }
}

/// From the raw `authorization` and `x-api-key` header values: `Bearer <jwt>` (three dot-separated parts)
/// → [`Credential::Jwt`]; `Bearer sk-…` (or any other bearer token that is not three-part) or an
/// `x-api-key` value → [`Credential::ApiKey`]. The scheme match is case-insensitive; surrounding
/// whitespace is trimmed.
///
/// A non-empty `authorization` header takes precedence over `x-api-key`; it must use the Bearer scheme.
/// Empty / whitespace-only header values count as absent. Credentials must be visible ASCII
/// (`0x21..=0x7e`) and at most [`MAX_TOKEN_BYTES`] long.
pub fn parse_credential<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Result<Credential<'a>, AuthError> {
    if let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) {
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed("unsupported authorization scheme (expected Bearer)"));
        }
        let token = rest.trim();
        if token.is_empty() {
            return Err(AuthError::Malformed("empty bearer token"));
        }
        check_token_text(token)?;
        if token.starts_with("sk-") {
            return Ok(Credential::ApiKey(token));
        }
        if token.split('.').count() == 3 {
            return Ok(Credential::Jwt(token));
        }
        return Ok(Credential::ApiKey(token));
    }
    if let Some(key) = x_api_key.map(str::trim).filter(|v| !v.is_empty()) {
        check_token_text(key)?;
        return Ok(Credential::ApiKey(key));
    }
    Err(AuthError::Missing)
}

fn check_token_text(token: &str) -> Result<(), AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::Malformed("credential contains invalid characters"));
    }
    Ok(())
}

/// Lower-case hex SHA-256 of the key bytes: API keys are stored only as these hashes.
pub fn api_key_hash(key: &str) -> String {
    b64::hex_lower(&Sha256::digest(key.as_bytes()))
}
