//! The CUDA backend (feature `cuda`): the same forward step as [`crate::model::Model::forward`],
//! on one GPU.
//!
//! - The driver, NVRTC and cuBLAS are loaded at run time (cudarc's `dynamic-loading`), so this
//!   module builds on machines without a CUDA toolkit; [`probe`] checks each library before
//!   cudarc is asked to use it, because cudarc panics when a library is missing.
//! - Weights are dequantized once, at load, to f16 (norms, the RoPE table and the embedding
//!   look-up table stay f32) and uploaded. Every linear layer is one cuBLAS GEMM over the step's
//!   flattened token matrix: f16 inputs, f32 accumulation and f32 output.
//! - RMSNorm (fused with the residual add), RoPE, the KV store, paged attention over the
//!   scheduler's block tables (decode and prefill chunks alike), SiLU·up and greedy selection
//!   with its log-probability are NVRTC-compiled kernels from `kernels.cu`.
//! - KV blocks live in device memory ([`CudaExec`]), sized from free memory and the configured
//!   cap; block ids are the scheduler's, unchanged.
//! - Only the chosen ids and their log-probabilities come back to the host, plus the logits
//!   rows of sequences whose sampling needs the host sampler (temperature, penalties,
//!   alternatives).
//!
//! Every driver, cuBLAS and launch failure becomes a [`DeviceError`] naming the operation; the
//! engine loop fails that step's sequences and keeps running.

// Kernel launches, cuBLAS calls and raw device pointers are unsafe by nature; each use states
// why it is sound.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};

use crate::device::DeviceError;

mod exec;
mod weights;

pub(crate) use exec::CudaExec;
pub use weights::CudaModel;

/// The kernel source, compiled by NVRTC for the device at load.
pub const KERNELS: &str = include_str!("kernels.cu");

fn call<T, E: std::fmt::Display>(op: &str, r: Result<T, E>) -> Result<T, DeviceError> {
    r.map_err(|e| DeviceError::call(op, e))
}

/// Checks that the driver, NVRTC and cuBLAS libraries can be loaded and that `ordinal` names a
/// device, then opens it. Never panics, whatever the machine has.
pub fn probe(ordinal: usize) -> Result<Arc<CudaContext>, DeviceError> {
    // SAFETY: each check only tries to `dlopen` the library by its usual names.
    let (driver, nvrtc, cublas) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
        )
    };
    if !driver {
        return Err(DeviceError::LibraryMissing {
            library: "libcuda (the NVIDIA driver)",
            hint: "no NVIDIA driver is installed on this machine",
        });
    }
    if !nvrtc {
        return Err(DeviceError::LibraryMissing {
            library: "libnvrtc",
            hint: "install the CUDA 12 runtime compiler (e.g. the nvidia-cuda-nvrtc-cu12 wheel) and put its lib directory on LD_LIBRARY_PATH",
        });
    }
    if !cublas {
        return Err(DeviceError::LibraryMissing {
            library: "libcublas",
            hint: "install cuBLAS 12 (e.g. the nvidia-cublas-cu12 wheel) and put its lib directory on LD_LIBRARY_PATH",
        });
    }
    let count = call("cuInit / device count", CudaContext::device_count())?;
    let count = usize::try_from(count).unwrap_or(0);
    if ordinal >= count {
        return Err(DeviceError::NoSuchDevice { ordinal, count });
    }
    call("open device", CudaContext::new(ordinal))
}

/// NVRTC flags, the same for PTX and CUBIN. Precise division and square roots, no flushing of
/// denormals: the CPU backend is the reference.
fn nvrtc_flags(arch: &str) -> Vec<String> {
    [&format!("--gpu-architecture={arch}"), "--std=c++14", "--prec-div=true", "--prec-sqrt=true", "--ftz=false"]
        .map(String::from)
        .to_vec()
}

/// Compiles [`KERNELS`] to a CUBIN for `arch` (`sm_90`, …): machine code the driver loads as
/// is, where PTX from a newer NVRTC than the driver would be refused by its JIT. Needs only
/// libnvrtc, no GPU.
pub fn compile_cubin(arch: &str) -> Result<Vec<u8>, DeviceError> {
    use cudarc::nvrtc::{result as nv, sys as nvs};
    let err = |log: String| DeviceError::Compile { arch: arch.to_string(), log: log.chars().take(4000).collect() };
    let src = std::ffi::CString::new(KERNELS).map_err(|_| err("the kernel source contains a NUL byte".into()))?;
    let prog = nv::create_program(&src, Some(c"chorus_kernels.cu")).map_err(|e| err(format!("{e:?}")))?;
    // SAFETY: `prog` was created above and is destroyed once, at the end; every buffer handed
    // to NVRTC is sized from the size NVRTC reported for it.
    unsafe {
        let r = match nv::compile_program(prog, &nvrtc_flags(arch)) {
            Err(e) => {
                let log = nv::get_program_log(prog).unwrap_or_default();
                let log: Vec<u8> = log.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
                Err(err(format!("{e:?}: {}", String::from_utf8_lossy(&log))))
            }
            Ok(()) => {
                let mut size = 0usize;
                if nvs::nvrtcGetCUBINSize(prog, &mut size) != nvs::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(err(format!("no CUBIN for {arch} (is it a real architecture, sm_XY?)")))
                } else {
                    let mut buf = vec![0u8; size];
                    if nvs::nvrtcGetCUBIN(prog, buf.as_mut_ptr().cast()) == nvs::nvrtcResult::NVRTC_SUCCESS {
                        Ok(buf)
                    } else {
                        Err(err("nvrtcGetCUBIN failed".into()))
                    }
                }
            }
        };
        let _ = nv::destroy_program(prog);
        r
    }
}

