//! GPT-2's parameters as the written-out pass finds them: each one's place in the caller's
//! list by checkpoint name, and their data as the pass reads it.

use candle_core::{CpuStorage, Storage, Tensor};

use crate::kernels::Matrix;

/// A block's parameters, in the order of [`LAYER_PARAMS`].
pub(crate) const LN_1_W: usize = 0;
pub(crate) const LN_1_B: usize = 1;
pub(crate) const C_ATTN_W: usize = 2;
pub(crate) const C_ATTN_B: usize = 3;
pub(crate) const ATTN_PROJ_W: usize = 4;
pub(crate) const ATTN_PROJ_B: usize = 5;
pub(crate) const LN_2_W: usize = 6;
pub(crate) const LN_2_B: usize = 7;
pub(crate) const C_FC_W: usize = 8;
pub(crate) const C_FC_B: usize = 9;
pub(crate) const MLP_PROJ_W: usize = 10;
pub(crate) const MLP_PROJ_B: usize = 11;

/// The checkpoint names of a block's parameters, under `h.{i}.`.
pub(crate) const LAYER_PARAMS: [&str; 12] = [
    "ln_1.weight",
    "ln_1.bias",
    "attn.c_attn.weight",
    "attn.c_attn.bias",
    "attn.c_proj.weight",
    "attn.c_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
];

/// The parameters outside the blocks, first in [`ParamIndex`]'s order.
pub(crate) const WTE: usize = 0;
pub(crate) const WPE: usize = 1;
pub(crate) const LN_F_W: usize = 2;
pub(crate) const LN_F_B: usize = 3;
pub(crate) const OUTER_PARAMS: [&str; 4] = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"];

/// Where each parameter is in the caller's list: the four outer ones, then block by block.
pub(crate) struct ParamIndex(Vec<usize>);

impl ParamIndex {
    /// `None` unless `names` are exactly GPT-2's parameters for `n_layer` blocks and the
    /// head's, `head` (after the blocks).
    pub(crate) fn new(names: &[&str], n_layer: usize, head: &[&str]) -> Option<Self> {
        let wanted = OUTER_PARAMS
            .iter()
            .map(|p| p.to_string())
            .chain(
                (0..n_layer).flat_map(|i| LAYER_PARAMS.iter().map(move |p| format!("h.{i}.{p}"))),
            )
            .chain(head.iter().map(|p| p.to_string()));
        let index: Option<Vec<usize>> =
            wanted.map(|w| names.iter().position(|n| *n == w)).collect();
        index.filter(|i| i.len() == names.len()).map(Self)
    }

    pub(crate) fn outer(&self, p: usize) -> usize {
        self.0[p]
    }

    pub(crate) fn layer(&self, l: usize, p: usize) -> usize {
        self.0[OUTER_PARAMS.len() + l * LAYER_PARAMS.len() + p]
    }

    /// The head's first parameter.
    pub(crate) fn head(&self, n_layer: usize) -> usize {
        self.0[OUTER_PARAMS.len() + n_layer * LAYER_PARAMS.len()]
    }
}

/// The parameters as the pass reads them (each contiguous on the CPU; `None` if one is not):
/// an f32 model's as they are; a bf16 model's product weights (`wte` and each block's four
/// Conv1D weights) as they are, for bf16 products, and the rest - biases, layer norms, `wpe`,
/// the classifier's `score` - widened to f32 for the element-wise code (a few MB).
pub(crate) fn with_params<R>(
    tensors: &[Tensor],
    index: &ParamIndex,
    n_layer: usize,
    f: impl FnOnce(&[Matrix]) -> R,
) -> Option<R> {
    let mut product_weight = vec![false; tensors.len()];
    product_weight[index.outer(WTE)] = true;
    for l in 0..n_layer {
        for p in [C_ATTN_W, ATTN_PROJ_W, C_FC_W, MLP_PROJ_W] {
            product_weight[index.layer(l, p)] = true;
        }
    }
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let widened: Vec<Option<Vec<f32>>> = guards
        .iter()
        .zip(&product_weight)
        .map(|((storage, layout), &product)| match &**storage {
            Storage::Cpu(CpuStorage::BF16(v)) if !product => {
                let (a, b) = layout.contiguous_offsets()?;
                Some(v[a..b].iter().map(|x| x.to_f32()).collect())
            }
            _ => None,
        })
        .collect();
    let params: Option<Vec<Matrix>> = guards
        .iter()
        .zip(&widened)
        .map(|((storage, layout), widened)| {
            if let Some(w) = widened {
                return Some(Matrix::F32(w));
            }
            let (a, b) = layout.contiguous_offsets()?;
            match &**storage {
                Storage::Cpu(CpuStorage::F32(v)) => Some(Matrix::F32(&v[a..b])),
                Storage::Cpu(CpuStorage::BF16(v)) => Some(Matrix::Bf16(&v[a..b])),
                _ => None,
            }
        })
        .collect();
    params.map(|p| f(&p))
}
