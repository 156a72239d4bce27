//! Guest kernel symbols, by name: from the kernel ELF's symbol table or from a `System.map`,
//! the way `kallsyms_lookup_name` answers inside the kernel.

use std::collections::BTreeMap;

use object::{Object, ObjectSymbol, SymbolKind};

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
}

fn suggest(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        let shown: Vec<_> = nearest.iter().map(|n| cut(n)).collect();
        format!("; did you mean {}?", shown.join(", "))
    }
}

/// Names longer than this get no "did you mean" (no kernel symbol is this long).
const MAX_SUGGESTED_NAME: usize = 512;

/// Names to addresses (and sizes, where the source gives them).
#[derive(Debug, Default, Clone)]
pub struct SymbolTable {
    by_name: BTreeMap<String, u64>,
    sizes: BTreeMap<String, u64>,
}

impl SymbolTable {
    /// The function and data symbols of an ELF image (empty if it has none, or is not an ELF).
    pub fn from_elf(bytes: &[u8]) -> SymbolTable {
        let mut by_name = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        if let Ok(file) = object::File::parse(bytes) {
            for sym in file.symbols() {
                if !matches!(sym.kind(), SymbolKind::Text | SymbolKind::Data) || sym.address() == 0
                {
                    continue;
                }
                if let Ok(name) = sym.name() {
                    by_name.entry(name.to_owned()).or_insert(sym.address());
                    if sym.size() > 0 {
                        sizes.entry(name.to_owned()).or_insert(sym.size());
                    }
                }
            }
        }
        SymbolTable { by_name, sizes }
    }

    /// Parses a System.map (`ffffffff81000000 T _text` per line). `path` names it in errors.
    pub fn from_system_map(text: &str, path: &str) -> Result<SymbolTable, Error> {
        let mut by_name = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let parsed = match (parts.next(), parts.next(), parts.next()) {
                (Some(addr), Some(_kind), Some(name)) => {
                    u64::from_str_radix(addr, 16).ok().map(|a| (name, a))
                }
                _ => None,
            };
            let Some((name, addr)) = parsed else {
                return Err(Error::BadMapLine {
                    path: path.to_owned(),
                    line: i + 1,
                    text: cut(line).into_owned(),
                });
            };
            by_name.entry(name.to_owned()).or_insert(addr);
        }
        Ok(SymbolTable {
            by_name,
            sizes: BTreeMap::new(),
        })
    }

    /// Whether the table has no symbols.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The address of `name`, or an error that suggests the nearest names.
    pub fn resolve(&self, name: &str) -> Result<u64, Error> {
        if self.by_name.is_empty() {
            return Err(Error::NoSymbols(name.to_owned()));
        }
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::Unknown {
                name: name.to_owned(),
                nearest: self.nearest(name, 3),
            })
    }

    /// The size of `name` in bytes, where the symbol table records it (ELF; not System.map).
    pub fn size(&self, name: &str) -> Option<u64> {
        self.sizes.get(name).copied()
    }

    /// The symbol that contains `addr` best: the highest symbol at or below it, and the offset.
    pub fn describe(&self, addr: u64) -> Option<(String, u64)> {
        self.by_name
            .iter()
            .filter(|(_, &a)| a <= addr)
            .max_by_key(|(_, &a)| a)
            .map(|(n, &a)| (n.clone(), addr - a))
    }

    /// The `k` names closest to `name` by edit distance (ties by name), close enough to help.
    fn nearest(&self, name: &str, k: usize) -> Vec<String> {
        // Edit distance costs |a| * |b|: a name no symbol could be near gets no suggestion,
        // and a candidate whose length alone puts it out of reach is not measured.
        if name.len() > MAX_SUGGESTED_NAME {
            return Vec::new();
        }
        let limit = name.len().max(3) / 2 + 1;
        let mut scored: Vec<(usize, &String)> = self
            .by_name
            .keys()
            .filter_map(|n| {
                if n.len().abs_diff(name.len()) <= limit {
                    let d = strsim::levenshtein(name, n);
                    (d <= limit || n.contains(name)).then_some((d, n))
                } else {
                    n.contains(name).then_some((usize::MAX, n))
                }
            })
            .collect();
        scored.sort();
        scored.into_iter().take(k).map(|(_, n)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "ffffffff81000000 T _text\nffffffff81001000 T do_sys_open\nffffffff82000000 D jiffies\nffffffff82000040 D jiffies_64\n";

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

    #[test]
    fn a_gigantic_bad_line_gives_a_short_message() {
        let nuls = "\0".repeat(1 << 20);
        let err = SymbolTable::from_system_map(&nuls, "map").unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 400 && !text.contains('\n'), "{}", text.len());
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