/// Compiles [`KERNELS`] to PTX for `arch` (`compute_90`, …), for the driver to JIT. Needs only
/// libnvrtc, no GPU.
pub fn compile(arch: &str) -> Result<cudarc::nvrtc::Ptx, DeviceError> {
    let opts = cudarc::nvrtc::CompileOptions {
        options: nvrtc_flags(arch),
        name: Some("chorus_kernels.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS, opts).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        DeviceError::Compile { arch: arch.to_string(), log: log.chars().take(4000).collect() }
    })
}

#[derive(Debug)]
struct Kernels {
    embed_rows: CudaFunction,
    residual_rmsnorm: CudaFunction,
    gather_add: CudaFunction,
    rope: CudaFunction,
    kv_store: CudaFunction,
    attention: CudaFunction,
    silu_mul: CudaFunction,
    argmax_logprob: CudaFunction,
    _module: Arc<CudaModule>,
}

impl Kernels {
    fn load(ctx: &Arc<CudaContext>) -> Result<Self, DeviceError> {
        let (major, minor) = call("compute capability", ctx.compute_capability())?;
        // Machine code for this GPU first; PTX (JIT-compiled by the driver) where this NVRTC
        // cannot emit code for it (a GPU newer than the compiler).
        let module = match compile_cubin(&format!("sm_{major}{minor}")) {
            Ok(cubin) => call("load kernel module (cubin)", ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)))?,
            Err(_) => {
                let ptx = compile(&format!("compute_{major}{minor}"))?;
                call("load kernel module (ptx)", ctx.load_module(ptx))?
            }
        };
        let f = |name: &str| call(&format!("load kernel {name}"), module.load_function(name));
        Ok(Self {
            embed_rows: f("embed_rows")?,
            residual_rmsnorm: f("residual_rmsnorm")?,
            gather_add: f("gather_add")?,
            rope: f("rope")?,
            kv_store: f("kv_store")?,
            attention: f("attention")?,
            silu_mul: f("silu_mul")?,
            argmax_logprob: f("argmax_logprob")?,
            _module: module,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says on the terminal that a test was skipped and why. Written to stderr directly, past the
    /// test harness's capture, so a skip is visible in every `cargo test` run.
    fn skipped(test: &str, why: &str) {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    }

    /// The NVRTC wheel the compile check fetches where the machine has no libnvrtc.
    const NVRTC_WHEEL: &str = "nvidia-cuda-nvrtc-cu12==12.9.86";

    /// Makes libnvrtc loadable: already on the library path, or fetched once with pip into the
    /// model cache and loaded by absolute path (a later `dlopen` by name then finds it by its
    /// soname). `Err` says why not.
    fn ensure_nvrtc() -> Result<(), String> {
        // SAFETY: only tries to dlopen the library.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Ok(());
        }
        let dir = crate::model_store::cache_dir().join("nvrtc-12.9.86");
        let lib = dir.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
        if !lib.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let script = "import glob, sys, zipfile\n\
                z = zipfile.ZipFile(glob.glob(sys.argv[1] + '/*.whl')[0])\n\
                [z.extract(n, sys.argv[1]) for n in z.namelist() if '/lib/' in n]\n";
            let ok = std::process::Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--disable-pip-version-check",
                    "-q",
                ])
                .arg("-d")
                .arg(&dir)
                .arg(NVRTC_WHEEL)
                .status()
                .is_ok_and(|s| s.success())
                && std::process::Command::new("python3")
                    .args(["-c", script])
                    .arg(&dir)
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok || !lib.exists() {
                return Err(format!("libnvrtc is not installed and `pip download {NVRTC_WHEEL}` did not provide it"));
            }
        }
        // SAFETY: loading NVIDIA's NVRTC library runs no initialisers beyond its own; it stays
        // loaded for the life of the test process.
        let l = unsafe { libloading::Library::new(&lib) }.map_err(|e| format!("loading {}: {e}", lib.display()))?;
        std::mem::forget(l);
        // SAFETY: as above.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(format!("{} loaded but is not found by name", lib.display()))
        }
    }

    /// NVRTC needs no GPU: the kernel source must compile for the architectures we serve on
    /// (Ampere, Hopper). Skipped, saying why, only where no libnvrtc can be had.
    #[test]
    fn kernels_compile_with_nvrtc() {
        if let Err(why) = ensure_nvrtc() {
            skipped("kernels_compile_with_nvrtc", &why);
            return;
        }
        for arch in ["compute_80", "compute_90"] {
            let ptx = compile(arch).unwrap_or_else(|e| panic!("{e}"));
            let text = ptx.to_src();
            for name in [
                "embed_rows",
                "residual_rmsnorm",
                "gather_add",
                "rope",
                "kv_store",
                "attention",
                "silu_mul",
                "argmax_logprob",
            ] {
                assert!(text.contains(&format!(".entry {name}(")), "{arch}: no entry point {name}");
            }
        }
    }

    /// Without a driver, asking for a GPU is a typed error, not a panic.
    #[test]
    fn no_driver_is_a_typed_error() {
        // SAFETY: only tries to dlopen the library.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            skipped("no_driver_is_a_typed_error", "this machine has a CUDA driver");
            return;
        }
        let e = probe(0).unwrap_err();
        assert!(matches!(e, DeviceError::LibraryMissing { .. }), "{e}");
        assert!(e.to_string().contains("libcuda"), "{e}");
    }
}
