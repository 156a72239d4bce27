//! Names for the code addresses in a spec's report (`rip=0x... (function+0x7)`): the spec's
//! `symbols` (a System.map), else the kernel's own (its ELF symbol table or its kallsyms; the
//! embedded test guest's without `kernel`), found as `drvisor run` finds them. Read at most once
//! a spec, and only when the report shows a hit; a file that cannot be read leaves the
//! addresses raw (the run itself reported the problem).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::path::Path;

use drvisor::input_file::{self, Limit};
use drvisor::stack_words::CodeIndex;
use drvisor::symbols::SymbolTable;
use drvisor_ci::spec::VmSpec;

use crate::inputs::{MAX_KERNEL, MAX_SYMBOLS};

/// The code names of one spec's guest, read on the first question.
pub struct SpecNames<'a> {
    vm: &'a VmSpec,
    index: OnceCell<Option<CodeIndex>>,
}

impl<'a> SpecNames<'a> {
    pub fn new(vm: &'a VmSpec) -> SpecNames<'a> {
        SpecNames {
            vm,
            index: OnceCell::new(),
        }
    }

    /// `function+0xoffset` for a code address, where the symbols know it.
    pub fn name(&self, addr: u64) -> Option<String> {
        self.index
            .get_or_init(|| symbols(self.vm).map(|t| CodeIndex::new(&t)))
            .as_ref()?
            .locate(addr)
    }
}

/// The guest's symbols, as `drvisor run` reads them.
fn symbols(vm: &VmSpec) -> Option<SymbolTable> {
    if let Some(map) = &vm.symbols {
        let text = String::from_utf8(read(map, MAX_SYMBOLS)?).ok()?;
        return SymbolTable::from_system_map(&text, &map.display().to_string()).ok();
    }
    let kernel = match &vm.kernel {
        Some(k) => Cow::Owned(read(k, MAX_KERNEL)?),
        None => Cow::Borrowed(drvisor::guest_image::ELF),
    };
    Some(drvisor::kernel::own_symbols(&kernel).0)
}

fn read(path: &Path, bytes: u64) -> Option<Vec<u8>> {
    let limit = Limit {
        bytes,
        why: "the limit of drvisor run".into(),
    };
    input_file::open("symbols", path, limit).ok()?.read().ok()
}
