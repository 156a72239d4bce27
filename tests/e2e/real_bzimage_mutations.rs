//! A real Linux bzImage with its setup header mutated (boot.rst fields set to 0, all ones, or
//! random values), loaded in process into guest memory: no mutation panics the loader or the
//! sanity checks, and every refusal is a typed `boot::Error` of one line. The synthetic images
//! of `vmm/tests/loader_props.rs` cover the same fields at many more cases; this one shows the
//! same holds for what a real kernel carries. Listed as ignored, with the reason, when no real
//! bzImage is at hand.

use drvisor::boot::{self, KernelImage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::common::{skipped, Failed, Trial};

/// Setup-header fields: (offset, width).
const FIELDS: &[(usize, usize)] = &[
    (0x1f1, 1), // setup_sects
    (0x202, 4), // header magic
    (0x206, 2), // version
    (0x211, 1), // loadflags
    (0x214, 4), // code32_start
    (0x230, 4), // kernel_alignment
    (0x234, 1), // relocatable_kernel
    (0x236, 2), // xloadflags
    (0x248, 4), // payload_offset
    (0x24c, 4), // payload_length
    (0x258, 8), // pref_address
    (0x260, 4), // init_size
];

fn real_kernel() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("DRVISOR_TEST_BZIMAGE") {
        return Some(p.into());
    }
    let mut found: Vec<_> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
        })
        .collect();
    found.sort();
    found.pop()
}

fn mutations() -> impl Strategy<Value = Vec<(usize, usize, u64)>> {
    let value = prop_oneof![Just(0u64), Just(u64::MAX), Just(1), any::<u64>()];
    proptest::collection::vec(
        (proptest::sample::select(FIELDS), value).prop_map(|((at, w), v)| (at, w, v)),
        1..4,
    )
}

fn never_panics(path: std::path::PathBuf) -> Result<(), Failed> {
    let original = std::fs::read(&path)?;
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 256 << 20)])?;
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&mutations(), |muts| {
            let mut bytes = original.clone();
            for (at, width, value) in muts {
                for (k, b) in value.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            let result = KernelImage::from_bytes("mutated", bytes)
                .and_then(|k| boot::load(&ram, &k, Some(&[0xab; 4096][..]), &[], "console=ttyS0"));
            if let Err(e) = result {
                let text = e.to_string();
                prop_assert!(!text.contains('\n') && text.len() < 1000, "{}", text);
            }
            Ok(())
        })
        .map_err(|e| Failed::from(e.to_string()))
}

pub fn trials() -> Vec<Trial> {
    match real_kernel() {
        Some(path) => vec![Trial::test(
            "real_bzimage_mutations::setup_header_mutations_never_panic",
            move || never_panics(path),
        )],
        None => vec![skipped(
            "real_bzimage_mutations::setup_header_mutations_never_panic",
            "no Linux bzImage: set DRVISOR_TEST_BZIMAGE or install one in /boot",
        )],
    }
}
