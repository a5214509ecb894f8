//! The GPT-2 transformer, read top to bottom: LayerNorm → attention → MLP → block → model → LM head.
//!
//! It follows transformers' `modeling_gpt2.py` (the checkpoint layout) and nanoGPT's `model.py`
//! (the reading order). Two GPT-2 details differ from the original Transformer and are worth
//! spotting below: the LayerNorm comes *before* attention and MLP inside each block, and one more
//! LayerNorm (`ln_f`) follows the last block. Shapes use nanoGPT's letters: B batch, T new
//! tokens, S tokens attended to (past + new), C `n_embd`, nh heads, hs head size, V vocabulary.
//!
//! Each layer's arithmetic is written once as the formula, in candle's tensor operations: the
//! `plain_*` functions, which the book shows. The entry points the model calls (`forward`,
//! `attend`, `logits`) are gathered at the end of the file: on the CPU (f32, f16 or bf16) they
//! run a kernel of `src/kernels/` with the same arithmetic in fewer passes, and the plain
//! function otherwise. `tests/perf_paths.rs` checks that both give the same numbers.
//!
//! **Which code trains where.** This model is the reference: it generates, evaluates, and
//! trains through candle's graph (its backward pass) on a GPU, in mixed precision and in f16.
//! Training on the CPU in f32 or pure bf16 takes a second GPT-2 instead, written out forward
//! *and* backward over plain buffers, llm.c's way: [`crate::written_out`]. It calls the same
//! kernels in the same order, so its loss is this model's to the bit and its gradients agree to
//! float rounding (`tests/lm_step.rs` holds the two equal).

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use crate::cache::KvCache;
use crate::dropout::Dropout;
use crate::kernels;
use crate::{Error, Gpt2Config, Result};

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Reads `weight` and `bias` (`size` each) from `vb`.
    pub fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps,
        })
    }

    // ANCHOR: layer_norm
    /// The formula, step by step. In f16 and bf16 the mean and variance are taken in f32.
    pub(crate) fn plain_forward(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = match x.dtype() {
            DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
            _ => x.clone(),
        };
        let mean = x32.mean_keepdim(D::Minus1)?; // (B, T, 1)
        let centred = x32.broadcast_sub(&mean)?; // (B, T, C): x - mean
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?; // (B, T, 1)
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?; // (B, T, C)
        let normed = normed.to_dtype(x.dtype())?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
    // ANCHOR_END: layer_norm
}

/// Softmax over the last dimension (fused when no gradient is needed).
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    // In f16/bf16, candle's CPU softmax (and the composed one training uses, on any device) sums
    // the exponentials in that precision: a row of 1024 keys then misses 1 by a few percent.
    // Its CUDA kernel sums in f32, as we do here by widening (tests/dtypes.rs measures it).
    let half = matches!(x.dtype(), DType::F16 | DType::BF16);
    if half && (x.device().is_cpu() || x.track_op()) {
        return Ok(softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?);
    }
    if x.track_op() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(x)?)
    }
}

/// Hugging Face's `Conv1D`: a linear layer whose weight is stored `[in, out]` (transposed
/// compared with `nn.Linear`). We keep that layout, so `y = x @ W + b` with no transpose.
#[derive(Debug, Clone)]
pub struct Conv1D {
    weight: Tensor, // (in, out)
    bias: Tensor,   // (out)
}

impl Conv1D {
    /// Reads `weight` `(n_in, n_out)` and `bias` from `vb`, in the checkpoint's layout.
    pub fn load(vb: VarBuilder, n_in: usize, n_out: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((n_in, n_out), "weight")?,
            bias: vb.get(n_out, "bias")?,
        })
    }

    // ANCHOR: conv1d
    /// `y = x @ W + b`.
    pub(crate) fn plain_forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, n_in) = x.dims3()?;
        let x = x.reshape((b * t, n_in))?; // (B*T, in)
        let y = x.matmul(&self.weight)?.broadcast_add(&self.bias)?; // (B*T, out)
        Ok(y.reshape((b, t, ()))?) // (B, T, out)
    }
    // ANCHOR_END: conv1d
}

