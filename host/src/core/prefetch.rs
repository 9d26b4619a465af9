//! Asking the CPU to start loading memory the tick is about to touch.
//!
//! The tick visits hundreds of sessions a tick, each last touched seconds
//! ago (or a moment ago, on the other core), so each visit began with a
//! wait for main memory: the first lock of a session's state was the
//! largest single cost in the tick's own code (BENCHMARKS.md, issue 16,
//! ninth part). Asking for the next sessions' memory while visiting this
//! one overlaps those waits. A prefetch is a hint: it reads nothing the
//! program sees, cannot fault, and is a no-op on targets without one.

/// Bytes per cache line on the machines the host runs on.
const LINE: usize = 64;

/// How many sessions ahead of the one it visits a loop asks for memory:
/// far enough for a load to arrive in time, near enough that what arrived
/// is still there when the loop gets to it.
pub(crate) const AHEAD: usize = 4;

/// Starts loading the cache lines of what `shared` points to, with the
/// reference counts in front of it (at most `max_lines` lines).
#[inline]
pub(crate) fn prefetch_shared<T>(shared: &std::sync::Arc<T>, max_lines: usize) {
    // The counts sit just before the value in the `Arc`'s allocation;
    // cloning or dropping the `Arc` writes them.
    let counts = 2 * std::mem::size_of::<usize>();
    let start = std::sync::Arc::as_ptr(shared)
        .cast::<u8>()
        .wrapping_sub(counts);
    let lines = (std::mem::size_of::<T>() + counts)
        .div_ceil(LINE)
        .clamp(1, max_lines);
    for line in 0..lines {
        line_at(start.wrapping_add(line * LINE));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn line_at(address: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch never dereferences its address in a way the
    // program can observe and never faults, whatever the address (every
    // address passed here lies within, or just before, a live value).
    #[allow(unsafe_code)]
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>());
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn line_at(_address: *const u8) {}
