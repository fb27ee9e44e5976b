//! The sleep handshake between the consumer and the producers, in one type:
//! the sleeping flag, the wake-up target and the "woken on purpose" flag.
//!
//! The consumer goes to sleep in four steps, all behind
//! [`Sleep::announce_thread`] (or `announce_task`) and the [`Announced`]
//! guard it returns:
//! 1. **register** its wake-up target (a thread or a task's waker);
//! 2. **announce**: set the sleeping flag, then a full barrier: a heavy,
//!    process-wide one (`crate::sys::barrier`) in asymmetric mode
//!    (`BarrierMode`), and a SeqCst fence;
//! 3. **re-check** the header it waits on (the caller, holding the guard);
//! 4. **clear** the flag and the target when it wakes (the guard's drop).
//!
//! A producer, after every header it publishes, runs
//! [`Sleep::after_publish`]: a barrier, then a load of the flag; only when
//! the flag is set does it take the target (under the mutex) and wake it.
//! The barrier is a compiler barrier when the consumer's side is heavy
//! (asymmetric mode), a SeqCst fence otherwise (fence mode). The
//! two barriers make a store-load (Dekker) pair: either the consumer's
//! re-check sees the header, or the producer sees the flag (invariant
//! `NoLostWakeUp` in `ring/mod.rs`). Asymmetric mode is available where
//! `membarrier(2)` is; the consumer then picks the mode at every sleep
//! ([`BarrierMode`]): asymmetric while it sleeps rarely, fences while it
//! sleeps often. Entering asymmetric mode needs nothing (producers that
//! still fence are only stronger); leaving it takes one last heavy
//! barrier, after which every producer reads the new mode. If the system
//! refuses a heavy barrier later, fences for good, and every sleep of the
//! next 100 ms is bounded (a producer may still act on the old mode).
//!
//! Other wakers (the last producer leaving, a [`WakeHandle`](crate::WakeHandle))
//! change their condition *before* they lock the target slot; the consumer
//! registers in the slot *before* it checks the conditions. The mutex
//! orders the two: either the waker finds the target or the consumer sees
//! the condition. Checking the conditions takes no lock, so between
//! registering and parking the consumer blocks on nothing.

use std::sync::atomic::compiler_fence;
use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::loom::{fence, AtomicBool, Mutex, MutexGuard, Ordering, Thread};
#[cfg(target_os = "linux")]
use crate::loom::{Arc, EventFd};

/// The longest sleep after a refused heavy barrier (see
/// [`Announced::must_bound`]).
pub(crate) const DEGRADED_SLEEP: std::time::Duration = std::time::Duration::from_millis(1);

/// The consumer's choice between the two barrier pairings of NoLostWakeUp
/// (fences on both sides, or a heavy barrier against none), made again at
/// every sleep from how often the consumer sleeps.
///
/// A heavy barrier costs the consumer about a microsecond and interrupts
/// every running producer; a fence costs each publish a few nanoseconds.
/// A consumer that sleeps rarely (a busy one, or one that idles for long)
/// is cheapest in asymmetric mode; one that sleeps after nearly every
/// entry (a datagram handler fed one system call at a time) in fence mode,
/// where its sleeps cost no more than a futex.
pub(crate) struct BarrierMode {
    /// The heavy barrier works here (registration succeeded, and no call
    /// was refused since).
    available: bool,
    window_start: Option<std::time::Instant>,
    sleeps_in_window: u32,
    /// Until when sleeps are bounded after a refused heavy barrier.
    bound_until: Option<std::time::Instant>,
    #[cfg(test)]
    pub(crate) pinned: Option<bool>,
    /// Makes every heavy barrier fail, as a seccomp filter installed after
    /// the ring was built would.
    #[cfg(test)]
    pub(crate) refuse_heavy: bool,
}

/// Sleeps are counted over windows of this length...
const MODE_WINDOW: std::time::Duration = std::time::Duration::from_millis(10);
/// ...and more than this many in one window (1,000 a second) choose fences.
const MAX_HEAVY_SLEEPS: u32 = 10;
/// After a refused heavy barrier, sleeps stay bounded this long: long past
/// any producer still acting on the asymmetric mode it read before.
const REFUSAL_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

