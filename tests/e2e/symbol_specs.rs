//! Symbol specs on the command line, end to end: with a System.map shaped like a Debian
//! kernel's, an ambiguous name, an absolute symbol and a per-cpu variable are refused with the
//! reason and exit code 2, and so are a variable as an exec breakpoint, an offset past a
//! symbol's end or past 2^64; `NAME@ADDRESS` and `NAME+OFFSET` are accepted.

use crate::common::{drvisor, ensure, temp_path, Failed, Trial};

const MAP: &str = "\
0000000000000000 D __per_cpu_start
0000000000000000 D fixed_percpu_data
0000000000030000 D __per_cpu_end
0000000000000400 A kexec_control_code_size
ffffffff81000100 t early_cpu_to_node
ffffffff81234500 T early_cpu_to_node
ffffffff81000200 T startup_64
ffffffff81000240 T do_getppid
ffffffff81000280 T __x64_sys_getppid
ffffffff82a079c0 D jiffies
";

pub fn trials() -> Vec<Trial> {
    vec![Trial::test(
        "symbol_specs::refusals_and_picks",
        refusals_and_picks,
    )]
}

fn refusals_and_picks() -> Result<(), Failed> {
    let map = temp_path("System.map");
    std::fs::write(&map, MAP).map_err(|e| e.to_string())?;
    let m = map.to_str().unwrap_or_default().to_owned();
    let run = |spec: &str| {
        drvisor(&[
            "run",
            "--scenario",
            "hello",
            "--symbols",
            &m,
            "--break",
            spec,
        ])
    };
    let refused = [
        (
            "early_cpu_to_node",
            "`early_cpu_to_node` is ambiguous: 2 symbols have this name",
        ),
        (
            "kexec_control_code_size",
            "is an absolute symbol (value 0x400)",
        ),
        ("fixed_percpu_data", "is a per-cpu variable"),
        (
            "early_cpu_to_node@0x1234",
            "no symbol `early_cpu_to_node` at 0x1234",
        ),
        ("startup_64+zz", "must be a number"),
        (
            "jiffies",
            "`jiffies` is a variable (type `D`), not code: an execution breakpoint there never \
             fires; watch it instead (a write or read/write watchpoint on `jiffies`): --watch \
             jiffies",
        ),
        (
            "startup_64+0x40",
            "offset 0x40 is past the end of `startup_64` (0x40 bytes); that address is \
             `do_getppid`",
        ),
        (
            "jiffies+0xfffffffffffffff0",
            "wraps past the end of the 64-bit address space",
        ),
        ("getppid", "did you mean do_getppid, __x64_sys_getppid?"),
    ];
    for (spec, needle) in refused {
        let r = run(spec);
        r.expect_code(2)?;
        ensure(r.stderr.contains(needle), || {
            format!("{spec}: wanted `{needle}`\n{r}")
        })?;
    }
    // The guest never runs these addresses; the point is that they are accepted and armed.
    for spec in ["early_cpu_to_node@0xffffffff81234500", "startup_64+0x10"] {
        let r = run(spec);
        r.expect_code(0)?;
    }
    let _ = std::fs::remove_file(&map);
    Ok(())
}
