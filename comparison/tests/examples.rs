//! The comparison examples refuse bad arguments before they run: a message
//! on stderr, nothing on stdout (no header), exit status 2; `--help` prints
//! the usage and exits 0 without running.
//!
//! The example binaries are the ones `cargo test` builds next to this test
//! (`target/<profile>/examples/`): run it through `cargo test` (or build
//! the examples first when selecting it with `--test examples`).

#[path = "../../mpring/tests/support/examples.rs"]
mod support;
use support::{assert_help, assert_refused};

#[test]
fn udp_fanin_help_exits_0_without_running() {
    assert_help("udp_fanin");
}

#[test]
fn udp_fanin_refuses_bad_flags_with_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unknown option --bogus"),
        (&["--capacity", "1000"], "power of two"),
        (&["--capacity", "2048"], "cannot hold"),
        (&["--listeners", "0"], "--listeners"),
        (&["--rounds"], "needs a value"),
        (&["--rounds", "0"], "--rounds"),
        (&["--duration", "soon"], "--duration"),
        (&["--duration", "0"], "--duration"),
        (&["--pipelines", "mpring-udp,nope"], "unknown pipeline nope"),
        (&["--sizes", "5"], "--sizes"),
        (&["--datagrams", "-1"], "--datagrams"),
    ];
    for (args, says) in cases {
        assert_refused("udp_fanin", args, says);
    }
}

#[test]
fn quinn_echo_help_exits_0_without_running() {
    assert_help("quinn_echo");
}

#[test]
fn quinn_echo_refuses_bad_arguments_with_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--fast"], "unknown option --fast"),
        (&["0"], "STREAMS"),
        (&["64", "256", "0"], "ROUNDS"),
        (&["x"], "not a whole number"),
        (&["1", "2", "3", "4", "5", "6"], "too many arguments"),
        (&["1", "1", "1", "1000"], "at most 64"),
    ];
    for (args, says) in cases {
        assert_refused("quinn_echo", args, says);
    }
}

#[test]
fn quic_shards_help_exits_0_without_running() {
    assert_help("quic_shards");
}

#[test]
fn quic_shards_refuses_bad_flags_with_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--fast"], "unknown option --fast"),
        (&["--connections"], "needs a value"),
        (&["--connections", "0"], "--connections"),
        (&["--connections", "64", "--per-socket", "5"], "must divide"),
        (&["--shards", "2,0"], "--shards"),
        (&["--configs", "quinn,nope"], "unknown nope"),
        (&["--seconds", "soon"], "--seconds"),
        (&["--datagram", "4000"], "--datagram"),
        (&["--rounds", "x"], "not a whole number"),
    ];
    for (args, says) in cases {
        assert_refused("quic_shards", args, says);
    }
}
