//! The real Debian kernel of `ci/linux/cache` (put there by `ci/linux/fetch.sh`), against the
//! System.map of its -dbg package. Skipped, with the reason printed, where it is absent.

use std::path::PathBuf;

use super::{kallsyms, payload};

fn cache() -> Option<(Vec<u8>, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/linux/cache");
    match (
        std::fs::read(dir.join("vmlinuz")),
        std::fs::read_to_string(dir.join("System.map")),
    ) {
        (Ok(k), Ok(m)) => Some((k, m)),
        _ => {
            eprintln!(
                "SKIPPED: no {}/vmlinuz and System.map (run ci/linux/fetch.sh)",
                dir.display()
            );
            None
        }
    }
}

#[test]
fn debian_kallsyms_agree_with_its_system_map() {
    let Some((bzimage, map)) = cache() else {
        return;
    };
    let elf = payload::vmlinux(&bzimage).unwrap();
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
    assert!(text.len() > 40_000, "{} text symbols", text.len());
    let missing: Vec<_> = text
        .iter()
        .filter(|e| !in_map.contains(&(e.addr, e.name.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "not in System.map: {:?}",
        &missing[..missing.len().min(10)]
    );
    // And the other way round: every text symbol of the map is in kallsyms.
    let ours: std::collections::HashSet<(u64, &str)> =
        text.iter().map(|e| (e.addr, e.name.as_str())).collect();
    let absent: Vec<_> = in_map.iter().filter(|s| !ours.contains(s)).collect();
    assert!(
        absent.is_empty(),
        "not in kallsyms: {:?}",
        &absent[..absent.len().min(10)]
    );
    let addr = |name: &str| entries.iter().find(|e| e.name == name).map(|e| e.addr);
    let map_addr = |name: &str| {
        map.lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .and_then(|l| u64::from_str_radix(&l[..16], 16).ok())
    };
    for name in ["start_kernel", "__x64_sys_getppid"] {
        assert_eq!(addr(name), map_addr(name), "{name}");
        assert!(addr(name).is_some(), "{name}");
    }
}
