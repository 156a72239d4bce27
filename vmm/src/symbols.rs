//! Guest kernel symbols, by name: from the kernel ELF's symbol table (ELF32 or ELF64) or from a
//! `System.map`, the way `kallsyms_lookup_name` answers inside the kernel, but never silently.
//!
//! - Every symbol `nm` lists is known: functions, objects, untyped labels (`.S` files), and
//!   local symbols.
//! - A name several symbols share is ambiguous: resolving it is an error that lists each
//!   candidate's address (and its source file, where the ELF's `STT_FILE` entries give it).
//!   `NAME@0xADDR` picks one.
//! - `NAME+OFFSET` (hex with `0x`, or decimal) is an address inside a symbol: an offset past
//!   the symbol's end (its ELF size, or where the next symbol starts) is refused, naming the
//!   symbol it would land in, and so is one that wraps past 2^64.
//! - The kernel's own `kallsyms` (read from the image by `kernel::kallsyms`) give the same table
//!   as a System.map. Both have `nm`'s type letters, so code (`t`/`T`) is told from data: a
//!   breakpoint on execution at a variable is refused ([`SymbolTable::resolve_code`]).
//! - Absolute symbols (`SHN_ABS`, System.map type `A`) and per-cpu offsets (the ELF section
//!   `.data..percpu`, or a System.map address between `__per_cpu_start` and `__per_cpu_end`)
//!   are not code or data addresses: resolving them is refused with that reason.

use std::collections::BTreeMap;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};

use crate::quote::cut;

/// Errors resolving or loading symbols.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No symbol has this name.
    #[error("unknown symbol `{}`{}", cut(.name), suggest(.nearest))]
    Unknown {
        /// The name asked for.
        name: String,
        /// The closest known names.
        nearest: Vec<String>,
    },
    /// The kernel has no symbols to resolve from.
    #[error("no symbols to resolve `{}` with: the kernel has no symbol table; give a System.map, or an address", cut(.0))]
    NoSymbols(String),
    /// The kernel has no symbol table, and its kallsyms could not be read.
    #[error("no symbols to resolve `{}` with: the kernel has no symbol table, and reading its own (kallsyms) failed: {why}; give a System.map, or an address", cut(.name))]
    NoOwnSymbols {
        /// The name asked for.
        name: String,
        /// Why kallsyms could not be read.
        why: String,
    },
    /// Several symbols share the name.
    #[error("`{}` is ambiguous: {} symbols have this name ({}); pick one with `{}@ADDRESS`", cut(.name), .candidates.len(), .candidates.join(", "), cut(.name))]
    Ambiguous {
        /// The name asked for.
        name: String,
        /// Each candidate: its address and, where known, its source file.
        candidates: Vec<String>,
    },
    /// `NAME@ADDRESS` names an address none of the symbols called NAME has.
    #[error("no symbol `{}` at {addr:#x}; the symbols with this name are at {}", cut(.name), .candidates.join(", "))]
    NoSuchCandidate {
        /// The name asked for.
        name: String,
        /// The address asked for.
        addr: u64,
        /// The candidates there are.
        candidates: Vec<String>,
    },
    /// The symbol's value is not a code or data address.
    #[error("`{}` is {what}, not a code or data address; give an address instead", cut(.name))]
    NotAnAddress {
        /// The name asked for.
        name: String,
        /// What it is instead.
        what: String,
    },
    /// `NAME+OFFSET` or `NAME@ADDRESS` with a number that does not parse.
    #[error("`{}`: the part after `+` or `@` must be a number (0x-prefixed hex or decimal)", cut(.0))]
    BadNumber(String),
    /// A System.map line that does not parse.
    #[error("{}:{line}: not a System.map line (want `ADDRESS TYPE NAME`): {}", cut(.path), cut(.text))]
    BadMapLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A placeholder in place of a System.map, as Debian's kernel packages install: one line,
    /// `ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package`.
    #[error("{}: a placeholder System.map, with no symbols (`{}`): give the real System.map of the kernel's -dbg package, or none: drvisor reads a bzImage's symbols from the image itself (its kallsyms)", cut(.path), cut(.text))]
    Placeholder {
        /// The file.
        path: String,
        /// What it says, from `The real System.map`.
        text: String,
    },
    /// `NAME+OFFSET` past the symbol's end.
    #[error("`{}`: offset {offset:#x} is past the end of `{}` ({size:#x} bytes){}", cut(.spec), cut(.name), lands(.lands_in))]
    PastEnd {
        /// What was asked for.
        spec: String,
        /// The symbol.
        name: String,
        /// The offset.
        offset: u64,
        /// The symbol's size (or the distance to the next symbol).
        size: u64,
        /// Where the address is instead: a symbol and the offset into it.
        lands_in: Option<(String, u64)>,
    },
    /// `NAME+OFFSET` beyond 2^64 - 1.
    #[error("`{}`: {addr:#x} + {offset:#x} wraps past the end of the 64-bit address space", cut(.spec))]
    Wraps {
        /// What was asked for.
        spec: String,
        /// The symbol's address.
        addr: u64,
        /// The offset.
        offset: u64,
    },
    /// A data symbol where code is needed (an execution breakpoint).
    #[error("`{}` is a variable (type `{kind}`), not code: an execution breakpoint there never fires; watch it instead (a write or read/write watchpoint on `{}`)", cut(.name), cut(.name))]
    NotCode {
        /// The name asked for.
        name: String,
        /// Its `nm` type letter.
        kind: char,
    },
}

