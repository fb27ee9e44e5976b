//! The library's examples refuse bad arguments before they run: a message
//! on stderr, nothing on stdout (no header), exit status 2; `--help` prints
//! the usage and exits 0 without running.
//!
//! The example binaries are the ones `cargo test` builds next to this test
//! (`target/<profile>/examples/`): run it through `cargo test` (or build
//! the examples first when selecting it with `--test examples`).

#[path = "support/examples.rs"]
mod support;
use support::{assert_help, assert_refused};

#[test]
fn throughput_help_exits_0_without_running() {
    assert_help("throughput");
}

#[test]
fn throughput_refuses_bad_arguments_with_status_2() {
    let cases: &[(&[&str], &str)] = &[
        // Any capacity whose largest entry is below the largest message
        // (it used to panic in the producer threads).
        (&["2", "1000", "64"], "CAPACITY"),
        (&["2", "1000", "2048"], "CAPACITY"),
        // Zero producers (it used to report 0 entries/s).
        (&["0"], "PRODUCERS"),
        (&["2", "0"], "MESSAGES"),
        // Not a power of two (it used to print its header first).
        (&["2", "1000", "1000"], "not a power of two"),
        (&["two"], "not a whole number"),
        (&["--bogus"], "unknown option --bogus"),
        (&["1", "2", "4096", "4"], "too many arguments"),
    ];
    for (args, says) in cases {
        assert_refused("throughput", args, says);
    }
}

#[test]
fn timer_loop_help_exits_0_without_running() {
    assert_help("timer_loop");
}

#[test]
fn timer_loop_refuses_arguments_with_status_2() {
    assert_refused("timer_loop", &["--bogus"], "unexpected argument --bogus");
    assert_refused("timer_loop", &["3"], "unexpected argument 3");
}
