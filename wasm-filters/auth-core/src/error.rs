use core::fmt;

/// Why a credential (or the key configuration) was rejected.
///
/// [`AuthError::reason`] is safe to put in a 401 body: it never contains the presented credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Neither `authorization` nor `x-api-key` carried a credential.
    Missing,
    /// The credential or one of its parts is syntactically invalid.
    Malformed(&'static str),
    /// The credential exceeds [`crate::MAX_TOKEN_BYTES`].
    TooLarge,
    /// The token's `alg` is unknown, `none`, or not the algorithm of the selected key. Holds a sanitized
    /// label of the header value.
    UnsupportedAlg(String),
    /// No configured key matches the token's `kid` (or, without `kid`, its `alg`).
    UnknownKey,
    /// The signature did not verify with any selected key.
    BadSignature,
    /// `exp` is not in the future (allowing for leeway).
    Expired,
    /// `nbf` or `iat` is in the future (allowing for leeway).
    NotYetValid,
    /// `iss` differs from the policy issuer.
    WrongIssuer,
    /// `aud` does not contain the policy audience.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(&'static str),
    /// A claim has the wrong type, size or characters (or, for `exp`, exceeds the maximum lifetime).
    InvalidClaim(&'static str),
    /// [`crate::parse_keys`] rejected a config line (1-based). Never contains secret material.
    BadKeyConfig { line: usize, reason: String },
    /// An API key was well-formed but unknown (for the caller's key-hash lookup to return; nothing in
    /// this crate produces it). Added so that [`AuthError::code`] can report `invalid_api_key`.
    InvalidApiKey,
}

impl AuthError {
    /// Short human-readable message for a 401 body; never echoes the token.
    pub fn reason(&self) -> String {
        match self {
            AuthError::Missing => "missing credentials: send `Authorization: Bearer <token>` or `x-api-key`".into(),
            AuthError::Malformed(what) => format!("malformed credentials: {what}"),
            AuthError::TooLarge => "credentials too large".into(),
            AuthError::UnsupportedAlg(alg) => format!("token algorithm `{}` is not accepted", safe_label(alg)),
            AuthError::UnknownKey => "token signing key is not recognised".into(),
            AuthError::BadSignature => "token signature is invalid".into(),
            AuthError::Expired => "token has expired".into(),
            AuthError::NotYetValid => "token is not yet valid".into(),
            AuthError::WrongIssuer => "token issuer is not accepted".into(),
            AuthError::WrongAudience => "token audience is not accepted".into(),
            AuthError::MissingClaim(claim) => format!("token is missing the `{claim}` claim"),
            AuthError::InvalidClaim(claim) => format!("token has an invalid `{claim}` claim"),
            AuthError::BadKeyConfig { line, reason } => format!("invalid JWT key config on line {line}: {reason}"),
            AuthError::InvalidApiKey => "invalid API key".into(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_credentials",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::InvalidApiKey => "invalid_api_key",
            AuthError::BadKeyConfig { .. } => "auth_misconfigured",
            AuthError::Malformed(_)
            | AuthError::TooLarge
            | AuthError::UnsupportedAlg(_)
            | AuthError::UnknownKey
            | AuthError::BadSignature
            | AuthError::WrongIssuer
            | AuthError::WrongAudience
            | AuthError::MissingClaim(_)
            | AuthError::InvalidClaim(_) => "invalid_token",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for AuthError {}

/// `label` if it is a short identifier-like string, else a placeholder (so attacker-chosen header text
/// cannot be reflected at length).
pub(crate) fn safe_label(label: &str) -> &str {
    let ok = !label.is_empty()
        && label.len() <= 16
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'_' | b'.'));
    if ok { label } else { "<invalid>" }
}
