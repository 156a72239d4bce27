//! A stock Debian kernel's symbols with no System.map: `drvisor symbols` reads them from the
//! bzImage itself (its kallsyms) and resolves a syscall's entry to the address the -dbg
//! package's System.map gives; a short name is answered with the entry points. Two kernels:
//! Linux 6.1 (`ci/linux/cache`) and 6.12 (`ci/linux/cache-backports`), from
//! `ci/linux/fetch.sh`; each is listed as ignored, with the reason, when it is absent.

use std::path::{Path, PathBuf};

use crate::common::{drvisor, ensure, skipped, Failed, Trial};

/// Each kernel's test name and directory.
const KERNELS: [(&str, &str); 2] = [
    ("debian_bzimage_resolves_without_system_map", "cache"),
    (
        "debian_6_12_bzimage_resolves_without_system_map",
        "cache-backports",
    ),
];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ci/linux")
        .join(name)
}

/// The address the real System.map gives `name`.
fn map_address(cache: &Path, name: &str) -> Result<String, Failed> {
    let map = std::fs::read_to_string(cache.join("System.map")).map_err(|e| e.to_string())?;
    map.lines()
        .find(|l| l.ends_with(&format!(" T {name}")))
        .map(|l| format!("0x{}", &l[..16]))
        .ok_or_else(|| format!("{name} is not in the System.map").into())
}

fn resolves_without_system_map(cache: &Path) -> Result<(), Failed> {
    let kernel = cache.join("vmlinuz");
    let k = kernel.to_str().unwrap_or_default();
    let run = drvisor(&[
        "symbols",
        "--kernel",
        k,
        "__x64_sys_getppid",
        "start_kernel",
    ]);
    ensure(run.code == 0, || format!("exit {}\n{run}", run.code))?;
    for name in ["__x64_sys_getppid", "start_kernel"] {
        let want = format!("{} {name}", map_address(cache, name)?);
        ensure(run.stdout.lines().any(|l| l == want), || {
            format!("no `{want}` line\n{run}")
        })?;
    }
    ensure(
        run.stderr
            .contains("symbols from the kernel's own kallsyms (decompressed from the bzImage"),
        || format!("no line saying where the symbols came from\n{run}"),
    )?;
    let run = drvisor(&["symbols", "--kernel", k, "getppid"]);
    ensure(run.code == 2, || format!("exit {}\n{run}", run.code))?;
    ensure(
        run.stderr
            .contains("did you mean __do_sys_getppid, __x64_sys_getppid"),
        || format!("no suggestion of the entry points\n{run}"),
    )?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    KERNELS
        .iter()
        .map(|&(test, cache)| {
            let name = format!("kernel_own_symbols::{test}");
            let cache = dir(cache);
            if cache.join("vmlinuz").is_file() && cache.join("System.map").is_file() {
                Trial::test(name, move || resolves_without_system_map(&cache))
            } else {
                skipped(
                    &name,
                    &format!(
                        "no {}/vmlinuz and System.map (run ci/linux/fetch.sh)",
                        cache.display()
                    ),
                )
            }
        })
        .collect()
}
