//! The weights of a GPT-2: fresh initialisation, loading and saving safetensors.
//!
//! Keys follow Hugging Face's checkpoints. A `GPT2Model` checkpoint stores `wte.weight`,
//! `h.0.attn.c_attn.weight`, ...; the task models (`GPT2LMHeadModel`, `GPT2For...`) store the
//! same under `transformer.` plus their head (`score.weight`, ...). [`Weights`] keeps base keys
//! without the prefix and head keys as they are, so both kinds load, and saves the task layout,
//! which transformers reads back into any GPT-2 class.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use safetensors::SafeTensors;

use crate::{Error, Gpt2Config, Result};

const PREFIX: &str = "transformer.";

/// Keys that old checkpoints carry but that are not parameters: the causal-mask buffers of
/// transformers < 4.x (`h.N.attn.bias`, `h.N.attn.masked_bias`) and the tied `lm_head.weight`.
fn is_ignored(key: &str) -> bool {
    key == "lm_head.weight" || key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias")
}

/// A named set of tensors in checkpoint naming, checked against a config.
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    device: Device,
    dtype: DType,
}

// ANCHOR: init
/// GPT-2's initialisation (transformers' `_init_weights`): every weight matrix and embedding
/// from N(0, 0.02), biases 0, LayerNorm gain 1 and shift 0, and the *residual scaling*:
/// each `c_proj` weight, the last layer before a residual addition, gets its standard deviation
/// divided by sqrt(2 · n_layer), because every block adds two such outputs to the residual
/// stream and their variance would otherwise grow with depth.
fn init_std(cfg: &Gpt2Config, name: &str) -> Option<f64> {
    let std = cfg.initializer_range;
    if name.ends_with(".bias") || name.contains("ln_") {
        None // constant: zeros or ones
    } else if name.ends_with("c_proj.weight") {
        Some(std / (2.0 * cfg.n_layer as f64).sqrt())
    } else {
        Some(std)
    }
}
// ANCHOR_END: init

/// Samples a `(shape)` tensor from N(0, std) with our own seeded generator.
pub fn normal_tensor(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    std: f64,
    device: &Device,
) -> Result<Tensor> {
    let normal = Normal::new(0f32, std as f32)
        .map_err(|e| Error::InvalidArgument(format!("bad standard deviation {std}: {e}")))?;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| normal.sample(rng)).collect();
    Ok(Tensor::from_vec(data, shape, device)?)
}