fn lands(lands_in: &Option<(String, u64)>) -> String {
    match lands_in {
        Some((name, 0)) => format!("; that address is `{}`", cut(name)),
        Some((name, off)) => format!(
            "; that address is in `{}` (`{}+{off:#x}`)",
            cut(name),
            cut(name)
        ),
        None => String::new(),
    }
}

/// Names longer than this get no "did you mean" (no kernel symbol is this long).
const MAX_SUGGESTED_NAME: usize = 512;

fn suggest(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        let shown: Vec<_> = nearest.iter().map(|n| cut(n)).collect();
        format!("; did you mean {}?", shown.join(", "))
    }
}

/// What a symbol's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A code or data address.
    Address,
    /// An absolute value (`SHN_ABS`, System.map `A`/`a`).
    Absolute,
    /// An offset into each CPU's per-cpu area.
    PerCpu,
}

/// What a symbol's address holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// Code (ELF `STT_FUNC`, `nm` `t`/`T`).
    Code,
    /// Data, with its `nm` type letter (ELF `STT_OBJECT` is `d`).
    Data(char),
    /// Not known (untyped labels, weak symbols).
    Unknown,
}

impl Content {
    /// From `nm`'s type letter.
    fn of_letter(kind: char) -> Content {
        match kind.to_ascii_lowercase() {
            't' => Content::Code,
            'd' | 'b' | 'r' | 'g' | 's' | 'v' => Content::Data(kind),
            _ => Content::Unknown,
        }
    }
}

/// One symbol of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    addr: u64,
    /// The ELF's `st_size`, when it gives one.
    size: Option<u64>,
    /// How far the next symbol's address is (the last symbol has none).
    span: Option<u64>,
    content: Content,
    /// The source file of a local ELF symbol.
    file: Option<String>,
    class: Class,
}

impl Candidate {
    fn describe(&self) -> String {
        match &self.file {
            Some(f) => format!("{:#x} in {f}", self.addr),
            None => format!("{:#x}", self.addr),
        }
    }
}

/// Names to their symbols.
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    by_name: BTreeMap<String, Vec<Candidate>>,
    /// Whether the source had a symbol table at all (it may hold nothing resolvable).
    has_table: bool,
    /// Why there are none, when the kernel's own kallsyms could not be read.
    why_none: Option<String>,
}

/// The ELF section whose symbols are per-cpu offsets (Linux `vmlinux.lds`).
const PERCPU_SECTION: &str = ".data..percpu";

impl SymbolTable {
    fn add(&mut self, name: &str, c: Candidate) {
        let list = self.by_name.entry(name.to_owned()).or_default();
        // The same symbol twice (e.g. a local and its alias) is one candidate.
        if !list.iter().any(|o| o.addr == c.addr && o.class == c.class) {
            list.push(c);
        }
    }

