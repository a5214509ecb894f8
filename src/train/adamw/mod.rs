//! AdamW, the optimiser of both fine-tuning chapters, in the two versions they need.
//!
//! - [`AdamWVariant::Torch`] is `torch.optim.AdamW` (what transformers' `Trainer` uses,
//!   `adamw_torch`): the weight decays first (`p *= 1 - lr·wd`), then moves by the
//!   bias-corrected `m̂ / (sqrt(v̂) + eps)`.
//! - [`AdamWVariant::Transformers4`] is the tutorial's `from transformers import AdamW`
//!   (transformers 4.x `optimization.py`, removed in 5): `eps` is added to `sqrt(v)` *before*
//!   the bias correction folds into the step size, and the weight decays after the move.
//!
//! Both are written as the sequence of PyTorch operations they run, one candle operation each,
//! in f32. That order matters little in f32 (the last bit), but it is what decides the outcome
//! in f16, where PyTorch rounds the result of every operation to the tensor's type: with
//! [`HalfMoments::LikeWeights`] each result is rounded to the weights' half type exactly where
//! PyTorch's `model.half()` + AdamW rounds it. See [`AdamW::step`].
//!
//! The optimiser's parameters are *named* (checkpoint names, `h.0.attn.c_attn.weight`), so its
//! state is saved and restored by name and the weight-decay groups follow transformers' rule.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::kernels::{update_in_place, Gradient};
use crate::{Error, Result};

mod config;
mod update;

pub use config::{decays, AdamWConfig, AdamWVariant, HalfMoments};

use update::{torch_step, transformers4_step, ElementStep, Ops, Update};

/// One parameter with its moments (first `m`, second `v`).
struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over named parameters, with state that can be saved and restored.
pub struct AdamW {
    params: Vec<Param>,
    config: AdamWConfig,
    /// Optimizer steps taken. PyTorch counts per parameter, skipping a parameter without a
    /// gradient; every GPT-2 parameter gets one at every step, so one count is the same.
    step_t: usize,
}

/// The file format's name and version, in the safetensors metadata.
const STATE_FORMAT: &str = "gpt2-tutorial-adamw";
const STATE_VERSION: &str = "1";

