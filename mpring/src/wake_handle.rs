//! Waking the consumer on purpose.

use std::fmt;

use crate::loom::Arc;
use crate::ring::Shared;

/// Wakes the ring's consumer from any thread, for example to make a
/// datagram handler blocked in [`Consumer::wait`](crate::Consumer::wait)
/// look at a shutdown flag. Made by [`Consumer::wake_handle`](crate::Consumer::wake_handle);
/// `Clone + Send + Sync`.
///
/// The wait in progress, or the next one if none is, returns
/// [`WaitError::Woken`](crate::WaitError::Woken) instead of blocking (ready
/// entries still come first).
///
/// ```
/// use std::time::Duration;
///
/// let (_producer, mut consumer) = mpring::Ring::new(1024)?;
/// let handle = consumer.wake_handle();
/// std::thread::spawn(move || handle.wake());
/// // Returns once woken (the long timeout is only a safety net).
/// let outcome = consumer.wait_timeout(Duration::from_secs(60));
/// assert_eq!(outcome, Err(mpring::WaitError::Woken));
/// # Ok::<(), mpring::BuildError>(())
/// ```
#[derive(Clone)]
pub struct WakeHandle {
    ring: Arc<Shared>,
}

impl WakeHandle {
    pub(crate) fn new(ring: Arc<Shared>) -> WakeHandle {
        WakeHandle { ring }
    }

    /// Wakes the consumer (or makes its next wait return at once).
    pub fn wake(&self) {
        self.ring.sleep().wake_on_purpose();
    }
}

impl fmt::Debug for WakeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakeHandle").finish_non_exhaustive()
    }
}