/// Multi-head causal self-attention: every position looks at itself and the positions before it.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention {
    c_attn: Conv1D, // C → 3C: query, key and value for all heads at once
    c_proj: Conv1D, // C → C
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_head: usize,
    scale: f64,
    training: bool,
}

impl CausalSelfAttention {
    /// Reads `c_attn` and `c_proj` from `vb`; dropout starts off (inference).
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Self> {
        let c = cfg.n_embd;
        let hs = cfg.head_dim();
        Ok(Self {
            c_attn: Conv1D::load(vb.pp("c_attn"), c, 3 * c)?,
            c_proj: Conv1D::load(vb.pp("c_proj"), c, c)?,
            attn_dropout: dropout.with_p(cfg.attn_pdrop),
            resid_dropout: dropout.with_p(cfg.resid_pdrop),
            n_head: cfg.n_head,
            scale: if cfg.scale_attn_weights {
                1.0 / (hs as f64).sqrt()
            } else {
                1.0
            },
            training: false,
        })
    }

    // ANCHOR: attention
    /// `mask` is `None` when every query may see every key (one new token, no padding),
    /// else `(B or 1, 1, T, S)` with 1 where attention is allowed.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Tensor> {
        let qkv = self.c_attn.forward(x)?; // (B, T, 3C)
        let y = self.attend(&qkv, mask, cache)?; // (B, T, C)
        self.resid_dropout.forward(&self.c_proj.forward(&y)?)
    }

    /// `softmax(q k^T * scale, masked) v` for every head, from `qkv` `(B, T, 3C)`. With a
    /// cache, the keys and values of earlier tokens come first and this call's are appended.
    fn plain_attend(
        &self,
        qkv: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Tensor> {
        let (b, t, c3) = qkv.dims3()?;
        let c = c3 / 3;
        let hs = c / self.n_head;
        let split = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(D::Minus1, i * c, c)? // (B, T, C)
                .reshape((b, t, self.n_head, hs))? // (B, T, nh, hs)
                .transpose(1, 2)? // (B, nh, T, hs)
                .contiguous()?)
        };
        let (q, mut k, mut v) = (split(0)?, split(1)?, split(2)?);
        if let Some((past_k, past_v)) = cache {
            if let (Some(pk), Some(pv)) = (past_k.as_ref(), past_v.as_ref()) {
                k = Tensor::cat(&[pk, &k], 2)?; // (B, nh, S, hs)
                v = Tensor::cat(&[pv, &v], 2)?; // (B, nh, S, hs)
            }
            *past_k = Some(k.clone());
            *past_v = Some(v.clone());
        }
        let att = q.matmul(&k.t()?)?; // (B, nh, T, S)
        let att = scaled_masked_softmax(&att, self.scale, mask)?;
        let att = self.attn_dropout.forward(&att)?;
        let y = att.matmul(&v)?; // (B, nh, T, hs)
        Ok(y.transpose(1, 2)?.reshape((b, t, c))?) // (B, T, C): heads side by side again
    }
    // ANCHOR_END: attention
}

/// The attention weights: `softmax(where(mask, att * scale, lowest))` over the keys.
/// transformers fills masked scores with the dtype's lowest value rather than -inf, so a fully
/// masked row (a padding query) softmaxes to uniform instead of NaN.
fn plain_scaled_masked_softmax(att: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let att = (att * scale)?;
    let att = match mask {
        Some(mask) => {
            let mask = mask.broadcast_as(att.shape())?;
            let lowest = lowest_finite(att.dtype());
            let fill = Tensor::new(lowest, att.device())?
                .to_dtype(att.dtype())?
                .broadcast_as(att.shape())?;
            mask.where_cond(&att, &fill)?
        }
        None => att,
    };
    softmax_last_dim(&att)
}

// ANCHOR: lowest_finite
/// The most negative finite value of a float dtype, which masked attention scores are set to.
/// It must be the dtype's *own*: f32's lowest (-3.4e38) becomes -inf in f16, and a row with
/// every score -inf (a padding query) softmaxes to NaN, which the next layer spreads.
#[doc(hidden)]
pub fn lowest_finite(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => f64::from(half::f16::MIN),
        DType::BF16 => f64::from(half::bf16::MIN),
        DType::F64 => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}
