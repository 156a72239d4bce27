//! `drvisor symbols --kernel K [--symbols MAP] SYMBOL...`: each symbol's address as a run's
//! `--break` would resolve it, without booting (a Linux kernel on hosts that emulate its CPL0
//! code takes minutes to get anywhere). A symbol that does not resolve is a usage error (exit
//! 2) with the same message `--break` gives.

use drvisor::input_file::{self, Limit};

use crate::cli::SymbolsArgs;
use crate::inputs::{read_symbols, MAX_KERNEL, MAX_SYMBOLS};
use crate::Failure;

/// Prints `ADDRESS SYMBOL` per symbol.
pub fn run(args: &SymbolsArgs) -> Result<u8, Failure> {
    let open = |flag, path, bytes, why: &str| {
        input_file::open(
            flag,
            path,
            Limit {
                bytes,
                why: why.into(),
            },
        )
        .map_err(|e| Failure::usage(e.to_string()))
    };
    let kernel = open(
        "--kernel",
        &args.kernel,
        MAX_KERNEL,
        "a sane maximum for a kernel image",
    )?;
    let symbols = args
        .symbols
        .as_deref()
        .map(|p| {
            open(
                "--symbols",
                p,
                MAX_SYMBOLS,
                "a sane maximum for a System.map",
            )
        })
        .transpose()?;
    let bytes = kernel.read().map_err(|e| Failure::usage(e.to_string()))?;
    let table = read_symbols(symbols, &bytes, None)?;
    for name in &args.names {
        let addr = table
            .resolve(name)
            .map_err(|e| Failure::usage(format!("symbols {}: {e}", drvisor::quote::cut(name))))?;
        println!("{addr:#018x} {name}");
    }
    Ok(0)
}
