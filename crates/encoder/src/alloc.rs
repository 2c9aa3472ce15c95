//! The allocator that binaries running the encoder should install.
//!
//! Every forward and backward pass allocates activation buffers of tens of MiB. glibc
//! and mimalloc's defaults hand those back to the kernel on free, so the next pass
//! page-faults and zeroes them again: 7% of an encode and 14% of a training step went to
//! `clear_page` in the kernel. mimalloc with purging disabled and a reserved arena keeps
//! them mapped (a training step went from 3.9 s to 3.2 s).
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: sieve_encoder::alloc::Allocator = sieve_encoder::alloc::ALLOCATOR;
//! fn main() { sieve_encoder::alloc::configure(); /* … */ }
//! ```

pub type Allocator = mimalloc::MiMalloc;
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (not exported by `libmimalloc-sys`); -1 = never purge.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Address space reserved up front for large blocks; reserved, not committed: memory is
/// only used as it is touched.
const RESERVE_BYTES: usize = 8 << 30;

/// Call first thing in `main`.
pub fn configure() {
    // SAFETY: plain option setters of the allocator, called before any thread starts.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        let _ = libmimalloc_sys::mi_reserve_os_memory_ex(
            RESERVE_BYTES,
            false,
            false,
            false,
            std::ptr::null_mut(),
        );
    }
}
