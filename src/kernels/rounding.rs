//! bf16 rounding without branches: the bits `half::bf16::from_f32` gives, in loops that
//! vectorise - shared by the AMX packing, the widened products, the in-place updates and the
//! rounding of a bf16 model's gradient sums.

/// `x` rounded to the nearest bf16, ties to even (a NaN stays a quiet NaN): the bits
/// `half::bf16::from_f32` gives, bit for bit, computed without branches so that loops over it
/// vectorise.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    let bits = if x.is_nan() { b | 0x0040_0000 } else { rounded };
    (bits >> 16) as u16
}

/// `x` rounded to bf16 ([`bf16_bits`]) and widened back: the value a bf16 of it holds.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(x)) << 16)
}

/// Each element of `v` rounded to bf16 in place, over the rayon pool: the values a bf16 tensor
/// of them would hold, kept in f32.
pub fn round_to_bf16_in_place(v: &mut [f32]) {
    use rayon::prelude::*;
    v.par_chunks_mut(1 << 16).for_each(|chunk| {
        for x in chunk {
            *x = round_bf16(*x);
        }
    });
}
