//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`CappedAlloc`]: a global allocator that aborts (a crash libFuzzer records) on any
//!   single allocation above [`MAX_ALLOC`]. It works without a sanitizer, unlike
//!   libFuzzer's `-malloc_limit_mb`, which needs ASan's malloc hooks.
//! - [`ready`]: runs a future that never waits (an async read from a byte slice) to the end.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io::Write;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Largest single allocation a target may make, in bytes (1 MiB).
///
/// Frames carry at most [`proto::frame::MAX_FRAME`] (64 KiB) and bincode decodes with that
/// limit, but serde pre-allocates a sequence from its announced length before reading an
/// element, capped at 1 MiB (`serde::de::size_hint::cautious`). So a few hostile bytes can
/// cost one short-lived 1 MiB allocation per decode; anything larger is a bug.
pub const MAX_ALLOC: usize = 1 << 20;

/// The system allocator, with an abort on any allocation above [`MAX_ALLOC`].
pub struct CappedAlloc;

fn check(size: usize) {
    // Not while panicking: printing a panic's backtrace reads debug info in big buffers,
    // and the panic is the crash to report.
    if size > MAX_ALLOC && !std::thread::panicking() {
        // No formatting machinery here: it could allocate, and we are inside the allocator.
        let mut digits = [0u8; 20];
        let mut n = size;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut err = std::io::stderr();
        let _ = err.write_all(b"\nCappedAlloc: allocation of ");
        let _ = err.write_all(&digits[i..]);
        let _ = err.write_all(b" bytes exceeds MAX_ALLOC\n");
        std::process::abort();
    }
}

// SAFETY: every call is forwarded unchanged to `System`; we only refuse large sizes first.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Polls `fut` once with a no-op waker and returns its output. For futures that never
/// wait, such as `proto::frame::read_frame` over a `&[u8]`; panics if it does wait.
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("future over an in-memory reader returned Pending"),
    }
}
