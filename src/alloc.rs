//! The binary's allocator (also compiled into `bench/encoder/bench_encoder.rs`, so
//! that the encoder bench measures what `sieve` runs).
//!
//! Every forward and backward pass allocates activation buffers of tens of MiB. glibc
//! and mimalloc's defaults hand those back to the kernel on free, so the next pass
//! page-faults and zeroes them again: 7% of an encode and 14% of a training step went to
//! `clear_page` in the kernel. mimalloc with purging disabled and a reserved arena keeps
//! them mapped (a training step went from 3.9 s to 3.2 s).
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: alloc::Allocator = alloc::ALLOCATOR;
//! fn main() { alloc::configure(); /* … */ }
//! ```

pub type Allocator = mimalloc::MiMalloc;
pub const ALLOCATOR: Allocator = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` ("memory purging is delayed by N milliseconds;
/// -1 for no purging at all"; default 1000 in mimalloc v3's `src/options.c`, 10 in v2):
/// `libmimalloc-sys` 0.1.49 (mimalloc v3)
/// exports the option after it (`mi_option_use_numa_nodes` = 16) but not this one, so
/// it is named here; the test below checks that the option with this number has
/// purge_delay's documented default.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Option 15 is purge_delay: it sits just before the exported
    /// `mi_option_use_numa_nodes`, and its default is purge_delay's: 1000 ms in v3's
    /// `src/options.c` (10 in v2); its neighbours default to 0 and 1. No test here calls
    /// `configure`.
    #[test]
    fn option_15_is_the_purge_delay() {
        assert_eq!(
            libmimalloc_sys::mi_option_use_numa_nodes - 1,
            MI_OPTION_PURGE_DELAY
        );
        // SAFETY: a plain read of an allocator option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert!(
            delay == 1000 || delay == 10,
            "option 15 reads {delay}, not purge_delay's default"
        );
    }
}
