//! Matrix products on bf16 operands in Intel's AMX tiles, summed in f32: what PyTorch's bf16
//! products run on (through oneDNN) on a CPU that has them. The written-out training pass in
//! pure bf16 multiplies here.
//!
//! A tile register holds 16 rows of 64 bytes: 16 × 32 bf16 of the left operand, or of the right
//! one 16 pairs of rows × 16 columns, each column's pair side by side ("VNNI" order); one
//! `tdpbf16ps` adds the 16 × 16 products of two such tiles into a tile of f32 sums. The
//! operands are copied into those layouts first (and rounded to bf16 where they are f32),
//! GotoBLAS's way: blocks of up to [`K_BLOCK`] along the inner dimension; of each block the left
//! operand by groups of rows ([`ROW_GROUP_BYTES`], which stay in L2), shared by every
//! thread, and the right one by groups of [`GROUP_COLUMNS`] columns that each thread packs for
//! itself and multiplies as panels of 32. The kernel keeps a 32 × 32 block of sums in four
//! tiles. Rows and columns past the matrix's edge are zeros in the packed copies and are never
//! written out.
//!
//! AMX has no stable Rust intrinsics, so the few instructions are inline assembly; the kernel
//! asks Linux for the tiles' state once (`arch_prctl`), and [`available`] says whether all of
//! that worked.

use rayon::prelude::*;

use super::operand::{Operand, Strided};
use crate::kernels::rounding::bf16_bits;

/// Elements of the inner dimension per block.
const K_BLOCK: usize = 1024;
/// Bytes of the left operand packed at a time: a group of rows (a multiple of 32) of the inner
/// block, about L2's size.
const ROW_GROUP_BYTES: usize = 1 << 20;
/// Columns of the right operand one task packs and multiplies (4 panels of 32).
const GROUP_COLUMNS: usize = 128;
/// bf16 elements in one tile.
const TILE: usize = 16 * 32;

/// A raw pointer shared by the threads that write disjoint parts of what it points to.
#[derive(Clone, Copy)]
struct Shared<P>(P);
impl<P: Copy> Shared<P> {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(&self) -> P {
        self.0
    }
}

// SAFETY: used only where each thread touches elements no other thread does (see the users).
unsafe impl<P> Send for Shared<P> {}
// SAFETY: as above.
unsafe impl<P> Sync for Shared<P> {}

/// Whether this CPU has AMX's bf16 products and Linux lets the process use the tiles.
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(tiles::request)
}

/// `dst = lhs @ rhs` for `(m, k) @ (k, n)`, or `dst += lhs @ rhs` with `accumulate`, the
/// operands rounded to bf16 and the products summed in f32, threaded over the rayon pool.
/// Call only where [`available`] is true.
///
/// # Safety
/// Every element addressed through the three views for these dimensions must be in bounds,
/// nothing else may write the operands or touch `dst`'s elements meanwhile, and [`available`]
/// must have returned true.
pub(crate) unsafe fn matmul_bf16(
    (m, k, n): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    assert!(
        available(),
        "AMX products called where the CPU or the OS has none"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is in dst's bounds (the caller's guarantee).
                    unsafe { *dst.ptr.add(i * dst.row_stride + j * dst.col_stride) = 0.0 };
                }
            }
        }
        return;
    }
    let groups = n.div_ceil(GROUP_COLUMNS);
    let (dst, lhs, rhs) = (Shared(dst), Shared(lhs), Shared(rhs));
    PACKED_LHS.with_borrow_mut(|packed_lhs| {
        for k0 in (0..k).step_by(K_BLOCK) {
            let kb = K_BLOCK.min(k - k0);
            let chunks = kb.div_ceil(32);
            let add = accumulate || k0 > 0;
            let group = (ROW_GROUP_BYTES / (chunks * 32 * 2) / 32).max(1) * 32;
            for i0 in (0..m).step_by(group) {
                let rows = group.min(m - i0);
                packed_lhs.resize(2 * rows.div_ceil(32) * chunks * TILE, 0);
                // SAFETY: the block's elements are in lhs's bounds.
                unsafe { pack_lhs(packed_lhs, lhs.get(), (i0, rows), (k0, kb)) };
                let packed_lhs = &*packed_lhs;
                // Columns by groups of panels, each group packed by the thread that multiplies
                // it: a panel packed alone from row-major data would read 128 bytes of each
                // row, a row apart, which the prefetchers do not follow.
                (0..groups).into_par_iter().for_each(|g| {
                    PANELS.with_borrow_mut(|panels| {
                        let j0 = g * GROUP_COLUMNS;
                        let cols = GROUP_COLUMNS.min(n - j0);
                        let panel_len = 2 * chunks * TILE; // in bf16
                        panels.resize(cols.div_ceil(32) * panel_len / 2, 0);
                        // SAFETY: the K block's rows of rhs, these columns, are in its bounds;
                        // a CPU with AMX has AVX-512.
                        unsafe { pack_rhs(panels, rhs.get(), (k0, kb), (j0, cols)) };
                        tiles::configure();
                        for (p, panel) in as_bf16_bits(panels).chunks_exact(panel_len).enumerate() {
                            let j0 = j0 + p * 32;
                            let block = Block {
                                i0,
                                rows,
                                j0,
                                cols: 32.min(n - j0),
                                add,
                            };
                            // SAFETY: the panel's columns of dst are this task's alone, the
                            // block is inside dst (the caller's guarantee), and a CPU with AMX
                            // has AVX-512.
                            unsafe { multiply_panel(dst.get(), packed_lhs, panel, chunks, block) };
                        }
                        tiles::release();
                    })
                });
            }
        }
    });
}