// ANCHOR_END: lowest_finite

/// The position-wise feed-forward network: widen 4×, GELU, narrow back.
#[derive(Debug, Clone)]
pub struct Mlp {
    c_fc: Conv1D,   // C → 4C
    c_proj: Conv1D, // 4C → C
    activation: Activation,
    dropout: Dropout,
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    /// GPT-2's `gelu_new`: the tanh approximation of GELU.
    GeluTanh,
    GeluErf,
    Relu,
}

impl Activation {
    fn plain_forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::GeluTanh => x.gelu()?, // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            Self::GeluErf => x.gelu_erf()?, // x * P(X <= x), X standard normal
            Self::Relu => x.relu()?,     // max(x, 0)
        })
    }
}

impl Mlp {
    /// Reads `c_fc` and `c_proj` from `vb`, with the config's activation (GPT-2's is `gelu_new`).
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Self> {
        let activation = match cfg.activation_function.as_str() {
            "gelu" => Activation::GeluErf,
            "relu" => Activation::Relu,
            _ => Activation::GeluTanh,
        };
        Ok(Self {
            c_fc: Conv1D::load(vb.pp("c_fc"), cfg.n_embd, cfg.inner_dim())?,
            c_proj: Conv1D::load(vb.pp("c_proj"), cfg.inner_dim(), cfg.n_embd)?,
            activation,
            dropout: dropout.with_p(cfg.resid_pdrop),
        })
    }

    // ANCHOR: mlp
    /// `(B, T, C)` in, `(B, T, C)` out: widen, activate, narrow, dropout.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?; // (B, T, 4C)
        let h = self.activation.forward(&h)?; // (B, T, 4C)
        self.dropout.forward(&self.c_proj.forward(&h)?) // (B, T, C)
    }
    // ANCHOR_END: mlp
}

/// One transformer block. GPT-2 normalises *before* each sub-layer (pre-LN) and adds the
/// result back onto the residual stream.
#[derive(Debug, Clone)]
pub struct Block {
    ln_1: LayerNorm,
    attn: CausalSelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    /// Reads the block's two LayerNorms, attention and MLP from `vb` (`h.N`).
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Self> {
        let (c, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        Ok(Self {
            ln_1: LayerNorm::load(vb.pp("ln_1"), c, eps)?,
            attn: CausalSelfAttention::load(vb.pp("attn"), cfg, dropout)?,
            ln_2: LayerNorm::load(vb.pp("ln_2"), c, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg, dropout)?,
        })
    }

    // ANCHOR: block
    /// One block on the residual stream `(B, T, C)`; `mask`, `cache` as in the attention's.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, mask, cache)?)?;
        let x = (&x + self.mlp.forward(&self.ln_2.forward(&x)?)?)?;
        Ok(x)
    }
    // ANCHOR_END: block
}

/// `GPT2Model`: token + position embeddings, `n_layer` blocks, final LayerNorm.
/// Returns hidden states `(B, T, C)`; the heads in [`crate::heads`] turn them into outputs.
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    wte: Embedding, // token embeddings (V, C), shared with the LM head
    wpe: Embedding, // learned position embeddings (n_positions, C)
    drop: Dropout,
    h: Vec<Block>,
    ln_f: LayerNorm, // GPT-2's extra LayerNorm after the last block
    config: Gpt2Config,
}

