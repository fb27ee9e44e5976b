//! Running an example binary built by the same `cargo test`, and the
//! checks every example's tests share: `--help` exits 0 with the usage,
//! bad arguments exit 2 with a message on stderr and nothing on stdout.
//! Included by `mpring/tests/examples.rs` and `comparison/tests/examples.rs`.

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
         build the package's examples first: `cargo build -p <package> --examples`)",
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

pub fn assert_help(name: &str) {
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

pub fn assert_refused(name: &str, args: &[&str], says: &str) {
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
