//! The kernel loaders fed mutated real images: the embedded test guest's ELF and a bzImage with
//! a valid setup header, each with bytes and header fields overwritten (interesting values:
//! 0, all ones, near the top of the address space, inside and outside guest RAM) and cut short.
//!
//! Property: classifying, measuring, loading into guest memory (no KVM needed) and reading
//! symbols never panic; every refusal is a typed `boot::Error` whose message is one line.

use drvisor::boot::elf::ElfClass;
use drvisor::boot::test_elf::{self, multiboot_header, AOUT_KLUDGE};
use drvisor::boot::{self, KernelImage};
use drvisor::guest_image::ELF;
use drvisor::symbols::SymbolTable;
use proptest::prelude::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Guest RAM for one load: small, so that "does not fit" paths are reached too.
const RAM: usize = 4 << 20;

fn ram() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).expect("4 MiB of guest RAM")
}

/// One mutation: overwrite bytes at `at` with `value` (little endian, `width` bytes).
#[derive(Clone, Debug)]
struct Mutation {
    at: usize,
    width: usize,
    value: u64,
}

fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 0xfff),
        Just(0xffff_ffff),
        Just(0x8000_0000_0000_0000),
        Just(0x10_0000),
        Just(0x50_0000),
        Just(RAM as u64),
        Just(0x7_0000),
        Just(0xa_0000),
        any::<u64>(),
    ]
}

/// Offsets weighted towards where a loader looks: the file header, the program or setup
/// header, the PVH note; and anywhere.
fn mutation(len: usize, hot: &'static [(usize, usize)]) -> impl Strategy<Value = Mutation> {
    let region = prop_oneof![
        3 => proptest::sample::select(hot.to_vec()),
        1 => Just((0usize, len)),
    ];
    (
        region,
        any::<prop::sample::Index>(),
        prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
        interesting(),
    )
        .prop_map(move |((start, end), i, width, value)| Mutation {
            at: start + i.index(end.min(len) - start),
            width,
            value,
        })
}

/// A field of the ELF header or of one of the first program headers, at its offset and width.
fn elf_field() -> impl Strategy<Value = Mutation> {
    const HEADER: &[(usize, usize)] = &[(24, 8), (32, 8), (54, 2), (56, 2), (18, 2), (4, 1)];
    const PHDR: &[(usize, usize)] = &[(0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8)];
    let header = proptest::sample::select(HEADER);
    let phdr = (0usize..5, proptest::sample::select(PHDR))
        .prop_map(|(i, (off, w))| (64 + i * 56 + off, w));
    (prop_oneof![header, phdr], interesting()).prop_map(|((at, width), value)| Mutation {
        at,
        width,
        value,
    })
}

/// A field of the bzImage setup header (boot.rst), at its offset and width.
fn bz_field() -> impl Strategy<Value = Mutation> {
    const FIELDS: &[(usize, usize)] = &[
        (0x1f1, 1), // setup_sects
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
        (0x264, 4), // handover_offset
    ];
    (proptest::sample::select(FIELDS), interesting()).prop_map(|((at, width), value)| Mutation {
        at,
        width,
        value,
    })
}

fn apply(bytes: &mut Vec<u8>, mutations: &[Mutation], cut: Option<usize>) {
    for m in mutations {
        let le = m.value.to_le_bytes();
        for (k, b) in le.iter().take(m.width).enumerate() {
            if let Some(slot) = bytes.get_mut(m.at + k) {
                *slot = *b;
            }
        }
    }
    if let Some(n) = cut {
        bytes.truncate(n);
    }
}

/// Everything drvisor does with a kernel before a vCPU runs it, with and without an initrd.
fn exercise(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let _ = SymbolTable::from_elf(&bytes);
    let kernel = match KernelImage::from_bytes("mutated", bytes) {
        Ok(k) => k,
        Err(e) => return one_line(&e),
    };
    let _ = kernel.load_end();
    let _ = kernel.executable_ranges();
    let _ = kernel.has_pvh_note();
    for initrd in [None, Some(&[0xabu8; 4096][..])] {
        if let Err(e) = boot::load(&ram(), &kernel, initrd, &[], "console=ttyS0") {
            one_line(&e)?;
        }
    }
    Ok(())
}

