//! Where a waiting consumer leaves its wake-up target.
//!
//! Producers touch this only when they find the consumer's sleeping flag
//! set after publishing a header (see `Ring::publish`), when the last
//! producer goes, or when a
//! [`WakeHandle`](crate::WakeHandle) is used: never on the common path.

use std::task::Waker;

use crate::loom::{AtomicBool, Mutex, MutexGuard, Ordering, Thread};

/// What to wake.
pub(crate) enum Target {
    /// A consumer blocked in `wait*`: unpark its thread.
    Thread(Thread),
    /// A consumer polled as a future: wake its task.
    Task(Waker),
}

/// The consumer's registered wake-up target, behind a mutex, and the
/// "woken on purpose" flag of [`WakeHandle`](crate::WakeHandle).
///
/// Ordering: a waker changes its condition (the producer count, the
/// `woken` flag) *before* it locks the slot; the consumer registers in the
/// slot *before* it checks the conditions. The mutex orders the two, so
/// either the waker finds the target or the consumer sees the condition: no
/// lost wake-up. (New headers go through the sleeping flag and fences of
/// `Ring::publish` instead, and reach the slot only when the flag is set,
/// which the consumer does after registering.) Checking the conditions
/// takes no lock: between registering and parking the consumer blocks on
/// nothing.
pub(crate) struct Waiter {
    slot: Mutex<Option<Target>>,
    woken: AtomicBool,
}

impl Waiter {
    pub(crate) fn new() -> Waiter {
        Waiter {
            slot: Mutex::new(None),
            woken: AtomicBool::new(false),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Target>> {
        // A panic while holding this lock cannot leave the slot invalid.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the current thread as the one to unpark.
    pub(crate) fn register_thread(&self) {
        *self.slot() = Some(Target::Thread(crate::loom::current()));
    }

    /// Registers a task's waker (cloned only when it changed).
    pub(crate) fn register_task(&self, waker: &Waker) {
        let mut slot = self.slot();
        if !matches!(&*slot, Some(Target::Task(w)) if w.will_wake(waker)) {
            *slot = Some(Target::Task(waker.clone()));
        }
    }

    /// Forgets the registered target.
    pub(crate) fn clear(&self) {
        *self.slot() = None;
    }

    /// Wakes the registered target, if any.
    pub(crate) fn wake(&self) {
        let target = self.slot().take();
        wake(target);
    }

    /// Marks a wake-up on purpose, then wakes.
    pub(crate) fn wake_on_purpose(&self) {
        // Release: pairs with the consumer's Acquire, and the lock below
        // comes after it (see the type's docs).
        self.woken.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether a wake-up on purpose is pending (without taking it).
    pub(crate) fn is_woken(&self) -> bool {
        // Acquire: see `wake_on_purpose`.
        self.woken.load(Ordering::Acquire)
    }

    /// Takes a pending wake-up on purpose.
    pub(crate) fn take_woken(&self) -> bool {
        // Load first: the common answer (no) costs no write.
        // Acquire: see `wake_on_purpose`.
        self.woken.load(Ordering::Acquire) && self.woken.swap(false, Ordering::Acquire)
    }
}

/// Wakes a target outside the lock.
fn wake(target: Option<Target>) {
    match target {
        Some(Target::Thread(thread)) => thread.unpark(),
        Some(Target::Task(waker)) => waker.wake(),
        None => {}
    }
}
