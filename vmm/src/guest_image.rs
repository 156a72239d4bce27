//! The test guest, built from `guest-image/` by `build.rs` and embedded in the binary.
//!
//! Its boot protocol, exit port, command line and scenarios are documented in
//! `guest-image/README.md`.

use crate::boot::KernelImage;

/// The ELF bytes of the embedded test guest.
pub const ELF: &[u8] = include_bytes!(env!("DRVISOR_GUEST_ELF"));

/// The most vCPUs the embedded guest runs (its `ncpus=` range, `MAX_CPUS` in guest-image).
pub const MAX_VCPUS: usize = 32;

/// The scenarios the embedded guest knows (its `scenario=` command-line key).
pub const SCENARIOS: &[&str] = &[
    "hello",
    "exec",
    "args",
    "write",
    "guest-dr",
    "smp",
    "soak",
    "dr-migrate",
    "kfunc",
    "triple-fault",
    "emu-fail",
    "bad-port",
    "panic",
    "unexpected-exception",
    "ranges",
    "mixed",
    "evict",
    "echo",
    "spin",
    "status",
    "dr7-storm",
    "exit-race",
    "late-map",
    "remap",
    "remap-to-code",
    "ktap",
    "irq-line",
    "cpuid",
    "acpi",
    "s3",
];

/// The embedded guest as a kernel image.
pub fn kernel() -> KernelImage {
    KernelImage::from_bytes("the embedded test guest", ELF).expect("build.rs embeds an ELF")
}
