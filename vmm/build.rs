//! Builds the freestanding test guest (`../guest-image`) with its own flags and target
//! directory, so that a plain `cargo build` of the workspace embeds it as the default guest,
//! and checks the result with `guest-image/check-image.sh`.
//!
//! The guest's rustflags live in `guest-image/.cargo/config.toml`; cargo only reads that file
//! when it runs *inside* guest-image/, which is why the nested cargo gets that directory as its
//! cwd and none of the outer build's flag variables (they would leak host flags into it).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guest_dir = manifest_dir.join("../guest-image");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("guest");
    for input in [
        "src",
        "Cargo.toml",
        "linker.ld",
        "build.rs",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", guest_dir.join(input).display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir)
        .args(["build", "--release", "--offline", "--target-dir"])
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to spawn cargo for the test guest");
    if !status.success() {
        panic!("building the test guest in {} failed", guest_dir.display());
    }
    let elf = target_dir.join("release/drvisor-guest");
    check_image(&guest_dir, &elf);
    println!("cargo:rustc-env=DRVISOR_GUEST_ELF={}", elf.display());
}

/// Runs `guest-image/check-image.sh` on the built guest: no instruction the emulating KVM
/// rejects at CPL0, the PVH note, the symbols and pages the tests rely on. A failed check fails
/// the build with the script's message. Without binutils (objdump, readelf, nm) the check
/// cannot run: the build says so and goes on.
fn check_image(guest_dir: &Path, elf: &Path) {
    let script = guest_dir.join("check-image.sh");
    println!("cargo:rerun-if-changed={}", script.display());
    let missing: Vec<&str> = ["objdump", "readelf", "nm", "awk"]
        .into_iter()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        println!(
            "cargo:warning=guest-image/check-image.sh not run: {} not found (install binutils)",
            missing.join(", ")
        );
        return;
    }
    let out = Command::new("sh")
        .arg(&script)
        .arg(elf)
        .output()
        .expect("failed to spawn sh for check-image.sh");
    if !out.status.success() {
        panic!(
            "guest-image/check-image.sh rejects the test guest:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
