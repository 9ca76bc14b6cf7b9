//! Token minting for tests of other components (feature `signing`). Not used by verification.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::b64;

/// `base64url(header) "." base64url(claims_json)` with header `{"alg":…,"typ":"JWT"[,"kid":…]}`.
fn signing_input(alg: &str, kid: Option<&str>, claims_json: &str) -> String {
    let header = match kid {
        Some(kid) => {
            let kid = serde_json::to_string(kid).expect("a string always serializes");
            format!(r#"{{"alg":"{alg}","typ":"JWT","kid":{kid}}}"#)
        }
        None => format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
    };
    format!("{}.{}", b64::encode_url(header.as_bytes()), b64::encode_url(claims_json.as_bytes()))
}

/// Signs `claims_json` (used verbatim as the payload) with HS256.
pub fn sign_hs256(claims_json: &str, kid: Option<&str>, secret: &[u8]) -> String {
    let input = signing_input("HS256", kid, claims_json);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(input.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{input}.{}", b64::encode_url(&tag))
}

/// Signs `claims_json` (used verbatim as the payload) with Ed25519 (deterministic RFC 8032 signatures).
/// `secret_key` is the 64-byte `seed || public key` form (`ed25519_compact::SecretKey`).
pub fn sign_eddsa(claims_json: &str, kid: Option<&str>, secret_key: &[u8; 64]) -> String {
    let input = signing_input("EdDSA", kid, claims_json);
    let signature = ed25519_compact::SecretKey::new(*secret_key).sign(input.as_bytes(), None);
    format!("{input}.{}", b64::encode_url(signature.as_ref()))
}
