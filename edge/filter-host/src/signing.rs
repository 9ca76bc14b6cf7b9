//! Module signatures: ed25519 over a digest of the module bytes and its manifest, kept in a
//! detached `<name>.sig` file that names the signing key. Key ids are the first 8 bytes of the
//! SHA-256 of the public key, in hex.
//!
//! File formats (all text, one `field: value` per line after a header line):
//! - secret key: `chorus-filter-secret-key v1`, `key-id`, `seed` (32 bytes hex)
//! - public key / trusted keys: one `KEY_ID ed25519 PUBLIC_KEY_HEX` per line, `#` comments
//! - signature: `chorus-filter-signature v1`, `key-id`, `module-sha256`, `manifest-sha256`,
//!   `signature` (64 bytes hex)

use sha2::{Digest, Sha256};

const SIG_HEADER: &str = "chorus-filter-signature v1";
const SECRET_HEADER: &str = "chorus-filter-secret-key v1";
const DOMAIN: &[u8] = b"chorus-filter-signature-v1\n";
/// Largest key or signature file we read.
pub const MAX_KEY_FILE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("module is not signed (no .sig file) and the host is not in dev mode")]
    Unsigned,
    #[error("signed by key {0}, which this host does not trust")]
    UntrustedKey(String),
    #[error("the signature does not match the module and manifest (tampered, or signed for other bytes)")]
    BadSignature,
    #[error("signature file names a different {0} digest than the bytes present")]
    DigestMismatch(&'static str),
}

fn malformed(what: &'static str, reason: impl Into<String>) -> SignatureError {
    SignatureError::Malformed { what, reason: reason.into() }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub fn unhex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], SignatureError> {
    let text = text.trim();
    if text.len() != 2 * N {
        return Err(malformed(what, format!("expected {} hex digits, found {}", 2 * N, text.len())));
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).ok_or_else(|| malformed(what, "not hexadecimal"));
        out[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
    }
    Ok(out)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn key_id(public: &[u8; 32]) -> String {
    hex(&sha256(public)[..8])
}

fn signed_message(module_digest: &[u8; 32], manifest_digest: &[u8; 32]) -> Vec<u8> {
    [DOMAIN, module_digest, manifest_digest].concat()
}

/// A key that may sign modules.
#[derive(Clone)]
pub struct SigningKey {
    pair: ed25519_compact::KeyPair,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key for a 32-byte seed (from a secure random source).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let pair = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        let public: [u8; 32] = *pair.pk;
        SigningKey { pair, id: key_id(&public) }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn public(&self) -> TrustedKey {
        TrustedKey { id: self.id.clone(), public: *self.pair.pk }
    }

    /// The secret key file's text (keep it private).
    pub fn to_file(&self) -> String {
        format!("{SECRET_HEADER}\nkey-id: {}\nseed: {}\n", self.id, hex(self.pair.sk.seed().as_ref()))
    }

    pub fn from_file(text: &str) -> Result<Self, SignatureError> {
        let fields = parse_fields(text, SECRET_HEADER, "secret key file")?;
        let seed = unhex::<32>(field(&fields, "seed", "secret key file")?, "secret key seed")?;
        let key = SigningKey::from_seed(seed);
        if field(&fields, "key-id", "secret key file")? != key.id {
            return Err(malformed("secret key file", "key-id does not match the seed"));
        }
        Ok(key)
    }

    /// Sign a module and its manifest.
    pub fn sign(&self, module: &[u8], manifest: &[u8]) -> Signature {
        let module_sha256 = sha256(module);
        let manifest_sha256 = sha256(manifest);
        let sig = self.pair.sk.sign(signed_message(&module_sha256, &manifest_sha256), None);
        Signature { key_id: self.id.clone(), module_sha256, manifest_sha256, signature: *sig }
    }
}

/// A public key the host trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    pub id: String,
    pub public: [u8; 32],
}

impl TrustedKey {
    pub fn to_line(&self) -> String {
        format!("{} ed25519 {}", self.id, hex(&self.public))
    }

    /// Parse a trusted-keys file: one `KEY_ID ed25519 HEX` per line.
    pub fn parse_file(text: &str) -> Result<Vec<TrustedKey>, SignatureError> {
        if text.len() > MAX_KEY_FILE_BYTES {
            return Err(malformed("trusted keys", format!("file is over {MAX_KEY_FILE_BYTES} bytes")));
        }
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [id, alg, public] = parts[..] else {
                return Err(malformed(
                    "trusted keys",
                    format!("line {}: expected `KEY_ID ed25519 PUBLIC_KEY_HEX`", n + 1),
                ));
            };
            if alg != "ed25519" {
                return Err(malformed("trusted keys", format!("line {}: algorithm {alg:?} is not ed25519", n + 1)));
            }
            let public = unhex::<32>(public, "trusted public key")?;
            if key_id(&public) != id {
                return Err(malformed("trusted keys", format!("line {}: key id {id} does not match the key", n + 1)));
            }
            keys.push(TrustedKey { id: id.to_owned(), public });
        }
        Ok(keys)
    }
}

/// A detached signature over one module and its manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub key_id: String,
    pub module_sha256: [u8; 32],
    pub manifest_sha256: [u8; 32],
    pub signature: [u8; 64],
}

impl Signature {
    pub fn to_file(&self) -> String {
        format!(
            "{SIG_HEADER}\nkey-id: {}\nmodule-sha256: {}\nmanifest-sha256: {}\nsignature: {}\n",
            self.key_id,
            hex(&self.module_sha256),
            hex(&self.manifest_sha256),
            hex(&self.signature)
        )
    }

