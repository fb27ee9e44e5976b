//! The crate's error types.

use std::fmt;

/// Why a reservation (or a push) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReserveError {
    /// There is not enough free space right now. Retryable: space comes back
    /// as the consumer reads. A UDP listener typically drops and counts.
    Full,
    /// The entry can never fit in this ring, whatever the consumer does.
    TooLarge {
        /// The payload length that was asked for.
        len: usize,
        /// The largest payload this ring accepts ([`Producer::max_payload`]).
        ///
        /// [`Producer::max_payload`]: crate::Producer::max_payload
        max: usize,
    },
    /// The consumer has been dropped: nothing will ever read the entry.
    Disconnected,
    /// A batch that can never fit this ring (it may take at most half of it).
    BatchTooLarge {
        /// The number of slots that was asked for.
        count: usize,
        /// The slot size that was asked for.
        slot_len: usize,
        /// The most slots of this size a batch can have in this ring (0
        /// when one slot is already larger than the largest payload).
        max_count: usize,
    },
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Full => f.write_str("ring is full"),
            ReserveError::TooLarge { len, max } => write!(
                f,
                "entry of {len} bytes is larger than this ring's maximum payload of {max} bytes"
            ),
            ReserveError::Disconnected => f.write_str("the consumer has been dropped"),
            ReserveError::BatchTooLarge {
                count,
                slot_len,
                max_count,
            } => write!(
                f,
                "a batch of {count} slots of {slot_len} bytes is larger than half this ring \
                 (at most {max_count} such slots)"
            ),
        }
    }
}

impl std::error::Error for ReserveError {}

/// Why a ring could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BuildError {
    /// The capacity was zero.
    ZeroCapacity,
    /// The capacity was not a power of two.
    NotPowerOfTwo {
        /// The capacity that was asked for.
        capacity: usize,
    },
    /// The capacity cannot hold a single entry (the minimum is twice a
    /// header and its metadata room: the largest entry may take half the
    /// buffer).
    TooSmall {
        /// The capacity that was asked for.
        capacity: usize,
        /// The smallest capacity accepted with the chosen alignment.
        min: usize,
    },
    /// The buffer could not be allocated (larger than the address space, or
    /// refused by the allocator).
    TooLarge {
        /// The capacity that was asked for.
        capacity: usize,
    },
    /// The metadata type needs a larger alignment than the entries have
    /// (choose [`Alignment::Sixteen`](crate::Alignment::Sixteen), or a
    /// record with smaller fields).
    MetadataAlignment {
        /// The metadata type's alignment.
        align: usize,
        /// The entries' alignment.
        entry_align: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroCapacity => f.write_str("ring capacity must not be zero"),
            BuildError::NotPowerOfTwo { capacity } => {
                write!(f, "ring capacity {capacity} is not a power of two")
            }
            BuildError::TooSmall { capacity, min } => write!(
                f,
                "ring capacity {capacity} is too small to hold an entry (minimum {min})"
            ),
            BuildError::TooLarge { capacity } => {
                write!(f, "a ring of {capacity} bytes could not be allocated")
            }
            BuildError::MetadataAlignment { align, entry_align } => write!(
                f,
                "metadata aligned to {align} bytes does not fit entries aligned to {entry_align}"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a wait ended without an entry. Two cases, matched exhaustively: a
/// [`WakeHandle`](crate::WakeHandle) wake-up is no error (the wait
/// returns `Ok`, with nothing to read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitError {
    /// The timeout or deadline passed first. Also what `read_timeout` and
    /// `read_deadline` (which must return an entry) return when a
    /// [`WakeHandle`](crate::WakeHandle) woke the consumer with nothing to
    /// read; the other waits return `Ok` then (`read_batch_timeout`:
    /// `Ok(0)`).
    Timeout,
    /// Every producer is gone and no entry is left to read: the stream has
    /// ended.
    Disconnected,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout => f.write_str("timed out waiting for an entry"),
            WaitError::Disconnected => {
                f.write_str("every producer has been dropped and the ring is drained")
            }
        }
    }
}

impl std::error::Error for WaitError {}