/// The packed panels as the tiles read them: each u32 two bf16, the low half first.
fn as_bf16_bits(v: &[u32]) -> &[u16] {
    // SAFETY: u16 has no invalid values and a smaller alignment than u32; the view covers the
    // same bytes, in little-endian order the low half first.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u16>(), v.len() * 2) }
}

thread_local! {
    /// The left operand's packed row group, on the calling thread.
    static PACKED_LHS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A group of the right operand's packed panels, on each pool thread.
    /// (As u32: a row of a right tile is 16 columns' pairs of bf16.)
    static PANELS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where a panel's products go: rows `i0..i0 + rows`, columns `j0..j0 + cols` of dst, added to
/// what is there or written over it.
#[derive(Clone, Copy)]
struct Block {
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    add: bool,
}

/// The packed row group `a` times one packed panel into `dst`'s block, 32 × 32 at a time.
///
/// # Safety
/// The block must be inside `dst`, nothing else may touch it, the tiles must be configured on
/// this thread, `a` must hold the row group's pairs of 16-row blocks of `chunks` tiles each, and
/// the CPU must have AVX-512 (every CPU with AMX has).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
unsafe fn multiply_panel(
    dst: Strided<*mut f32>,
    a: &[u16],
    panel: &[u16],
    chunks: usize,
    at: Block,
) {
    let mut sums = [0f32; 32 * 32];
    for pair in 0..at.rows.div_ceil(32) {
        let a = &a[2 * pair * chunks * TILE..][..2 * chunks * TILE];
        // SAFETY: both packed blocks hold `chunks` tiles for each of their two halves, and
        // the tiles are configured on this thread.
        unsafe { tiles::block(&mut sums, a, panel, chunks) };
        let i = at.i0 + pair * 32;
        let rows = 32.min(at.i0 + at.rows - i);
        for (r, row) in sums.chunks_exact(32).take(rows).enumerate() {
            // SAFETY: row i + r, columns j0..j0 + cols are inside the block (the caller's).
            unsafe {
                let e = dst
                    .ptr
                    .add((i + r) * dst.row_stride + at.j0 * dst.col_stride);
                if dst.col_stride == 1 {
                    let out = std::slice::from_raw_parts_mut(e, at.cols);
                    if at.add {
                        out.iter_mut().zip(row).for_each(|(o, s)| *o += s);
                    } else {
                        out.copy_from_slice(&row[..at.cols]);
                    }
                } else {
                    for (c, &s) in row[..at.cols].iter().enumerate() {
                        let o = e.add(c * dst.col_stride);
                        *o = if at.add { *o + s } else { s };
                    }
                }
            }
        }
    }
}

/// Which way an operand's elements are next to each other in memory.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    /// Along a row (`col_stride == 1`).
    Row,
    /// Down a column.
    Column,
}

