//! AdamW in one parallel pass per parameter, in place: `candle_nn::AdamW`'s update, bit for
//! bit.

use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Var};
use candle_nn::ParamsAdamW;
use rayon::prelude::*;

use super::contiguous;
use crate::{Error, Result};

/// AdamW with decoupled weight decay, exactly `candle_nn::AdamW`'s update (same formula, same
/// order of operations, same f64 constants rounded to f32), made in one parallel pass over each
/// parameter, in place. The moments live here as plain buffers. Parameters that are not f32 on
/// the CPU are refused when the optimiser is built.
pub struct FusedAdamW {
    vars: Vec<(Var, Mutex<Moments>)>,
    params: ParamsAdamW,
    step_t: usize,
}

/// First and second moments of one parameter.
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl FusedAdamW {
    pub fn new(vars: Vec<Var>, params: ParamsAdamW) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|var| {
                if !var.device().is_cpu() || var.dtype() != DType::F32 {
                    return Err(Error::InvalidArgument(format!(
                        "FusedAdamW runs on f32 parameters on the CPU, got {:?} on {:?}: use candle_nn::AdamW",
                        var.dtype(),
                        var.device()
                    )));
                }
                let n = var.elem_count();
                let moments = Moments {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                };
                Ok((var, Mutex::new(moments)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            params,
            step_t: 0,
        })
    }

    pub fn params(&self) -> &ParamsAdamW {
        &self.params
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_t += 1;
        let p = &self.params;
        let t = self.step_t as i32;
        let update = AdamWUpdate {
            beta1: p.beta1,
            beta2: p.beta2,
            scale_m: 1.0 / (1.0 - p.beta1.powi(t)),
            scale_v: 1.0 / (1.0 - p.beta2.powi(t)),
            decay: 1.0 - p.lr * p.weight_decay,
            lr: p.lr,
            eps: p.eps,
        };
        for (var, moments) in &self.vars {
            let Some(g) = grads.get(var) else { continue };
            let mut moments = moments
                .lock()
                .map_err(|_| Error::InvalidArgument("AdamW moments poisoned".into()))?;
            let op = AdamWInPlace {
                update,
                moments: Mutex::new(&mut moments),
            };
            var.as_tensor().inplace_op2(&g.contiguous()?, &op)?;
        }
        Ok(())
    }
}

impl candle_nn::Optimizer for FusedAdamW {
    type Config = ParamsAdamW;

    fn new(vars: Vec<Var>, params: ParamsAdamW) -> candle_core::Result<Self> {
        FusedAdamW::new(vars, params).map_err(candle_core::Error::wrap)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        FusedAdamW::step(self, grads).map_err(candle_core::Error::wrap)
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

/// The constants of one AdamW step, in f64 as `candle_nn::AdamW` computes them.
#[derive(Clone, Copy)]
struct AdamWUpdate {
    beta1: f64,
    beta2: f64,
    scale_m: f64,
    scale_v: f64,
    decay: f64,
    lr: f64,
    eps: f64,
}

impl AdamWUpdate {
    /// `candle_nn::AdamW`, element-wise. Each `tensor * f64` there is an affine map whose factor
    /// is rounded to f32, and `x + f64` likewise; the same roundings happen here.
    #[inline]
    fn apply(&self, theta: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        let f = |x: f64| x as f32;
        *m = *m * f(self.beta1) + g * f(1.0 - self.beta1);
        *v = *v * f(self.beta2) + (g * g) * f(1.0 - self.beta2);
        let m_hat = *m * f(self.scale_m);
        let v_hat = *v * f(self.scale_v);
        let adjusted = m_hat / (v_hat.sqrt() + f(self.eps));
        *theta = *theta * f(self.decay) - adjusted * f(self.lr);
    }
}

/// The in-place update of one parameter from its gradient; the moments ride along.
struct AdamWInPlace<'a> {
    update: AdamWUpdate,
    moments: Mutex<&'a mut Moments>,
}

/// Elements per parallel task: big enough that scheduling costs nothing, small enough to share.
const ADAMW_CHUNK: usize = 1 << 16;

impl InplaceOp2 for AdamWInPlace<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        ts: &mut CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let g = contiguous::<f32>(self.name(), gs, gl)?;
        let theta = match ts {
            CpuStorage::F32(v) => v.as_mut_slice(),
            _ => candle_core::bail!("{}: expected f32 parameters", self.name()),
        };
        let Some((start, end)) = tl.contiguous_offsets() else {
            candle_core::bail!("{}: expected a contiguous parameter", self.name())
        };
        let theta = &mut theta[start..end];
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("AdamW moments poisoned".into()))?;
        let Moments { m, v } = &mut **moments;
        if g.len() != theta.len() || m.len() != theta.len() {
            candle_core::bail!(
                "{}: parameter of {} elements, gradient of {}",
                self.name(),
                theta.len(),
                g.len()
            );
        }
        let u = self.update;
        theta
            .par_chunks_mut(ADAMW_CHUNK)
            .zip(m.par_chunks_mut(ADAMW_CHUNK))
            .zip(v.par_chunks_mut(ADAMW_CHUNK))
            .zip(g.par_chunks(ADAMW_CHUNK))
            .for_each(|(((theta, m), v), g)| {
                for (((theta, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
                    u.apply(theta, m, v, g);
                }
            });
        Ok(())
    }
}
