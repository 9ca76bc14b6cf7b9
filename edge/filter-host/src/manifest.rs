//! A filter's manifest (`<name>.toml`, signed together with the module): who it is, what it
//! may see and set, and how much time and memory each call gets.

use serde::Deserialize;

/// Largest manifest file read.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024;
/// Bounds an operator or author cannot raise per filter.
pub const MAX_BUDGET_MS: u64 = 100;
pub const MAX_MEMORY_MIB: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// See the raw credential headers (`authorization`, `x-api-key`).
    Credentials,
    /// Set the identity annotations `tenant`, `user` and `tier`.
    Identity,
}

/// What happens to the request when the filter fails (trap, deadline, memory, bad verdict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// 503: the request is refused (the safe default for policy).
    #[default]
    Deny,
    /// The filter is skipped.
    Allow,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// CPU-time budget of one call (the host also stops a call at 20× this in wall-clock time,
    /// and never sooner than 100 ms).
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u64,
    /// Linear memory cap.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    #[serde(default)]
    pub on_error: OnError,
}

fn default_budget_ms() -> u64 {
    5
}

fn default_memory_mib() -> u32 {
    16
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest: {0}")]
pub struct ManifestError(pub String);

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError(format!("{} bytes is over the {MAX_MANIFEST_BYTES}-byte limit", text.len())));
        }
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError(e.message().to_owned()))?;
        if !valid_name(&m.name) {
            return Err(ManifestError(format!("name {:?} must be 1-32 of [a-z0-9-], starting with a letter", m.name)));
        }
        if m.version.is_empty() || m.version.len() > 32 {
            return Err(ManifestError("version must be 1-32 characters".into()));
        }
        if m.description.len() > 512 {
            return Err(ManifestError("description is over 512 bytes".into()));
        }
        if !(1..=MAX_BUDGET_MS).contains(&m.budget_ms) {
            return Err(ManifestError(format!("budget-ms {} must be in 1..={MAX_BUDGET_MS}", m.budget_ms)));
        }
        if !(1..=MAX_MEMORY_MIB).contains(&m.memory_mib) {
            return Err(ManifestError(format!("memory-mib {} must be in 1..={MAX_MEMORY_MIB}", m.memory_mib)));
        }
        Ok(m)
    }

    pub fn grants(&self, cap: Capability) -> bool {
        self.capabilities.contains(&cap)
    }
}

pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_refuses_bad_fields() {
        let m =
            Manifest::parse("name = \"auth\"\nversion = \"0.1.0\"\ncapabilities = [\"credentials\", \"identity\"]\n")
                .unwrap();
        assert_eq!((m.budget_ms, m.memory_mib, m.on_error), (5, 16, OnError::Deny));
        assert!(m.grants(Capability::Credentials));
        let bad = |t: &str| Manifest::parse(t).unwrap_err().0;
        assert!(bad("name = \"Auth\"\nversion = \"1\"").contains("name"));
        assert!(bad("name = \"a\"\nversion = \"1\"\nbudget-ms = 1000").contains("budget-ms"));
        assert!(bad("name = \"a\"\nversion = \"1\"\nmemory-mib = 0").contains("memory-mib"));
        assert!(bad("name = \"a\"\nversion = \"1\"\ncapabilities = [\"root\"]").contains("unknown variant"));
        assert!(bad("name = \"a\"\nversion = \"1\"\nsurprise = 1").contains("unknown field"));
        assert!(bad(&"#".repeat(MAX_MANIFEST_BYTES + 1)).contains("limit"));
    }
}
