//! A breakpoint's location as every client writes it: a symbol, or an address in `0x` hex or
//! decimal. The command line, the REST plane, gdb and the CI harness all read it here, so the
//! same text means the same place everywhere. Messages name no flag or field: each client adds
//! its own.

use crate::quote::cut;
use crate::symbols::SymbolTable;

/// A symbol or an address, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `0x`-prefixed hex or decimal.
    Number(u64),
    /// Anything else: a symbol name, looked up later.
    Symbol(String),
}

/// `0x` hex or decimal.
pub fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.starts_with(['+', '-']) => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if text.starts_with(|c: char| c.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

/// A symbol or a number (`0x` hex or decimal).
pub fn parse(text: &str) -> Result<Target, String> {
    if text.is_empty() {
        return Err("give a symbol or an address (0x-prefixed hex or decimal)".into());
    }
    match number(text) {
        Some(addr) => Ok(Target::Number(addr)),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => Err(format!(
            "`{}` is not a valid address; write 0x-prefixed hex or decimal, at most 64 bits",
            cut(text)
        )),
        None => Ok(Target::Symbol(text.to_owned())),
    }
}

/// `[addr, addr + len)` must not wrap: the last byte is at most 2^64 - 1, and the end is
/// representable, as the page engine requires of both physical and virtual ranges.
pub fn check_range(addr: u64, len: u64) -> Result<(), String> {
    match addr.checked_add(len) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{addr:#x} + {len:#x} bytes runs past the end of the 64-bit address space; shorten it so that address + length <= 2^64 - 1"
        )),
    }
}

/// The address of `target`.
pub fn address(target: &Target, symbols: &SymbolTable) -> Result<u64, crate::symbols::Error> {
    match target {
        Target::Number(n) => Ok(*n),
        Target::Symbol(name) => symbols.resolve(name),
    }
}

/// The address of `target` for an execution breakpoint: a symbol known to be a variable is
/// refused.
pub fn code_address(target: &Target, symbols: &SymbolTable) -> Result<u64, crate::symbols::Error> {
    match target {
        Target::Number(n) => Ok(*n),
        Target::Symbol(name) => symbols.resolve_code(name),
    }
}

/// The size of `target` when it is a symbol with one.
pub fn size(target: &Target, symbols: &SymbolTable) -> Option<u64> {
    match target {
        Target::Symbol(name) => symbols.size(name),
        Target::Number(_) => None,
    }
}
