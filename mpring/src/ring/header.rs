//! The 8-byte word that starts every span of the buffer.
//!
//! | word (as `i64`) | meaning                                               |
//! |-----------------|-------------------------------------------------------|
//! | `0`             | nothing published here yet: the consumer stops        |
//! | `0 < n < 2^62`  | a committed entry whose payload is `n - 1` bytes long |
//! | `2^62 + s`      | an open reservation of `s` bytes (read-around mode)   |
//! | `-1`            | padding: the rest of the buffer is unused             |
//! | `-s < -1`       | a skipped span of `s` bytes (header included)         |
//!
//! Lengths are stored plus one so that a 0-byte payload (a valid UDP
//! datagram) is `1`, not the "not ready" `0`. A skipped span is at least one
//! alignment unit (8 or 16 bytes), so it can never be `-1`. Payloads and
//! spans are below `2^61` (half of any buffer that can be allocated), so
//! the open bit never meets an entry's length.

/// What a header word says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// Not published yet (free, or reserved and still being written).
    NotReady,
    /// A committed entry with this many payload bytes.
    Entry(usize),
    /// The rest of the buffer up to its end is unused.
    Padding,
    /// A span of this many bytes (header included) to step over.
    Skip(usize),
    /// A reservation of this many bytes (header included), claimed and not
    /// committed yet: announced only in read-around mode.
    Open(usize),
}

const PADDING: u64 = u64::MAX;
const OPEN: u64 = 1 << 62;

impl Header {
    /// Decodes a header word.
    #[inline]
    pub(crate) fn decode(word: u64) -> Header {
        let signed = word as i64;
        if signed > 0 {
            if word & OPEN != 0 {
                Header::Open((word & !OPEN) as usize)
            } else {
                Header::Entry((word - 1) as usize)
            }
        } else if signed == 0 {
            Header::NotReady
        } else if word == PADDING {
            Header::Padding
        } else {
            Header::Skip(signed.unsigned_abs() as usize)
        }
    }

    /// Encodes a published header. `NotReady` is the zero word.
    #[inline]
    pub(crate) fn encode(self) -> u64 {
        match self {
            Header::NotReady => 0,
            Header::Entry(len) => {
                debug_assert!((len as u64) < OPEN - 1);
                len as u64 + 1
            }
            Header::Open(span) => {
                debug_assert!((span as u64) < OPEN && span > 0);
                OPEN | span as u64
            }
            Header::Padding => PADDING,
            Header::Skip(span) => {
                debug_assert!(span >= 2);
                (span as i64).wrapping_neg() as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Header;

    #[test]
    fn round_trips() {
        for h in [
            Header::NotReady,
            Header::Entry(0),
            Header::Entry(1),
            Header::Entry(65_527),
            Header::Entry(1 << 40),
            Header::Padding,
            Header::Skip(8),
            Header::Skip(16),
            Header::Skip(1 << 40),
            Header::Open(8),
            Header::Open(1 << 40),
        ] {
            assert_eq!(Header::decode(h.encode()), h, "{h:?}");
        }
    }

    #[test]
    fn empty_entry_is_not_the_zero_word() {
        assert_ne!(Header::Entry(0).encode(), 0);
        assert_eq!(Header::NotReady.encode(), 0);
    }

    #[test]
    fn smallest_skip_is_not_padding() {
        assert_ne!(Header::Skip(8).encode(), Header::Padding.encode());
    }
}