impl BarrierMode {
    pub(crate) fn new(sleep: &Sleep) -> BarrierMode {
        BarrierMode {
            // Relaxed: read once, by the thread that made the ring or one
            // it was sent to (which synchronizes).
            available: sleep.line.asymmetric.load(Ordering::Relaxed),
            window_start: None,
            sleeps_in_window: 0,
            bound_until: None,
            #[cfg(test)]
            pinned: None,
            #[cfg(test)]
            refuse_heavy: false,
        }
    }

    /// The heavy barrier was refused: fences for good, and bounded sleeps
    /// for [`REFUSAL_GRACE`].
    fn refused(&mut self) {
        self.available = false;
        self.bound_until = Some(std::time::Instant::now() + REFUSAL_GRACE);
    }

    /// Whether sleeps must still be bounded after a refusal.
    fn in_grace(&mut self) -> bool {
        match self.bound_until {
            Some(until) if std::time::Instant::now() < until => true,
            Some(_) => {
                self.bound_until = None;
                false
            }
            None => false,
        }
    }

    /// A heavy barrier; `false` if the system refused it.
    fn heavy(&self) -> bool {
        #[cfg(test)]
        if self.refuse_heavy {
            return false;
        }
        crate::sys::barrier::heavy()
    }

    /// The mode for this sleep, given the current one.
    fn choose(&mut self, asymmetric: bool) -> bool {
        if !self.available {
            return false;
        }
        #[cfg(test)]
        if let Some(pinned) = self.pinned {
            return pinned;
        }
        self.sleeps_in_window += 1;
        let now = std::time::Instant::now();
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= MODE_WINDOW {
            let frequent = self.sleeps_in_window > MAX_HEAVY_SLEEPS;
            self.window_start = Some(now);
            self.sleeps_in_window = 0;
            !frequent
        } else {
            // Within a window: leave asymmetric mode as soon as it is too
            // frequent; enter it only at the end of a quiet window.
            asymmetric && self.sleeps_in_window <= MAX_HEAVY_SLEEPS
        }
    }
}

/// What to wake.
pub(crate) enum Target {
    /// A consumer blocked in `wait*`: unpark its thread.
    Thread(Thread),
    /// A consumer polled as a future: wake its task.
    Task(Waker),
    /// A consumer waiting in an event loop: make its readiness fd readable.
    #[cfg(target_os = "linux")]
    Fd(Arc<EventFd>),
}

/// The flag, the target and the wake-on-purpose flag (see the module docs).
pub(crate) struct Sleep {
    /// Read by producers after every header they publish, written only
    /// around sleeps.
    line: CachePadded<SleepLine>,
    /// Where a sleeping consumer leaves its wake-up target.
    target: Mutex<Option<Target>>,
    /// Set by a [`WakeHandle`](crate::WakeHandle); taken by the consumer.
    woken: AtomicBool,
}

/// What producers read after every publish, on one cache line.
struct SleepLine {
    /// Whether the consumer is (about to be) asleep.
    sleeping: AtomicBool,
    /// Whether the consumer's side issues a heavy barrier when it
    /// announces sleep, so that producers need no fence (`crate::sys::barrier`).
    /// Written only by the consumer as it announces sleep ([`BarrierMode`]).
    asymmetric: AtomicBool,
}

/// The consumer has announced that it sleeps; dropping this clears the
/// flag and the target. [`Announced::keep`] leaves both in place (a future
/// that returned `Pending`).
#[must_use = "dropping the guard ends the announcement"]
pub(crate) struct Announced<'a> {
    sleep: &'a Sleep,
    /// The heavy barrier was refused during this announcement: see
    /// [`Announced::must_bound`].
    degraded: bool,
}

