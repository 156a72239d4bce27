//! Passes the linker script and the freestanding link arguments to the kernel binary only.
//!
//! `rustc-link-arg-bins` does not apply to this build script itself (which links against std),
//! and the absolute path makes the build independent of the directory cargo is invoked from.

fn main() {
    // The codegen flags live in guest-image/.cargo/config.toml, which cargo only reads when it
    // runs with the current directory inside guest-image/. Without them the kernel would contain
    // SSE code the emulating KVM cannot run, so refuse to build instead.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !flags.split('\x1f').any(|f| f.contains("-sse2")) {
        panic!(
            "drvisor-guest must be built with guest-image/.cargo/config.toml in effect: run cargo \
             with the current directory set to guest-image/ and without RUSTFLAGS / \
             CARGO_ENCODED_RUSTFLAGS in the environment (got rustflags {flags:?})"
        );
    }

    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
