//! The sleep handshake between the consumer and the producers, in one type:
//! the sleeping flag, the wake-up target and the "woken on purpose" flag.
//!
//! The consumer goes to sleep in four steps, all behind
//! [`Sleep::announce_thread`] (or `announce_task`) and the [`Announced`]
//! guard it returns:
//! 1. **register** its wake-up target (a thread or a task's waker);
//! 2. **announce**: set the sleeping flag, then a SeqCst fence;
//! 3. **re-check** the header it waits on (the caller, holding the guard);
//! 4. **clear** the flag and the target when it wakes (the guard's drop).
//!
//! A producer, after every header it publishes, runs
//! [`Sleep::after_publish`]: a SeqCst fence, then a load of the flag; only
//! when the flag is set does it take the target (under the mutex) and wake
//! it. The two fences make a store-load (Dekker) pair: either the
//! consumer's re-check sees the header, or the producer sees the flag
//! (invariant `NoLostWakeUp` in `ring/mod.rs`).
//!
//! Other wakers (the last producer leaving, a [`WakeHandle`](crate::WakeHandle))
//! change their condition *before* they lock the target slot; the consumer
//! registers in the slot *before* it checks the conditions. The mutex
//! orders the two: either the waker finds the target or the consumer sees
//! the condition. Checking the conditions takes no lock, so between
//! registering and parking the consumer blocks on nothing.

use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::loom::{fence, AtomicBool, Mutex, MutexGuard, Ordering, Thread};

/// What to wake.
pub(crate) enum Target {
    /// A consumer blocked in `wait*`: unpark its thread.
    Thread(Thread),
    /// A consumer polled as a future: wake its task.
    Task(Waker),
}

/// The flag, the target and the wake-on-purpose flag (see the module docs).
pub(crate) struct Sleep {
    /// Whether the consumer is (about to be) asleep: read by producers after
    /// every header they publish, written only around sleeps.
    sleeping: CachePadded<AtomicBool>,
    /// Where a sleeping consumer leaves its wake-up target.
    target: Mutex<Option<Target>>,
    /// Set by a [`WakeHandle`](crate::WakeHandle); taken by the consumer.
    woken: AtomicBool,
}

/// The consumer has announced that it sleeps; dropping this clears the
/// flag and the target. [`Announced::keep`] leaves both in place (a future
/// that returned `Pending`).
#[must_use = "dropping the guard ends the announcement"]
pub(crate) struct Announced<'a> {
    sleep: &'a Sleep,
}

impl Sleep {
    pub(crate) fn new() -> Sleep {
        Sleep {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            target: Mutex::new(None),
            woken: AtomicBool::new(false),
        }
    }

    fn target(&self) -> MutexGuard<'_, Option<Target>> {
        // A panic while holding this lock cannot leave the slot invalid.
        self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- producers ------------------------------------------------------

    /// Wakes the consumer if it announced sleep. Called after every header
    /// a producer publishes.
    #[inline]
    pub(crate) fn after_publish(&self) {
        // SeqCst fence: orders the header store before the flag load,
        // paired with the fence in `announce` (a store-load barrier needs a
        // full fence on each side).
        fence(Ordering::SeqCst);
        // Acquire: a consumer that set the flag registered its target first.
        if self.sleeping.load(Ordering::Acquire) {
            self.wake_sleeper();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_sleeper(&self) {
        // Relaxed: the mutex orders the target; only one producer needs to
        // take the wake-up.
        if self.sleeping.swap(false, Ordering::Relaxed) {
            self.wake();
        }
    }

    // ---- other wakers ---------------------------------------------------

    /// Wakes the registered target, if any (the last producer is gone).
    pub(crate) fn wake(&self) {
        let target = self.target().take();
        match target {
            Some(Target::Thread(thread)) => thread.unpark(),
            Some(Target::Task(waker)) => waker.wake(),
            None => {}
        }
    }

    /// Marks a wake-up on purpose, then wakes.
    pub(crate) fn wake_on_purpose(&self) {
        // Release: pairs with the consumer's Acquire; the lock in `wake`
        // comes after it (see the module docs).
        self.woken.store(true, Ordering::Release);
        self.wake();
    }

    // ---- the consumer ---------------------------------------------------

    /// Registers the current thread and announces sleep. The caller
    /// re-checks what it waits for while it holds the returned guard.
    pub(crate) fn announce_thread(&self) -> Announced<'_> {
        *self.target() = Some(Target::Thread(crate::loom::current()));
        self.announce()
    }

    /// Registers a task's waker (cloned only when it changed) and announces
    /// sleep, as [`announce_thread`](Sleep::announce_thread).
    pub(crate) fn announce_task(&self, waker: &Waker) -> Announced<'_> {
        {
            let mut slot = self.target();
            if !matches!(&*slot, Some(Target::Task(w)) if w.will_wake(waker)) {
                *slot = Some(Target::Task(waker.clone()));
            }
        }
        self.announce()
    }

    fn announce(&self) -> Announced<'_> {
        // Release: the registered target is visible to a producer that
        // reads the flag with Acquire.
        self.sleeping.store(true, Ordering::Release);
        // SeqCst fence: the flag store before the re-check, paired with the
        // fence in `after_publish`.
        fence(Ordering::SeqCst);
        Announced { sleep: self }
    }

    /// Takes back an announcement left in place by [`Announced::keep`].
    pub(crate) fn cancel(&self) {
        drop(Announced { sleep: self });
    }

    /// Forgets the registered target (the consumer is going away).
    pub(crate) fn clear_target(&self) {
        *self.target() = None;
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

impl Announced<'_> {
    /// Leaves the announcement in place: the producer that sees the flag
    /// wakes the target later.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        // Relaxed: only saves producers a useless wake-up.
        self.sleep.sleeping.store(false, Ordering::Relaxed);
        self.sleep.clear_target();
    }
}