impl Sleep {
    pub(crate) fn new() -> Sleep {
        Sleep {
            line: CachePadded::new(SleepLine {
                sleeping: AtomicBool::new(false),
                asymmetric: AtomicBool::new(crate::sys::barrier::register()),
            }),
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
        // NoLostWakeUp: a full barrier between the header store and the
        // flag load. When the consumer issues a heavy barrier as it
        // announces sleep (`crate::sys::barrier`), a compiler barrier is enough
        // here; otherwise a SeqCst fence, paired with the one in
        // `announce`. The compiler barrier comes first in both modes: it
        // also keeps the mode load after the header store, which the
        // switch back to fences relies on. Relaxed: the consumer publishes
        // a change of mode with a heavy barrier (see `announce`), after
        // which every producer reads the new mode.
        compiler_fence(Ordering::SeqCst);
        if !self.line.asymmetric.load(Ordering::Relaxed) {
            fence(Ordering::SeqCst);
        }
        // Acquire: a consumer that set the flag registered its target first.
        if self.line.sleeping.load(Ordering::Acquire) {
            self.wake_sleeper();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_sleeper(&self) {
        // Relaxed: the mutex orders the target; only one producer needs to
        // take the wake-up.
        if self.line.sleeping.swap(false, Ordering::Relaxed) {
            self.wake();
        }
    }

    // ---- other wakers ---------------------------------------------------

    /// Wakes the registered target, if any: for a producer that took the
    /// sleeping flag, a wake-up on purpose, or the last producer gone.
    pub(crate) fn wake(&self) {
        let mut slot = self.target();
        match slot.take() {
            Some(Target::Thread(thread)) => {
                drop(slot);
                thread.unpark();
            }
            Some(Target::Task(waker)) => {
                drop(slot);
                waker.wake();
            }
            // Under the lock: the consumer clears the counter and registers
            // again under it (`announce_fd`), so it never takes back this
            // notification without seeing what caused it.
            #[cfg(target_os = "linux")]
            Some(Target::Fd(fd)) => fd.notify(),
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
    pub(crate) fn announce_thread(&self, mode: &mut BarrierMode) -> Announced<'_> {
        *self.target() = Some(Target::Thread(crate::loom::current()));
        self.announce(mode)
    }

    /// Registers a task's waker (cloned only when it changed) and announces
    /// sleep, as [`announce_thread`](Sleep::announce_thread).
    pub(crate) fn announce_task(&self, waker: &Waker, mode: &mut BarrierMode) -> Announced<'_> {
        {
            let mut slot = self.target();
            if !matches!(&*slot, Some(Target::Task(w)) if w.will_wake(waker)) {
                *slot = Some(Target::Task(waker.clone()));
            }
        }
        self.announce(mode)
    }

    /// Arms a readiness fd: `None` when the last arming is still in force
    /// (`fd` is still registered, so the flag is still set: a waker clears
    /// the flag only to take the registration, and then notifies), unless
    /// `clear` asks to start afresh. Otherwise clears the counter and
    /// registers `fd`, both under the slot's lock, then announces sleep as
    /// [`announce_thread`](Sleep::announce_thread). Under the lock, every
    /// notification the clear takes back was written by a waker whose
    /// critical section came first (it writes under the lock), so the
    /// caller's re-check sees its cause; a waker that comes later finds
    /// the new registration and notifies again.
    #[cfg(target_os = "linux")]
    pub(crate) fn announce_fd(
        &self,
        fd: &Arc<EventFd>,
        clear: bool,
        mode: &mut BarrierMode,
    ) -> Option<Announced<'_>> {
        {
            let mut slot = self.target();
            let held = matches!(&*slot, Some(Target::Fd(f)) if Arc::ptr_eq(f, fd));
            if held && !clear {
                return None;
            }
            fd.clear();
            *slot = Some(Target::Fd(fd.clone()));
        }
        Some(self.announce(mode))
    }

    fn announce(&self, mode: &mut BarrierMode) -> Announced<'_> {
        // Release: the registered target is visible to a producer that
        // reads the flag with Acquire.
        self.line.sleeping.store(true, Ordering::Release);
        // Relaxed (load and store): only the consumer writes the mode, and
        // the heavy barrier below publishes a change to every producer.
        let was = self.line.asymmetric.load(Ordering::Relaxed);
        let now = mode.choose(was);
        if now != was {
            self.line.asymmetric.store(now, Ordering::Relaxed);
        }
        // A heavy barrier in asymmetric mode (also when just entering it),
        // and once more when leaving it: after that one, every producer
        // reads the new mode and fences.
        if (was || now) && !mode.heavy() {
            // Refused (say, a seccomp filter installed after the ring was
            // built): producers fence from now on. One that read `true` may
            // have skipped its fence just now, and one that read it before
            // and was preempted may still act on it, so sleeps stay bounded
            // for a grace period (`Announced::must_bound`).
            self.line.asymmetric.store(false, Ordering::Relaxed);
            mode.refused();
        }
        let degraded = mode.in_grace();
        // SeqCst fence: the flag store before the re-check, paired with the
        // fence in `after_publish` (without a heavy barrier; with one it
        // costs nothing next to the system call).
        fence(Ordering::SeqCst);
        Announced {
            sleep: self,
            degraded,
        }
    }

    /// Takes back an announcement left in place by [`Announced::keep`].
    pub(crate) fn cancel(&self) {
        drop(Announced {
            sleep: self,
            degraded: false,
        });
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
    /// Whether the caller must not sleep without a bound this time: the
    /// heavy barrier was refused, so a commit made just now may not wake it
    /// (a thread parks for at most [`DEGRADED_SLEEP`], a task wakes itself).
    pub(crate) fn must_bound(&self) -> bool {
        self.degraded
    }

    /// Leaves the announcement in place: the producer that sees the flag
    /// wakes the target later.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        // Relaxed: only saves producers a useless wake-up.
        self.sleep.line.sleeping.store(false, Ordering::Relaxed);
        self.sleep.clear_target();
    }
}

#[cfg(all(test, not(mpring_loom)))]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::loom::Ordering;
    use crate::{Consumer, Ring, WaitError};