impl Operand {
    fn run(&self) -> Run {
        let col_stride = match self {
            Self::F32(s) => s.col_stride,
            Self::Bf16(s) => s.col_stride,
        };
        if col_stride == 1 {
            Run::Row
        } else {
            Run::Column
        }
    }

    /// `out.len()` elements' bf16 bits from `(i, j)` on, along `run`.
    ///
    /// # Safety
    /// Those elements must be in the operand's bounds.
    #[inline(always)]
    unsafe fn read(&self, (i, j): (usize, usize), run: Run, out: &mut [u16]) {
        let step = |row_stride: usize, col_stride: usize| match run {
            Run::Row => col_stride,
            Run::Column => row_stride,
        };
        // SAFETY: the caller's guarantee.
        unsafe {
            match self {
                Self::F32(s) => {
                    let (p, d) = (
                        s.ptr.add(i * s.row_stride + j * s.col_stride),
                        step(s.row_stride, s.col_stride),
                    );
                    if d == 1 {
                        let src = std::slice::from_raw_parts(p, out.len());
                        out.iter_mut()
                            .zip(src)
                            .for_each(|(o, &x)| *o = bf16_bits(x));
                    } else {
                        out.iter_mut()
                            .enumerate()
                            .for_each(|(e, o)| *o = bf16_bits(*p.add(e * d)));
                    }
                }
                Self::Bf16(s) => {
                    let (p, d) = (
                        s.ptr.add(i * s.row_stride + j * s.col_stride),
                        step(s.row_stride, s.col_stride),
                    );
                    if d == 1 {
                        let src = std::slice::from_raw_parts(p, out.len());
                        out.iter_mut().zip(src).for_each(|(o, x)| *o = x.to_bits());
                    } else {
                        out.iter_mut()
                            .enumerate()
                            .for_each(|(e, o)| *o = (*p.add(e * d)).to_bits());
                    }
                }
            }
        }
    }
}

/// Rows `i0..i0 + rows` × columns `k0..k0 + kb` of `lhs`, as tiles: for each 16-row block (an
/// even number of them), its `kb / 32` tiles of 16 × 32, zeros past the edges. Element `(i, k)`
/// goes to `((i / 16 * chunks + k / 32) * 16 + i % 16) * 32 + k % 32`.
///
/// # Safety
/// The block must be inside `lhs`'s bounds.
unsafe fn pack_lhs(
    out: &mut [u16],
    lhs: Operand,
    (i0, rows): (usize, usize),
    (k0, kb): (usize, usize),
) {
    let chunks = kb.div_ceil(32);
    let lhs = Shared(lhs);
    // Every element is written, zeros past the edges (no pass to clear the buffer first).
    out.par_chunks_mut(chunks * TILE)
        .enumerate()
        .for_each(|(block, tiles)| {
            // SAFETY: the block is inside lhs (the caller's guarantee); a CPU with AMX has
            // AVX-512.
            unsafe { pack_lhs_block(tiles, lhs.get(), block, (i0, rows), (k0, kb)) }
        });
}

/// The 16-row block `block` of [`pack_lhs`]'s row group into `tiles`, built for AVX-512 (the
/// conversions to bf16 and the copies then take 32 elements an instruction).
///
/// # Safety
/// As [`pack_lhs`], and the CPU must have AVX-512 (every CPU with AMX has).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
unsafe fn pack_lhs_block(
    tiles: &mut [u16],
    lhs: Operand,
    block: usize,
    (i0, rows): (usize, usize),
    (k0, kb): (usize, usize),
) {
    let r_n = 16.min(rows.saturating_sub(block * 16));
    match lhs.run() {
        Run::Row => {
            for (chunk, tile) in tiles.chunks_exact_mut(TILE).enumerate() {
                let len = 32.min(kb - chunk * 32);
                for (r, row) in tile.chunks_exact_mut(32).enumerate() {
                    row[len..].fill(0);
                    if r < r_n {
                        let at = (i0 + block * 16 + r, k0 + chunk * 32);
                        // SAFETY: inside the block, which the caller guarantees.
                        unsafe { lhs.read(at, Run::Row, &mut row[..len]) };
                    } else {
                        row.fill(0);
                    }
                }
            }
        }
        Run::Column => {
            // A tile at a time: its 32 columns read 16 rows down each, then written
            // out row by row (a transpose within the L1 cache).
            let mut block_t = [[0u16; 16]; 32];
            for (chunk, tile) in tiles.chunks_exact_mut(TILE).enumerate() {
                for (e, column) in block_t.iter_mut().enumerate() {
                    column.fill(0);
                    let kk = chunk * 32 + e;
                    if kk < kb {
                        let at = (i0 + block * 16, k0 + kk);
                        // SAFETY: inside the block, which the caller guarantees.
                        unsafe { lhs.read(at, Run::Column, &mut column[..r_n]) };
                    }
                }
                for (r, row) in tile.chunks_exact_mut(32).enumerate() {
                    for (x, column) in row.iter_mut().zip(&block_t) {
                        *x = column[r];
                    }
                }
            }
        }
    }
}

