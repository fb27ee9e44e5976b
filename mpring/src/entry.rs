//! An entry read in place.

use std::fmt;
use std::ops::Deref;

use crate::ring::{Cursor, Delivery, Shared};

/// A committed entry, read in place by [`Consumer::read`](crate::Consumer::read).
///
/// Derefs to the payload, exactly as committed. Dropping it consumes the
/// entry; its space goes back to producers with the consumer's next release.
pub struct Entry<'a> {
    ring: &'a Shared,
    cursor: &'a mut Cursor,
    /// `None` only inside `drop`.
    delivery: Option<Delivery>,
}

impl<'a> Entry<'a> {
    pub(crate) fn new(ring: &'a Shared, cursor: &'a mut Cursor, delivery: Delivery) -> Entry<'a> {
        Entry {
            ring,
            cursor,
            delivery: Some(delivery),
        }
    }
}

impl Deref for Entry<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.delivery {
            Some(delivery) => self.ring.bytes(delivery),
            None => &[],
        }
    }
}

impl AsRef<[u8]> for Entry<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Entry<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(delivery) = self.delivery.take() {
            self.ring.consume(self.cursor, delivery);
        }
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("len", &self.len()).finish()
    }
}
