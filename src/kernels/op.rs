//! How a kernel becomes a candle operation: candle has one custom-op trait per number of inputs
//! (`CustomOp1`, `CustomOp2`, `CustomOp3`), each with its own `cpu_fwd` and `bwd` signatures;
//! a kernel here implements [`CpuKernel`] once, with its inputs as a slice, and [`apply`] /
//! [`apply_no_bwd`] hand it to candle under the trait its number of inputs needs. So a kernel
//! with an optional mask (one input more when there is one) is one implementation, not two.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};

/// The inputs of one call on the CPU, as candle hands them over: each one's storage and layout.
pub(super) struct CpuInputs<'a> {
    op: &'static str,
    inputs: Vec<(&'a CpuStorage, &'a Layout)>,
}

impl<'a> CpuInputs<'a> {
    /// How many inputs the call has.
    pub(super) fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Input `i`'s layout.
    pub(super) fn layout(&self, i: usize) -> &'a Layout {
        self.inputs[i].1
    }

    /// Input `i`'s data, which must be contiguous and of element type `T`, or an error naming
    /// the op.
    pub(super) fn data<T: WithDType>(&self, i: usize) -> candle_core::Result<&'a [T]> {
        let (s, l) = self.inputs[i];
        contiguous(self.op, s, l)
    }

    /// Input `i`'s data, which must be contiguous f32.
    pub(super) fn f32(&self, i: usize) -> candle_core::Result<&'a [f32]> {
        self.data(i)
    }
}

/// The contiguous data of a CPU tensor of element type `T`, or an error naming the op.
pub(super) fn contiguous<'a, T: WithDType>(
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
pub(super) type Grads = candle_core::Result<Vec<Option<Tensor>>>;

/// A CPU kernel of one to three inputs, with its backward pass if it has one.
pub(super) trait CpuKernel: Send + Sync {
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
pub(super) fn apply<K: CpuKernel + 'static>(
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
pub(super) fn apply_no_bwd<K: CpuKernel>(
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
