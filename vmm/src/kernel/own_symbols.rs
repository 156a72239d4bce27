//! The symbols a kernel image carries itself, for a run given no System.map: an ELF's symbol
//! table, or else the kernel's kallsyms (inside a bzImage's compressed payload, or in the
//! data of an ELF whose symbol table was stripped).

use std::time::{Duration, Instant};

use std::borrow::Cow;

use super::{kallsyms, payload, task_layout, TaskLayout};
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
    /// The user's (`--symbols`).
    Given,
}

/// The symbols of `image` (a bzImage or an ELF), and where they came from.
pub fn own_symbols(image: &[u8]) -> (SymbolTable, Source) {
    let (table, source, _) = read(image, None);
    (table, source)
}

/// What a kernel image says about itself: its symbols (`given`, else its own, as
/// [`own_symbols`]) and where the current task and its identity are (from its BTF, see
/// [`super::task_layout`]), decompressing a bzImage once for both.
pub fn image_facts(
    image: &[u8],
    given: Option<SymbolTable>,
) -> (SymbolTable, Source, Result<TaskLayout, String>) {
    read(image, given)
}

fn read(
    image: &[u8],
    given: Option<SymbolTable>,
) -> (SymbolTable, Source, Result<TaskLayout, String>) {
    let is_bzimage = image.get(0x202..0x206) == Some(b"HdrS");
    let start = Instant::now();
    let elf: Result<Cow<'_, [u8]>, String> = if is_bzimage {
        payload::vmlinux(image)
            .map(Cow::Owned)
            .map_err(|e| e.to_string())
    } else {
        Ok(Cow::Borrowed(image))
    };
    let layout = |table: &SymbolTable| match &elf {
        Ok(elf) => task_layout(elf, table).map_err(|e| e.to_string()),
        Err(why) => Err(why.clone()),
    };
    if let Some(table) = given {
        let found = layout(&table);
        return (table, Source::Given, found);
    }
    if !is_bzimage {
        let table = SymbolTable::from_elf(image);
        if table.has_symbol_table() {
            let found = layout(&table);
            return (table, Source::ElfSymbolTable, found);
        }
    }
    let found = elf
        .as_deref()
        .map_err(Clone::clone)
        .and_then(|elf| kallsyms::read(elf).map_err(|e| e.to_string()));
    match found {
        Ok(entries) => {
            let table = SymbolTable::from_kallsyms(&entries);
            let source = Source::Kallsyms {
                count: entries.len(),
                took: start.elapsed(),
                from_bzimage: is_bzimage,
            };
            let found = layout(&table);
            (table, source, found)
        }
        Err(why) => (
            SymbolTable::without_symbols(&why),
            Source::None(why.clone()),
            Err(why),
        ),
    }
}
