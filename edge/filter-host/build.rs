//! Builds the filters in `wasm-filters/` (their own workspace, target wasm32-wasip2) so the
//! host can embed the shipped chain and its tests can load real components. Adds the target
//! with rustup when it is missing (automatic toolchain installs are off on our machines).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let filters = manifest_dir.join("../../wasm-filters").canonicalize().expect("wasm-filters/ beside edge/");
    for sub in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "wit",
        "sdk",
        "auth",
        "auth-core",
        "ratelimit",
        "presafety",
        "presafety-rules",
        "testing",
    ] {
        println!("cargo:rerun-if-changed={}", filters.join(sub).display());
    }
    println!("cargo:rerun-if-env-changed=CHORUS_FILTERS_PREBUILT");

    // An operator or packager may hand over prebuilt components instead.
    if let Some(dir) = std::env::var_os("CHORUS_FILTERS_PREBUILT") {
        println!("cargo:rustc-env=CHORUS_FILTER_WASM_DIR={}", PathBuf::from(dir).display());
        return;
    }

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    ensure_target(&rustc);

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = shared_target_dir(&out_dir).join("wasm-filters");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Run from inside wasm-filters/ so its .cargo/config.toml (stack size) applies.
    cmd.current_dir(&filters)
        .args(["build", "--release", "--locked", "--workspace", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir);
    // What the outer build set for host code must not leak into the guest build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "RUSTDOCFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for wasm-filters");
    assert!(status.success(), "building wasm-filters for {TARGET} failed (see the output above)");
    println!("cargo:rustc-env=CHORUS_FILTER_WASM_DIR={}", target_dir.join(TARGET).join("release").display());
}

fn ensure_target(rustc: &str) {
    let libdir = Command::new(rustc).args(["--print", "target-libdir", "--target", TARGET]).output();
    let present =
        libdir.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if present.as_deref().is_some_and(|d| Path::new(d).join("libstd.rlib").exists() || has_std(Path::new(d))) {
        return;
    }
    println!("cargo:warning=adding the {TARGET} target with rustup");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "`rustup target add {TARGET}` failed; install the target and retry"
    );
}

fn has_std(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        .unwrap_or(false)
}

/// The root of the outer build's target directory (it holds CACHEDIR.TAG), so every profile
/// and `cargo clippy` share one guest build.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.to_path_buf())
}
