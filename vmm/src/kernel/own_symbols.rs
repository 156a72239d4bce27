//! The symbols a kernel image carries itself, for a run given no System.map: an ELF's symbol
//! table, or else the kernel's kallsyms (inside a bzImage's compressed payload, or in the
//! data of an ELF whose symbol table was stripped).

use std::time::{Duration, Instant};

use super::{kallsyms, payload};
use crate::symbols::SymbolTable;

/// Where the symbols came from.
#[derive(Debug)]
pub enum Source {
    /// The ELF's own symbol table.
    ElfSymbolTable,
    /// The kernel's kallsyms: how many, and how long finding them took (decompressing
    /// included).
    Kallsyms {
        /// How many symbols.
        count: usize,
        /// How long it took.
        took: Duration,
        /// Whether they came out of a bzImage's compressed payload.
        from_bzimage: bool,
    },
    /// None: why not.
    None(String),
}

/// The symbols of `image` (a bzImage or an ELF), and where they came from.
pub fn own_symbols(image: &[u8]) -> (SymbolTable, Source) {
    let is_bzimage = image.get(0x202..0x206) == Some(b"HdrS");
    if !is_bzimage {
        let table = SymbolTable::from_elf(image);
        if table.has_symbol_table() {
            return (table, Source::ElfSymbolTable);
        }
    }
    let start = Instant::now();
    let found = if is_bzimage {
        payload::vmlinux(image)
            .map_err(|e| e.to_string())
            .and_then(|elf| kallsyms::read(&elf).map_err(|e| e.to_string()))
    } else {
        kallsyms::read(image).map_err(|e| e.to_string())
    };
    match found {
        Ok(entries) => (
            SymbolTable::from_kallsyms(&entries),
            Source::Kallsyms {
                count: entries.len(),
                took: start.elapsed(),
                from_bzimage: is_bzimage,
            },
        ),
        Err(why) => (SymbolTable::without_symbols(&why), Source::None(why)),
    }
}
