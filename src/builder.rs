//! Options for building a ring.

use crate::error::BuildError;
use crate::loom::Arc;
use crate::{Consumer, Producer, Ring};

/// The alignment of every entry in the buffer.
///
/// Each entry's span (header + payload) is rounded up to it and each payload
/// starts on it. The header takes one alignment unit, so `Sixteen` costs 8
/// more bytes per entry than `Eight` and gives 16-byte aligned payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Alignment {
    /// 8 bytes (the default): the smallest overhead.
    #[default]
    Eight,
    /// 16 bytes: payloads aligned for 128-bit loads and stores.
    Sixteen,
}

impl Alignment {
    /// The alignment in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Alignment::Eight => 8,
            Alignment::Sixteen => 16,
        }
    }
}

/// Builds a ring with options other than the defaults.
///
/// ```
/// use mpring::{Alignment, Ring};
///
/// let (producer, _consumer) = Ring::builder(4096).alignment(Alignment::Sixteen).build()?;
/// assert_eq!(producer.max_payload(), 4096 / 2 - 16);
/// # Ok::<(), mpring::BuildError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    capacity: usize,
    alignment: Alignment,
}

impl Builder {
    /// A builder for a ring of `capacity` bytes (a power of two).
    pub fn new(capacity: usize) -> Builder {
        Builder {
            capacity,
            alignment: Alignment::default(),
        }
    }

    /// Sets the alignment of entries (default: [`Alignment::Eight`]).
    pub fn alignment(mut self, alignment: Alignment) -> Builder {
        self.alignment = alignment;
        self
    }

    /// Allocates the ring (zeroed, once) and returns its producer handle and
    /// its consumer.
    ///
    /// # Errors
    /// [`BuildError`] when the capacity is zero, not a power of two, smaller
    /// than two alignment units, or cannot be allocated. Never aborts the
    /// process on a huge request.
    pub fn build(self) -> Result<(Producer, Consumer), BuildError> {
        let ring = Arc::new(Ring::allocate(self.capacity, self.alignment)?);
        Ok((Producer::new(ring.clone()), Consumer::new(ring)))
    }
}
