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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_map_names_the_code_it_lists() {
        let dir = std::env::temp_dir().join(format!("drvisor-ci-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let map = dir.join("System.map");
        std::fs::write(
            &map,
            "ffffffff81000000 T __x64_sys_getppid\nffffffff81000040 T next\n",
        )
        .expect("write a System.map");
        let vm = VmSpec {
            symbols: Some(map),
            ..VmSpec::default()
        };
        let names = SpecNames::new(&vm);
        assert_eq!(
            names.name(0xffff_ffff_8100_0007).as_deref(),
            Some("__x64_sys_getppid+0x7")
        );
        assert_eq!(names.name(0x1000), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_symbols_the_test_guest_names_its_own_code() {
        let (table, _) = drvisor::kernel::own_symbols(drvisor::guest_image::ELF);
        let target = table
            .resolve_code("drv_target_0")
            .expect("the guest has it");
        let vm = VmSpec::default();
        assert_eq!(
            SpecNames::new(&vm).name(target).as_deref(),
            Some("drv_target_0+0x0")
        );
    }

    #[test]
    fn symbols_that_cannot_be_read_leave_addresses_raw() {
        let vm = VmSpec {
            symbols: Some("/nonexistent/System.map".into()),
            ..VmSpec::default()
        };
        assert_eq!(SpecNames::new(&vm).name(0xffff_ffff_8100_0007), None);
    }
}
