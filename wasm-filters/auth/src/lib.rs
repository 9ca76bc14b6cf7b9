//! `auth`: establishes who is calling. Accepts an API key (`x-api-key`, or `Authorization:
//! Bearer sk-...`) looked up by its SHA-256 in the operator's key-value data — keys themselves
//! are never stored — or a JWT signed with HS256 or EdDSA. On success it annotates `tenant`,
//! `user` and `tier` (and `auth.method`); otherwise it denies with 401 and a reason.
//!
//! Operator data and configuration:
//! - kv `apikey:<sha256 hex>` = `{"tenant": "...", "user": "...", "tier": "plus", "disabled": false}`
//! - config `jwt_keys`: one key per line, `kid=K alg=HS256 secret=BASE64` or
//!   `kid=K alg=EdDSA public=BASE64URL` (see chorus-auth-core)
//! - config `jwt_issuer`, `jwt_audience` (checked when set), `jwt_leeway_s` (default 30),
//!   `jwt_max_lifetime_s`, `default_tier` (default `free`, for tokens without a tier claim)

use chorus_auth_core::{AuthError, Credential, JwtPolicy, api_key_hash, parse_credential, parse_keys, verify_jwt};
use chorus_filter_sdk::host::{self, Level};
use chorus_filter_sdk::{Filter, Request, Verdict, annotation, export_filter};

const TIERS: [&str; 4] = ["free", "team", "plus", "enterprise"];

#[derive(serde::Deserialize)]
struct KeyRecord {
    tenant: String,
    user: String,
    tier: String,
    #[serde(default)]
    disabled: bool,
}

struct Who {
    tenant: String,
    user: String,
    tier: String,
    method: &'static str,
}

fn deny(err: &AuthError) -> Verdict {
    Verdict::deny(401, err.code(), err.reason())
}

fn misconfigured(what: &str) -> Verdict {
    host::log(Level::Error, what);
    Verdict::deny(500, "auth_misconfigured", "authentication is misconfigured")
}

fn api_key(key: &str) -> Result<Who, Verdict> {
    let Some(bytes) = host::kv_get(&format!("apikey:{}", api_key_hash(key))) else {
        return Err(deny(&AuthError::InvalidApiKey));
    };
    let record: KeyRecord =
        serde_json::from_slice(&bytes).map_err(|e| misconfigured(&format!("API key record: {e}")))?;
    if record.disabled {
        return Err(deny(&AuthError::InvalidApiKey));
    }
    if !TIERS.contains(&record.tier.as_str()) {
        return Err(misconfigured(&format!("API key record has unknown tier {:?}", record.tier)));
    }
    Ok(Who { tenant: record.tenant, user: record.user, tier: record.tier, method: "api_key" })
}

fn jwt(token: &str) -> Result<Who, Verdict> {
    let keys = match host::config("jwt_keys") {
        Some(text) => parse_keys(&text).map_err(|e| misconfigured(&format!("jwt_keys: {e:?}")))?,
        None => return Err(deny(&AuthError::UnknownKey)),
    };
    let leeway_s = host::config_parse("jwt_leeway_s", 30u64).map_err(|e| misconfigured(&e))?;
    let max_lifetime_s = match host::config("jwt_max_lifetime_s") {
        None => None,
        Some(v) => Some(v.trim().parse().map_err(|_| misconfigured("jwt_max_lifetime_s is not a number"))?),
    };
    let policy = JwtPolicy {
        issuer: host::config("jwt_issuer"),
        audience: host::config("jwt_audience"),
        leeway_s,
        max_lifetime_s,
    };
    let id = verify_jwt(token, &keys, &policy, host::now_ms() / 1000).map_err(|e| deny(&e))?;
    let tier = match id.tier {
        Some(t) => t,
        None => host::config("default_tier").unwrap_or_else(|| "free".into()),
    };
    if !TIERS.contains(&tier.as_str()) {
        return Err(deny(&AuthError::InvalidClaim("tier")));
    }
    Ok(Who { tenant: id.tenant, user: id.user, tier, method: "jwt" })
}

struct Auth;

impl Filter for Auth {
    fn on_request(req: Request) -> Verdict {
        let who = match parse_credential(req.header("authorization"), req.header("x-api-key")) {
            Ok(Credential::ApiKey(key)) => api_key(key),
            Ok(Credential::Jwt(token)) => jwt(token),
            Err(e) => Err(deny(&e)),
        };
        match who {
            Ok(w) => Verdict::allow_with(vec![
                annotation("tenant", w.tenant),
                annotation("user", w.user),
                annotation("tier", w.tier),
                annotation("auth.method", w.method),
            ]),
            Err(v) => {
                host::metric_add("denied", 1);
                v
            }
        }
    }
}

export_filter!(Auth);