impl Gpt2Model {
    /// Reads every layer from `vb` (for inference, [`from_weights`](Self::from_weights) is shorter).
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Self> {
        let c = cfg.n_embd;
        let wte = Embedding::new(vb.get((cfg.vocab_size, c), "wte.weight")?, c);
        let wpe = Embedding::new(vb.get((cfg.n_positions, c), "wpe.weight")?, c);
        let h = (0..cfg.n_layer)
            .map(|i| Block::load(vb.pp(format!("h.{i}")), cfg, dropout))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(vb.pp("ln_f"), c, cfg.layer_norm_epsilon)?;
        Ok(Self {
            wte,
            wpe,
            drop: dropout.with_p(cfg.embd_pdrop),
            h,
            ln_f,
            config: cfg.clone(),
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The token embedding matrix `(V, C)`, which the LM head reuses.
    pub fn wte(&self) -> &Tensor {
        self.wte.embeddings()
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        self.wte().device()
    }

    /// The precision the weights are in.
    pub fn dtype(&self) -> DType {
        self.wte().dtype()
    }

    /// Runs the transformer.
    ///
    /// - `input_ids`: `(B, T)` u32 token ids.
    /// - `attention_mask`: `(B, S)` with 1 for real tokens and 0 for padding, `S` = past + T;
    ///   `None` means no padding.
    /// - `cache`: past keys and values; new ones are appended. Positions continue after the
    ///   cached tokens, as transformers' default `position_ids` do.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let past = cache.as_ref().map_or(0, |c| c.seq_len());
        let s = past + t;
        if t == 0 {
            return Err(Error::EmptyPrompt);
        }
        if s > self.config.n_positions {
            return Err(Error::ContextOverflow {
                len: s,
                max: self.config.n_positions,
            });
        }
        // ANCHOR: model
        let positions = Tensor::arange(past as u32, s as u32, input_ids.device())?; // (T)
        let tok = self.wte.forward(input_ids)?; // (B, T, C)
        let pos = self.wpe.forward(&positions)?; // (T, C)
        let mut x = self.drop.forward(&tok.broadcast_add(&pos)?)?; // (B, T, C)

        let mask = causal_mask(b, t, past, attention_mask, x.device())?;
        for (i, block) in self.h.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            x = block.forward(&x, mask.as_ref(), layer_cache)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        self.ln_f.forward(&x) // (B, T, C)
                              // ANCHOR_END: model
    }

    /// Switches dropout on (training) or off (inference), like PyTorch's `train()` / `eval()`.
    pub fn set_training(&mut self, training: bool) {
        self.drop.set_training(training);
        for block in &mut self.h {
            block.attn.training = training;
            block.attn.attn_dropout.set_training(training);
            block.attn.resid_dropout.set_training(training);
            block.mlp.dropout.set_training(training);
        }
    }
}

/// The attention mask, `(B or 1, 1, T, S)` u8, 1 where query `i` may look at key `j`:
/// causal (`j <= past + i`) and, with an attention mask, not padding. `None` when nothing
/// is masked, which is the case for every step of cached decoding without padding.
#[doc(hidden)]
pub fn causal_mask(
    b: usize,
    t: usize,
    past: usize,
    attention_mask: Option<&Tensor>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let s = past + t;
    let causal = if t > 1 {
        let data: Vec<u8> = (0..t)
            .flat_map(|i| (0..s).map(move |j| u8::from(j <= past + i)))
            .collect();
        Some(Tensor::from_vec(data, (1, 1, t, s), device)?)
    } else {
        None
    };
    let Some(am) = attention_mask else {
        return Ok(causal);
    };
    let (mb, ms) = am.dims2()?;
    if mb != b || ms != s {
        return Err(Error::InvalidArgument(format!(
            "attention_mask has shape [{mb}, {ms}] but the input needs [{b}, {s}] (batch, past + new tokens)"
        )));
    }
    let padding = am.ne(0u32)?.to_dtype(DType::U8)?.reshape((b, 1, 1, s))?; // (B, 1, 1, S)
    Ok(Some(match causal {
        Some(c) => c.broadcast_mul(&padding)?, // (B, 1, T, S)
        None => padding,
    }))
}

/// `GPT2LMHeadModel`: the transformer plus a language-modelling head whose weight *is* `wte`
/// (weight tying), so the logit of token `v` is the dot product of the last hidden state with
/// `v`'s embedding. The tied head adds no parameters.
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    /// The transformer; its `wte` is the head's weight too.
    pub transformer: Gpt2Model,
}

impl Gpt2LmHeadModel {
    /// Reads the transformer from `vb`: the head is `wte`, so there is nothing more to read.
    pub fn load(vb: VarBuilder, cfg: &Gpt2Config, dropout: &Dropout) -> Result<Self> {
        Ok(Self {
            transformer: Gpt2Model::load(vb, cfg, dropout)?,
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &Gpt2Config {
        self.transformer.config()
    }

    /// Logits `(B, T, V)` for every position.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.transformer.forward(input_ids, attention_mask, cache)?; // (B, T, C)
        self.logits(&hidden)
    }

    // ANCHOR: lm_head
    /// The tied head on hidden states `(B, T, C)`: `logits = hidden @ wte^T`.
    pub(crate) fn plain_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, c) = hidden.dims3()?;
        let flat = hidden.reshape((b * t, c))?; // (B*T, C)
        let logits = flat.matmul(&self.transformer.wte().t()?)?; // (B*T, V)
        Ok(logits.reshape((b, t, ()))?) // (B, T, V)
    }
    // ANCHOR_END: lm_head

