//! Choosing where tensors live (`--device`) and in which precision (`--dtype`).
//!
//! The tutorial runs gpt2-xl on a CUDA GPU (`.to("cuda")`), in f32 for generation, and calls
//! `model.half()` only to fine-tune; here that is `--device cuda` on a build with
//! `--features cuda`, and `--dtype f16` for half precision. Half precision
//! also runs on the CPU (candle multiplies f16 with the gemm crate and bf16 by widening to f32),
//! which is slower than f32 there but lets the tests check half-precision numerics anywhere.

use candle_core::{DType, Device};

use crate::{Error, Result};

// ANCHOR: parse_device
/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` is the first GPU when the crate was built
/// with the `cuda` feature and one is present, else the CPU.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        // `cuda_is_available` only says the crate was built with CUDA; a GPU must also be there.
        "auto" if candle_core::utils::cuda_is_available() => {
            Ok(Device::new_cuda(0).unwrap_or(Device::Cpu))
        }
        "auto" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::InvalidArgument(format!(
                    "device {s:?}: this build has no CUDA support; rebuild with `--features cuda`"
                )));
            }
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "device {s:?}: expected cuda:N with N a GPU index"
                    ))
                })?,
                None => 0,
            };
            // Without a driver or a GPU, CUDA's own error (CUDA_ERROR_NO_DEVICE, ...) needs context.
            Device::new_cuda(ordinal).map_err(|e| {
                Error::InvalidArgument(format!(
                    "device {s:?}: cannot open GPU {ordinal} ({e}); check that `nvidia-smi` lists it, or use the CPU (`cpu`)"
                ))
            })
        }
        other => Err(Error::InvalidArgument(format!(
            "device {other:?}: expected auto, cpu, cuda or cuda:N"
        ))),
    }
}
// ANCHOR_END: parse_device

/// A short name for a device, for output.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// The precisions a model can run in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Precision {
    /// 32-bit floats: what the checkpoints store, and the reference for the others.
    #[default]
    F32,
    /// IEEE half precision, the tutorial's `torch.float16`: 11-bit mantissa, largest value 65504.
    F16,
    /// bfloat16: f32's range with an 8-bit mantissa (coarser than f16, but never overflows).
    Bf16,
}

impl Precision {
    /// The candle dtype tensors take in this precision.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }

    /// The flag's spelling, for output.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }
}
