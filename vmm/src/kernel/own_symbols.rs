//! The symbols a kernel image carries itself, for a run given no System.map: an ELF's symbol
//! table, or else the kernel's kallsyms (inside a bzImage's compressed payload, or in the
//! data of an ELF whose symbol table was stripped).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::orc::{self, OrcSections};
use super::{kallsyms, payload, task_layout, TaskLayout};
use crate::symbols::SymbolTable;

/// Why a kernel image's task layout (where the current task and its identity are) is not
/// known.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The kernel inside the bzImage could not be had (shared: the symbols failed with it).
    #[error(transparent)]
    Payload(Arc<payload::Error>),
    /// The image has no symbols of its own, and the layout is found through them.
    #[error(transparent)]
    NoSymbols(kallsyms::Error),
    /// Its BTF does not say (none, or not a Linux kernel).
    #[error(transparent)]
    Btf(task_layout::Error),
}

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

/// Why a kernel image's ORC unwind table (for backtraces) is not known.
#[derive(Debug, thiserror::Error)]
pub enum OrcError {
    /// The kernel inside the bzImage could not be had.
    #[error(transparent)]
    Payload(Arc<payload::Error>),
    /// The kernel has none, or one drvisor does not read.
    #[error(transparent)]
    Orc(orc::Error),
}

/// What a kernel image says about itself.
#[derive(Debug)]
pub struct ImageFacts {
    /// Its symbols: the given ones, else its own.
    pub symbols: SymbolTable,
    /// Where they came from.
    pub source: Source,
    /// Where the current task and its identity are (from its BTF).
    pub layout: Result<TaskLayout, LayoutError>,
    /// Its ORC unwind table's sections, found and checked but not decoded (see
    /// [`super::LazyOrc`]).
    pub orc: Result<OrcSections, OrcError>,
}

/// The symbols of `image` (a bzImage or an ELF), and where they came from.
pub fn own_symbols(image: &[u8]) -> (SymbolTable, Source) {
    let (table, source, _, _) = read(image, None);
    (table, source)
}

/// What a kernel image says about itself: its symbols (`given`, else its own, as
/// [`own_symbols`]), where the current task and its identity are (from its BTF, see
/// [`super::task_layout`]) and its ORC table's sections ([`super::orc`]), decompressing a
/// bzImage once for all.
pub fn image_facts(image: &[u8], given: Option<SymbolTable>) -> ImageFacts {
    let (symbols, source, layout, elf) = read(image, given);
    let orc = match elf {
        Ok(elf) => OrcSections::from_elf(&elf).map_err(OrcError::Orc),
        Err(why) => Err(OrcError::Payload(why)),
    };
    ImageFacts {
        symbols,
        source,
        layout,
        orc,
    }
}

/// The symbols, where they came from, the task layout, and the kernel's ELF (a bzImage's
/// decompressed) or why it could not be had.
type Read<'a> = (
    SymbolTable,
    Source,
    Result<TaskLayout, LayoutError>,
    Result<Cow<'a, [u8]>, Arc<payload::Error>>,
);

fn read(image: &[u8], given: Option<SymbolTable>) -> Read<'_> {
    let is_bzimage = image.get(0x202..0x206) == Some(b"HdrS");
    let start = Instant::now();
    let elf: Result<Cow<'_, [u8]>, Arc<payload::Error>> = if is_bzimage {
        payload::vmlinux(image).map(Cow::Owned).map_err(Arc::new)
    } else {
        Ok(Cow::Borrowed(image))
    };
    let layout = |table: &SymbolTable| match &elf {
        Ok(elf) => task_layout(elf, table).map_err(LayoutError::Btf),
        Err(why) => Err(LayoutError::Payload(why.clone())),
    };
    if let Some(table) = given {
        let found = layout(&table);
        return (table, Source::Given, found, elf);
    }
    if !is_bzimage {
        let table = SymbolTable::from_elf(image);
        if table.has_symbol_table() {
            let found = layout(&table);
            return (table, Source::ElfSymbolTable, found, elf);
        }
    }
    let found = match &elf {
        Ok(elf) => kallsyms::read(elf).map_err(LayoutError::NoSymbols),
        Err(why) => Err(LayoutError::Payload(why.clone())),
    };
    match found {
        Ok(entries) => {
            let table = super::kallsyms::symbol_table(&entries);
            let source = Source::Kallsyms {
                count: entries.len(),
                took: start.elapsed(),
                from_bzimage: is_bzimage,
            };
            let found = layout(&table);
            (table, source, found, elf)
        }
        Err(why) => {
            let text = why.to_string();
            (
                SymbolTable::without_symbols(&text),
                Source::None(text),
                Err(why),
                elf,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_fact_names_its_own_reason() {
        // Neither an ELF nor a bzImage: no symbol table, no kallsyms, so no layout either.
        let ImageFacts {
            source,
            layout,
            orc,
            ..
        } = image_facts(&[0u8; 256], None);
        assert!(
            matches!(orc, Err(OrcError::Orc(orc::Error::NotElf(_)))),
            "{orc:?}"
        );
        assert!(matches!(source, Source::None(_)), "{source:?}");
        assert!(
            matches!(
                layout,
                Err(LayoutError::NoSymbols(kallsyms::Error::NoTokenTable))
            ),
            "{layout:?}"
        );
        // Symbols given, but the image is no ELF: the layout's own reason, from its BTF read.
        let given = SymbolTable::without_symbols("test");
        let ImageFacts { source, layout, .. } = image_facts(&[0u8; 256], Some(given));
        assert!(matches!(source, Source::Given), "{source:?}");
        assert!(
            matches!(
                layout,
                Err(LayoutError::Btf(task_layout::Error::NotElf { .. }))
            ),
            "{layout:?}"
        );
        // A bzImage whose payload cannot be had: that reason, for the symbols and the layout.
        let mut bz = vec![0u8; 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let ImageFacts {
            source,
            layout,
            orc,
            ..
        } = image_facts(&bz, None);
        assert!(matches!(orc, Err(OrcError::Payload(_))), "{orc:?}");
        let Source::None(why) = source else {
            panic!("symbols from a broken bzImage: {source:?}")
        };
        let Err(LayoutError::Payload(e)) = layout else {
            panic!("{layout:?}")
        };
        assert_eq!(why, e.to_string());
    }
}
