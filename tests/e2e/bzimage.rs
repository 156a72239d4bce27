//! The Linux bzImage path, as far as this host allows (a stock kernel cannot finish booting
//! under its emulator, the platform notes): the image loads, the zero page is right, and the vCPU
//! starts at the kernel's 64-bit entry.
//!
//! A synthetic bzImage proves all three end to end: its "kernel" is a few instructions at
//! `startup_64` that check the zero page through RSI and report through the exit port. A real
//! Linux bzImage, when one is available, is loaded and checked in process.

use drvisor::boot::{Entry, KernelImage};
use drvisor::{Vm, VmConfig};
use vm_memory::{Bytes, GuestAddress};

use crate::common::{drvisor, ensure, skipped, Failed, Trial};

const SETUP_SECTS: usize = 1;
const SETUP_SIZE: usize = (SETUP_SECTS + 1) * 512;
/// `startup_64` sits 0x200 bytes into the protected-mode kernel.
const STARTUP_64: usize = 0x200;

/// Checks the zero page (RSI) and the command line and initrd it points to, then writes 0 to
/// the exit port, or the number of the first failed check.
const ENTRY_CODE: &[u8] = &[
    0x81, 0xbe, 0x02, 0x02, 0, 0, 0x48, 0x64, 0x72, 0x53, // cmp dword [rsi+0x202], "HdrS"
    0xb0, 0x01, 0x75, 0x42, // mov al,1; jne out
    0x81, 0xbe, 0x28, 0x02, 0, 0, 0x00, 0x00, 0x02,
    0x00, // cmp dword [rsi+0x228] (cmd_line_ptr), 0x20000
    0xb0, 0x02, 0x75, 0x34, // mov al,2; jne out
    0x80, 0xbe, 0xe8, 0x01, 0, 0, 0x04, // cmp byte [rsi+0x1e8] (e820_entries), 4
    0xb0, 0x03, 0x75, 0x29, // mov al,3; jne out
    0x80, 0x3c, 0x25, 0x00, 0x00, 0x02, 0x00, 0x78, // cmp byte [0x20000], 'x'
    0xb0, 0x04, 0x75, 0x1d, // mov al,4; jne out
    0x81, 0xbe, 0x1c, 0x02, 0, 0, 0x00, 0x10, 0x00,
    0x00, // cmp dword [rsi+0x21c] (ramdisk_size), 4096
    0xb0, 0x05, 0x75, 0x0f, // mov al,5; jne out
    0x8b, 0xbe, 0x18, 0x02, 0, 0, // mov edi, [rsi+0x218] (ramdisk_image)
    0x80, 0x3f, 0xab, // cmp byte [rdi], 0xab
    0xb0, 0x06, 0x75, 0x02, // mov al,6; jne out
    0xb0, 0x00, // mov al,0
    0xe6, 0xf4, // out: out 0xf4, al
    0xf4, // hlt
];