    pub fn from_file(text: &str) -> Result<Self, SignatureError> {
        let fields = parse_fields(text, SIG_HEADER, "signature file")?;
        Ok(Signature {
            key_id: field(&fields, "key-id", "signature file")?.to_owned(),
            module_sha256: unhex(field(&fields, "module-sha256", "signature file")?, "module-sha256")?,
            manifest_sha256: unhex(field(&fields, "manifest-sha256", "signature file")?, "manifest-sha256")?,
            signature: unhex(field(&fields, "signature", "signature file")?, "signature")?,
        })
    }

    /// Check this signature against the bytes present and the trusted keys; returns the key id.
    pub fn verify(&self, module: &[u8], manifest: &[u8], trusted: &[TrustedKey]) -> Result<String, SignatureError> {
        let key = trusted
            .iter()
            .find(|k| k.id == self.key_id)
            .ok_or_else(|| SignatureError::UntrustedKey(self.key_id.clone()))?;
        if sha256(module) != self.module_sha256 {
            return Err(SignatureError::DigestMismatch("module"));
        }
        if sha256(manifest) != self.manifest_sha256 {
            return Err(SignatureError::DigestMismatch("manifest"));
        }
        let public = ed25519_compact::PublicKey::new(key.public);
        let sig = ed25519_compact::Signature::new(self.signature);
        public
            .verify(signed_message(&self.module_sha256, &self.manifest_sha256), &sig)
            .map_err(|_| SignatureError::BadSignature)?;
        Ok(key.id.clone())
    }
}

fn parse_fields<'a>(
    text: &'a str,
    header: &str,
    what: &'static str,
) -> Result<Vec<(&'a str, &'a str)>, SignatureError> {
    if text.len() > MAX_KEY_FILE_BYTES {
        return Err(malformed(what, format!("file is over {MAX_KEY_FILE_BYTES} bytes")));
    }
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(header) {
        return Err(malformed(what, format!("first line must be `{header}`")));
    }
    let mut fields = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) =
            line.split_once(':').ok_or_else(|| malformed(what, format!("line {line:?} is not `field: value`")))?;
        fields.push((k.trim(), v.trim()));
    }
    Ok(fields)
}

fn field<'a>(fields: &[(&str, &'a str)], name: &str, what: &'static str) -> Result<&'a str, SignatureError> {
    let mut found = fields.iter().filter(|(k, _)| *k == name);
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Ok(v),
        (None, _) => Err(malformed(what, format!("missing `{name}`"))),
        (Some(_), Some(_)) => Err(malformed(what, format!("`{name}` appears twice"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed([n; 32])
    }

    #[test]
    fn sign_verify_round_trip_through_files() {
        let k = SigningKey::from_file(&key(1).to_file()).unwrap();
        let trusted = TrustedKey::parse_file(&format!("# ops\n{}\n", k.public().to_line())).unwrap();
        let sig = Signature::from_file(&k.sign(b"module", b"manifest").to_file()).unwrap();
        assert_eq!(sig.verify(b"module", b"manifest", &trusted).unwrap(), k.id());
    }

    #[test]
    fn tampering_and_untrusted_keys_are_refused() {
        let k = key(1);
        let trusted = vec![k.public()];
        let sig = k.sign(b"module", b"manifest");
        assert_eq!(sig.verify(b"modulE", b"manifest", &trusted), Err(SignatureError::DigestMismatch("module")));
        assert_eq!(sig.verify(b"module", b"manifest!", &trusted), Err(SignatureError::DigestMismatch("manifest")));
        // Digests rewritten to match other bytes: the signature no longer verifies.
        let mut forged = sig.clone();
        forged.module_sha256 = sha256(b"evil");
        assert_eq!(forged.verify(b"evil", b"manifest", &trusted), Err(SignatureError::BadSignature));
        let other = key(2).sign(b"module", b"manifest");
        assert!(matches!(other.verify(b"module", b"manifest", &trusted), Err(SignatureError::UntrustedKey(_))));
        // A trusted key id paired with another key's signature.
        let mut swapped = other;
        swapped.key_id = k.id().to_owned();
        assert_eq!(swapped.verify(b"module", b"manifest", &trusted), Err(SignatureError::BadSignature));
    }

    /// Random byte edits of valid files: every one parses or fails with an error, none panics,
    /// and no edited signature verifies.
    #[test]
    fn mutated_files_never_panic_or_verify() {
        let k = key(3);
        let trusted = vec![k.public()];
        let files = [k.sign(b"module", b"manifest").to_file(), k.to_file(), k.public().to_line()];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..6000 {
            let original = files[round % 3].as_bytes();
            let mut bytes = original.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, next() as u8),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(sig) = Signature::from_file(&text)
                && bytes != original
            {
                // Edits that only touch whitespace or the header's comments may still verify.
                let same = sig == k.sign(b"module", b"manifest");
                assert_eq!(sig.verify(b"module", b"manifest", &trusted).is_ok(), same, "{text}");
            }
            let _ = SigningKey::from_file(&text);
            let _ = TrustedKey::parse_file(&text);
        }
    }

    #[test]
    fn malformed_files_name_the_problem() {
        assert!(Signature::from_file("hello").unwrap_err().to_string().contains("first line"));
        let text = key(1).sign(b"m", b"n").to_file().replace("signature: ", "signature: zz");
        assert!(Signature::from_file(&text).unwrap_err().to_string().contains("hex digits"));
        let line = key(1).public().to_line().replace("ed25519", "rsa");
        assert!(TrustedKey::parse_file(&line).unwrap_err().to_string().contains("line 1"));
        let wrong_id = format!("0000000000000000 ed25519 {}", hex(&key(1).public().public));
        assert!(TrustedKey::parse_file(&wrong_id).unwrap_err().to_string().contains("does not match"));
        assert!(Signature::from_file(&"x".repeat(MAX_KEY_FILE_BYTES + 1)).is_err());
    }
}
