use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use sha2::Sha256;

use crate::error::safe_label;
use crate::{AuthError, MAX_CLAIM_BYTES, MAX_TOKEN_BYTES, MIN_HMAC_SECRET_BYTES, b64};

/// Most entries accepted in an `aud` array.
const MAX_AUDIENCES: usize = 32;

/// A verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKey {
    /// Key id matched against the token header's `kid`.
    pub kid: Option<String>,
    /// The only algorithm this key is used with.
    pub alg: JwtAlg,
    /// Must agree with `alg` (HS256 ↔ `Hmac`, EdDSA ↔ `Ed25519Public`); a key whose material does not
    /// agree, or an HMAC secret shorter than [`MIN_HMAC_SECRET_BYTES`], is never used.
    pub key: KeyMaterial,
}

/// Supported JWS algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    /// HMAC-SHA-256 (`"HS256"`).
    Hs256,
    /// Ed25519 (`"EdDSA"`, or the fully-specified `"Ed25519"` of RFC 9864).
    EdDsa,
}

impl JwtAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::Hs256 => "HS256",
            JwtAlg::EdDsa => "EdDSA",
        }
    }

    fn from_header(alg: &str) -> Result<Self, AuthError> {
        match alg {
            "HS256" => Ok(JwtAlg::Hs256),
            "EdDSA" | "Ed25519" => Ok(JwtAlg::EdDsa),
            _ if alg.eq_ignore_ascii_case("none") => Err(AuthError::UnsupportedAlg("none".into())),
            other => Err(AuthError::UnsupportedAlg(safe_label(other).into())),
        }
    }
}

/// Key bytes. `Debug` never prints an HMAC secret.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// HS256 shared secret.
    Hmac(Vec<u8>),
    /// Ed25519 public key (RFC 8032 encoding).
    Ed25519Public([u8; 32]),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Hmac(secret) => write!(f, "Hmac(<redacted, {} bytes>)", secret.len()),
            KeyMaterial::Ed25519Public(pk) => write!(f, "Ed25519Public({})", b64::hex_lower(pk)),
        }
    }
}

/// Claim requirements beyond the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtPolicy {
    /// Required exact `iss`, if set.
    pub issuer: Option<String>,
    /// Required member of `aud` (string or array), if set. When unset, `aud` is not examined.
    pub audience: Option<String>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_s: u64,
    /// If set: `exp - iat` (or, without `iat`, `exp - now - leeway`) may not exceed this.
    pub max_lifetime_s: Option<u64>,
}

/// The authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From claim `tenant`, else `org`.
    pub tenant: String,
    /// From claim `sub`.
    pub user: String,
    /// From claim `tier`, if present.
    pub tier: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

/// `true` whenever the field appears at all (even as `null`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// Only the claims we look at; everything else is skipped without allocation. `null` counts as absent.
#[derive(Deserialize)]
struct Claims {
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    iss: Option<Value>,
    aud: Option<Value>,
    sub: Option<Value>,
    tenant: Option<Value>,
    org: Option<Value>,
    tier: Option<Value>,
}

/// Parses a JSON object (not an array, which serde would also map onto a struct). Duplicate known
/// members are rejected by serde.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let first = bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// Verify signature, then claims: `exp` required and in the future (with leeway), `nbf`/`iat` not in the
/// future, `iss`/`aud` if the policy sets them (`aud` may be a string or an array), `sub` required.
/// Tenant from claim `tenant` (else `org`), tier from claim `tier` (optional).
///
/// Only the algorithm of the key selected by `kid` (or, with no `kid`, the keys whose alg equals the
/// header alg) is tried: alg `none`, alg/key-type mismatch and unknown algs are rejected, as is a `crit`
/// header. Bounded sizes: token ≤ [`MAX_TOKEN_BYTES`], each string claim ≤ [`MAX_CLAIM_BYTES`];
/// tenant/user/tier restricted to `[A-Za-z0-9._:@-]`.
pub fn verify_jwt(token: &str, keys: &[JwtKey], policy: &JwtPolicy, now_s: u64) -> Result<Identity, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("token must have three dot-separated parts"));
    };

    let header_bytes =
        b64::decode_url(header_b64).ok_or(AuthError::Malformed("token header is not valid base64url"))?;
    let header: Header =
        parse_object(&header_bytes).ok_or(AuthError::Malformed("token header is not a valid JSON object"))?;
    if header.crit {
        return Err(AuthError::Malformed("critical header parameters are not supported"));
    }
    let alg = JwtAlg::from_header(&header.alg)?;
    let kid = header.kid.as_deref();

    if let Some(kid) = kid {
        let mut with_kid = keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
        if with_kid.peek().is_none() {
            return Err(AuthError::UnknownKey);
        }
        if !with_kid.any(|k| k.alg == alg) {
            return Err(AuthError::UnsupportedAlg(alg.as_str().into()));
        }
    }
    let selected = |k: &&JwtKey| k.alg == alg && usable(k) && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid));
    if !keys.iter().any(|k| selected(&k)) {
        return Err(AuthError::UnknownKey);
    }

    let signature = b64::decode_url(sig_b64).ok_or(AuthError::Malformed("token signature is not valid base64url"))?;
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !keys.iter().filter(selected).any(|k| signature_ok(&k.key, signing_input, &signature)) {
        return Err(AuthError::BadSignature);
    }

    let payload = b64::decode_url(payload_b64).ok_or(AuthError::Malformed("token payload is not valid base64url"))?;
    let claims: Claims =
        parse_object(&payload).ok_or(AuthError::Malformed("token payload is not a valid JSON object"))?;
    check_claims(claims, policy, now_s)
}

