//! Link layout of the release binary (build script; nothing here runs in meshmail itself).
//!
//! Why: the kernel maps a binary's code in windows of 64 KiB around each page a process
//! touches (fault-around). Starting `meshmail serve` runs about two thousand functions that the
//! compiler scattered over 16 MiB of code, so an idle `serve` had most of its code mapped:
//! 23.7 MB resident, of which 3 MB was its own memory. `src/startup.order` lists those
//! functions (made by `integration/bench/startup_order.sh` from a run under callgrind) and
//! the linker places them first, so they map in a few windows (13–14 MB resident). Relative
//! relocations are packed (DT_RELR, glibc 2.36 and later), so the dynamic loader no longer reads
//! a 0.9 MB relocation table at every start.
//!
//! A stale order costs nothing but memory: symbols the binary no longer has are skipped, and
//! the benchmark prints how many are still found (`integration/bench/smtp_bench.sh`).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=src/startup.order");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    // `--symbol-ordering-file` is an option of LLD, the default linker of this target since
    // Rust 1.90 (`rust-version` in Cargo.toml); other targets link as rustc chooses.
    let lld_target = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    if !(release && lld_target) {
        return;
    }
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    let order = Path::new(&dir).join("src/startup.order");
    if order.is_file() {
        println!(
            "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