impl AdamW {
    /// AdamW over `named` parameters (checkpoint names), moments at 0.
    pub fn new(named: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let params = named
            .into_iter()
            .map(|(name, var)| {
                let dtype = moments_dtype(var.dtype(), config.half_moments);
                // Two buffers, not one shared: the in-place update writes both (a shared one
                // would send the first step down the allocating path, a gigabyte of
                // temporaries at gpt2 size - the peak of a short run).
                let m = Tensor::zeros(var.shape(), dtype, var.device())?;
                let v = Tensor::zeros(var.shape(), dtype, var.device())?;
                let decay = decays(&name);
                Ok(Param {
                    name,
                    var,
                    m,
                    v,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            params,
            config,
            step_t: 0,
        })
    }

    /// AdamW over every variable of `varmap`, in name order.
    pub fn from_varmap(varmap: &VarMap, config: AdamWConfig) -> Result<Self> {
        Self::new(named_vars(varmap)?, config)
    }

    /// The hyper-parameters, with the learning rate of the next step.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// The learning rate of the next step (a schedule sets it before each one).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Optimizer steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step_t
    }

    /// The moments `(m, v)` of parameter `name`, in the dtype they are kept in.
    pub fn moments(&self, name: &str) -> Option<(&Tensor, &Tensor)> {
        let p = self.params.iter().find(|p| p.name == name)?;
        Some((&p.m, &p.v))
    }

    /// The name of the first parameter whose moments hold an infinity or a NaN, if any: a
    /// checkpoint of such a state would resume into NaN at its first step.
    pub fn first_non_finite_moment(&self) -> Result<Option<String>> {
        for p in &self.params {
            if !all_finite(&p.m)? || !all_finite(&p.v)? {
                return Ok(Some(p.name.clone()));
            }
        }
        Ok(None)
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_each(|_, p| grads.get(p.var.as_tensor()).map(Gradient::Tensor))
    }

    /// One update from gradients held as f32 host slices, one per parameter in this
    /// optimiser's order (by checkpoint name, as [`named_vars`] sorts them): the written-out
    /// pass's sums, which on the CPU reach the in-place update as they are.
    pub(crate) fn step_from_slices(&mut self, grads: &[Vec<f32>]) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::InvalidArgument(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        self.step_each(|i, _| Some(Gradient::Slice(&grads[i])))
    }

    /// One update of each parameter `gradient` gives a gradient for.
    fn step_each<'g>(
        &mut self,
        gradient: impl Fn(usize, &Param) -> Option<Gradient<'g>>,
    ) -> Result<()> {
        self.step_t += 1;
        let c = self.config;
        let t = self.step_t as f64;
        // Python floats, as PyTorch and transformers compute them.
        let bias_correction1 = 1.0 - c.beta1.powf(t);
        let bias_correction2 = 1.0 - c.beta2.powf(t);
        for (i, p) in self.params.iter_mut().enumerate() {
            let Some(g) = gradient(i, p) else {
                continue;
            };
            let ops = Ops {
                round: (c.half_moments == HalfMoments::LikeWeights && p.var.dtype() != DType::F32)
                    .then_some(p.var.dtype()),
                device: p.var.device().clone(),
            };
            let wd = if p.decay { c.weight_decay } else { 0.0 };
            // On the CPU: the same operations element by element, each result rounded where
            // they round it, in one pass, in place (half buffers widened and rounded back).
            let k = ElementStep::new(&c, wd, bias_correction1, bias_correction2, ops.round);
            let w = p.var.as_tensor();
            let element =
                |w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| k.apply_slices(w, g, m, v);
            if update_in_place(w, g, &p.m, &p.v, element)? {
                continue;
            }
            let g = match g {
                Gradient::Tensor(g) => g.to_dtype(DType::F32)?,
                Gradient::Slice(g) => Tensor::from_slice(g, p.var.shape(), p.var.device())?,
            };
            let x = Update {
                w: p.var.as_tensor().detach().to_dtype(DType::F32)?,
                g,
                m: p.m.to_dtype(DType::F32)?,
                v: p.v.to_dtype(DType::F32)?,
            };
            let y = match c.variant {
                AdamWVariant::Torch => {
                    torch_step(&ops, x, &c, wd, bias_correction1, bias_correction2)?
                }
                AdamWVariant::Transformers4 => {
                    transformers4_step(&ops, x, &c, wd, bias_correction1, bias_correction2)?
                }
            };
            p.var.set(&y.w.to_dtype(p.var.dtype())?)?;
            p.m = y.m.to_dtype(p.m.dtype())?;
            p.v = y.v.to_dtype(p.v.dtype())?;
        }
        Ok(())
    }

    /// Writes the moments (`{name}.exp_avg`, `{name}.exp_avg_sq`, PyTorch's names), the step
    /// count and the config to a safetensors file, beside the target first and then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: BTreeMap<String, &Tensor> = BTreeMap::new();
        for p in &self.params {
            named.insert(format!("{}.exp_avg", p.name), &p.m);
            named.insert(format!("{}.exp_avg_sq", p.name), &p.v);
        }
        let config = serde_json::to_string(&self.config)
            .map_err(|e| Error::InvalidArgument(format!("AdamW config: {e}")))?;
        let metadata = HashMap::from([
            ("format".to_string(), STATE_FORMAT.to_string()),
            ("version".to_string(), STATE_VERSION.to_string()),
            ("step".to_string(), self.step_t.to_string()),
            ("config".to_string(), config),
        ]);
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(named, Some(metadata), &tmp)
            .map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// AdamW over `named` parameters with the state [`AdamW::save`] wrote: its config, step
    /// count and every parameter's moments, checked against the parameters.
    pub fn load(path: &Path, named: Vec<(String, Var)>) -> Result<Self> {
        let device = named
            .first()
            .map_or(Device::Cpu, |(_, v)| v.device().clone());
        let state = AdamWState::load(path, &device)?;
        Self::from_state(named, state)
    }