/// A bzImage of `total_len` bytes whose protected-mode kernel starts with `entry_code` at
/// `startup_64`.
pub fn synthetic_bzimage(entry_code: &[u8], total_len: usize) -> Vec<u8> {
    let mut image = vec![0u8; total_len.max(SETUP_SIZE + STARTUP_64 + entry_code.len())];
    image[0x1f1] = SETUP_SECTS as u8;
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // boot protocol 2.15
    image[0x211] = 1; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    image[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    image[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    image[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size: 1 MiB
    let entry = SETUP_SIZE + STARTUP_64;
    image[entry..entry + entry_code.len()].copy_from_slice(entry_code);
    image
}

fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("drvisor-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

fn boots_to_startup_64_with_right_zero_page() -> Result<(), Failed> {
    let kernel = temp("bz", &synthetic_bzimage(ENTRY_CODE, 8192));
    let initrd = temp("initrd", &[0xab; 4096]);
    let run = drvisor(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap_or_default(),
        "--initrd",
        initrd.to_str().unwrap_or_default(),
        "--cmdline",
        "x=1 console=ttyS0",
    ]);
    let _ = std::fs::remove_file(&kernel);
    let _ = std::fs::remove_file(&initrd);
    // Any other status names the failed check in ENTRY_CODE.
    run.expect_code(0).map(|_| ())
}

fn vcpu_starts_in_long_mode_at_the_entry() -> Result<(), Failed> {
    let image = KernelImage::from_bytes("synthetic", synthetic_bzimage(ENTRY_CODE, 8192))?;
    let mut config = VmConfig::new(image, "x=1");
    config.initrd = Some(vec![0xab; 4096]);
    config.mem_mib = 32;
    let vm = Vm::try_from(config)?;
    ensure(
        vm.entry()
            == Entry::Linux64 {
                entry: 0x10_0200,
                zero_page: 0x7000,
            },
        || format!("entry {:?}", vm.entry()),
    )?;
    let vcpu = &vm.vcpus()[0].fd;
    let regs = vcpu.get_regs()?;
    let sregs = vcpu.get_sregs()?;
    ensure(regs.rip == 0x10_0200 && regs.rsi == 0x7000, || {
        format!("{regs:?}")
    })?;
    ensure(
        sregs.efer & 0x500 == 0x500 && sregs.cr0 & (1 << 31) != 0 && sregs.cs.l == 1,
        || format!("not in long mode: {sregs:?}"),
    )?;
    let mem = vm.memory();
    let magic: u32 = mem.read_obj(GuestAddress(0x7000 + 0x202))?;
    let loader: u8 = mem.read_obj(GuestAddress(0x7000 + 0x210))?;
    let initrd_at: u32 = mem.read_obj(GuestAddress(0x7000 + 0x218))?;
    ensure(magic == 0x5372_6448 && loader == 0xff, || {
        "setup header".into()
    })?;
    ensure(initrd_at as u64 == (32 << 20) - 4096, || {
        format!("initrd at {initrd_at:#x}")
    })
}

/// A real Linux bzImage: from `DRVISOR_TEST_BZIMAGE`, or the host's /boot/vmlinuz-*.
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

fn real_linux_loads(path: std::path::PathBuf) -> Result<(), Failed> {
    let bytes = std::fs::read(&path)?;
    let header: [u8; 0x80] = bytes[0x1f1..0x271].try_into()?;
    let code32_start = u32::from_le_bytes(bytes[0x214..0x218].try_into()?) as u64;
    let image = KernelImage::from_bytes(path.display().to_string(), bytes)?;
    let mut config = VmConfig::new(image, "console=ttyS0 earlyprintk=serial");
    config.mem_mib = 256;
    let vm = Vm::try_from(config)?;
    let entry = code32_start + 0x200;
    ensure(vm.vcpus()[0].fd.get_regs()?.rip == entry, || {
        "rip is not startup_64".into()
    })?;
    let mut in_guest = [0u8; 0x80];
    vm.memory()
        .read_slice(&mut in_guest, GuestAddress(0x7000 + 0x1f1))?;
    // The loader keeps the kernel's header, changing only what the boot protocol says a loader fills in.
    let kept = |off: usize| in_guest[off - 0x1f1] == header[off - 0x1f1];
    ensure((0x202..0x210).all(kept) && (0x230..0x238).all(kept), || {
        "setup header not copied".into()
    })
}

pub fn trials() -> Vec<Trial> {
    let mut trials = vec![
        Trial::test(
            "bzimage::boots_to_startup_64_with_right_zero_page",
            boots_to_startup_64_with_right_zero_page,
        ),
        Trial::test(
            "bzimage::vcpu_starts_in_long_mode_at_the_entry",
            vcpu_starts_in_long_mode_at_the_entry,
        ),
    ];
    match real_kernel() {
        Some(path) => trials.push(Trial::test("bzimage::real_linux_loads", move || {
            real_linux_loads(path)
        })),
        None => trials.push(skipped(
            "bzimage::real_linux_loads",
            "no Linux bzImage: set DRVISOR_TEST_BZIMAGE or install one in /boot",
        )),
    }
    trials
}
