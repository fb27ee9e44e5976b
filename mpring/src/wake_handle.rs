//! Waking the consumer on purpose.

use std::fmt;

use crate::loom::Arc;
use crate::ring::Shared;

/// Wakes the ring's consumer from any thread, for example to make a
/// datagram handler blocked in [`Consumer::wait`](crate::Consumer::wait)
/// look at a shutdown flag. Made by [`Consumer::wake_handle`](crate::Consumer::wake_handle);
/// `Clone + Send + Sync`. (`M` is the ring's [`Metadata`](crate::Metadata).)
///
/// The wait in progress, or the next one if none is, returns `Ok` instead
/// of blocking, with nothing to read unless an entry is ready (ready
/// entries still come first): the consumer then looks at whatever it was
/// woken for. Wake-ups are no error, so code without a handle never sees one.
///
/// ```
/// use std::time::Duration;
///
/// let (_producer, mut consumer) = mpring::Ring::new(1024)?;
/// let handle = consumer.wake_handle();
/// std::thread::spawn(move || handle.wake());
/// // Returns once woken (the long timeout is only a safety net).
/// let outcome = consumer.wait_timeout(Duration::from_secs(60));
/// assert_eq!(outcome, Ok(()));
/// assert!(consumer.read().is_none()); // woken, not fed
/// # Ok::<(), mpring::BuildError>(())
/// ```
pub struct WakeHandle<M = ()> {
    ring: Arc<Shared<M>>,
}

impl<M> WakeHandle<M> {
    pub(crate) fn new(ring: Arc<Shared<M>>) -> WakeHandle<M> {
        WakeHandle { ring }
    }

    /// Wakes the consumer (or makes its next wait return at once).
    pub fn wake(&self) {
        self.ring.sleep().wake_on_purpose();
    }
}

impl<M> Clone for WakeHandle<M> {
    fn clone(&self) -> WakeHandle<M> {
        WakeHandle {
            ring: self.ring.clone(),
        }
    }
}

impl<M> fmt::Debug for WakeHandle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeHandle").finish_non_exhaustive()
    }
}
