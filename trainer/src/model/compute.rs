//! Where and in what precision a model trains: `--device cpu|cuda[:N]`, `--dtype f32|bf16`.
//!
//! On the CPU in f32 the fused ops of `model::ops` run; anywhere else (a GPU, or bf16) the model
//! takes its primitive twins, which the guards check the fused ops against. In bf16 only the frozen
//! base is half precision: the LoRA weights, their optimiser state, norms, softmaxes and log-probs
//! stay f32 (`Model::lora_dtype`, `llama::in_f32`).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The device a job trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainDevice {
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl TrainDevice {
    /// `cuda` in a build with the `cuda` feature, `cpu` otherwise: the server's own device.
    pub fn default_for_build() -> Self {
        if cfg!(feature = "cuda") {
            Self::Cuda(0)
        } else {
            Self::Cpu
        }
    }

    /// Opens the device.
    ///
    /// # Errors
    /// `Error::Setting` for CUDA in a build without the `cuda` feature, or a GPU that cannot be
    /// opened (no driver, no such ordinal).
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !cfg!(feature = "cuda") => Err(Error::Setting(
                "this flywheel was built without CUDA: build it with `--features cuda` \
                 (scripts/build-cuda.sh), or train with `--device cpu`"
                    .into(),
            )),
            Self::Cuda(ordinal) => Device::new_cuda(ordinal)
                .map_err(|e| Error::Setting(format!("cannot open CUDA device {ordinal}: {e}"))),
        }
    }
}

impl fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl FromStr for TrainDevice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: expected cpu, cuda or cuda:N")),
        }
    }
}

/// The dtype of the frozen base weights during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainDtype {
    /// Full precision: the log-probs match the server's (which serves f32) to ~1e-5.
    #[default]
    F32,
    /// Half the memory and, on GPUs, the tensor cores; the policy's log-probs then differ from the
    /// served f32 model's by more than GRPO's behaviour check allows for long answers.
    Bf16,
}

impl TrainDtype {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl fmt::Display for TrainDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

impl FromStr for TrainDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown dtype `{s}`: expected f32 or bf16")),
        }
    }
}

/// Device and dtype together, as a job carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compute {
    pub device: TrainDevice,
    pub dtype: TrainDtype,
}

impl Default for Compute {
    fn default() -> Self {
        Self {
            device: TrainDevice::default_for_build(),
            dtype: TrainDtype::F32,
        }
    }
}

/// `a · b` (broadcast), also for bf16/f16 on the CPU, whose matmul candle lacks: there the inputs
/// are widened to f32 and the product rounded back, which is what a GPU's half-precision gemm does
/// too (f32 accumulation). So bf16 training runs, slowly, on the CPU, and CI tests its code path.
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = a.dtype();
    if a.device().is_cpu() && matches!(dtype, DType::BF16 | DType::F16) {
        let wide = |t: &Tensor| t.to_dtype(DType::F32);
        return wide(a)?.broadcast_matmul(&wide(b)?)?.to_dtype(dtype);
    }
    a.broadcast_matmul(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_dtypes_parse_and_print_back() {
        for (text, device) in [
            ("cpu", TrainDevice::Cpu),
            ("cuda:0", TrainDevice::Cuda(0)),
            ("cuda:3", TrainDevice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<TrainDevice>().unwrap(), device);
            assert_eq!(device.to_string(), text);
        }
        assert_eq!("cuda".parse::<TrainDevice>().unwrap(), TrainDevice::Cuda(0));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<TrainDevice>().unwrap_err();
            assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        }
        assert_eq!("bf16".parse::<TrainDtype>().unwrap().dtype(), DType::BF16);
        assert_eq!("f32".parse::<TrainDtype>().unwrap().to_string(), "f32");
        assert!("f16".parse::<TrainDtype>().is_err());
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        if cfg!(feature = "cuda") {
            return;
        }
        let err = TrainDevice::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
        assert!(matches!(TrainDevice::Cpu.open().unwrap(), Device::Cpu));
        assert_eq!(TrainDevice::default_for_build(), TrainDevice::Cpu);
    }
}
