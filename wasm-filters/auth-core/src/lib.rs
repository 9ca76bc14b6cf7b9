//! Pure credential verification for the Chorus `auth` filter.
//!
//! Everything here is deterministic and side-effect free: no clock, no I/O, no randomness. The filter
//! (a wasm32-wasip2 component instantiated per request) supplies header values, the key configuration and
//! the current time, and maps [`AuthError`] to a 401 body via [`AuthError::code`] and [`AuthError::reason`].
//!
//! Supported credentials:
//! * API keys (`x-api-key: …` or `Authorization: Bearer sk-…`), stored server-side only as
//!   [`api_key_hash`] digests;
//! * compact JWS tokens signed with HS256 or EdDSA (Ed25519), verified by [`verify_jwt`] against keys
//!   loaded with [`parse_keys`].

#![forbid(unsafe_code)]

mod b64;
mod credential;
mod error;
mod jwt;
mod keys;
#[cfg(any(test, feature = "signing"))]
mod signing;
#[cfg(test)]
mod tests;

pub use credential::{Credential, api_key_hash, parse_credential};
pub use error::AuthError;
pub use jwt::{Identity, JwtAlg, JwtKey, JwtPolicy, KeyMaterial, verify_jwt};
pub use keys::parse_keys;
#[cfg(feature = "signing")]
pub use signing::{sign_eddsa, sign_hs256};

/// Largest credential (API key or JWT, after trimming) that is looked at; anything longer is
/// [`AuthError::TooLarge`].
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Largest accepted string claim (`sub`, `tenant`/`org`, `tier`, `iss`, each `aud` entry) in bytes.
pub const MAX_CLAIM_BYTES: usize = 256;

/// Shortest accepted HS256 secret (RFC 7518 §3.2: at least the hash output size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
