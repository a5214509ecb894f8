//! The number formats of training, and the loss scaling that f16 needs.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::{Error, Result};

// ANCHOR: precision
/// The number formats of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainPrecision {
    /// Everything in f32.
    F32,
    /// f32 master weights and optimiser; forward and backward in this half type (f16 with
    /// loss scaling).
    Mixed(DType),
    /// Weights, activations and gradients in this half type, as after PyTorch's
    /// `model.half()`; where AdamW keeps its moments is its own setting ([`HalfMoments`]:
    /// f32, or half like the weights as PyTorch does).
    ///
    /// [`HalfMoments`]: crate::train::HalfMoments
    Pure(DType),
}
// ANCHOR_END: precision

impl TrainPrecision {
    /// Reads `f32`, `mixed-f16`, `mixed-bf16`, `f16` or `bf16` (the last two: pure half).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "f32" => Self::F32,
            "mixed-f16" => Self::Mixed(DType::F16),
            "mixed-bf16" => Self::Mixed(DType::BF16),
            "f16" => Self::Pure(DType::F16),
            "bf16" => Self::Pure(DType::BF16),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "training precision {s:?}: expected f32, mixed-f16, mixed-bf16, f16 or bf16"
                )))
            }
        })
    }

    /// The dtype of the weights the optimiser updates.
    pub fn weight_dtype(self) -> DType {
        match self {
            Self::F32 | Self::Mixed(_) => DType::F32,
            Self::Pure(d) => d,
        }
    }

    /// The dtype the forward and backward passes run in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Mixed(d) | Self::Pure(d) => d,
        }
    }
}

impl std::fmt::Display for TrainPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 => write!(f, "f32"),
            Self::Mixed(d) => write!(f, "mixed-{}", d.as_str()),
            Self::Pure(d) => write!(f, "{}", d.as_str()),
        }
    }
}

impl std::str::FromStr for TrainPrecision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

// As its name (`"mixed-bf16"`), the spelling checkpoints and `--json` outputs have always used.
impl serde::Serialize for TrainPrecision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for TrainPrecision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(d)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

// ANCHOR: loss_scaler
/// Dynamic loss scaling, with the rules and defaults of PyTorch's `torch.amp.GradScaler`: start
/// at 2^16; after an overflow (a gradient that is inf or NaN) skip the update and halve the
/// scale; after 2000 steps in a row without one, double it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaler {
    scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: usize,
    good_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new(65536.0, 2000)
    }
}

impl LossScaler {
    /// A scaler starting at `init_scale` that doubles after `growth_interval` steps in a row
    /// without an overflow (PyTorch's defaults are 2^16 and 2000).
    pub fn new(init_scale: f64, growth_interval: usize) -> Self {
        Self {
            scale: init_scale,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval,
            good_steps: 0,
        }
    }

    /// The factor the loss is multiplied by now.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Divides the gradients of `vars` in `grads` by the scale. Returns false, and leaves
    /// `grads` unusable, if any of them holds an inf or a NaN.
    pub fn unscale(&self, grads: &mut GradStore, vars: &[Var]) -> Result<bool> {
        for var in vars {
            let Some(g) = grads.get(var) else { continue };
            let g = (g.to_dtype(DType::F32)? / self.scale)?;
            // A sum is inf or NaN when any of its terms is: one reduction per gradient.
            if !g.sum_all()?.to_scalar::<f32>()?.is_finite() {
                return Ok(false);
            }
            grads.insert(var, g.to_dtype(var.dtype())?);
        }
        Ok(true)
    }

    /// Adjusts the scale after a step whose gradients were finite or not.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
        }
    }
}
// ANCHOR_END: loss_scaler
