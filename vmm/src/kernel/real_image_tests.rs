//! The real Debian kernels of `ci/linux/cache*` (put there by `ci/linux/fetch.sh`), against the
//! System.map of their -dbg packages. Skipped, with the reason printed, where they are absent.

use super::real_kernels::{self, RealKernel};
use super::{kallsyms, payload};

#[test]
fn debian_kallsyms_agree_with_their_system_maps() {
    for kernel in real_kernels::all() {
        text_symbols_agree(&kernel);
    }
}

fn text_symbols_agree(kernel: &RealKernel) {
    let (name, map) = (&kernel.name, &kernel.map);
    let elf = payload::vmlinux(&kernel.bzimage).unwrap();
    let entries = kallsyms::read(&elf).unwrap();
    let in_map: std::collections::HashSet<(u64, &str)> = map
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let addr = u64::from_str_radix(p.next()?, 16).ok()?;
            let kind = p.next()?;
            let name = p.next()?;
            kind.eq_ignore_ascii_case("t").then_some((addr, name))
        })
        .collect();
    let text: Vec<_> = entries
        .iter()
        .filter(|e| e.kind.eq_ignore_ascii_case(&'t'))
        .collect();
    // The Debian 6.1 cloud kernel has 46 471 (`t` and `T` in its System.map).
    assert!(text.len() > 40_000, "{name}: {} text symbols", text.len());
    let missing: Vec<_> = text
        .iter()
        .filter(|e| !in_map.contains(&(e.addr, e.name.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "{name}: not in System.map: {:?}",
        &missing[..missing.len().min(10)]
    );
    // And the other way round: every text symbol of the map is in kallsyms.
    let ours: std::collections::HashSet<(u64, &str)> =
        text.iter().map(|e| (e.addr, e.name.as_str())).collect();
    let absent: Vec<_> = in_map.iter().filter(|s| !ours.contains(s)).collect();
    assert!(
        absent.is_empty(),
        "{name}: not in kallsyms: {:?}",
        &absent[..absent.len().min(10)]
    );
    let addr = |sym: &str| entries.iter().find(|e| e.name == sym).map(|e| e.addr);
    for sym in ["start_kernel", "__x64_sys_getppid"] {
        assert_eq!(addr(sym), kernel.map_address(sym), "{name}: {sym}");
        assert!(addr(sym).is_some(), "{name}: {sym}");
    }
}

#[test]
fn debian_kallsyms_of_every_type_agree_with_their_system_maps() {
    for kernel in real_kernels::all() {
        every_type_agrees(&kernel);
    }
}

fn every_type_agrees(kernel: &RealKernel) {
    let (name, map) = (&kernel.name, &kernel.map);
    let elf = payload::vmlinux(&kernel.bzimage).unwrap();
    let entries = kallsyms::read(&elf).unwrap();
    let in_map: std::collections::HashMap<(u64, &str), char> = map
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let addr = u64::from_str_radix(p.next()?, 16).ok()?;
            let kind = p.next()?.chars().next()?;
            Some(((addr, p.next()?), kind))
        })
        .collect();
    let percpu_end = in_map
        .iter()
        .find(|((_, name), _)| *name == "__per_cpu_end")
        .map(|((addr, _), _)| *addr)
        .unwrap();
    // The one difference: kallsyms types per-cpu variables `A`
    // (CONFIG_KALLSYMS_ABSOLUTE_PERCPU), nm `d` or `D`.
    let mut percpu = 0;
    for e in &entries {
        match in_map.get(&(e.addr, e.name.as_str())) {
            Some(&k) if k == e.kind => {}
            Some('d' | 'D') if e.kind == 'A' && e.addr <= percpu_end => percpu += 1,
            other => panic!("{name}: {e:?}: {other:?} in the System.map"),
        }
    }
    assert!(percpu > 300, "{name}: {percpu} per-cpu symbols");
    // And what the System.map has beyond kallsyms: what scripts/kallsyms leaves out, absolute
    // symbols and its own tables (14 on this kernel).
    let ours: std::collections::HashSet<(u64, &str)> =
        entries.iter().map(|e| (e.addr, e.name.as_str())).collect();
    let mut left_out: Vec<String> = in_map
        .iter()
        .filter(|(key, _)| !ours.contains(key))
        .map(|((_, name), kind)| format!("{kind} {name}"))
        .collect();
    left_out.sort();
    eprintln!("{name}: in the System.map only: {left_out:?}");
    assert!(
        left_out
            .iter()
            .all(|s| s.starts_with("A ") || s.starts_with("D kallsyms_")),
        "{name}: {left_out:?}"
    );
}

#[test]
fn debian_orc_tables_describe_each_function_entry_as_a_call_frame() {
    for kernel in real_kernels::all() {
        orc_table_agrees(&kernel);
    }
}

fn orc_table_agrees(kernel: &RealKernel) {
    use super::orc::{Kind, OrcSections, Reg};
    let name = &kernel.name;
    let elf = payload::vmlinux(&kernel.bzimage).unwrap();
    // What a run does at start (find and check the sections), then at its first backtrace.
    let start = std::time::Instant::now();
    let sections = OrcSections::from_elf(&elf).unwrap();
    let found = start.elapsed();
    let table = sections.decode().unwrap();
    eprintln!(
        "{name}: {} ORC entries ({:?}): found in {} ms, decoded in {} ms more",
        table.len(),
        sections.layout(),
        found.as_millis(),
        (start.elapsed() - found).as_millis()
    );
    assert_eq!(sections.len(), table.len());
    // The Debian 6.1 cloud kernel has 368 456.
    assert!(table.len() > 100_000, "{name}: {} ORC entries", table.len());
    let map_addr = |sym: &str| kernel.map_address(sym).unwrap();
    // Every entry is of a known type, its base registers ones the format defines; few end a stack.
    let mut ends = 0;
    for (ip, e) in table.entries() {
        assert!(
            !matches!(e.kind, Kind::Unknown(_)),
            "{name}: {ip:#x}: {e:?}"
        );
        for reg in [e.sp_reg, e.bp_reg] {
            assert!(
                !matches!(reg, Reg::Other(n) if ![2, 3, 6, 7].contains(&n)),
                "{name}: {ip:#x}: {e:?}"
            );
        }
        ends += usize::from(e.end);
    }
    assert!(
        (1..100).contains(&ends),
        "{name}: {ends} entries end a stack"
    );
    // At a C function's first instruction the return address is at SP: the caller's SP is
    // SP + 8, and BP has not changed.
    for sym in [
        "setup_arch",
        "start_kernel",
        "__x64_sys_getppid",
        "schedule",
    ] {
        let e = table.find(map_addr(sym)).unwrap();
        assert_eq!(
            (e.sp_reg, e.sp_offset, e.bp_reg, e.kind, e.end),
            (Reg::Sp, 8, Reg::Undefined, Kind::Call, false),
            "{name}: {sym}: {e:?}"
        );
    }
}
