//! Symbol specs on the command line, end to end: with a System.map shaped like a Debian
//! kernel's, an ambiguous name, an absolute symbol and a per-cpu variable are refused with the
//! reason and exit code 2; `NAME@ADDRESS` and `NAME+OFFSET` are accepted.

use crate::common::{drvisor, ensure, temp_path, Failed, Trial};

const MAP: &str = "\
0000000000000000 D __per_cpu_start
0000000000000000 D fixed_percpu_data
0000000000030000 D __per_cpu_end
0000000000000400 A kexec_control_code_size
ffffffff81000100 t early_cpu_to_node
ffffffff81234500 T early_cpu_to_node
ffffffff81000200 T startup_64
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
