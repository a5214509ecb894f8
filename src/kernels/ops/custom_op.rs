//! How a kernel becomes a candle operation: candle has one custom-op trait per number of inputs
//! (`CustomOp1`, `CustomOp2`, `CustomOp3`), each with its own `cpu_fwd` and `bwd` signatures;
//! a kernel here implements [`CpuKernel`] once, with its inputs as a slice, and [`apply`] /
//! [`apply_no_bwd`] hand it to candle under the trait its number of inputs needs. So a kernel
//! with an optional mask (one input more when there is one) is one implementation, not two.

use std::borrow::Cow;

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType,
};
use half::{bf16, f16};
use rayon::prelude::*;

/// The inputs of one call on the CPU, as candle hands them over: each one's storage and layout.
pub(crate) struct CpuInputs<'a> {
    op: &'static str,
    inputs: Vec<(&'a CpuStorage, &'a Layout)>,
}

impl<'a> CpuInputs<'a> {
    /// How many inputs the call has.
    pub(crate) fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Input `i`'s layout.
    pub(crate) fn layout(&self, i: usize) -> &'a Layout {
        self.inputs[i].1
    }

    /// Input `i`'s data, which must be contiguous and of element type `T`, or an error naming
    /// the op.
    pub(crate) fn data<T: WithDType>(&self, i: usize) -> candle_core::Result<&'a [T]> {
        let (s, l) = self.inputs[i];
        contiguous(self.op, s, l)
    }

    /// Input `i`'s data as f32: borrowed where it is f32, widened into a buffer of the call's
    /// own where it is f16 or bf16 (the kernels compute in f32, as PyTorch's half-precision
    /// CPU kernels do, and only their outputs are rounded - see [`CpuInputs::output`]).
    pub(crate) fn f32(&self, i: usize) -> candle_core::Result<Cow<'a, [f32]>> {
        let (s, l) = self.inputs[i];
        as_f32(self.op, s, l)
    }

    /// A result computed in f32 as the storage of the first input's float type: f16 and bf16
    /// inputs give an output of their own type, rounded once (to nearest, ties to even).
    pub(crate) fn output(&self, y: Vec<f32>) -> CpuStorage {
        rounded_like(self.inputs[0].0, y)
    }
}

/// The contiguous data of a CPU tensor as f32: borrowed where it is f32, widened into a new
/// buffer where it is f16 or bf16; an error naming the op for other types.
pub(crate) fn as_f32<'a>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<Cow<'a, [f32]>> {
    Ok(match s {
        CpuStorage::BF16(_) => Cow::Owned(widen(contiguous::<bf16>(op, s, l)?)),
        CpuStorage::F16(_) => Cow::Owned(widen(contiguous::<f16>(op, s, l)?)),
        _ => Cow::Borrowed(contiguous(op, s, l)?),
    })
}

/// `y`, computed in f32, as a storage of `like`'s type: rounded once where that is f16 or bf16.
pub(crate) fn rounded_like(like: &CpuStorage, y: Vec<f32>) -> CpuStorage {
    match like {
        CpuStorage::BF16(_) => CpuStorage::BF16(narrow(&y)),
        CpuStorage::F16(_) => CpuStorage::F16(narrow(&y)),
        _ => CpuStorage::F32(y),
    }
}

/// Elements per parallel task of the conversions.
const CONVERT_CHUNK: usize = 1 << 15;

/// A half-precision buffer widened to f32, on every core.
fn widen<T: HalfFloat>(x: &[T]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(CONVERT_CHUNK)
        .zip(x.par_chunks(CONVERT_CHUNK))
        .for_each(|(y, x)| T::widen(x, y));
    y
}

/// An f32 buffer rounded to a half precision, on every core.
fn narrow<T: HalfFloat>(x: &[f32]) -> Vec<T> {
    let mut y = vec![T::ZERO; x.len()];
    y.par_chunks_mut(CONVERT_CHUNK)
        .zip(x.par_chunks(CONVERT_CHUNK))
        .for_each(|(y, x)| T::narrow(x, y));
    y
}

/// f16 and bf16, for [`widen`] and [`narrow`] (the `half` crate's vectorised slice conversions).
trait HalfFloat: Copy + Send + Sync {
    const ZERO: Self;
    fn widen(src: &[Self], dst: &mut [f32]);
    fn narrow(src: &[f32], dst: &mut [Self]);
}

macro_rules! half_float {
    ($t:ty) => {
        impl HalfFloat for $t {
            const ZERO: Self = <$t>::ZERO;
            fn widen(src: &[Self], dst: &mut [f32]) {
                use half::slice::HalfFloatSliceExt;
                src.convert_to_f32_slice(dst);
            }
            fn narrow(src: &[f32], dst: &mut [Self]) {
                use half::slice::HalfFloatSliceExt;
                dst.convert_from_f32_slice(src);
            }
        }
    };
}

half_float!(bf16);
half_float!(f16);

/// The contiguous data of a CPU tensor of element type `T`, or an error naming the op.
pub(crate) fn contiguous<'a, T: WithDType>(
    op: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    let Ok(data) = s.as_slice::<T>() else {
        candle_core::bail!("{op}: expected {:?} data", T::DTYPE)
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!(
            "{op}: expected a contiguous tensor, got strides {:?}",
            l.stride()
        ),
    }
}

/// The gradient of each input of a kernel, `None` for an input without one.
pub(crate) type Grads = candle_core::Result<Vec<Option<Tensor>>>;