fn one_line(e: &boot::Error) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!text.contains('\n') && text.len() < 1000, "{text}");
    Ok(())
}

/// The ELF header, the program headers (4 of 56 bytes), and the PVH note's neighbourhood.
const ELF_HOT: &[(usize, usize)] = &[(0, 64), (64, 64 + 8 * 56), (0x7400, 0x7600)];
/// The boot sector's tail and the setup header (0x1f1..0x280), and the start of the payload.
const BZ_HOT: &[(usize, usize)] = &[(0x1f0, 0x280), (0x1000, 0x1400)];

/// A bzImage whose setup header says protocol 2.15, 64-bit capable, with a small payload.
fn bzimage() -> Vec<u8> {
    const SETUP_SECTS: usize = 4;
    let mut image = vec![0u8; (SETUP_SECTS + 1) * 512 + 0x1000];
    image[0x1f1] = SETUP_SECTS as u8;
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 1; // LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
    image[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    image[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    image[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    image
}

/// A multiboot ELF32 (header after the ELF headers, in the first 8 KiB) and a multiboot
/// a.out-kludge image (header at 0, the header's own load addresses).
fn multiboot_images() -> [Vec<u8>; 2] {
    let code = [0xf4u8; 16]; // hlt
    let elf = test_elf::build(
        ElfClass::Elf32,
        0x20_0000,
        &code,
        None,
        &multiboot_header(0, &[]),
    );
    let base = 0x20_0000u32;
    let mut aout = multiboot_header(AOUT_KLUDGE, &[base, base, 0, base + 0x8000, base + 0x40]);
    aout.resize(0x40, 0);
    aout.extend_from_slice(&code);
    [elf, aout]
}

/// The multiboot header's neighbourhood in both images, and the ELF headers.
const MB_HOT: &[(usize, usize)] = &[(0, 0x40), (0x40, 0x200)];

#[test]
fn the_unmutated_images_load() {
    for image in multiboot_images() {
        let kernel = KernelImage::from_bytes("multiboot", image).expect("a multiboot image");
        boot::load(&ram(), &kernel, Some(&[1u8; 64][..]), &[], "x=1").expect("multiboot loads");
    }
    let kernel = KernelImage::from_bytes("guest", ELF.to_vec()).expect("an ELF");
    boot::load(&ram(), &kernel, None, &[], "x=1").expect("the test guest loads");
    let kernel = KernelImage::from_bytes("bz", bzimage()).expect("a bzImage");
    boot::load(&ram(), &kernel, Some(&[1u8; 64][..]), &[], "x=1").expect("the bzImage loads");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn mutated_elf_never_panics(
        mutations in proptest::collection::vec(
            prop_oneof![mutation(ELF.len(), ELF_HOT), elf_field()], 1..8),
        cut in proptest::option::weighted(0.1, 0..ELF.len()),
    ) {
        let mut bytes = ELF.to_vec();
        apply(&mut bytes, &mutations, cut);
        exercise(bytes)?;
    }

    #[test]
    fn mutated_bzimage_never_panics(
        mutations in proptest::collection::vec(
            prop_oneof![mutation(bzimage().len(), BZ_HOT), bz_field()], 1..8),
        cut in proptest::option::weighted(0.1, 0..bzimage().len()),
    ) {
        let mut bytes = bzimage();
        apply(&mut bytes, &mutations, cut);
        exercise(bytes)?;
    }

    #[test]
    fn mutated_multiboot_never_panics(
        which in 0usize..2,
        mutations in proptest::collection::vec(mutation(0x240, MB_HOT), 1..8),
        cut in proptest::option::weighted(0.1, 0..0x240usize),
    ) {
        let mut bytes = multiboot_images()[which].clone();
        apply(&mut bytes, &mutations, cut);
        exercise(bytes)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..0x1400),
        elf_magic in any::<bool>(),
        bz_magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if elf_magic && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(b"\x7fELF");
        }
        if bz_magic && bytes.len() >= 0x206 {
            bytes[0x202..0x206].copy_from_slice(b"HdrS");
        }
        exercise(bytes)?;
    }
}
