//! Every image format booted end to end: a tiny 32-bit kernel, written for this test, checks
//! the boot protocol's magic, then echoes its command line, module 0 and module 0's command
//! line to COM1 and exits with 0 (1 when the magic or the module is missing).
//!
//! Formats: ELF32 and ELF64 with the PVH note (in a `PT_NOTE` segment and only in a `.note`
//! section), multiboot ELF32 and ELF64, and multiboot with the header's own load addresses.
//! Then the refusals, each with its reason and exit code 2.

use drvisor::boot::elf::ElfClass;
use drvisor::boot::test_elf::{build_with, multiboot_header, LoadSegment, NotePlace, AOUT_KLUDGE};

use crate::common::{drvisor, ensure, temp_path, Failed, Trial};

/// Where the kernels load and start.
const BASE: u64 = 0x10_0000;

/// Multiboot: EAX = 0x2BADB002, EBX = multiboot info (cmdline at +16, mods_count +20,
/// mods_addr +24; a module is start, end, string).
const MULTIBOOT_CODE: &[u8] = &[
    0xbc, 0x00, 0x00, 0x08, 0x00, // mov esp, 0x80000
    0x3d, 0x02, 0xb0, 0xad, 0x2b, // cmp eax, 0x2badb002
    0x75, 0x29, //                   jne fail
    0x8b, 0x73, 0x10, //             mov esi, [ebx+16]     (cmdline)
    0xe8, 0x2c, 0x00, 0x00, 0x00, // call puts
    0x83, 0x7b, 0x14, 0x00, //       cmp dword [ebx+20], 0 (mods_count)
    0x74, 0x1b, //                   je fail
    0x8b, 0x7b, 0x18, //             mov edi, [ebx+24]     (mods_addr)
    0x8b, 0x37, //                   mov esi, [edi]        (mod_start)
    0x8b, 0x4f, 0x04, //             mov ecx, [edi+4]      (mod_end)
    0x29, 0xf1, //                   sub ecx, esi
    0xe8, 0x27, 0x00, 0x00, 0x00, // call putn
    0x8b, 0x77, 0x08, //             mov esi, [edi+8]      (string)
    0xe8, 0x0f, 0x00, 0x00, 0x00, // call puts
    0x31, 0xc0, //                   xor eax, eax
    0xeb, 0x05, //                   jmp out
    0xb8, 0x01, 0x00, 0x00, 0x00, // fail: mov eax, 1
    0x66, 0xba, 0xf4, 0x00, //       out: mov dx, 0xf4
    0xee, //                         out dx, al
    0xf4, //                         hlt
    // puts: print the NUL-terminated string at esi, then a newline.
    0x66, 0xba, 0xf8, 0x03, //       mov dx, 0x3f8
    0xac, //                         1: lodsb
    0x84, 0xc0, //                   test al, al
    0x74, 0x03, //                   je 2f
    0xee, //                         out dx, al
    0xeb, 0xf8, //                   jmp 1b
    0xb0, 0x0a, //                   2: mov al, '\n'
    0xee, //                         out dx, al
    0xc3, //                         ret
    // putn: print ecx bytes at esi, then a newline.
    0x66, 0xba, 0xf8, 0x03, //       mov dx, 0x3f8
    0xe3, 0x05, //                   1: jecxz 2f
    0xac, //                         lodsb
    0xee, //                         out dx, al
    0x49, //                         dec ecx
    0xeb, 0xf9, //                   jmp 1b
    0xb0, 0x0a, //                   2: mov al, '\n'
    0xee, //                         out dx, al
    0xc3, //                         ret
];