/// Rows `k0..k0 + kb` × columns `j0..j0 + cols` of `rhs` as panels of 32 columns, one after
/// the other: in each, for each of the two 16-column halves, its `kb / 32` tiles of 16 row pairs
/// × 16 columns × the pair. Element `(k, j)` of a panel goes to `((j / 16 * chunks + k / 32) *
/// 16 + k % 32 / 2) * 32 + j % 16 * 2 + k % 2`.
///
/// # Safety
/// The block must be inside `rhs`'s bounds, and the CPU must have AVX-512 (every CPU with AMX
/// has): the conversions and the pairing take 32 elements an instruction.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
unsafe fn pack_rhs(
    out: &mut [u32],
    rhs: Operand,
    (k0, kb): (usize, usize),
    (j0, cols): (usize, usize),
) {
    let chunks = kb.div_ceil(32);
    let pairs = chunks * 16; // per half, its tiles' rows one after the other
    let halves = cols.div_ceil(32) * 2;
    // A row of a tile is 16 columns' pairs: one u32 per column, the pair's first in the low half.
    let out = &mut out[..halves * pairs * 16];
    // Panels' halves are consecutive, so half h = column j / 16 starts at h * pairs * 16.
    // Every element is written, zeros past the edges (no pass to clear the buffer first).
    let row_of = |h: usize, pair: usize| (h * pairs + pair) * 16;
    match rhs.run() {
        Run::Row => {
            let (mut first, mut second) = (vec![0u16; halves * 16], vec![0u16; halves * 16]);
            for pair in 0..pairs {
                for (kk, run) in [(2 * pair, &mut first), (2 * pair + 1, &mut second)] {
                    if kk < kb {
                        // SAFETY: inside the block, which the caller guarantees; the columns
                        // past `cols` stay zero.
                        unsafe { rhs.read((k0 + kk, j0), Run::Row, &mut run[..cols]) };
                    } else {
                        run.fill(0);
                    }
                }
                for (h, (a, b)) in first.chunks(16).zip(second.chunks(16)).enumerate() {
                    let row = &mut out[row_of(h, pair)..][..16];
                    for ((o, &a), &b) in row.iter_mut().zip(a).zip(b) {
                        *o = u32::from(a) | u32::from(b) << 16;
                    }
                }
            }
        }
        Run::Column => {
            // A tile at a time: its 16 columns' 32 elements read down each column, then
            // written out row pair by row pair (a transpose within the L1 cache).
            let mut block = [[0u16; 32]; 16];
            for h in 0..halves {
                let width = 16.min(cols.saturating_sub(h * 16));
                for chunk in 0..chunks {
                    let len = 32.min(kb - chunk * 32);
                    for (c, column) in block.iter_mut().enumerate() {
                        column.fill(0);
                        if c < width {
                            let at = (k0 + chunk * 32, j0 + h * 16 + c);
                            // SAFETY: inside the block, which the caller guarantees.
                            unsafe { rhs.read(at, Run::Column, &mut column[..len]) };
                        }
                    }
                    for pair in 0..16 {
                        let row = &mut out[row_of(h, chunk * 16 + pair)..][..16];
                        for (o, column) in row.iter_mut().zip(&block) {
                            *o =
                                u32::from(column[2 * pair]) | u32::from(column[2 * pair + 1]) << 16;
                        }
                    }
                }
            }
        }
    }
}

