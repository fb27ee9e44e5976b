//! Points in the protocol where a test can hold a thread, built only with
//! `--cfg mpring_hooks` (a CI step of its own); otherwise empty functions
//! that compile to nothing.
//!
//! [`hold_next_claim`] arms the calling thread: its next reservation stops
//! right after the CAS that claimed its bytes, before anything is written
//! into them (padding header, `Open` announcement), until the test
//! releases it. That is the window in which a claim exists and says
//! nothing of its length.

#[cfg(not(mpring_hooks))]
#[inline(always)]
pub(crate) fn after_claim() {}

#[cfg(mpring_hooks)]
pub use self::held::*;

#[cfg(mpring_hooks)]
mod held {
    use std::cell::RefCell;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// A thread held at a hook: the test waits until it got there, then
    /// releases it.
    #[derive(Debug, Default)]
    pub struct Gate {
        /// (reached, released)
        state: Mutex<(bool, bool)>,
        changed: Condvar,
    }

    impl Gate {
        /// Waits until the held thread reached the hook; `false` after
        /// `timeout`.
        pub fn wait_reached(&self, timeout: Duration) -> bool {
            let deadline = Instant::now() + timeout;
            let mut state = self.state.lock().unwrap();
            while !state.0 {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
            }
            true
        }

        /// Lets the held thread go on.
        pub fn release(&self) {
            self.state.lock().unwrap().1 = true;
            self.changed.notify_all();
        }

        fn hold(&self) {
            let mut state = self.state.lock().unwrap();
            state.0 = true;
            self.changed.notify_all();
            while !state.1 {
                state = self.changed.wait(state).unwrap();
            }
        }
    }

    thread_local! {
        static ARMED: RefCell<Option<Arc<Gate>>> = const { RefCell::new(None) };
    }

    /// Arms the calling thread: its next claim holds right after its CAS.
    pub fn hold_next_claim() -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        ARMED.with(|armed| *armed.borrow_mut() = Some(gate.clone()));
        gate
    }

    pub(crate) fn after_claim() {
        if let Some(gate) = ARMED.with(|armed| armed.borrow_mut().take()) {
            gate.hold();
        }
    }
}