/// PVH: EBX = hvm_start_info (magic at +0, nr_modules +12, modlist_paddr +16, cmdline_paddr
/// +24; a module is paddr, size, cmdline_paddr, each 64-bit).
const PVH_CODE: &[u8] = &[
    0xbc, 0x00, 0x00, 0x08, 0x00, //       mov esp, 0x80000
    0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33, // cmp dword [ebx], 0x336ec578
    0x75, 0x29, //                         jne fail
    0x8b, 0x73, 0x18, //                   mov esi, [ebx+24]     (cmdline_paddr)
    0xe8, 0x2c, 0x00, 0x00, 0x00, //       call puts
    0x83, 0x7b, 0x0c, 0x00, //             cmp dword [ebx+12], 0 (nr_modules)
    0x74, 0x1b, //                         je fail
    0x8b, 0x7b, 0x10, //                   mov edi, [ebx+16]     (modlist_paddr)
    0x8b, 0x37, //                         mov esi, [edi]        (paddr)
    0x8b, 0x4f, 0x08, //                   mov ecx, [edi+8]      (size)
    0x90, 0x90, //                         nop; nop
    0xe8, 0x27, 0x00, 0x00, 0x00, //       call putn
    0x8b, 0x77, 0x10, //                   mov esi, [edi+16]     (cmdline_paddr)
    0xe8, 0x0f, 0x00, 0x00, 0x00, //       call puts
    0x31, 0xc0, //                         xor eax, eax
    0xeb, 0x05, //                         jmp out
    0xb8, 0x01, 0x00, 0x00, 0x00, //       fail: mov eax, 1
    0x66, 0xba, 0xf4, 0x00, //             out: mov dx, 0xf4
    0xee, //                               out dx, al
    0xf4, //                               hlt
    0x66, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xb0, 0x0a, 0xee,
    0xc3, // puts, as above
    0x66, 0xba, 0xf8, 0x03, 0xe3, 0x05, 0xac, 0xee, 0x49, 0xeb, 0xf9, 0xb0, 0x0a, 0xee,
    0xc3, // putn, as above
];

/// Reads fw_cfg items through ports 0x510 (16-bit selector) and 0x511 (data) and copies their
/// bytes to COM1: the signature (4 bytes), the CPU count (key 0x05, 2), the RAM size (key 0x03,
/// 8) and the file directory's count (key 0x19, 4). Then exits with 0.
const FW_CFG_CODE: &[u8] = &[
    0xbc, 0x00, 0x00, 0x08, 0x00, // mov esp, 0x80000
    0x66, 0xb8, 0x00, 0x00, //       mov ax, 0x00 (signature)
    0xb9, 0x04, 0x00, 0x00, 0x00, // mov ecx, 4
    0xe8, 0x32, 0x00, 0x00, 0x00, // call item
    0x66, 0xb8, 0x05, 0x00, //       mov ax, 0x05 (CPU count)
    0xb9, 0x02, 0x00, 0x00, 0x00, // mov ecx, 2
    0xe8, 0x24, 0x00, 0x00, 0x00, // call item
    0x66, 0xb8, 0x03, 0x00, //       mov ax, 0x03 (RAM size)
    0xb9, 0x08, 0x00, 0x00, 0x00, // mov ecx, 8
    0xe8, 0x16, 0x00, 0x00, 0x00, // call item
    0x66, 0xb8, 0x19, 0x00, //       mov ax, 0x19 (file directory)
    0xb9, 0x04, 0x00, 0x00, 0x00, // mov ecx, 4
    0xe8, 0x08, 0x00, 0x00, 0x00, // call item
    0x31, 0xc0, //                   xor eax, eax
    0x66, 0xba, 0xf4, 0x00, //       mov dx, 0xf4
    0xee, //                         out dx, al
    0xf4, //                         hlt
    // item: select ax, copy ecx bytes to COM1.
    0x66, 0xba, 0x10, 0x05, //       mov dx, 0x510
    0x66, 0xef, //                   out dx, ax
    0x66, 0xba, 0x11, 0x05, //       1: mov dx, 0x511
    0xec, //                         in al, dx
    0x66, 0xba, 0xf8, 0x03, //       mov dx, 0x3f8
    0xee, //                         out dx, al
    0x49, //                         dec ecx
    0x75, 0xf3, //                   jnz 1b
    0xc3, //                         ret
];

const VIDEO_MODE: u32 = 1 << 2;

fn elf(class: ElfClass, code: &[u8], pvh: Option<NotePlace>, prefix: &[u8]) -> Vec<u8> {
    // A second, bss-only segment checks that memsz beyond filesz is honoured.
    build_with(
        class,
        BASE,
        &[
            LoadSegment {
                paddr: BASE,
                bytes: code,
                memsz: code.len() as u64,
            },
            LoadSegment {
                paddr: BASE + 0x1000,
                bytes: &[],
                memsz: 0x4000,
            },
        ],
        pvh.map(|place| (BASE as u32, place)),
        prefix,
    )
}

