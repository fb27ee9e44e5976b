//! The comparison examples refuse bad arguments before they run: a message
//! on stderr, nothing on stdout (no header), exit status 2; `--help` prints
//! the usage and exits 0 without running.
//!
//! The example binaries are the ones `cargo test` builds next to this test
//! (`target/<profile>/examples/`): run it through `cargo test` (or build
//! the examples first when selecting it with `--test examples`).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The example binary `name`, built by the same `cargo test`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (with `--test examples` alone, \
         run `cargo build -p mpring-comparison --examples` first)",
        path.display()
    );
    path
}

/// Runs `name` with `args`; kills it after 30 s (it should never run).
fn run(name: &str, args: &[&str]) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait for the example").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {args:?} ran instead of exiting at once");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("the example's output")
}

fn assert_help(name: &str) {
    for flag in ["--help", "-h"] {
        let out = run(name, &[flag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name} {flag}: {out:?}");
        assert!(
            stdout.contains("USAGE"),
            "{name} {flag} prints its usage: {stdout}"
        );
        assert!(out.stderr.is_empty(), "{name} {flag}: {out:?}");
    }
}

fn assert_refused(name: &str, args: &[&str], says: &str) {
    let out = run(name, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {out:?}");
    assert!(
        stderr.contains(says),
        "{name} {args:?}: stderr should say {says:?}: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{name} {args:?}: nothing on stdout before the refusal: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

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
