//! Links Aeron's C ring into the peer bench when asked (BENCHMARKS.md):
//!
//! - `AERON_RB_DIR=/path/to/dir`: links `libaeron_rb.a` from that folder
//!   (built by the user from Aeron's sources; none are in this repository)
//!   and sets `cfg(aeron_rb)`, which adds the Aeron rows.
//! - `AERON_RB_STUB=1`: compiles `benches/aeron/stub.c` (same signatures,
//!   every call fails) instead and sets `cfg(aeron_rb)` and
//!   `cfg(aeron_rb_stub)`: the Aeron code is type-checked and linked, and
//!   the bench skips its rows. For CI.
//! - neither: no Aeron rows; the bench says how to enable them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(aeron_rb)");
    println!("cargo::rustc-check-cfg=cfg(aeron_rb_stub)");
    println!("cargo::rerun-if-env-changed=AERON_RB_DIR");
    println!("cargo::rerun-if-env-changed=AERON_RB_STUB");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=benches/aeron/stub.c");

    if let Some(dir) = env::var_os("AERON_RB_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let lib = dir.join("libaeron_rb.a");
        assert!(
            lib.is_file(),
            "AERON_RB_DIR={}: no libaeron_rb.a there (BENCHMARKS.md says how to build it)",
            dir.display()
        );
        println!("cargo::rerun-if-changed={}", lib.display());
        println!("cargo::rustc-link-search=native={}", dir.display());
        println!("cargo::rustc-link-lib=static=aeron_rb");
        println!("cargo::rustc-cfg=aeron_rb");
    } else if env::var_os("AERON_RB_STUB").is_some_and(|s| !s.is_empty()) {
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let obj = out.join("aeron_stub.o");
        let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&cc)
            .args(["-O2", "-fPIC", "-c", "benches/aeron/stub.c", "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("running {cc}: {e}"));
        assert!(status.success(), "{cc} failed on benches/aeron/stub.c");
        let ar = env::var("AR").unwrap_or_else(|_| "ar".into());
        let status = Command::new(&ar)
            .arg("crs")
            .arg(out.join("libaeron_rb.a"))
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| panic!("running {ar}: {e}"));
        assert!(status.success(), "{ar} failed");
        println!("cargo::rustc-link-search=native={}", out.display());
        println!("cargo::rustc-link-lib=static=aeron_rb");
        println!("cargo::rustc-cfg=aeron_rb");
        println!("cargo::rustc-cfg=aeron_rb_stub");
    }
}