/// A raw (non-ELF) multiboot image: the header at offset 0 with its own load addresses, the
/// code right after it.
fn aout_kludge_image() -> Vec<u8> {
    let code_at = 32u32;
    let base = BASE as u32;
    let mut image = multiboot_header(AOUT_KLUDGE, &[base, base, 0, base + 0x8000, base + code_at]);
    image.extend_from_slice(MULTIBOOT_CODE);
    image
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        for place in [NotePlace::Segment, NotePlace::Section] {
            let name = format!("tiny_kernel::pvh_{class}_{place:?}").to_lowercase();
            trials.push(Trial::test(name, move || {
                echoes(&elf(class, PVH_CODE, Some(place), &[]), Protocol::Pvh)
            }));
        }
        let name = format!("tiny_kernel::multiboot_{class}").to_lowercase();
        trials.push(Trial::test(name, move || {
            echoes(
                &elf(class, MULTIBOOT_CODE, None, &multiboot_header(0, &[])),
                Protocol::Multiboot,
            )
        }));
    }
    trials.push(Trial::test("tiny_kernel::multiboot_aout_kludge", || {
        echoes(&aout_kludge_image(), Protocol::Multiboot)
    }));
    trials.push(Trial::test(
        "tiny_kernel::initrd_is_module_0",
        initrd_is_module_0,
    ));
    trials.push(Trial::test(
        "tiny_kernel::only_the_boot_vcpu_starts_at_the_entry",
        only_the_boot_vcpu_starts,
    ));
    trials.push(Trial::test("tiny_kernel::refusals", refusals));
    trials.push(Trial::test(
        "tiny_kernel::fw_cfg_matches_the_vm",
        fw_cfg_matches_the_vm,
    ));
    trials
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Pvh,
    Multiboot,
}

fn write_temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

fn echoes(image: &[u8], protocol: Protocol) -> Result<(), Failed> {
    let kernel = write_temp("tiny-kernel", image);
    let module = write_temp("tiny-module", b"module bytes \x01 end");
    let k = kernel.to_str().unwrap_or_default();
    let m = format!("{},mod arg=1", module.to_str().unwrap_or_default());
    let run = drvisor(&[
        "run",
        "--kernel",
        k,
        "--cmdline",
        "hello world",
        "--module",
        &m,
    ]);
    let _ = std::fs::remove_file(&kernel);
    let _ = std::fs::remove_file(&module);
    run.expect_code(0)?;
    // Multiboot: QEMU's convention puts the kernel's file name first.
    let cmdline = match protocol {
        Protocol::Pvh => "hello world".to_owned(),
        Protocol::Multiboot => format!("{k} hello world"),
    };
    let want = format!("{cmdline}\nmodule bytes \x01 end\nmod arg=1\n");
    ensure(run.stdout == want, || format!("wanted {want:?}\n{run}"))
}

fn initrd_is_module_0() -> Result<(), Failed> {
    let kernel = write_temp(
        "tiny-kernel",
        &elf(
            ElfClass::Elf32,
            MULTIBOOT_CODE,
            None,
            &multiboot_header(0, &[]),
        ),
    );
    let initrd = write_temp("tiny-initrd", b"NR_CPUS=1");
    let module = write_temp("tiny-module", b"second");
    let m = format!("{},two", module.to_str().unwrap_or_default());
    let run = drvisor(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap_or_default(),
        "--initrd",
        initrd.to_str().unwrap_or_default(),
        "--module",
        &m,
    ]);
    for p in [&kernel, &initrd, &module] {
        let _ = std::fs::remove_file(p);
    }
    run.expect_code(0)?;
    let lines: Vec<&str> = run.stdout.lines().collect();
    ensure(lines.get(1..3) == Some(&["NR_CPUS=1", ""][..]), || {
        format!("module 0 should be the initrd with an empty command line\n{run}")
    })
}

/// With 4 vCPUs the kernel prints its lines once: the APs wait for an INIT/SIPI that this
/// kernel never sends.
fn only_the_boot_vcpu_starts() -> Result<(), Failed> {
    for (image, protocol) in [
        (
            elf(ElfClass::Elf64, PVH_CODE, Some(NotePlace::Segment), &[]),
            "pvh",
        ),
        (
            elf(
                ElfClass::Elf32,
                MULTIBOOT_CODE,
                None,
                &multiboot_header(0, &[]),
            ),
            "multiboot",
        ),
    ] {
        let kernel = write_temp("tiny-kernel", &image);
        let module = write_temp("tiny-module", b"m");
        let m = module.to_str().unwrap_or_default().to_owned();
        let run = drvisor(&[
            "run",
            "--kernel",
            kernel.to_str().unwrap_or_default(),
            "--vcpus",
            "4",
            "--cmdline",
            "once",
            "--module",
            &m,
        ]);
        let _ = std::fs::remove_file(&kernel);
        let _ = std::fs::remove_file(&module);
        run.expect_code(0)?;
        let count = run.stdout.lines().filter(|l| l.ends_with("once")).count();
        ensure(count == 1, || {
            format!("{protocol}: the entry ran {count} times\n{run}")
        })?;
    }
    Ok(())
}

