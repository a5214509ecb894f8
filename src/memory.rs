//! How the process's allocator treats large buffers.
//!
//! Every tensor op allocates its output, and in a forward or training step of GPT-2 many of
//! those outputs are tens of megabytes (a `(500, 50257)` logits buffer is 100 MB). With glibc's
//! defaults every buffer over 32 MiB is mapped fresh from the kernel, zero-filled page by page as
//! it is first written, and unmapped again when dropped - so the same memory is faulted in again
//! and again, step after step: in `examples/bench.rs` the kernel's page faults and zeroing were
//! a large part of a training step until this setting (README, "Performance").
//!
//! Large buffers are also worth backing with 2 MiB pages rather than 4 KiB ones (the weights,
//! which decoding streams once per token, and the kernels' large outputs): the helpers at the
//! end ask the kernel for transparent huge pages before the memory is first touched.

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Tells glibc's malloc to serve large buffers from its heap and keep freed memory for the next
/// allocation instead of returning it to the kernel: `mallopt(M_MMAP_MAX, 0)`, a trim
/// threshold of 2 GiB, and one arena for all threads (`M_ARENA_MAX`: a thread's own arena is
/// made of 64 MiB heaps, and glibc maps anything larger for it anyway). These are the tunables
/// `glibc.malloc.mmap_max`, `trim_threshold` and `arena_max`, set from inside the process. The examples call it once at start (through
/// [`crate::cli::ModelArgs::load`]); it changes the whole process, so a library user opts in.
///
/// The cost is that memory freed by one step stays in the process for the next: peak resident
/// memory is what the largest step needed, as it would be with a caching allocator. Returns
/// whether the settings were applied (only on Linux with glibc; elsewhere it does nothing).
pub fn reuse_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; both are documented settings and
        // take effect for later allocations.
        // Each setting is tried even when another is refused; all must take.
        let applied = unsafe {
            [
                libc::mallopt(libc::M_MMAP_MAX, 0),
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX),
                libc::mallopt(libc::M_ARENA_MAX, 1),
            ]
        };
        applied.iter().all(|&ok| ok == 1)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

// ANCHOR: zero_filled
/// The system allocator, except that memory asked for zeroed is written with zeros at once.
/// Declare it in a program that trains:
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: gpt2_tutorial::memory::ZeroFilledAllocator =
///     gpt2_tutorial::memory::ZeroFilledAllocator;
/// # fn main() {}
/// ```
///
/// Why: `calloc` hands out memory fresh from the kernel untouched, and the kernel maps every
/// page of it to its one shared page of zeros until the page is written. candle's backward pass
/// starts each gradient as such a tensor of zeros and often only reads it before dropping it;
/// when malloc hands the same memory out again (it is kept for reuse,
/// [`reuse_freed_buffers`]) and it is written, every 4 KiB page takes a copy-on-write fault and
/// a TLB flush on every core. Writing the zeros when the memory is handed out makes its pages
/// real once, and takes a good part of the page faults out of a training step.
pub struct ZeroFilledAllocator;

// SAFETY: every call is forwarded to `System`; `alloc_zeroed` writes zeros over the `size`
// bytes `System.alloc` just returned for this layout, which is what `alloc_zeroed` promises.
unsafe impl std::alloc::GlobalAlloc for ZeroFilledAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on; a non-null block has `layout.size()` bytes.
        unsafe {
            let ptr = std::alloc::System.alloc(layout);
            if !ptr.is_null() {
                std::ptr::write_bytes(ptr, 0, layout.size());
            }
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}
// ANCHOR_END: zero_filled

// ----- buffers on huge pages ------------------------------------------------------------------

/// Tensors at least this large are worth placing on 2 MiB pages.
pub(crate) const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// A CPU f32 tensor of `shape` from little-endian `bytes` (a safetensors view), in memory the
/// kernel is asked to back with transparent huge pages. Decoding streams every weight once per
/// token; with 4 KiB pages a 500 MB model spans 120,000 pages and the TLB misses on most of
/// them, with 2 MiB pages on 240. Where huge pages are off, or on other systems, this is a plain
/// copy.
pub(crate) fn f32_tensor_on_huge_pages(bytes: &[u8], shape: &[usize]) -> Result<Tensor> {
    let n = bytes.len() / 4;
    if n * 4 != bytes.len() || shape.iter().product::<usize>() != n {
        return Err(Error::InvalidArgument(format!(
            "{} bytes do not hold f32 values of shape {shape:?}",
            bytes.len()
        )));
    }
    let mut data: Vec<f32> = Vec::with_capacity(n);
    if n * 4 >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(data.as_mut_ptr().cast(), n * 4);
    }
    data.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// A zeroed buffer of `len` floats; past a few MB, backed by huge pages. A large zeroed
/// allocation comes fresh from the kernel, untouched, so the advice is in time for its first
/// write: one fault per 2 MiB instead of one per 4 KiB (a 500-token step's logits are 100 MB).
pub(crate) fn zeros_on_huge_pages(len: usize) -> Vec<f32> {
    let mut v = vec![0f32; len];
    if len * 4 >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(v.as_mut_ptr().cast(), len * 4);
    }
    v
}

/// `madvise(MADV_HUGEPAGE)` over the whole pages inside `[ptr, ptr + len)`, before they are
/// first touched. Advice only: failure (huge pages disabled) changes nothing.
#[cfg(target_os = "linux")]
pub(crate) fn advise_huge_pages(ptr: *mut u8, len: usize) {
    let page = 4096;
    let start = (ptr as usize).div_ceil(page) * page;
    let end = (ptr as usize + len) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside an allocation this process owns, and MADV_HUGEPAGE
        // changes how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}