/// Key material agrees with the key's algorithm and is strong enough to be used at all.
fn usable(key: &JwtKey) -> bool {
    match (key.alg, &key.key) {
        (JwtAlg::Hs256, KeyMaterial::Hmac(secret)) => secret.len() >= MIN_HMAC_SECRET_BYTES,
        (JwtAlg::EdDsa, KeyMaterial::Ed25519Public(_)) => true,
        _ => false,
    }
}

fn signature_ok(key: &KeyMaterial, signing_input: &[u8], signature: &[u8]) -> bool {
    match key {
        KeyMaterial::Hmac(secret) => {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                return false;
            };
            mac.update(signing_input);
            // Constant-time comparison (digest's `ct_eq`); also rejects a wrong tag length.
            mac.verify_slice(signature).is_ok()
        }
        KeyMaterial::Ed25519Public(pk) => {
            let Ok(signature) = ed25519_compact::Signature::from_slice(signature) else {
                return false;
            };
            // Rejects non-canonical S and small-order public keys.
            ed25519_compact::PublicKey::new(*pk).verify(signing_input, &signature).is_ok()
        }
    }
}

fn check_claims(claims: Claims, policy: &JwtPolicy, now_s: u64) -> Result<Identity, AuthError> {
    let leeway = policy.leeway_s;
    let exp = numeric_date(claims.exp.as_ref(), "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
    if now_s >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    let latest_start = now_s.saturating_add(leeway);
    if numeric_date(claims.nbf.as_ref(), "nbf")?.is_some_and(|nbf| nbf > latest_start) {
        return Err(AuthError::NotYetValid);
    }
    let iat = numeric_date(claims.iat.as_ref(), "iat")?;
    if iat.is_some_and(|iat| iat > latest_start) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(max) = policy.max_lifetime_s {
        let latest_exp = iat.unwrap_or(latest_start).saturating_add(max);
        if exp > latest_exp {
            return Err(AuthError::InvalidClaim("exp"));
        }
    }

    if let Some(expected) = &policy.issuer {
        match claims.iss {
            None => return Err(AuthError::MissingClaim("iss")),
            Some(Value::String(iss)) if iss.len() <= MAX_CLAIM_BYTES => {
                if iss != *expected {
                    return Err(AuthError::WrongIssuer);
                }
            }
            Some(_) => return Err(AuthError::InvalidClaim("iss")),
        }
    }

    if let Some(expected) = &policy.audience {
        let matches = |aud: &Value| match aud {
            Value::String(aud) if aud.len() <= MAX_CLAIM_BYTES => Ok(aud == expected),
            _ => Err(AuthError::InvalidClaim("aud")),
        };
        let found = match &claims.aud {
            None => return Err(AuthError::MissingClaim("aud")),
            Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_AUDIENCES => {
                let mut found = false;
                for aud in list {
                    found |= matches(aud)?;
                }
                found
            }
            Some(Value::Array(_)) => return Err(AuthError::InvalidClaim("aud")),
            Some(aud) => matches(aud)?,
        };
        if !found {
            return Err(AuthError::WrongAudience);
        }
    }

    let user = identifier(claims.sub, "sub")?.ok_or(AuthError::MissingClaim("sub"))?;
    let tenant = match identifier(claims.tenant, "tenant")? {
        Some(tenant) => tenant,
        None => identifier(claims.org, "org")?.ok_or(AuthError::MissingClaim("tenant"))?,
    };
    let tier = identifier(claims.tier, "tier")?;
    Ok(Identity { tenant, user, tier })
}

/// RFC 7519 NumericDate: a non-negative JSON number; fractional seconds are truncated.
fn numeric_date(value: Option<&Value>, claim: &'static str) -> Result<Option<u64>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(AuthError::InvalidClaim(claim));
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        // `as` saturates for values beyond u64::MAX.
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
        _ => Err(AuthError::InvalidClaim(claim)),
    }
}

/// A tenant/user/tier string: 1..=MAX_CLAIM_BYTES bytes of `[A-Za-z0-9._:@-]`.
fn identifier(value: Option<Value>, claim: &'static str) -> Result<Option<String>, AuthError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) if is_identifier(&s) => Ok(Some(s)),
        Some(_) => Err(AuthError::InvalidClaim(claim)),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CLAIM_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}
