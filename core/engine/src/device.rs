//! Which device runs the forward pass: `auto`, `cpu` or `cuda:N`.
//!
//! The CUDA backend is behind the `cuda` cargo feature and loads the driver, NVRTC and cuBLAS at
//! run time, so a build with the feature still runs (on the CPU) where no GPU is present. `auto`
//! takes GPU 0 when one can be initialised and otherwise falls back to the CPU, saying why.

use std::fmt;
use std::str::FromStr;

/// A device as asked for on the command line or in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// GPU 0 when the CUDA backend can start there, else the CPU.
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// CUDA device `N` (an error, not a fallback, when it cannot be used).
    Cuda(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A device string that is not `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {0:?}: expected auto, cpu, cuda or cuda:N (N a GPU ordinal below 64)")]
pub struct DeviceSpecError(pub String);

/// Most GPUs one host addresses; a bound on a number read from user input.
const MAX_ORDINAL: usize = 64;

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DeviceSpecError(s.chars().take(64).collect());
        match s.trim() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            t => {
                let n = t.strip_prefix("cuda:").ok_or_else(bad)?;
                match n.parse::<usize>() {
                    Ok(n) if n < MAX_ORDINAL => Ok(DeviceSpec::Cuda(n)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = DeviceSpecError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

/// What went wrong on a device: starting it, compiling kernels, or a failed call during a step.
/// Each names the operation; the driver's own message is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// This binary was built without the `cuda` feature.
    #[error("{device} was asked for, but this build has no CUDA backend (rebuild with --features cuda)")]
    NotBuilt {
        /// The device asked for.
        device: DeviceSpec,
    },
    /// A CUDA library could not be loaded.
    #[error("{library} could not be loaded: {hint}")]
    LibraryMissing {
        /// `libcuda` (the driver), `libnvrtc` or `libcublas`.
        library: &'static str,
        /// What to install or where to look.
        hint: &'static str,
    },
    /// The driver is present but reports no such device.
    #[error("cuda:{ordinal} was asked for; the driver reports {count} device(s)")]
    NoSuchDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices present.
        count: usize,
    },
    /// A driver, cuBLAS or launch call failed.
    #[error("CUDA {op} failed: {message}")]
    Call {
        /// The operation (`alloc kv cache`, `gemm wqkv`, `launch attention`, …).
        op: String,
        /// The driver's message.
        message: String,
    },
    /// NVRTC rejected the kernel source (a bug in this build, or an unsupported GPU).
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile {
        /// The target architecture.
        arch: String,
        /// The compiler's log (truncated).
        log: String,
    },
    /// The model does not fit the device memory with room for a KV cache.
    #[error(
        "the device has {free_bytes} bytes free; the weights need {weight_bytes} and the KV cache at least {kv_min_bytes}"
    )]
    OutOfMemory {
        /// Free device memory before loading.
        free_bytes: usize,
        /// Bytes of uploaded weights.
        weight_bytes: usize,
        /// Bytes of the smallest useful KV cache.
        kv_min_bytes: usize,
    },
    /// The model's shape is outside what the kernels handle.
    #[error("the CUDA kernels do not support {what}")]
    Unsupported {
        /// What is out of range.
        what: String,
    },
}

impl DeviceError {
    /// A failed call, with its operation named.
    pub fn call(op: impl Into<String>, e: impl fmt::Display) -> Self {
        DeviceError::Call { op: op.into(), message: e.to_string().chars().take(512).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_and_round_trip() {
        for (s, d) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
            assert_eq!(d.to_string().parse::<DeviceSpec>().unwrap(), d);
        }
        for bad in ["", "gpu:1", "cuda:", "cuda:-1", "cuda:64", "cuda:99999999999999999999", "metal"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{bad}: {e}");
        }
        let j: DeviceSpec = serde_json::from_str("\"cuda:1\"").unwrap();
        assert_eq!(j, DeviceSpec::Cuda(1));
        assert!(serde_json::from_str::<DeviceSpec>("\"tpu\"").is_err());
    }
}
