//! AMX's tile instructions (inline assembly): the permission, the configuration, the kernel.

use std::arch::asm;
use std::arch::x86_64::__cpuid_count;

use super::TILE;

/// `ldtilecfg`'s 64 bytes: palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct Config {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: Config = Config {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// CPUID says AMX-TILE and AMX-BF16, and Linux grants the tiles' data state.
pub(super) fn request() -> bool {
    let leaf7 = __cpuid_count(7, 0);
    let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a request for permission; it changes nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Loads the tile configuration on this thread.
pub(super) fn configure() {
    // SAFETY: `available` checked the CPU and the OS's permission before any product ran;
    // the configuration is a valid palette-1 one.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
}

/// Gives the tiles back (their state no longer saved on a context switch).
pub(super) fn release() {
    // SAFETY: as for `configure`.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// `sums` (32 × 32, row-major) = the two row blocks of `a` times the two column halves of
/// `b`, over `chunks` tiles each.
///
/// # Safety
/// The tiles must be configured on this thread, `a` and `b` hold `2 * chunks` tiles each.
pub(super) unsafe fn block(sums: &mut [f32; 32 * 32], a: &[u16], b: &[u16], chunks: usize) {
    debug_assert!(a.len() >= 2 * chunks * TILE && b.len() >= 2 * chunks * TILE);
    let half = chunks * TILE; // elements from one block or half to the other
                              // SAFETY: every load reads a tile inside `a` or `b`; the stores write inside `sums`
                              // (rows 128 bytes apart: tmm1 and tmm3 at column 16, tmm2 and tmm3 at row 16).
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {s64}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {s64}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s64}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) a.as_ptr() => _,
            a1 = inout(reg) a.as_ptr().add(half) => _,
            b0 = inout(reg) b.as_ptr() => _,
            b1 = inout(reg) b.as_ptr().add(half) => _,
            n = inout(reg) chunks => _,
            s64 = in(reg) 64usize,
            options(nostack, readonly),
        );
        let c = sums.as_mut_ptr();
        asm!(
            "tilestored [{c} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c = in(reg) c,
            c1 = in(reg) c.add(16),
            c2 = in(reg) c.add(16 * 32),
            c3 = in(reg) c.add(16 * 32 + 16),
            s = in(reg) 128usize,
            options(nostack),
        );
    }
}