    /// The symbols of an ELF32 or ELF64 image (empty if it has none, or is not an ELF).
    pub fn from_elf(bytes: &[u8]) -> SymbolTable {
        let mut table = SymbolTable::default();
        let Ok(file) = object::File::parse(bytes) else {
            return table;
        };
        table.has_table = file.symbol_table().is_some();
        let mut source: Option<String> = None;
        for sym in file.symbols() {
            let kind = sym.kind();
            if kind == SymbolKind::File {
                source = sym.name().ok().map(str::to_owned);
                continue;
            }
            if !matches!(
                kind,
                SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown | SymbolKind::Label
            ) {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            let class = match sym.section() {
                SymbolSection::Absolute => Class::Absolute,
                SymbolSection::Section(index) => {
                    match file.section_by_index(index).and_then(|s| s.name()) {
                        Ok(PERCPU_SECTION) => Class::PerCpu,
                        _ => Class::Address,
                    }
                }
                _ => continue,
            };
            table.add(
                name,
                Candidate {
                    addr: sym.address(),
                    size: (sym.size() > 0).then_some(sym.size()),
                    span: None,
                    content: match kind {
                        SymbolKind::Text => Content::Code,
                        SymbolKind::Data => Content::Data('d'),
                        _ => Content::Unknown,
                    },
                    file: if sym.is_local() { source.clone() } else { None },
                    class,
                },
            );
        }
        table.measure_spans();
        table
    }

    /// Parses a System.map (`ffffffff81000000 T _text` per line). `path` names it in errors.
    pub fn from_system_map(text: &str, path: &str) -> Result<SymbolTable, Error> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // Debian's placeholder would parse as one symbol named `The` at the last address.
            if let Some(at) = line.find("The real System.map is in") {
                return Err(Error::Placeholder {
                    path: path.to_owned(),
                    text: line[at..].trim_end().to_owned(),
                });
            }
            let mut parts = line.split_whitespace();
            let parsed = match (parts.next(), parts.next(), parts.next()) {
                (Some(addr), Some(kind), Some(name)) => {
                    u64::from_str_radix(addr, 16).ok().map(|a| (name, kind, a))
                }
                _ => None,
            };
            let Some(entry) = parsed else {
                return Err(Error::BadMapLine {
                    path: path.to_owned(),
                    line: i + 1,
                    text: line.to_owned(),
                });
            };
            entries.push(entry);
        }
        let entries: Vec<(&str, char, u64)> = entries
            .into_iter()
            .map(|(name, kind, addr)| (name, kind.chars().next().unwrap_or('?'), addr))
            .collect();
        Ok(Self::from_entries(&entries, false))
    }

    /// The symbols the kernel image itself holds (its kallsyms), as `/proc/kallsyms` lists
    /// them. Per-cpu variables there have type `A` (`CONFIG_KALLSYMS_ABSOLUTE_PERCPU`), and
    /// kallsyms keeps no other absolute symbol.
    /// Names, type letters and addresses, as the kernel's reader decodes them.
    pub fn from_kallsyms(entries: &[(&str, char, u64)]) -> SymbolTable {
        Self::from_entries(entries, true)
    }

    /// Names, `nm` type letters and addresses. `a_is_percpu`: a type `A` symbol between
    /// `__per_cpu_start` and `__per_cpu_end` is a per-cpu variable (kallsyms), not absolute.
    fn from_entries(entries: &[(&str, char, u64)], a_is_percpu: bool) -> SymbolTable {
        let marker = |m: &str| entries.iter().find(|e| e.0 == m).map(|e| e.2);
        let percpu = match (marker("__per_cpu_start"), marker("__per_cpu_end")) {
            (Some(start), Some(end)) => start..end,
            _ => 0..0,
        };
        let mut table = SymbolTable {
            has_table: true,
            ..Default::default()
        };
        for &(name, kind, addr) in entries {
            let absolute = kind.eq_ignore_ascii_case(&'a');
            let class = if absolute && !(a_is_percpu && percpu.contains(&addr)) {
                Class::Absolute
            } else if percpu.contains(&addr) {
                Class::PerCpu
            } else {
                Class::Address
            };
            table.add(
                name,
                Candidate {
                    addr,
                    size: None,
                    span: None,
                    content: Content::of_letter(kind),
                    file: None,
                    class,
                },
            );
        }
        table.measure_spans();
        table
    }

    /// Each address symbol's span: how far the next higher symbol address is.
    fn measure_spans(&mut self) {
        let mut addrs: Vec<u64> = self
            .by_name
            .values()
            .flatten()
            .filter(|c| c.class == Class::Address)
            .map(|c| c.addr)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        for c in self.by_name.values_mut().flatten() {
            if c.class == Class::Address {
                let next = addrs.partition_point(|&a| a <= c.addr);
                c.span = addrs.get(next).map(|&n| n - c.addr);
            }
        }
    }

    /// No symbols, because the kernel's own could not be read (`why`).
    pub fn without_symbols(why: &str) -> SymbolTable {
        SymbolTable {
            why_none: Some(why.to_owned()),
            ..Default::default()
        }
    }

    /// Whether the source had a symbol table (an ELF's `.symtab`, a System.map, kallsyms).
    pub fn has_symbol_table(&self) -> bool {
        self.has_table
    }

    /// How many symbols the table has.
    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    /// Whether the table has no symbols.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The address `spec` names: `NAME`, `NAME@ADDRESS` (one of several symbols called
    /// NAME), each optionally followed by `+OFFSET`. Errors say why not, and suggest names.
    pub fn resolve(&self, spec: &str) -> Result<u64, Error> {
        self.resolve_checked(spec).map(|(addr, _)| addr)
    }

    /// As [`SymbolTable::resolve`], for an execution breakpoint: a symbol the table knows to be
    /// a variable is refused, with the hint to watch it.
    pub fn resolve_code(&self, spec: &str) -> Result<u64, Error> {
        let (addr, content) = self.resolve_checked(spec)?;
        match content {
            Content::Data(kind) => Err(Error::NotCode {
                name: spec.split(['+', '@']).next().unwrap_or(spec).to_owned(),
                kind,
            }),
            Content::Code | Content::Unknown => Ok(addr),
        }
    }

    fn resolve_checked(&self, spec: &str) -> Result<(u64, Content), Error> {
        let (symbol, offset) = match spec.split_once('+') {
            Some((symbol, off)) => (
                symbol,
                parse_number(off).ok_or_else(|| Error::BadNumber(spec.to_owned()))?,
            ),
            None => (spec, 0),
        };
        let c = self.candidate(symbol)?;
        let addr = c.addr.checked_add(offset).ok_or_else(|| Error::Wraps {
            spec: spec.to_owned(),
            addr: c.addr,
            offset,
        })?;
        if let Some(size) = c.size.or(c.span).filter(|&size| offset >= size) {
            let name = symbol.split('@').next().unwrap_or(symbol).to_owned();
            return Err(Error::PastEnd {
                spec: spec.to_owned(),
                lands_in: self.describe(addr).filter(|(n, _)| *n != name),
                name,
                offset,
                size,
            });
        }
        Ok((addr, c.content))
    }

    /// The one symbol `NAME` or `NAME@ADDRESS` designates, if it is an address.
    fn candidate(&self, symbol: &str) -> Result<&Candidate, Error> {
        let (name, pick) = match symbol.split_once('@') {
            Some((name, addr)) => (
                name,
                Some(parse_number(addr).ok_or_else(|| Error::BadNumber(symbol.to_owned()))?),
            ),
            None => (symbol, None),
        };
        if self.by_name.is_empty() && !self.has_table {
            return Err(match &self.why_none {
                Some(why) => Error::NoOwnSymbols {
                    name: name.to_owned(),
                    why: why.clone(),
                },
                None => Error::NoSymbols(name.to_owned()),
            });
        }
        let Some(all) = self.by_name.get(name) else {
            return Err(Error::Unknown {
                name: name.to_owned(),
                nearest: self.nearest(name, 3),
            });
        };
        let list = |cs: &[Candidate]| cs.iter().map(Candidate::describe).collect();
        let chosen = match pick {
            Some(addr) => {
                all.iter()
                    .find(|c| c.addr == addr)
                    .ok_or_else(|| Error::NoSuchCandidate {
                        name: name.to_owned(),
                        addr,
                        candidates: list(all),
                    })?
            }
            None => match all.as_slice() {
                [one] => one,
                many => {
                    return Err(Error::Ambiguous {
                        name: name.to_owned(),
                        candidates: list(many),
                    })
                }
            },
        };
        match chosen.class {
            Class::Address => Ok(chosen),
            Class::Absolute => Err(Error::NotAnAddress {
                name: name.to_owned(),
                what: format!("an absolute symbol (value {:#x})", chosen.addr),
            }),
            Class::PerCpu => Err(Error::NotAnAddress {
                name: name.to_owned(),
                what: format!(
                    "a per-cpu variable (offset {:#x} into each CPU's per-cpu area)",
                    chosen.addr
                ),
            }),
        }
    }

    /// The size in bytes of the symbol `NAME` or `NAME@ADDRESS`, where the symbol table records
    /// it (ELF; not System.map). None for `NAME+OFFSET`.
    pub fn size(&self, spec: &str) -> Option<u64> {
        if spec.contains('+') {
            return None;
        }
        self.candidate(spec).ok().and_then(|c| c.size)
    }

    /// The offset of the per-cpu variable `name` into each CPU's per-cpu area, if it is one
    /// (and the only symbol of that name).
    pub fn percpu_offset(&self, name: &str) -> Option<u64> {
        match self.by_name.get(name)?.as_slice() {
            [c] if c.class == Class::PerCpu => Some(c.addr),
            _ => None,
        }
    }

    /// Every code symbol: its address, its size (the ELF's, else the distance to the next
    /// symbol, else 0) and its name.
    pub fn code_symbols(&self) -> Vec<(u64, u64, &str)> {
        self.by_name
            .iter()
            .flat_map(|(n, cs)| cs.iter().map(move |c| (n, c)))
            .filter(|(_, c)| c.class == Class::Address && c.content == Content::Code)
            .map(|(n, c)| (c.addr, c.size.or(c.span).unwrap_or(0), n.as_str()))
            .collect()
    }

    /// The symbol that contains `addr` best: the highest code or data symbol at or below it,
    /// and the offset.
    pub fn describe(&self, addr: u64) -> Option<(String, u64)> {
        self.by_name
            .iter()
            .flat_map(|(n, cs)| cs.iter().map(move |c| (n, c)))
            .filter(|(_, c)| c.class == Class::Address && c.addr <= addr)
            .max_by_key(|(_, c)| c.addr)
            .map(|(n, c)| (n.clone(), addr - c.addr))
    }

    /// The `k` names closest to `name` by edit distance (ties by name), close enough to help.
    fn nearest(&self, name: &str, k: usize) -> Vec<String> {
        // Edit distance costs |a| * |b|: a name no symbol could be near gets no suggestion.
        if name.len() > MAX_SUGGESTED_NAME {
            return Vec::new();
        }
        let limit = name.len().max(3) / 2 + 1;
        // Names that end with the name come first (`getppid`: `__x64_sys_getppid`), then
        // those that contain it, shortest first; then the others by edit distance.
        let mut scored: Vec<(usize, usize, &String)> = self
            .by_name
            .keys()
            .filter(|n| n.as_str() != name)
            .filter_map(|n| {
                if n.ends_with(name) {
                    Some((0, n.len(), n))
                } else if n.contains(name) {
                    Some((1, n.len(), n))
                } else if n.len().abs_diff(name.len()) <= limit {
                    // A candidate whose length alone puts it out of reach is not measured.
                    let d = strsim::levenshtein(name, n);
                    (d <= limit).then_some((2, d, n))
                } else {
                    None
                }
            })
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(k)
            .map(|(_, _, n)| n.clone())
            .collect()
    }
}

