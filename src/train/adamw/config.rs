//! AdamW's settings: which AdamW, its hyper-parameters, where a half-precision model keeps its
//! moments, and which parameters decay.

use serde::{Deserialize, Serialize};

/// Which AdamW: PyTorch's, or the one the tutorial imported from transformers 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdamWVariant {
    /// `torch.optim.AdamW`.
    Torch,
    /// transformers 4.x `AdamW` (with `correct_bias=True`, its default).
    Transformers4,
}

/// Where AdamW keeps its moments and does its arithmetic when the weights are f16 or bf16
/// (f32 weights always get f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HalfMoments {
    /// Moments and arithmetic in f32, only the new weight rounded to the half type: the
    /// updates that survive are those larger than half the weight's rounding step.
    F32,
    /// Moments in the weights' type and every operation's result rounded to it, as after
    /// PyTorch's `model.half()`: squared small gradients, and `eps` itself, can round to 0.
    LikeWeights,
}

/// AdamW's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// The learning rate of the next step; a schedule changes it before each one.
    pub lr: f64,
    /// Decay rate of the first moment `m`, the gradients' running mean (PyTorch's
    /// `betas[0]`): 0.9.
    pub beta1: f64,
    /// Decay rate of the second moment `v`, the squared gradients' running mean (PyTorch's
    /// `betas[1]`): 0.999.
    pub beta2: f64,
    /// Added to `sqrt(v)` in the denominator so a tiny `v` cannot blow the step up: 1e-8
    /// in PyTorch, 1e-6 in transformers 4's `AdamW`.
    pub eps: f64,
    /// Applied to the parameters [`decays`] picks; the others get none.
    pub weight_decay: f64,
    /// PyTorch's AdamW or transformers 4's: they order `eps`, bias correction and decay
    /// differently.
    pub variant: AdamWVariant,
    /// Where the moments live and the arithmetic happens when the weights are f16 or bf16.
    pub half_moments: HalfMoments,
}

impl AdamWConfig {
    /// `torch.optim.AdamW`'s defaults except the weight decay (0 here, 0.01 there): betas
    /// (0.9, 0.999), eps 1e-8. transformers' `Trainer` sets the decay from its arguments.
    pub fn torch(lr: f64) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            variant: AdamWVariant::Torch,
            half_moments: HalfMoments::F32,
        }
    }

    /// The tutorial's `AdamW(model.parameters(), lr=LR)` from transformers 4: eps 1e-6, no
    /// weight decay; and, since the tutorial trains after `model.half()`, moments like the
    /// weights.
    pub fn tutorial(lr: f64) -> Self {
        Self {
            eps: 1e-6,
            variant: AdamWVariant::Transformers4,
            half_moments: HalfMoments::LikeWeights,
            ..Self::torch(lr)
        }
    }
}

/// Whether weight decay applies to the parameter `name`, by transformers' `Trainer` rule
/// (`get_decay_parameter_names`): not to biases (any name containing "bias") and not to the
/// parameters of LayerNorm modules - in GPT-2 `ln_1`, `ln_2` and `ln_f`. Everything else
/// (the embeddings, every Conv1D weight, a head's `score.weight`) decays.
pub fn decays(name: &str) -> bool {
    let in_layer_norm = name
        .split('.')
        .any(|segment| matches!(segment, "ln_1" | "ln_2" | "ln_f"));
    !name.contains("bias") && !in_layer_norm
}
