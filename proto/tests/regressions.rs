//! One test per problem found by fuzzing (`fuzz`, run by `.ci/fuzz`), with the input
//! that found it written inline, so it stays fixed without the fuzzer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proto::frame::{FrameError, decode};
use proto::message::{Reply, Request};
use proto::{Fingerprint, PublicKey};

/// Counts the largest single allocation made by the current thread, so a test can bound
/// what a hostile input makes the decoder allocate.
struct Measured;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while the thread shuts down.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; we only record the size.
unsafe impl GlobalAlloc for Measured {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Measured = Measured;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// names_and_keys, crash-d8e6703e: `unhex` hands each pair of characters to
/// `u8::from_str_radix`, which accepts a leading '+', so "+c" read as the byte 0x0c and
/// the fuzzer's text (two '+' in a key's hex) parsed as a fingerprint; the same goes for
/// keys (a real key's "09" written "+9"). Key files, pin files and typed fingerprints must
/// be hex digits only.
#[test]
fn hex_with_a_plus_sign_is_refused() {
    let found = "8a88e3dd7409f195fd52db2d3cba5d72ca67+c+e1d94121bf3748801b40f6f5c";
    assert_eq!(
        Fingerprint::parse(found),
        None,
        "{found} parsed as a fingerprint"
    );
    let real = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";
    assert!(PublicKey::from_hex(real).is_ok());
    let plus = real.replacen("09", "+9", 1);
    assert!(
        PublicKey::from_hex(&plus).is_err(),
        "{plus} parsed as a key"
    );
}

/// frame_decode (not a crash; found while setting the fuzzers' allocation cap): a sequence
/// length is not counted against bincode's 64 KiB decode limit before serde pre-allocates
/// the sequence, so this 109-byte `Login`, announcing 2^32 addresses, makes one 1 MiB
/// allocation (serde caps pre-allocation at 1 MiB) before failing. Bounded, and freed at
/// once; this pins the bound, which `proto_fuzz::CappedAlloc` also enforces.
#[test]
fn hostile_sequence_length_allocates_at_most_1_mib() {
    let mut login = vec![0x02, 0x00, 0x00]; // Request::Login, empty user and password
    login.extend_from_slice(&[0x11; 32]); // identity key
    login.push(0x40); // signature: 64 bytes
    login.extend_from_slice(&[0x22; 64]);
    login.push(0xfd); // addresses: u64 length follows
    login.extend_from_slice(&(1u64 << 32).to_le_bytes());
    assert_eq!(login.len(), 109);

    let (result, largest) = largest_allocation(|| decode::<Request>(&login));
    assert!(
        matches!(result, Err(FrameError::Malformed(_))),
        "{result:?}"
    );
    assert!(
        largest <= 1 << 20,
        "decoding 109 bytes allocated {largest} bytes at once"
    );

    // The same with a `Vec<u8>` (a ticket) in a reply.
    let mut granted = vec![0x02, 0x00, 0xfd]; // Reply::Granted, empty user, ticket length
    granted.extend_from_slice(&u64::MAX.to_le_bytes());
    let (result, largest) = largest_allocation(|| decode::<Reply>(&granted));
    assert!(
        matches!(result, Err(FrameError::Malformed(_))),
        "{result:?}"
    );
    assert!(
        largest <= 1 << 20,
        "decoding 11 bytes allocated {largest} bytes at once"
    );
}
