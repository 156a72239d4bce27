//! `drvisor symbols --kernel K [--symbols MAP] SYMBOL...`: each symbol's address as a run's
//! `--break` would resolve it, without booting (a Linux kernel on hosts that emulate its CPL0
//! code takes minutes to get anywhere). A symbol that does not resolve is a usage error (exit
//! 2) with the same message `--break` gives.

use crate::cli::SymbolsArgs;
use crate::inputs::{open_kernel, open_system_map, read, read_symbols};
use crate::Failure;

/// Prints `ADDRESS SYMBOL` per symbol.
pub fn run(args: &SymbolsArgs) -> Result<u8, Failure> {
    let kernel = open_kernel("--kernel", &args.kernel)?;
    let symbols = args
        .symbols
        .as_deref()
        .map(|p| open_system_map("--symbols", p))
        .transpose()?;
    let bytes = read(kernel)?;
    let table = read_symbols(symbols, &bytes, None)?;
    for name in &args.names {
        let addr = table
            .resolve(name)
            .map_err(|e| Failure::usage(format!("symbols {}: {e}", drvisor::quote::cut(name))))?;
        println!("{addr:#018x} {name}");
    }
    Ok(0)
}