/// A CPU kernel of one to three inputs, with its backward pass if it has one.
pub(crate) trait CpuKernel: Send + Sync {
    /// The op's name in candle's errors.
    const NAME: &'static str;

    /// The output's data and shape.
    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)>;

    /// The gradient of each input, from the inputs, the output `y` and the gradient `g` of `y`.
    fn bwd(&self, _inputs: &[&Tensor], _y: &Tensor, _g: &Tensor) -> Grads {
        Err(candle_core::Error::BackwardNotSupported { op: Self::NAME })
    }
}

/// A kernel run by reference (for [`apply_no_bwd`], whose caller keeps the kernel).
impl<K: CpuKernel> CpuKernel for &K {
    const NAME: &'static str = K::NAME;

    fn cpu_fwd(&self, inputs: &CpuInputs) -> candle_core::Result<(CpuStorage, Shape)> {
        (**self).cpu_fwd(inputs)
    }
}

/// A [`CpuKernel`] as candle's custom-op traits see it.
struct Op<K>(K);

/// Implements candle's custom-op trait for `n` inputs on [`Op`], by handing the inputs to the
/// kernel as a slice, and its gradients back as the tuple the trait wants.
macro_rules! custom_op {
    ($trait:ident, $grads:ty, $(($x:ident, $s:ident, $l:ident)),+) => {
        impl<K: CpuKernel> $trait for Op<K> {
            fn name(&self) -> &'static str {
                K::NAME
            }

            fn cpu_fwd(
                &self,
                $($s: &CpuStorage, $l: &Layout),+
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                let inputs = vec![$(($s, $l)),+];
                self.0.cpu_fwd(&CpuInputs { op: K::NAME, inputs })
            }

            fn bwd(
                &self,
                $($x: &Tensor,)+
                y: &Tensor,
                g: &Tensor,
            ) -> candle_core::Result<$grads> {
                let mut grads = self.0.bwd(&[$($x),+], y, g)?.into_iter();
                // Detached: a gradient computed from the forward tensors (`x.t().matmul(g)`)
                // is itself a node of the graph holding `g` and its other operands, and a
                // weight's gradient lives to the end of the backward pass - with every
                // operand it was made from, and candle's zeros it was added to (tens of MB a
                // layer of GPT-2). Nothing differentiates a gradient twice here.
                Ok(($({
                    let _ = $x;
                    grads.next().flatten().map(|g| g.detach())
                }),+))
            }
        }
    };
}

custom_op!(CustomOp1, Option<Tensor>, (a, sa, la));
custom_op!(
    CustomOp2,
    (Option<Tensor>, Option<Tensor>),
    (a, sa, la),
    (b, sb, lb)
);
custom_op!(
    CustomOp3,
    (Option<Tensor>, Option<Tensor>, Option<Tensor>),
    (a, sa, la),
    (b, sb, lb),
    (c, sc, lc)
);

/// `kernel` on `inputs` (one to three tensors, made contiguous), as a node of the graph whose
/// gradient is the kernel's backward pass.
pub(crate) fn apply<K: CpuKernel + 'static>(
    kernel: K,
    inputs: &[&Tensor],
) -> candle_core::Result<Tensor> {
    let op = Op(kernel);
    match all_contiguous(inputs)?.as_slice() {
        [a] => a.apply_op1(op),
        [a, b] => a.apply_op2(b, op),
        [a, b, c] => a.apply_op3(b, c, op),
        _ => candle_core::bail!("{}: {} inputs", K::NAME, inputs.len()),
    }
}

/// `kernel` on `inputs` (made contiguous), with no gradient tracked.
pub(crate) fn apply_no_bwd<K: CpuKernel>(
    kernel: K,
    inputs: &[&Tensor],
) -> candle_core::Result<Tensor> {
    let op = &Op(kernel);
    match all_contiguous(inputs)?.as_slice() {
        [a] => a.apply_op1_no_bwd(op),
        [a, b] => a.apply_op2_no_bwd(b, op),
        [a, b, c] => a.apply_op3_no_bwd(b, c, op),
        _ => candle_core::bail!("{}: {} inputs", K::NAME, inputs.len()),
    }
}

fn all_contiguous(inputs: &[&Tensor]) -> candle_core::Result<Vec<Tensor>> {
    inputs.iter().map(|t| t.contiguous()).collect()
}

/// Whether tensors are on the CPU and of one float type, where the fast paths apply: f32, or
/// f16 / bf16, which a kernel widens to f32 as it reads them and rounds its output back to
/// (`op.rs`), so that its gradients come out in the dtype of its inputs.
pub(crate) fn cpu_float(ts: &[&Tensor]) -> bool {
    let Some(first) = ts.first() else {
        return false;
    };
    let dtype = first.dtype();
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && ts.iter().all(|t| t.device().is_cpu() && t.dtype() == dtype)
}

/// Whether `mask` is a u8 mask on the CPU of shape `(B or 1, 1, T or 1, S)`, as the scores
/// `(B, nh, T, S)` it applies to need.
pub(crate) fn mask_fits(mask: &Tensor, (b, t, s): (usize, usize, usize)) -> bool {
    mask.dtype() == DType::U8
        && mask.device().is_cpu()
        && matches!(mask.dims(), &[mb, 1, mt, ms] if (mb == 1 || mb == b) && (mt == 1 || mt == t) && ms == s)
}
