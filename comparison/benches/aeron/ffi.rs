//! Declarations for Aeron's C many-to-one ring buffer, `aeron_mpsc_rb`
//! (aeron-client/src/main/c/concurrent/aeron_mpsc_rb.h and aeron_rb.h in
//! github.com/aeron-io/aeron). No Aeron code is part of this repository:
//! the bench links a `libaeron_rb.a` built by the user (BENCHMARKS.md says
//! how) from the folder in `AERON_RB_DIR`, or, for type-checking only,
//! `aeron/stub.c` (`AERON_RB_STUB=1`).

use std::ffi::{c_int, c_void};

/// `aeron_mpsc_rb_t` (aeron_mpsc_rb.h), its layout copied: the C code only
/// reads these fields after `aeron_mpsc_rb_init` has set them.
#[repr(C)]
pub struct AeronMpscRb {
    pub buffer: *mut u8,
    /// `aeron_rb_descriptor_t *`: the trailer, right after the capacity.
    pub descriptor: *mut c_void,
    pub capacity: usize,
    pub max_message_length: usize,
}

/// `AERON_RB_TRAILER_LENGTH`, `sizeof(aeron_rb_descriptor_t)`: a leading pad
/// and five counters, each two 64-byte cache lines. `aeron_mpsc_rb_init`
/// takes capacity + this; it fails when the capacity left is not a power of
/// two, which catches a wrong value here.
pub const TRAILER_LENGTH: usize = 6 * 2 * 64;

/// `aeron_rb_write_result_t` values.
pub const RB_SUCCESS: c_int = 0;
pub const RB_FULL: c_int = -1;

/// `aeron_rb_handler_t`: message type id, message, its length, `clientd`.
pub type Handler =
    unsafe extern "C" fn(msg_type_id: i32, msg: *const c_void, length: usize, clientd: *mut c_void);

extern "C" {
    /// 0, or -1 when `length - TRAILER_LENGTH` is not a valid capacity. The
    /// buffer must be zeroed and 8-byte aligned.
    pub fn aeron_mpsc_rb_init(
        ring_buffer: *mut AeronMpscRb,
        buffer: *mut c_void,
        length: usize,
    ) -> c_int;

    /// Copies `length` bytes from `msg` into the ring as one record:
    /// `RB_SUCCESS`, `RB_FULL`, or -2 (too long, or type id < 1).
    pub fn aeron_mpsc_rb_write(
        ring_buffer: *mut AeronMpscRb,
        msg_type_id: i32,
        msg: *const c_void,
        length: usize,
    ) -> c_int;

    /// Claims room for `length` bytes: the message's offset in `buffer`, or
    /// `RB_FULL` / -2.
    pub fn aeron_mpsc_rb_try_claim(
        ring_buffer: *mut AeronMpscRb,
        msg_type_id: i32,
        length: usize,
    ) -> i32;

    /// Publishes a claim made by `aeron_mpsc_rb_try_claim`: 0, or -1.
    pub fn aeron_mpsc_rb_commit(ring_buffer: *mut AeronMpscRb, offset: i32) -> c_int;

    /// Hands up to `message_count_limit` messages to `handler`, then zeroes
    /// what it read and publishes the head: the number of messages read.
    pub fn aeron_mpsc_rb_read(
        ring_buffer: *mut AeronMpscRb,
        handler: Handler,
        clientd: *mut c_void,
        message_count_limit: usize,
    ) -> usize;
}