    /// Logits of the last position only, `(B, V)`: what generation needs, without computing
    /// the head for every prompt position.
    pub fn forward_last(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.transformer.forward(input_ids, attention_mask, cache)?; // (B, T, C)
        let t = hidden.dim(1)?;
        let last = hidden.i((.., t - 1..t, ..))?.contiguous()?; // (B, 1, C)
        Ok(self.logits(&last)?.squeeze(1)?) // (B, V)
    }
}

// ----- The fast paths: where each layer leaves the plain code --------------------------------

// ANCHOR: fast_paths
// Each layer's entry point. On the CPU a kernel in `src/kernels/` computes the same arithmetic
// in fewer passes (in f32; f16 and bf16 are widened and the result rounded once), `None`
// elsewhere; otherwise the plain formula above runs.
// tests/perf_paths.rs checks that both give the same numbers, forward and backward.

impl LayerNorm {
    /// Candle's fused kernel without gradients, a CPU kernel with them, else `plain_forward`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.track_op() && !self.weight.track_op() && x.is_contiguous() {
            // No gradient wanted: candle's fused kernel, on any device.
            let (w, b, eps) = (&self.weight, &self.bias, self.eps as f32);
            return Ok(candle_nn::ops::layer_norm(x, w, b, eps)?);
        }
        let fast = kernels::layer_norm(x, &self.weight, &self.bias, self.eps)?;
        fast.map_or_else(|| self.plain_forward(x), Ok)
    }
}

impl Conv1D {
    /// `y = x @ W + b`, through a CPU kernel where there is one, else `plain_forward`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let fast = kernels::linear(x, &self.weight, &self.bias)?;
        fast.map_or_else(|| self.plain_forward(x), Ok)
    }
}

impl CausalSelfAttention {
    /// Without a cache, all heads as one operation that reads q, k and v straight out of
    /// `qkv`: for inference, or with its own backward pass (and dropout) for training.
    fn attend(
        &self,
        qkv: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Tensor> {
        let (n_head, scale) = (self.n_head, self.scale);
        let fast = match mask {
            _ if cache.is_some() => None,
            Some(mask) if self.training || qkv.track_op() => {
                kernels::attention(qkv, n_head, scale, mask, &self.attn_dropout)?
            }
            _ if !self.training => kernels::causal_attention(qkv, n_head, scale, mask)?,
            _ => None,
        };
        fast.map_or_else(|| self.plain_attend(qkv, mask, cache), Ok)
    }
}

fn scaled_masked_softmax(att: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let fast = kernels::scaled_masked_softmax(att, scale, mask)?;
    fast.map_or_else(|| plain_scaled_masked_softmax(att, scale, mask), Ok)
}

impl Activation {
    fn forward(self, x: &Tensor) -> Result<Tensor> {
        let fast = match self {
            Self::GeluTanh => kernels::gelu_tanh(x)?,
            Self::GeluErf | Self::Relu => None,
        };
        fast.map_or_else(|| self.plain_forward(x), Ok)
    }
}

impl Gpt2LmHeadModel {
    /// Applies the tied head to hidden states `(B, T, C)`; the kernel reads `wte` as it is
    /// stored, with no transposed view.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, t, c) = hidden.dims3()?;
        let flat = hidden.reshape((b * t, c))?; // (B*T, C)
        match kernels::tied_head(&flat, self.transformer.wte())? {
            Some(logits) => Ok(logits.reshape((b, t, ()))?), // (B, T, V)
            None => self.plain_logits(hidden),
        }
    }
}
// ANCHOR_END: fast_paths