    /// AdamW over `named` parameters continuing from `state`.
    pub fn from_state(named: Vec<(String, Var)>, mut state: AdamWState) -> Result<Self> {
        let bad = |reason: String| Error::OptimizerState {
            path: state.path.clone(),
            reason,
        };
        let mut params = Vec::with_capacity(named.len());
        for (name, var) in named {
            let (Some(m), Some(v)) = (
                state.tensors.remove(&format!("{name}.exp_avg")),
                state.tensors.remove(&format!("{name}.exp_avg_sq")),
            ) else {
                return Err(bad(format!("no moments for parameter {name}")));
            };
            let dtype = moments_dtype(var.dtype(), state.config.half_moments);
            for (what, t) in [("exp_avg", &m), ("exp_avg_sq", &v)] {
                if t.dims() != var.dims() || t.dtype() != dtype {
                    return Err(bad(format!(
                        "{name}.{what} is {:?} {:?} but the parameter needs {:?} {:?}",
                        t.dtype(),
                        t.dims(),
                        dtype,
                        var.dims()
                    )));
                }
            }
            let decay = decays(&name);
            params.push(Param {
                name,
                var,
                m,
                v,
                decay,
            });
        }
        if let Some(extra) = state.tensors.keys().next() {
            return Err(bad(format!(
                "{extra} belongs to no parameter of this model"
            )));
        }
        Ok(Self {
            params,
            config: state.config,
            step_t: state.step,
        })
    }
}

/// What [`AdamW::save`] wrote, read back: the moments by key, the step count and the config.
#[derive(Clone)]
pub struct AdamWState {
    /// The file it was read from (`optimizer.safetensors` in a checkpoint), for errors.
    pub path: std::path::PathBuf,
    /// The hyper-parameters it was saved with, learning rate included.
    pub config: AdamWConfig,
    /// Optimizer steps taken when it was saved (the `t` of the bias correction).
    pub step: usize,
    tensors: HashMap<String, Tensor>,
}

impl AdamWState {
    /// Reads the state file at `path` onto `device`, checking it is one [`AdamW::save`]
    /// wrote; matching it to a model's parameters is [`AdamW::from_state`]'s work.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bad = |reason: String| Error::OptimizerState {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k).ok_or_else(|| {
                bad(format!(
                    "its metadata has no `{k}`: it was not written by AdamW::save"
                ))
            })
        };
        if field("format")? != STATE_FORMAT || field("version")? != STATE_VERSION {
            return Err(bad(format!(
                "format {:?} version {:?}, expected {STATE_FORMAT:?} version {STATE_VERSION}",
                meta.get("format"),
                meta.get("version")
            )));
        }
        let step = field("step")?
            .parse()
            .map_err(|e| bad(format!("step: {e}")))?;
        let config =
            serde_json::from_str(field("config")?).map_err(|e| bad(format!("config: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let mut tensors = HashMap::new();
        for (key, view) in st.tensors() {
            let t = candle_core::safetensors::Load::load(&view, device)
                .map_err(|e| bad(format!("tensor {key}: {e}")))?;
            tensors.insert(key, t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            config,
            step,
            tensors,
        })
    }
}

/// The variables of `varmap` with their names, sorted by name.
pub fn named_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::InvalidArgument("var map lock poisoned".into()))?;
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

fn moments_dtype(weights: DType, half: HalfMoments) -> DType {
    match half {
        HalfMoments::LikeWeights => weights,
        HalfMoments::F32 => DType::F32,
    }
}