impl Weights {
    /// Fresh GPT-2 weights for `cfg`, deterministic for a given `seed`.
    pub fn init(cfg: &Gpt2Config, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let t = match init_std(cfg, &name) {
                Some(std) => normal_tensor(&mut rng, &shape, std, device)?,
                None if name.ends_with(".weight") => Tensor::ones(shape, DType::F32, device)?,
                None => Tensor::zeros(shape, DType::F32, device)?,
            };
            tensors.insert(name, t);
        }
        Ok(Self {
            tensors,
            device: device.clone(),
            dtype: DType::F32,
        })
    }

    /// Loads `model.safetensors` (memory-mapped), with or without the `transformer.` prefix,
    /// converts to `dtype`, and checks every parameter `cfg` needs is there with its shape.
    pub fn load(path: &Path, cfg: &Gpt2Config, device: &Device, dtype: DType) -> Result<Self> {
        if !path.exists() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let corrupt = |reason: String| Error::CorruptWeights {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is only read, and nothing here writes to it while it is mapped.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| corrupt(e.to_string()))?;

        // Copy tensors one by one and hand each copied range back to the kernel, so the mapped
        // pages and the copies are not both resident: peak memory stays near one copy. While a
        // tensor is copied both its pages and its copy are resident, so the largest (wte, last
        // in the file) goes first, when nothing else has been copied yet.
        let mut views = st.tensors();
        views.sort_by_key(|(_, v)| std::cmp::Reverse(v.data().len()));
        let page = 4096;
        let mut tensors = HashMap::new();
        for (key, view) in views {
            let name = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
            if is_ignored(&name) {
                continue;
            }
            let t = if view.dtype() == safetensors::Dtype::F32 && device.is_cpu() {
                // f32 on the CPU: copied by hand onto huge pages (src/memory.rs).
                crate::memory::f32_tensor_on_huge_pages(view.data(), view.shape())
                    .map_err(|e| corrupt(format!("tensor {key}: {e}")))?
            } else {
                candle_core::safetensors::Load::load(&view, device)
                    .map_err(|e| corrupt(format!("tensor {key}: {e}")))?
            };
            let t = if t.dtype() == dtype {
                t
            } else {
                t.to_dtype(dtype)?
            };
            tensors.insert(name, t);
            let start = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
            let first = start / page * page;
            let end = (start + view.data().len()).div_ceil(page) * page;
            let end = end.min(mmap.len());
            if end > first {
                // SAFETY: this tensor's bytes were copied and are never read through the map
                // again. The pages at either end may hold a neighbour's bytes too: for a read-only
                // file map DONTNEED only drops pages, and a later read faults them back in.
                let _ = unsafe {
                    mmap.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        end - first,
                    )
                };
            }
        }
        let weights = Self {
            tensors,
            device: device.clone(),
            dtype,
        };
        weights.check(cfg)?;
        Ok(weights)
    }

    /// Checks that every base-model parameter of `cfg` is present with the right shape.
    pub fn check(&self, cfg: &Gpt2Config) -> Result<()> {
        for (name, shape) in cfg.parameter_shapes() {
            match self.tensors.get(&name) {
                None => {
                    return Err(Error::WeightMismatch(format!(
                        "{name} is missing from the checkpoint (is it a GPT-2 checkpoint?)"
                    )))
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(Error::WeightMismatch(format!(
                        "{name} has shape {:?} but the config (n_embd {}, n_layer {}, vocab_size {}, n_positions {}) needs {:?}: config.json and model.safetensors come from different models",
                        t.dims(), cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.n_positions, shape
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Writes the weights as a transformers checkpoint: base keys under `transformer.`, head
    /// keys as they are, `format: pt` metadata (transformers refuses safetensors without it).
    /// The file is written beside the target and renamed, so a failed save never destroys an
    /// earlier checkpoint.
    pub fn save(&self, path: &Path) -> Result<()> {
        let named: BTreeMap<String, &Tensor> = self
            .tensors
            .iter()
            .map(|(k, t)| {
                let key = if is_head_key(k) {
                    k.clone()
                } else {
                    format!("{PREFIX}{k}")
                };
                (key, t)
            })
            .collect();
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(named, Some(metadata), &tmp)
            .map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// A `VarBuilder` over these tensors, for inference.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.tensors.clone(), self.dtype, &self.device)
    }

    /// Trainable copies of these tensors, for fine-tuning: a `VarMap` whose `VarBuilder`
    /// hands out `Var`s that the optimiser updates in place.
    pub fn to_varmap(&self) -> Result<VarMap> {
        self.to_varmap_in(self.dtype)
    }

    /// Like [`Weights::to_varmap`], each tensor cast to `dtype` (the precision it will train in).
    pub fn to_varmap_in(&self, dtype: DType) -> Result<VarMap> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::InvalidArgument("var map lock poisoned".into()))?;
            for (k, t) in &self.tensors {
                data.insert(
                    k.clone(),
                    candle_core::Var::from_tensor(&t.to_dtype(dtype)?)?,
                );
            }
        }
        Ok(varmap)
    }

    /// The current values of a `VarMap` (after training) as `Weights`.
    pub fn from_varmap(varmap: &VarMap) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::InvalidArgument("var map lock poisoned".into()))?;
        let mut tensors = HashMap::new();
        let (mut device, mut dtype) = (Device::Cpu, DType::F32);
        for (k, v) in data.iter() {
            let t = v.as_tensor().detach();
            device = t.device().clone();
            dtype = t.dtype();
            tensors.insert(k.clone(), t);
        }
        Ok(Self {
            tensors,
            device,
            dtype,
        })
    }

    /// The tensor named `name` in checkpoint naming (`h.0.attn.c_attn.weight`, base keys
    /// without the `transformer.` prefix; `score.weight` for a head), if there is one.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Adds or replaces a tensor (a head's weight, say).
    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.insert(name.into(), t);
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the tensors are kept in (f32, or f16/bf16 for a half-precision model).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Total number of scalars stored (each tied tensor once).
    pub fn num_parameters(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }

    /// Bytes the tensors take in memory.
    pub fn num_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

/// The key prefixes of the heads' parameters: they live beside `transformer.`, not inside it.
pub const HEAD_PREFIXES: [&str; 3] = ["score.", "classifier.", "qa_outputs."];

/// Whether `k` names a head's parameter (see [`HEAD_PREFIXES`]).
pub fn is_head_key(k: &str) -> bool {
    HEAD_PREFIXES.iter().any(|p| k.starts_with(p))
}
