//! The library's examples refuse bad arguments before they run: a message
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
         run `cargo build -p mpring --examples` first)",
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
