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

/// Why a location's text is no location.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing was written.
    #[error("give a symbol or an address (0x-prefixed hex or decimal)")]
    Empty,
    /// It starts like a number but is none (a bad digit, or more than 64 bits).
    #[error("`{text}` is not a valid address; write 0x-prefixed hex or decimal, at most 64 bits")]
    BadAddress {
        /// The text, cut to a readable length.
        text: String,
    },
}

/// A range that runs past the end of the 64-bit address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{addr:#x} + {len:#x} bytes runs past the end of the 64-bit address space; shorten it so that address + length <= 2^64 - 1")]
pub struct RangeError {
    /// The first byte.
    pub addr: u64,
    /// The length asked for.
    pub len: u64,
}

/// Why a location has no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The text is no location.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The symbol table has no usable address for it.
    #[error("location `{text}`: {source}")]
    Symbol {
        /// The location, cut to a readable length.
        text: String,
        /// What the symbol table said.
        #[source]
        source: crate::symbols::Error,
    },
}

/// A symbol or a number (`0x` hex or decimal).
pub fn parse(text: &str) -> Result<Target, ParseError> {
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    match number(text) {
        Some(addr) => Ok(Target::Number(addr)),
        None if text.starts_with(|c: char| c.is_ascii_digit()) => Err(ParseError::BadAddress {
            text: cut(text).into_owned(),
        }),
        None => Ok(Target::Symbol(text.to_owned())),
    }
}

/// `[addr, addr + len)` must not wrap: the last byte is at most 2^64 - 1, and the end is
/// representable, as the page engine requires of both physical and virtual ranges.
pub fn check_range(addr: u64, len: u64) -> Result<(), RangeError> {
    match addr.checked_add(len) {
        Some(_) => Ok(()),
        None => Err(RangeError { addr, len }),
    }
}

/// The address of `text`, a symbol or a number, looked up in `symbols`.
pub fn resolve(text: &str, symbols: &SymbolTable) -> Result<u64, ResolveError> {
    let target = parse(text)?;
    address(&target, symbols).map_err(|source| ResolveError::Symbol {
        text: cut(text).into_owned(),
        source,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mistake_has_its_own_reason() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(
            parse("12zz"),
            Err(ParseError::BadAddress {
                text: "12zz".into()
            })
        );
        assert_eq!(parse("0x10"), Ok(Target::Number(0x10)));
        assert_eq!(parse("jiffies"), Ok(Target::Symbol("jiffies".into())));
        assert_eq!(
            check_range(u64::MAX, 1),
            Err(RangeError {
                addr: u64::MAX,
                len: 1
            })
        );
        assert_eq!(check_range(u64::MAX - 1, 1), Ok(()));
    }

    #[test]
    fn an_unknown_symbol_keeps_the_table_s_reason() {
        let symbols = SymbolTable::without_symbols("no System.map given");
        match resolve("jiffies", &symbols) {
            Err(ResolveError::Symbol { text, source }) => {
                assert_eq!(text, "jiffies");
                let e = ResolveError::Symbol { text, source };
                assert!(e.to_string().starts_with("location `jiffies`: "), "{e}");
                assert!(std::error::Error::source(&e).is_some());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("0xg", &symbols),
            Err(ResolveError::Parse(ParseError::BadAddress { .. }))
        ));
        assert_eq!(resolve("0x1000", &symbols).unwrap(), 0x1000);
    }
}