fn refusals() -> Result<(), Failed> {
    let plain32 = elf(ElfClass::Elf32, MULTIBOOT_CODE, None, &[]);
    let plain64 = elf(ElfClass::Elf64, MULTIBOOT_CODE, None, &[]);
    let video = elf(
        ElfClass::Elf32,
        MULTIBOOT_CODE,
        None,
        &multiboot_header(VIDEO_MODE, &[0; 9]),
    );
    let mut bad_sum = multiboot_header(0, &[]);
    bad_sum[8] ^= 0xff;
    let bad_sum = elf(ElfClass::Elf32, MULTIBOOT_CODE, None, &bad_sum);
    let mut no_addresses = multiboot_header(0, &[]);
    no_addresses.resize(512, 0);
    let low = build_with(
        ElfClass::Elf32,
        0x8000,
        &[LoadSegment {
            paddr: 0x8000,
            bytes: MULTIBOOT_CODE,
            memsz: MULTIBOOT_CODE.len() as u64,
        }],
        Some((0x8000, NotePlace::Segment)),
        &[],
    );
    let cases: [(&str, Vec<u8>, &[&str], &str); 7] = [
        ("elf32", plain32, &[], "elf32 without pvh or multiboot"),
        ("elf64", plain64, &[], "elf64 without pvh or multiboot"),
        ("video", video, &[], "multiboot header asks for video mode"),
        ("checksum", bad_sum, &[], "wrong checksum"),
        (
            "raw",
            no_addresses,
            &[],
            "has no load addresses in its header",
        ),
        ("low", low, &[], "below 1 mib"),
        (
            "bigmodule",
            elf(ElfClass::Elf32, PVH_CODE, Some(NotePlace::Segment), &[]),
            &["--mem", "2"],
            "does not fit in guest ram after the kernel",
        ),
    ];
    let big = write_temp("big-module", &vec![0u8; 2 << 20]);
    let big_arg = big.to_str().unwrap_or_default().to_owned();
    for (name, image, extra, needle) in cases {
        let kernel = write_temp("refused-kernel", &image);
        let mut args = vec!["run", "--kernel", kernel.to_str().unwrap_or_default()];
        args.extend_from_slice(extra);
        if name == "bigmodule" {
            args.extend(["--module", &big_arg]);
        }
        let run = drvisor(&args);
        let _ = std::fs::remove_file(&kernel);
        run.expect_code(2)?;
        ensure(run.stderr.to_lowercase().contains(needle), || {
            format!("{name}: wanted `{needle}`\n{run}")
        })?;
        ensure(run.stderr.lines().count() == 1, || {
            format!("{name}: wanted one line\n{run}")
        })?;
    }
    let _ = std::fs::remove_file(&big);
    let run = drvisor(&["run", "--exit-status", "binary"]);
    run.expect_code(2)?;
    ensure(run.stderr.contains("--exit-status"), || run.to_string())
}

/// What fw_cfg answers is what the VM was given: 3 vCPUs and 48 MiB here.
fn fw_cfg_matches_the_vm() -> Result<(), Failed> {
    let kernel = write_temp(
        "fw-cfg-kernel",
        &elf(
            ElfClass::Elf32,
            FW_CFG_CODE,
            None,
            &multiboot_header(0, &[]),
        ),
    );
    let run = drvisor(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap_or_default(),
        "--vcpus",
        "3",
        "--mem",
        "48",
    ]);
    let _ = std::fs::remove_file(&kernel);
    run.expect_code(0)?;
    let mut want = b"QEMU".to_vec();
    want.extend_from_slice(&3u16.to_le_bytes());
    want.extend_from_slice(&(48u64 << 20).to_le_bytes());
    want.extend_from_slice(&0u32.to_be_bytes());
    ensure(run.stdout.as_bytes() == want, || {
        format!(
            "fw_cfg said {:02x?}, wanted {want:02x?}",
            run.stdout.as_bytes()
        )
    })
}