/// Whether every element of `t` is finite. The sum of the magnitudes, in f32, is NaN or
/// infinite exactly when an element is (weights and moments are far below f32's 3.4e38 in all).
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let sum = t
        .to_dtype(candle_core::DType::F32)?
        .abs()?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(sum.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half weights go through the in-place update (widened chunk by chunk, rounded back) and
    /// come out as the operation-by-operation path computes them, bit for bit: both variants,
    /// both kinds of moments, with decay, over three steps.
    #[test]
    fn half_weights_update_in_place_as_the_operations_do() {
        let dev = Device::Cpu;
        // More than one chunk of the in-place update, and not a multiple of it.
        let n = 40_000;
        let values = |k: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| {
                    ((i.wrapping_mul(2_654_435_761).wrapping_add(k * 97)) % 10_007) as f32 / 5e3
                        - 1.0
                })
                .collect()
        };
        for dtype in [DType::BF16, DType::F16] {
            for variant in [AdamWVariant::Torch, AdamWVariant::Transformers4] {
                for half_moments in [HalfMoments::LikeWeights, HalfMoments::F32] {
                    let c = AdamWConfig {
                        weight_decay: 0.01,
                        eps: 1e-6,
                        variant,
                        half_moments,
                        ..AdamWConfig::torch(1e-3)
                    };
                    let w0 = Tensor::from_vec(values(1), n, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let var = Var::from_tensor(&w0).unwrap();
                    let mut opt =
                        AdamW::new(vec![("h.0.mlp.c_fc.weight".into(), var.clone())], c).unwrap();
                    let round = (half_moments == HalfMoments::LikeWeights).then_some(dtype);
                    let md = moments_dtype(dtype, half_moments);
                    let (mut w, mut m, mut v) = (
                        w0.to_dtype(DType::F32).unwrap(),
                        Tensor::zeros(n, md, &dev).unwrap(),
                        Tensor::zeros(n, md, &dev).unwrap(),
                    );
                    for step in 1..=3 {
                        let g = (Tensor::from_vec(values(step + 1), n, &dev).unwrap() * 1e-2)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap();
                        // A store from an empty backward pass, to put the gradient in.
                        let mut grads = Tensor::new(0f32, &dev).unwrap().backward().unwrap();
                        grads.insert(var.as_tensor(), g.clone());
                        opt.step(&grads).unwrap();
                        let t = step as f64;
                        let (bc1, bc2) = (1.0 - c.beta1.powf(t), 1.0 - c.beta2.powf(t));
                        let ops = super::update::Ops {
                            round,
                            device: dev.clone(),
                        };
                        let x = Update {
                            w: w.clone(),
                            g: g.to_dtype(DType::F32).unwrap(),
                            m: m.to_dtype(DType::F32).unwrap(),
                            v: v.to_dtype(DType::F32).unwrap(),
                        };
                        let y = match variant {
                            AdamWVariant::Torch => torch_step(&ops, x, &c, 0.01, bc1, bc2),
                            AdamWVariant::Transformers4 => {
                                transformers4_step(&ops, x, &c, 0.01, bc1, bc2)
                            }
                        }
                        .unwrap();
                        w = y.w.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
                        m = y.m.to_dtype(md).unwrap();
                        v = y.v.to_dtype(md).unwrap();
                        let bits = |t: &Tensor| {
                            let t = t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
                            t.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                        };
                        let what = format!("{dtype:?} {variant:?} {half_moments:?} step {step}");
                        assert_eq!(bits(var.as_tensor()), bits(&w), "{what}: weights");
                        let (om, ov) = opt.moments("h.0.mlp.c_fc.weight").unwrap();
                        assert_eq!((om.dtype(), ov.dtype()), (md, md), "{what}");
                        assert_eq!(bits(om), bits(&m), "{what}: m");
                        assert_eq!(bits(ov), bits(&v), "{what}: v");
                    }
                }
            }
        }
    }
}