    fn asymmetric(consumer: &Consumer) -> bool {
        consumer
            .ring
            .sleep()
            .line
            .asymmetric
            .load(Ordering::Relaxed)
    }

    /// A ping-pong in which every commit races with the consumer falling
    /// asleep (see `tests/waiting.rs`); returns how many commits did not
    /// wake it (reads that took their whole timeout).
    fn lost_wake_ups(consumer: &mut Consumer, producer: crate::Producer, rounds: u32) -> u32 {
        consumer.set_spin(Duration::ZERO);
        let timeout = Duration::from_millis(500);
        let acked = Arc::new(AtomicU32::new(0));
        let seen = acked.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..rounds {
                producer.push(&i.to_le_bytes()).unwrap();
                while seen.load(std::sync::atomic::Ordering::Acquire) != i + 1 {
                    std::hint::spin_loop();
                }
            }
        });
        let mut lost = 0;
        for i in 0..rounds {
            let start = Instant::now();
            let entry = consumer.read_timeout(timeout).unwrap();
            assert_eq!(*entry, i.to_le_bytes());
            drop(entry);
            if start.elapsed() >= timeout {
                lost += 1;
            }
            acked.store(i + 1, std::sync::atomic::Ordering::Release);
        }
        writer.join().unwrap();
        lost
    }

    /// Whether the heavy barrier works here. Where it does not, the
    /// asymmetric tests have nothing to test and pass, unless
    /// `MPRING_REQUIRE_MEMBARRIER` is set (CI sets it: a CI machine
    /// without `membarrier` must fail, not skip, the only check of that
    /// pairing).
    fn membarrier_works(consumer: &Consumer) -> bool {
        let works = asymmetric(consumer);
        assert!(
            works || std::env::var_os("MPRING_REQUIRE_MEMBARRIER").is_none(),
            "MPRING_REQUIRE_MEMBARRIER is set, but membarrier(2) is not available here"
        );
        works
    }

    fn rounds() -> u32 {
        match std::env::var("MPRING_PINGPONG_ROUNDS") {
            Ok(n) => n.parse().expect("MPRING_PINGPONG_ROUNDS: a number"),
            Err(_) if cfg!(miri) => 10,
            Err(_) => 20_000,
        }
    }

    /// The asymmetric pairing (heavy barrier against a compiler barrier),
    /// pinned for every sleep however often the consumer sleeps: loom
    /// cannot model it, so this is its test. Without the heavy barrier it
    /// lost 61 of 200,000 wake-ups (release build).
    #[test]
    fn asymmetric_mode_loses_no_wake_up() {
        let (producer, mut consumer) = Ring::new(1024).unwrap();
        if !membarrier_works(&consumer) {
            return; // no membarrier here (Miri, other systems)
        }
        consumer.barrier_mode.pinned = Some(true);
        assert_eq!(lost_wake_ups(&mut consumer, producer, rounds()), 0);
        assert!(asymmetric(&consumer));
    }

    /// A consumer that sleeps after every entry switches to fence mode
    /// within a window; one that then sleeps rarely switches back.
    #[test]
    fn the_mode_follows_how_often_the_consumer_sleeps() {
        let (producer, mut consumer) = Ring::new(1024).unwrap();
        if !membarrier_works(&consumer) {
            return;
        }
        assert_eq!(lost_wake_ups(&mut consumer, producer.clone(), 2_000), 0);
        assert!(!asymmetric(&consumer), "2,000 sleeps in a row: fence mode");
        for _ in 0..3 {
            // Two sleeps 15 ms apart: a quiet window.
            assert_eq!(
                consumer.wait_timeout(Duration::from_millis(15)),
                Err(WaitError::Timeout)
            );
        }
        assert!(
            asymmetric(&consumer),
            "three sleeps in 45 ms: asymmetric mode"
        );
        assert_eq!(lost_wake_ups(&mut consumer, producer, 2_000), 0);
    }

    /// A heavy barrier refused just as the consumer enters asymmetric
    /// mode: a producer may already have read the new mode and skipped its
    /// fence, so the sleep is bounded all the same.
    #[test]
    fn a_refusal_while_entering_asymmetric_mode_bounds_the_sleep() {
        let (_producer, mut consumer) = Ring::new(1024).unwrap();
        if !membarrier_works(&consumer) {
            return;
        }
        consumer.barrier_mode.pinned = Some(false);
        drop(
            consumer
                .ring
                .sleep()
                .announce_thread(&mut consumer.barrier_mode),
        );
        assert!(!asymmetric(&consumer));
        consumer.barrier_mode.pinned = Some(true);
        consumer.barrier_mode.refuse_heavy = true;
        let announced = consumer
            .ring
            .sleep()
            .announce_thread(&mut consumer.barrier_mode);
        assert!(announced.must_bound());
        drop(announced);
        assert!(!asymmetric(&consumer));
        // Still bounded within the grace period, whatever the mode.
        let announced = consumer
            .ring
            .sleep()
            .announce_thread(&mut consumer.barrier_mode);
        assert!(announced.must_bound());
    }

    /// A heavy barrier refused after the ring was built: the consumer
    /// switches the producers to fences for good, bounds the sleep of that
    /// one announcement, and waiting still ends on a commit.
    #[test]
    fn a_refused_heavy_barrier_falls_back_to_fences() {
        let (producer, mut consumer) = Ring::new(1024).unwrap();
        if !membarrier_works(&consumer) {
            return;
        }
        consumer.set_spin(Duration::ZERO);
        consumer.barrier_mode.refuse_heavy = true;
        // Nobody commits: the wait times out, having announced at least once.
        let start = Instant::now();
        assert_eq!(
            consumer.wait_timeout(Duration::from_millis(20)),
            Err(WaitError::Timeout)
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        consumer.barrier_mode.refuse_heavy = false;
        assert!(!asymmetric(&consumer));
        // Fences for good, however rarely the consumer sleeps from now on.
        for _ in 0..3 {
            assert_eq!(
                consumer.wait_timeout(Duration::from_millis(15)),
                Err(WaitError::Timeout)
            );
        }
        assert!(!asymmetric(&consumer));
        assert_eq!(lost_wake_ups(&mut consumer, producer, 2_000), 0);
    }
}
