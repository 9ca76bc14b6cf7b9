use crate::error::safe_label;
use crate::{AuthError, JwtAlg, JwtKey, KeyMaterial, MAX_CLAIM_BYTES, MIN_HMAC_SECRET_BYTES, b64};

/// Parse key config from the compact text form operators write in config: one key per line,
/// `kid=<id> alg=HS256 secret=<base64url or base64>` or `kid=<id> alg=EdDSA public=<base64url 32 bytes>`.
/// Fields are whitespace-separated and may come in any order; `kid` is optional but, when given, unique.
/// `alg` is matched case-insensitively (`Ed25519` is accepted for EdDSA). HS256 secrets must decode to at
/// least [`MIN_HMAC_SECRET_BYTES`]. Blank lines and lines starting with `#` are ignored. Errors name the
/// 1-based line and never include key material.
pub fn parse_keys(text: &str) -> Result<Vec<JwtKey>, AuthError> {
    let mut keys: Vec<JwtKey> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let key = parse_line(trimmed).map_err(|reason| AuthError::BadKeyConfig { line, reason })?;
        if let Some(kid) = &key.kid
            && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            return Err(AuthError::BadKeyConfig { line, reason: format!("duplicate kid `{kid}`") });
        }
        keys.push(key);
    }
    Ok(keys)
}

fn parse_line(line: &str) -> Result<JwtKey, String> {
    let (mut kid, mut alg, mut secret, mut public) = (None, None, None, None);
    for field in line.split_ascii_whitespace() {
        let Some((name, value)) = field.split_once('=') else {
            return Err("expected whitespace-separated `name=value` fields".into());
        };
        let slot = match name {
            "kid" => &mut kid,
            "alg" => &mut alg,
            "secret" => &mut secret,
            "public" => &mut public,
            _ => return Err(format!("unknown field `{}` (expected kid, alg, secret, public)", safe_label(name))),
        };
        if slot.is_some() {
            return Err(format!("duplicate field `{name}`"));
        }
        if value.is_empty() {
            return Err(format!("empty value for `{name}`"));
        }
        *slot = Some(value);
    }

    if let Some(kid) = kid
        && (kid.len() > MAX_CLAIM_BYTES || !kid.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(format!("kid must be at most {MAX_CLAIM_BYTES} visible ASCII characters"));
    }
    let alg = match alg {
        None => return Err("missing `alg` (HS256 or EdDSA)".into()),
        Some(a) if a.eq_ignore_ascii_case("HS256") => JwtAlg::Hs256,
        Some(a) if a.eq_ignore_ascii_case("EdDSA") || a.eq_ignore_ascii_case("Ed25519") => JwtAlg::EdDsa,
        Some(a) => return Err(format!("unsupported alg `{}` (expected HS256 or EdDSA)", safe_label(a))),
    };
    let key = match alg {
        JwtAlg::Hs256 => {
            if public.is_some() {
                return Err("`public` is not used with HS256 (use `secret`)".into());
            }
            let secret = secret.ok_or("missing `secret` for HS256")?;
            let bytes = b64::decode_config(secret).ok_or("`secret` is not valid base64url or base64")?;
            if bytes.len() < MIN_HMAC_SECRET_BYTES {
                return Err(format!(
                    "HS256 secret must decode to at least {MIN_HMAC_SECRET_BYTES} bytes (got {})",
                    bytes.len()
                ));
            }
            KeyMaterial::Hmac(bytes)
        }
        JwtAlg::EdDsa => {
            if secret.is_some() {
                return Err("`secret` is not used with EdDSA (use `public`)".into());
            }
            let public = public.ok_or("missing `public` for EdDSA")?;
            let bytes = b64::decode_config(public).ok_or("`public` is not valid base64url or base64")?;
            let pk: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("EdDSA public key must decode to 32 bytes (got {})", bytes.len()))?;
            KeyMaterial::Ed25519Public(pk)
        }
    };
    Ok(JwtKey { kid: kid.map(str::to_owned), alg, key })
}
