//! Names for the code addresses in a spec's report (`rip=0x... (function+0x7)`). The symbols
//! are read at most once a spec, and only when the report shows a hit; symbols that cannot be
//! read leave the addresses raw (the run itself reported the problem). Reading them is the
//! caller's [`GuestSymbols`]: drvisor reads them as `drvisor run` does.

use std::cell::OnceCell;

use crate::spec::VmSpec;

/// One guest's code names: `function+0xoffset` for an address its symbols know.
pub type CodeNames = Box<dyn Fn(u64) -> Option<String>>;

/// How the runner gets a spec's guest's code names.
pub trait GuestSymbols: Sync {
    /// The code names of `vm`'s guest: the spec's `symbols` (a System.map), else the kernel's
    /// own (the embedded test guest's without `kernel`). None if they cannot be read.
    fn code_names(&self, vm: &VmSpec) -> Option<CodeNames>;
}

/// No symbols: every address stays raw.
pub struct NoSymbols;

impl GuestSymbols for NoSymbols {
    fn code_names(&self, _: &VmSpec) -> Option<CodeNames> {
        None
    }
}

/// The code names of one spec's guest, read on the first question.
pub struct SpecNames<'a> {
    vm: &'a VmSpec,
    symbols: &'a dyn GuestSymbols,
    names: OnceCell<Option<CodeNames>>,
}

impl<'a> SpecNames<'a> {
    pub fn new(vm: &'a VmSpec, symbols: &'a dyn GuestSymbols) -> SpecNames<'a> {
        SpecNames {
            vm,
            symbols,
            names: OnceCell::new(),
        }
    }

    /// `function+0xoffset` for a code address, where the symbols know it.
    pub fn name(&self, addr: u64) -> Option<String> {
        let names = self
            .names
            .get_or_init(|| self.symbols.code_names(self.vm))
            .as_ref()?;
        names(addr)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Names every address `f+0x...` from 0x1000, and counts how often it was read.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl GuestSymbols for Counted {
        fn code_names(&self, _: &VmSpec) -> Option<CodeNames> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Some(Box::new(|a| {
                a.checked_sub(0x1000).map(|off| format!("f+{off:#x}"))
            }))
        }
    }

    #[test]
    fn symbols_are_read_once_and_only_when_asked() {
        let symbols = Counted::default();
        let vm = VmSpec::default();
        let names = SpecNames::new(&vm, &symbols);
        assert_eq!(symbols.0.load(Ordering::Relaxed), 0);
        assert_eq!(names.name(0x1007).as_deref(), Some("f+0x7"));
        assert_eq!(names.name(0x10).as_deref(), None);
        assert_eq!(symbols.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn without_symbols_addresses_stay_raw() {
        let vm = VmSpec::default();
        assert_eq!(SpecNames::new(&vm, &NoSymbols).name(0x1000), None);
    }
}