/// `0x`-prefixed hex or decimal.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "ffffffff81000000 T _text\nffffffff81001000 T do_sys_open\nffffffff82000000 D jiffies\nffffffff82000040 D jiffies_64\n";

    #[test]
    fn debians_placeholder_is_refused_as_one() {
        let text = "ffffffffffffffff B The real System.map is in the linux-image-6.1.0-18-amd64-dbg package\n";
        let e = SymbolTable::from_system_map(text, "/boot/System.map-6.1.0-18-amd64").unwrap_err();
        assert!(matches!(e, Error::Placeholder { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("/boot/System.map-6.1.0-18-amd64: a placeholder"),
            "{message}"
        );
        assert!(
            message.contains(
                "(`The real System.map is in the linux-image-6.1.0-18-amd64-dbg package`)"
            ),
            "{message}"
        );
        assert!(message.contains("-dbg package, or none"), "{message}");
        assert!(message.contains("kallsyms"), "{message}");
    }

    #[test]
    fn system_map_resolves_names() {
        let t = SymbolTable::from_system_map(MAP, "System.map").unwrap();
        assert_eq!(t.resolve("jiffies"), Ok(0xffff_ffff_8200_0000));
        assert_eq!(
            t.describe(0xffff_ffff_8100_1010),
            Some(("do_sys_open".into(), 0x10))
        );
    }

    #[test]
    fn unknown_symbol_suggests_nearest_names() {
        let t = SymbolTable::from_system_map(MAP, "System.map").unwrap();
        let err = t.resolve("jiffie").unwrap_err();
        assert_eq!(
            err,
            Error::Unknown {
                name: "jiffie".into(),
                nearest: vec!["jiffies".into(), "jiffies_64".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown symbol `jiffie`; did you mean jiffies, jiffies_64?"
        );
    }

    #[test]
    fn bad_map_line_names_file_and_line() {
        let err = SymbolTable::from_system_map("ffff T a\nnonsense\n", "m").unwrap_err();
        assert!(err.to_string().starts_with("m:2: not a System.map line"));
    }

    #[test]
    fn embedded_guest_symbols_resolve() {
        let t = SymbolTable::from_elf(crate::guest_image::ELF);
        let addrs: Vec<u64> = (0..4)
            .map(|i| t.resolve(&format!("drv_target_{i}")).unwrap())
            .collect();
        assert!(addrs.windows(2).all(|w| w[0] != w[1]));
        assert!(t.resolve("drv_watch_u64").is_ok());
        assert_eq!(t.size("drv_watch_u64"), Some(8));
        assert_eq!(t.size("drv_watch_u16"), Some(2));
    }

    const LINUX_MAP: &str = "\
0000000000000000 D __per_cpu_start
0000000000000000 D fixed_percpu_data
0000000000001000 D cpu_number
0000000000030000 D __per_cpu_end
0000000000000400 A kexec_control_code_size
ffffffff81000000 T _text
ffffffff81000100 t early_cpu_to_node
ffffffff81234500 T early_cpu_to_node
ffffffff81000200 T startup_64
ffffffff81000200 T startup_64
";

    #[test]
    fn shared_names_are_ambiguous_and_can_be_picked() {
        let t = SymbolTable::from_system_map(LINUX_MAP, "m").unwrap();
        let err = t.resolve("early_cpu_to_node").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`early_cpu_to_node` is ambiguous: 2 symbols have this name (0xffffffff81000100, \
             0xffffffff81234500); pick one with `early_cpu_to_node@ADDRESS`"
        );
        assert_eq!(
            t.resolve("early_cpu_to_node@0xffffffff81234500"),
            Ok(0xffff_ffff_8123_4500)
        );
        assert!(matches!(
            t.resolve("early_cpu_to_node@0x1"),
            Err(Error::NoSuchCandidate { .. })
        ));
        // The same symbol listed twice is one candidate.
        assert_eq!(t.resolve("startup_64"), Ok(0xffff_ffff_8100_0200));
    }

    #[test]
    fn offsets_add_to_the_symbol() {
        let t = SymbolTable::from_system_map(LINUX_MAP, "m").unwrap();
        assert_eq!(t.resolve("_text+0x10"), Ok(0xffff_ffff_8100_0010));
        assert_eq!(t.resolve("_text+16"), Ok(0xffff_ffff_8100_0010));
        assert_eq!(
            t.resolve("early_cpu_to_node@0xffffffff81000100+4"),
            Ok(0xffff_ffff_8100_0104)
        );
        assert!(matches!(t.resolve("_text+x"), Err(Error::BadNumber(_))));
    }

    #[test]
    fn absolute_and_percpu_symbols_are_refused_with_the_reason() {
        let t = SymbolTable::from_system_map(LINUX_MAP, "m").unwrap();
        let abs = t
            .resolve("kexec_control_code_size")
            .unwrap_err()
            .to_string();
        assert!(abs.contains("an absolute symbol (value 0x400)"), "{abs}");
        let percpu = t.resolve("fixed_percpu_data").unwrap_err().to_string();
        assert!(percpu.contains("a per-cpu variable"), "{percpu}");
        assert!(t.resolve("cpu_number").is_err());
        assert_eq!(t.describe(0x500), None);
    }

    #[test]
    fn untyped_and_local_labels_of_the_guest_elf_resolve() {
        let t = SymbolTable::from_elf(crate::guest_image::ELF);
        // `.global drv_park` and the local `drv_gdt` are labels without `.type` in boot.rs.
        assert!(t.resolve("drv_park").is_ok());
        assert!(t.resolve("drv_gdt").is_ok());
        assert!(t.resolve("drv_pml4").is_ok());
    }

    #[test]
    fn no_symbol_table_only_when_there_is_none() {
        let t = SymbolTable::from_elf(b"not an elf");
        assert!(matches!(t.resolve("x"), Err(Error::NoSymbols(_))));
        let stripped = crate::boot::test_elf::build(
            crate::boot::elf::ElfClass::Elf32,
            0x10_0000,
            &[0xf4],
            None,
            &[],
        );
        let t = SymbolTable::from_elf(&stripped);
        assert!(matches!(t.resolve("x"), Err(Error::NoSymbols(_))));
    }

    /// An ELF of `class` whose symbol table has two local `helper`s from two files, a global
    /// function, an untyped label, an absolute symbol and a file-less global object.
    fn elf_with_symbols(class: crate::boot::elf::ElfClass) -> Vec<u8> {
        use crate::boot::test_elf::{build_with_symbols, LoadSegment, SymbolPlace, TestSymbol};
        let sym = |name, value, kind, local, place| TestSymbol {
            name,
            value,
            size: if kind == 2 { 4 } else { 0 },
            kind,
            local,
            place,
        };
        let text = SymbolPlace::Text;
        build_with_symbols(
            class,
            0x10_0000,
            &[LoadSegment {
                paddr: 0x10_0000,
                bytes: &[0x90; 64],
                memsz: 64,
            }],
            None,
            &[],
            &[
                sym("a.c", 0, 4, true, text),
                sym("helper", 0x10_0010, 2, true, text),
                sym("b.c", 0, 4, true, text),
                sym("helper", 0x10_0020, 2, true, text),
                sym("start64", 0x10_0030, 0, true, text),
                sym("max_cpus", 0x400, 0, true, SymbolPlace::Absolute),
                sym("main", 0x10_0000, 2, false, text),
            ],
        )
    }

    #[test]
    fn elf32_and_elf64_symbol_tables_follow_the_rules() {
        use crate::boot::elf::ElfClass;
        for class in [ElfClass::Elf32, ElfClass::Elf64] {
            let t = SymbolTable::from_elf(&elf_with_symbols(class));
            assert_eq!(t.resolve("main"), Ok(0x10_0000), "{class}");
            assert_eq!(t.size("main"), Some(4));
            assert_eq!(t.resolve("start64"), Ok(0x10_0030), "untyped local label");
            assert_eq!(t.resolve("main+0x2"), Ok(0x10_0002));
            // `main` is 4 bytes long.
            assert_eq!(
                t.resolve("main+0x8").unwrap_err().to_string(),
                "`main+0x8`: offset 0x8 is past the end of `main` (0x4 bytes)"
            );
            let err = t.resolve("helper").unwrap_err().to_string();
            assert_eq!(
                err,
                "`helper` is ambiguous: 2 symbols have this name (0x100010 in a.c, 0x100020 in \
                 b.c); pick one with `helper@ADDRESS`"
            );
            assert_eq!(t.resolve("helper@0x100020"), Ok(0x10_0020));
            let abs = t.resolve("max_cpus").unwrap_err().to_string();
            assert!(abs.contains("absolute symbol (value 0x400)"), "{abs}");
            assert_eq!(t.describe(0x10_0034), Some(("start64".into(), 4)));
            // A table with symbols, none of them the one asked for: not "no symbol table".
            assert!(matches!(t.resolve("nope"), Err(Error::Unknown { .. })));
        }
    }

    #[test]
    fn suggestions_rank_by_edit_distance_then_name() {
        let t = SymbolTable::from_system_map(
            "1 T do_sys_open\n2 T do_sys_openat2\n3 T do_sys_poll\n4 T ksys_open\n",
            "m",
        )
        .unwrap();
        // do_sys_opem: 1 edit from do_sys_open, 3 from do_sys_poll; ksys_open is 3 edits.
        assert_eq!(
            t.nearest("do_sys_opem", 3),
            vec!["do_sys_open", "do_sys_openat2", "do_sys_poll"]
        );
    }
}

#[cfg(test)]
#[path = "symbols_lookup_tests.rs"]
mod lookup_tests;
