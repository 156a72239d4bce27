//! Lookups that go wrong in ways a user should be told about: a syscall by its short name, an
//! offset past a function's end or past 2^64, a variable as a breakpoint on execution.

use super::*;

const SYSCALLS: &str = "\
ffffffff810a0000 T __do_sys_getppid
ffffffff810a0040 T __x64_sys_getppid
ffffffff810a0080 T __ia32_sys_getppid
ffffffff810a00c0 t do_getppid_helper
ffffffff810a0100 T __x64_sys_getpid
ffffffff82a079c0 D jiffies
ffffffff82a079c8 b jiffies_lock
";

#[test]
fn a_syscalls_short_name_suggests_its_entry_points_first() {
    let t = SymbolTable::from_system_map(SYSCALLS, "m").unwrap();
    let e = t.resolve("getppid").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown symbol `getppid`; did you mean __do_sys_getppid, __x64_sys_getppid, \
         __ia32_sys_getppid?"
    );
}

#[test]
fn an_offset_past_a_functions_end_names_where_it_lands() {
    let t = SymbolTable::from_system_map(SYSCALLS, "m").unwrap();
    assert_eq!(
        t.resolve("__do_sys_getppid+0x3f"),
        Ok(0xffff_ffff_810a_003f)
    );
    let e = t.resolve("__do_sys_getppid+0x44").unwrap_err();
    assert!(matches!(e, Error::PastEnd { size: 0x40, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "`__do_sys_getppid+0x44`: offset 0x44 is past the end of `__do_sys_getppid` (0x40 \
         bytes); that address is in `__x64_sys_getppid` (`__x64_sys_getppid+0x4`)"
    );
    let e = t.resolve("__do_sys_getppid+0x40").unwrap_err().to_string();
    assert!(e.ends_with("; that address is `__x64_sys_getppid`"), "{e}");
}

#[test]
fn an_offset_that_wraps_is_refused() {
    let t = SymbolTable::from_system_map(SYSCALLS, "m").unwrap();
    // `jiffies_lock` is the last symbol: no next one bounds it, the wrap is still caught.
    let e = t.resolve("jiffies_lock+0xfffffffffffffff0").unwrap_err();
    assert_eq!(
        e,
        Error::Wraps {
            spec: "jiffies_lock+0xfffffffffffffff0".into(),
            addr: 0xffff_ffff_82a0_79c8,
            offset: 0xffff_ffff_ffff_fff0,
        }
    );
    assert!(e
        .to_string()
        .contains("wraps past the end of the 64-bit address space"));
    assert!(matches!(
        t.resolve("__x64_sys_getpid+0xfffffffffffffff0"),
        Err(Error::Wraps { .. })
    ));
}

#[test]
fn a_variable_is_no_place_for_an_execution_breakpoint() {
    let t = SymbolTable::from_system_map(SYSCALLS, "m").unwrap();
    assert_eq!(t.resolve("jiffies"), Ok(0xffff_ffff_82a0_79c0));
    let e = t.resolve_code("jiffies").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`jiffies` is a variable (type `D`), not code: an execution breakpoint there never \
         fires; watch it instead (a write or read/write watchpoint on `jiffies`)"
    );
    assert!(matches!(
        t.resolve_code("jiffies_lock"),
        Err(Error::NotCode { kind: 'b', .. })
    ));
    assert_eq!(
        t.resolve_code("__x64_sys_getppid+4"),
        Ok(0xffff_ffff_810a_0044)
    );
}

#[test]
fn kallsyms_per_cpu_symbols_are_per_cpu_not_absolute() {
    let t = SymbolTable::from_kallsyms(&[
        ("__per_cpu_start", 'A', 0),
        ("current_task", 'A', 0x1fb80),
        ("__per_cpu_end", 'A', 0x34000),
        ("_text", 'T', 0xffff_ffff_8100_0000),
        ("start_kernel", 'T', 0xffff_ffff_8100_0100),
    ]);
    assert_eq!(t.percpu_offset("current_task"), Some(0x1fb80));
    let e = t.resolve("current_task").unwrap_err().to_string();
    assert!(e.contains("a per-cpu variable (offset 0x1fb80"), "{e}");
    assert_eq!(t.resolve_code("start_kernel"), Ok(0xffff_ffff_8100_0100));
    assert_eq!(t.len(), 5);
}

#[test]
fn an_elf_object_is_no_place_for_an_execution_breakpoint() {
    let t = SymbolTable::from_elf(crate::guest_image::ELF);
    assert!(matches!(
        t.resolve_code("drv_watch_u64"),
        Err(Error::NotCode { kind: 'd', .. })
    ));
    assert!(t.resolve("drv_watch_u64").is_ok());
    assert!(t.resolve_code("drv_target_0").is_ok());
    // An untyped label may be code.
    assert!(t.resolve_code("drv_park").is_ok());
}