// The tile instructions: inline assembly on x86-64 Linux, nothing elsewhere.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod tiles;
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[path = "amx/no_tiles.rs"]
mod tiles;

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;

    /// The product of bf16-rounded operands, summed in f64.
    fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let r = |x: f32| f64::from(bf16::from_f32(x).to_f32());
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| r(a[i * k + p]) * r(b[p * n + j]))
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn bf16_bits_round_as_half_does() {
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
        ];
        let patterns = (0..1u32 << 20).map(|i| f32::from_bits(i.wrapping_mul(4099) ^ (i << 12)));
        for x in specials.into_iter().chain(patterns).flat_map(|x| [x, -x]) {
            let want = bf16::from_f32(x).to_bits();
            assert_eq!(bf16_bits(x), want, "{x:e} ({:#x})", x.to_bits());
        }
        assert!(bf16::from_bits(bf16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn products_match_the_rounded_operands_product() {
        if !available() {
            eprintln!("no AMX here: nothing to check");
            return;
        }
        // Edges in every dimension, more than one K block and one row group's worth of shapes.
        for &(m, k, n) in &[
            (1, 1, 1),
            (17, 33, 15),
            (40, 600, 70),
            (1100, 64, 33),
            (1100, 1100, 20),
            // Small again: the packing buffers, kept from call to call, hold the last ones'.
            (17, 33, 15),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 31.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 29.0)
                .collect();
            let want = reference(&a, &b, (m, k, n));
            for accumulate in [false, true] {
                let mut c = vec![1f32; m * n];
                // SAFETY: row-major buffers of these sizes.
                unsafe {
                    matmul_bf16(
                        (m, k, n),
                        Strided::rows(c.as_mut_ptr(), n),
                        Operand::F32(Strided::rows(a.as_ptr(), k)),
                        Operand::F32(Strided::rows(b.as_ptr(), n)),
                        accumulate,
                    )
                };
                let scale = want.iter().fold(1f32, |s, x| s.max(x.abs()));
                for (got, want) in c.iter().zip(&want) {
                    let want = want + if accumulate { 1.0 } else { 0.0 };
                    assert!(
                        (got - want).abs() <= 1e-5 * scale,
                        "{m}x{k}x{n}: {got} vs {want}"
                    );
                }
            }
            // The left operand read through a transposed view (its columns contiguous).
            let at: Vec<f32> = (0..k * m).map(|e| a[(e % m) * k + e / m]).collect();
            let mut c = vec![0f32; m * n];
            // SAFETY: row-major buffers of these sizes; at (k, m) read as (m, k).
            unsafe {
                matmul_bf16(
                    (m, k, n),
                    Strided::rows(c.as_mut_ptr(), n),
                    Operand::F32(Strided {
                        ptr: at.as_ptr(),
                        row_stride: 1,
                        col_stride: m,
                    }),
                    Operand::F32(Strided::rows(b.as_ptr(), n)),
                    false,
                )
            };
            let scale = want.iter().fold(1f32, |s, x| s.max(x.abs()));
            for (got, want) in c.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-5 * scale,
                    "{m}x{k}x{n} (lhs transposed)"
                );
            }
            // The transposed view of bf16 data gives the same product.
            let bt: Vec<bf16> = (0..n * k)
                .map(|i| bf16::from_f32(b[(i % k) * n + i / k]))
                .collect();
            let mut c = vec![0f32; m * n];
            // SAFETY: row-major buffers of these sizes; bt (n, k) read as (k, n).
            unsafe {
                matmul_bf16(
                    (m, k, n),
                    Strided::rows(c.as_mut_ptr(), n),
                    Operand::F32(Strided::rows(a.as_ptr(), k)),
                    Operand::Bf16(Strided {
                        ptr: bt.as_ptr(),
                        row_stride: 1,
                        col_stride: k,
                    }),
                    false,
                )
            };
            let scale = want.iter().fold(1f32, |s, x| s.max(x.abs()));
            for (got, want) in c.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-5 * scale,
                    "{m}x{k}x{n} (bf16 view)"
                );
            }
        }
    }
}
