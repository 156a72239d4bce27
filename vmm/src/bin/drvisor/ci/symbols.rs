//! The guest's code names for `drvisor ci`'s reports (`rip=0x... (function+0x7)`): the spec's
//! `symbols` (a System.map), else the kernel's own (its ELF symbol table or its kallsyms; the
//! embedded test guest's without `kernel`), read as `drvisor run` reads them
//! ([`inputs::guest_symbols`]). drvisor-ci asks for them at most once a spec, and only when the
//! report shows a hit; a file that cannot be read leaves the addresses raw (the run itself
//! reported the problem).

use std::borrow::Cow;

use drvisor::stack_words::CodeIndex;
use drvisor::symbols::SymbolTable;
use drvisor_ci::names::{CodeNames, GuestSymbols};
use drvisor_ci::spec::VmSpec;

use crate::inputs;

/// A spec's guest's symbols, read from its files.
pub struct SpecSymbols;

impl GuestSymbols for SpecSymbols {
    fn code_names(&self, vm: &VmSpec) -> Option<CodeNames> {
        let index = CodeIndex::new(&symbols(vm)?);
        Some(Box::new(move |addr| index.locate(addr)))
    }
}

/// The guest's symbols, as `drvisor run` reads them.
fn symbols(vm: &VmSpec) -> Option<SymbolTable> {
    let map = vm
        .symbols
        .as_deref()
        .map(|p| inputs::open_system_map("symbols", p))
        .transpose()
        .ok()?;
    let kernel = || match &vm.kernel {
        Some(k) => Ok(Cow::Owned(inputs::read(inputs::open_kernel("kernel", k)?)?)),
        None => Ok(Cow::Borrowed(drvisor::guest_image::ELF)),
    };
    inputs::guest_symbols(map, kernel)
        .ok()
        .map(|(table, _)| table)
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
        let names = SpecSymbols.code_names(&vm).expect("a readable System.map");
        assert_eq!(
            names(0xffff_ffff_8100_0007).as_deref(),
            Some("__x64_sys_getppid+0x7")
        );
        assert_eq!(names(0x1000), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_symbols_the_test_guest_names_its_own_code() {
        let (table, _) = drvisor::kernel::own_symbols(drvisor::guest_image::ELF);
        let target = table
            .resolve_code("drv_target_0")
            .expect("the guest has it");
        let vm = VmSpec::default();
        let names = SpecSymbols
            .code_names(&vm)
            .expect("the embedded guest's symbols");
        assert_eq!(names(target).as_deref(), Some("drv_target_0+0x0"));
    }

    #[test]
    fn symbols_that_cannot_be_read_leave_addresses_raw() {
        let vm = VmSpec {
            symbols: Some("/nonexistent/System.map".into()),
            ..VmSpec::default()
        };
        assert!(SpecSymbols.code_names(&vm).is_none());
    }
}
