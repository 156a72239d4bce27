//! Task layouts from BTF built here, and from the real Debian kernel of `ci/linux/cache`.

use object::{Object, ObjectSection};

use super::*;
use crate::kernel::{kallsyms, payload};

/// A BTF blob: each type as (name, kind, kind_flag, size_or_type, trailing u32s).
fn blob(types: &[(&str, u32, bool, u32, Vec<u32>)], extra_strings: &[&str]) -> Vec<u8> {
    let mut strings = vec![0u8];
    let mut offset_of = std::collections::HashMap::new();
    let mut intern = |s: &str, strings: &mut Vec<u8>| -> u32 {
        if s.is_empty() {
            return 0;
        }
        *offset_of.entry(s.to_owned()).or_insert_with(|| {
            let at = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            at
        })
    };
    for s in extra_strings {
        intern(s, &mut strings);
    }
    let mut body = Vec::new();
    for (name, kind, flag, size, trailing) in types {
        let vlen = match kind {
            4 | 5 => trailing.len() / 3,
            _ => 0,
        } as u32;
        let info = vlen | (kind << 24) | (u32::from(*flag) << 31);
        for w in [intern(name, &mut strings), info, *size] {
            body.extend_from_slice(&w.to_le_bytes());
        }
        for w in trailing {
            body.extend_from_slice(&w.to_le_bytes());
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9fu16.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    for w in [
        24u32,
        0,
        body.len() as u32,
        body.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&body);
    out.extend_from_slice(&strings);
    out
}

/// A member's name offset: the strings are interned in `NAMES` order after the type names.
const NAMES: [&str; 7] = [
    "state",
    "pid",
    "tgid",
    "comm",
    "flags",
    "cpu_number",
    "current_task",
];

fn name_off(name: &str) -> u32 {
    if name.is_empty() {
        return 0;
    }
    // "\0" then each of NAMES with its NUL, interned first (see `blob`'s extra_strings).
    1 + NAMES
        .iter()
        .take_while(|n| **n != name)
        .map(|n| n.len() as u32 + 1)
        .sum::<u32>()
}

fn kernel_btf() -> Vec<u8> {
    let m = |name: &str, ty: u32, bits: u32| vec![name_off(name), ty, bits];
    blob(
        &[
            ("int", 1, false, 4, vec![32]),       // 1
            ("char", 1, false, 1, vec![8]),       // 2
            ("", 3, false, 0, vec![2, 1, 16]),    // 3: char[16]
            ("", 4, false, 4, m("tgid", 1, 0)),   // 4: struct { int tgid; }
            ("task_struct", 7, false, 0, vec![]), // 5: a forward declaration
            (
                "task_struct", // 6
                4,
                true,
                0x980,
                [
                    m("state", 1, 0),
                    // A 3-bit bitfield (kind_flag: size in the top byte).
                    m("flags", 1, (3 << 24) | 32),
                    m("pid", 1, 0x4d0 * 8),
                    m("", 4, 0x4d4 * 8),
                    m("comm", 3, 0x6f0 * 8),
                ]
                .concat(),
            ),
            ("", 2, false, 6, vec![]), // 7: struct task_struct *
            (
                "pcpu_hot", // 8
                4,
                false,
                64,
                [m("cpu_number", 1, 0), m("current_task", 7, 64)].concat(),
            ),
        ],
        &NAMES,
    )
}

fn percpu_symbols(names: &[(&str, u64)]) -> SymbolTable {
    let mut entries = vec![
        kallsyms::Entry {
            addr: 0,
            kind: 'A',
            name: "__per_cpu_start".into(),
        },
        kallsyms::Entry {
            addr: 0x34000,
            kind: 'A',
            name: "__per_cpu_end".into(),
        },
    ];
    for (name, addr) in names {
        entries.push(kallsyms::Entry {
            addr: *addr,
            kind: 'A',
            name: (*name).into(),
        });
    }
    kallsyms::symbol_table(&entries)
}

#[test]
fn layout_with_pcpu_hot_and_an_anonymous_struct() {
    let btf = Btf::parse(&kernel_btf()).unwrap();
    let layout = layout_from(&btf, &percpu_symbols(&[("pcpu_hot", 0x1fb80)])).unwrap();
    assert_eq!(
        layout,
        TaskLayout {
            current_task: 0x1fb88,
            pid: 0x4d0,
            tgid: 0x4d4,
            comm: 0x6f0,
        }
    );
}

#[test]
fn layout_with_current_task_of_its_own() {
    let btf = Btf::parse(&kernel_btf()).unwrap();
    let layout = layout_from(&btf, &percpu_symbols(&[("current_task", 0x1fb80)])).unwrap();
    assert_eq!(layout.current_task, 0x1fb80);
}

#[test]
fn what_is_missing_is_named() {
    let btf = Btf::parse(&kernel_btf()).unwrap();
    assert_eq!(
        layout_from(&btf, &percpu_symbols(&[])),
        Err(Error::NoCurrentTask)
    );
    let empty = Btf::parse(&blob(&[("int", 1, false, 4, vec![32])], &[])).unwrap();
    assert_eq!(
        layout_from(&empty, &percpu_symbols(&[("current_task", 8)]))
            .unwrap_err()
            .to_string(),
        "the kernel's BTF has no struct task_struct"
    );
    assert!(matches!(Btf::parse(b"nope"), Err(btf::Error::NotBtf(_))));
    let mut cut = kernel_btf();
    cut[12..16].copy_from_slice(&0x10_0000u32.to_le_bytes());
    assert!(matches!(Btf::parse(&cut), Err(btf::Error::NotBtf(_))));
    assert_eq!(
        task_layout(b"not an elf", &percpu_symbols(&[]))
            .map_err(|e| matches!(e, Error::NotElf { .. })),
        Err(true)
    );
}

#[test]
fn debian_kernels_task_layout() {
    for kernel in crate::kernel::real_kernels::all() {
        real_task_layout(&kernel);
    }
}

fn real_task_layout(kernel: &crate::kernel::real_kernels::RealKernel) {
    let name = &kernel.name;
    let elf = payload::vmlinux(&kernel.bzimage).unwrap();
    let symbols = kallsyms::symbol_table(&kallsyms::read(&elf).unwrap());
    let layout = task_layout(&elf, &symbols).unwrap();
    // 6.1 has `current_task` of its own, and its System.map gives its per-cpu offset; 6.2 to
    // 6.14 have it in `pcpu_hot`, at the member's offset from the map's `pcpu_hot`.
    match (
        kernel.map_address("current_task"),
        kernel.map_address("pcpu_hot"),
    ) {
        (Some(own), _) => assert_eq!(layout.current_task, own, "{name}"),
        (None, Some(hot)) => assert!(
            (hot..hot + 64).contains(&layout.current_task),
            "{name}: {:#x} is not in pcpu_hot at {hot:#x}",
            layout.current_task
        ),
        (None, None) => panic!("{name}: neither current_task nor pcpu_hot in the System.map"),
    }
    // `pid_t pid; pid_t tgid;` are declared together; `comm` comes later.
    assert_eq!(layout.tgid, layout.pid + 4, "{name}: {layout:x?}");
    assert!(
        layout.comm > layout.tgid && layout.comm < 0x4000,
        "{layout:x?}"
    );
    // The kernel's own code agrees: `__get_task_comm` copies from `comm` past the task, and
    // `__x64_sys_getppid` loads `%gs:current_task`.
    let code = |name: &str| {
        let addr = symbols.resolve_code(name).unwrap();
        let file = object::File::parse(&*elf).unwrap();
        let bytes = file
            .sections()
            .find_map(|s| {
                let start = s.address();
                let data = s.data().ok()?;
                (start..start + data.len() as u64).contains(&addr).then(|| {
                    data[(addr - start) as usize..]
                        .iter()
                        .take(0x60)
                        .copied()
                        .collect::<Vec<u8>>()
                })
            })
            .unwrap();
        let mut decoder =
            iced_x86::Decoder::with_ip(64, &bytes, addr, iced_x86::DecoderOptions::NONE);
        let mut out = Vec::new();
        while decoder.can_decode() {
            out.push(decoder.decode());
        }
        out
    };
    // `&tsk->comm` is `lea comm(%reg)` (6.1) or a copy of the pointer plus `add $comm` (6.12).
    let adds_comm = |i: &iced_x86::Instruction| match i.mnemonic() {
        iced_x86::Mnemonic::Lea => i.memory_displacement64() == layout.comm,
        iced_x86::Mnemonic::Add => {
            i.op1_kind() == iced_x86::OpKind::Immediate32to64 && i.immediate64() == layout.comm
        }
        _ => false,
    };
    assert!(
        code("__get_task_comm").iter().any(adds_comm),
        "{name}: no `lea {:#x}(...)` or `add ${:#x}` in __get_task_comm",
        layout.comm,
        layout.comm
    );
    assert!(
        code("__x64_sys_getppid")
            .iter()
            .any(|i| i.segment_prefix() == iced_x86::Register::GS
                && i.memory_displacement64() == layout.current_task),
        "{name}: no `%gs:{:#x}` in __x64_sys_getppid",
        layout.current_task
    );
    eprintln!("{name}: {layout:x?}");
}
