//! Choosing where tensors live (`--device`) and in which precision (`--dtype`).

use candle_core::{DType, Device};

use crate::{Error, Result};

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`. `auto` is the first GPU when the crate was built
/// with the `cuda` feature and one is present, else the CPU.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec.trim() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if candle_core::utils::cuda_is_available() {
            Device::new_cuda(0)?
        } else {
            Device::Cpu
        }),
        s if s == "cuda" || s.starts_with("cuda:") => {
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::InvalidArgument(format!(
                    "--device {s}: this build has no CUDA support; rebuild with `--features cuda`"
                )));
            }
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "--device {s}: expected cuda:N with N a GPU index"
                    ))
                })?,
                None => 0,
            };
            Ok(Device::new_cuda(ordinal)?)
        }
        other => Err(Error::InvalidArgument(format!(
            "--device {other:?}: expected auto, cpu, cuda or cuda:N"
        ))),
    }
}

/// A short name for a device, for output.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// The precisions a model can run in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}
