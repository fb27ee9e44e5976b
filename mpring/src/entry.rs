//! An entry read in place.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::ring::{Cursor, Delivery, Shared};

/// A committed entry, read in place by [`Consumer::read`](crate::Consumer::read).
///
/// Derefs to the payload, exactly as committed; [`meta`](Entry::meta) is
/// its metadata record on a ring with [`Metadata`](crate::Metadata).
/// Dropping it consumes the entry; its space goes back to producers with
/// the consumer's next release.
///
/// The payload is the consumer's until then, so it can be changed in place
/// (`DerefMut`), for example decrypted by a QUIC stack whose `recv` takes
/// `&mut [u8]`:
///
/// ```
/// let (producer, mut consumer) = mpring::Ring::new(1024)?;
/// producer.push(b"sealed")?;
/// let mut entry = consumer.read().unwrap();
/// entry.make_ascii_uppercase(); // open the packet where it lies
/// assert_eq!(&*entry, b"SEALED");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Entry<'a, M = ()> {
    ring: &'a Shared<M>,
    cursor: &'a mut Cursor,
    /// `None` only inside `drop`.
    delivery: Option<Delivery>,
}

impl<'a, M> Entry<'a, M> {
    pub(crate) fn new(
        ring: &'a Shared<M>,
        cursor: &'a mut Cursor,
        delivery: Delivery,
    ) -> Entry<'a, M> {
        Entry {
            ring,
            cursor,
            delivery: Some(delivery),
        }
    }

    /// The entry's metadata record, as its producer committed it.
    ///
    /// ```
    /// let (producer, mut consumer) = mpring::Ring::builder(1024).metadata::<(u8, u32)>().build()?;
    /// producer.push_with(b"x", (1, 2))?;
    /// assert_eq!(consumer.read().unwrap().meta(), &(1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn meta(&self) -> &M {
        match &self.delivery {
            Some(delivery) => self.ring.meta(delivery),
            None => unreachable!("an entry has its delivery until dropped"),
        }
    }
}

impl<M> Deref for Entry<'_, M> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.delivery {
            Some(delivery) => self.ring.bytes(delivery),
            None => &[],
        }
    }
}

impl<M> DerefMut for Entry<'_, M> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.delivery {
            Some(delivery) => self.ring.delivered_bytes_mut(delivery),
            None => &mut [],
        }
    }
}

impl<M> AsMut<[u8]> for Entry<'_, M> {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl<M> AsRef<[u8]> for Entry<'_, M> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl<M> Drop for Entry<'_, M> {
    #[inline]
    fn drop(&mut self) {
        if let Some(delivery) = self.delivery.take() {
            self.ring.consume(self.cursor, delivery);
        }
    }
}

impl<M> fmt::Debug for Entry<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("len", &self.len()).finish()
    }
}
