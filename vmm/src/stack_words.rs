//! The words of a captured stack that point into code, named as the kernel's own `show_stack`
//! names them: `? do_sys_openat2+0x5b/0x90`. Without an unwinder (a kernel built without
//! frame pointers has none a VMM can follow) every such word is a guess: a return address, or a
//! function pointer that happens to be on the stack. The `?` says so, as the kernel's does.

use drvisor_api::StackWord;

use crate::symbols::SymbolTable;

/// Code symbols sorted by address, for lookups at hit time.
#[derive(Debug, Default)]
pub struct CodeIndex {
    /// (start, size, name), by start.
    symbols: Vec<(u64, u64, Box<str>)>,
}

impl CodeIndex {
    /// The index of `table`'s code symbols.
    pub fn new(table: &SymbolTable) -> CodeIndex {
        let mut symbols: Vec<(u64, u64, Box<str>)> = table
            .code_symbols()
            .into_iter()
            .map(|(addr, size, name)| (addr, size, name.into()))
            .collect();
        symbols.sort();
        CodeIndex { symbols }
    }

    /// Whether it has no code symbol.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The code symbol `addr` is in, and how far past its start: (name, offset, size).
    fn containing(&self, addr: u64) -> Option<(&str, u64, u64)> {
        let at = self.symbols.partition_point(|(start, _, _)| *start <= addr);
        let (start, size, name) = self.symbols.get(at.checked_sub(1)?)?;
        let off = addr - start;
        (off < *size).then_some((name, off, *size))
    }

    /// `fn+0xoff/0xsize` for an address inside a code symbol (past its start, within its size).
    pub fn name(&self, addr: u64) -> Option<String> {
        let (name, off, size) = self.containing(addr)?;
        (off > 0).then(|| format!("{name}+{off:#x}/{size:#x}"))
    }

    /// `fn+0xoff` for an address inside a code symbol, its start included (an instruction
    /// pointer, where [`CodeIndex::name`] names return addresses).
    pub fn locate(&self, addr: u64) -> Option<String> {
        let (name, off, _) = self.containing(addr)?;
        Some(format!("{name}+{off:#x}"))
    }

    /// `fn+0xoff/0xsize` for a frame of a backtrace, as the kernel's `%pB` names it: an
    /// instruction pointer from its function's start (`fn+0x0/...` included); a return address
    /// (`returns`) by the call before it, so one just past a function's last instruction (a
    /// call that does not return) is still named in it. The bare address where no code symbol
    /// holds.
    pub fn frame(&self, addr: u64, returns: bool) -> String {
        let call = if returns { addr.wrapping_sub(1) } else { addr };
        match self.containing(call) {
            Some((name, off, size)) => {
                format!("{name}+{:#x}/{size:#x}", off + u64::from(returns))
            }
            None => format!("{addr:#x}"),
        }
    }

    /// The words of `bytes`, read from guest-virtual `addr` (8-byte aligned words from the
    /// first aligned one), that point into code.
    pub fn scan(&self, addr: u64, bytes: &[u8]) -> Vec<StackWord> {
        let skip = ((8 - addr % 8) % 8) as usize;
        bytes
            .get(skip..)
            .unwrap_or_default()
            .chunks_exact(8)
            .enumerate()
            .filter_map(|(i, w)| {
                let value = u64::from_le_bytes(w.try_into().ok()?);
                let symbol = self.name(value)?;
                Some(StackWord {
                    addr: addr + skip as u64 + 8 * i as u64,
                    value,
                    symbol: format!("? {symbol}"),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> CodeIndex {
        let map = "ffffffff81000000 T start\nffffffff81000100 T next\nffffffff81000200 D data\n";
        CodeIndex::new(&SymbolTable::from_system_map(map, "map").unwrap())
    }

    #[test]
    fn an_address_inside_a_function_is_named_with_offset_and_size() {
        let i = index();
        assert_eq!(
            i.name(0xffff_ffff_8100_005b).as_deref(),
            Some("start+0x5b/0x100")
        );
        assert_eq!(
            i.name(0xffff_ffff_8100_0000),
            None,
            "a function's start is no return address"
        );
        assert_eq!(i.name(0x1234), None);
    }

    #[test]
    fn an_instruction_pointer_is_located_from_its_function_start() {
        let i = index();
        assert_eq!(
            i.locate(0xffff_ffff_8100_0000).as_deref(),
            Some("start+0x0")
        );
        assert_eq!(i.locate(0xffff_ffff_8100_0107).as_deref(), Some("next+0x7"));
        assert_eq!(i.locate(0xffff_ffff_8100_0200), None, "data is no code");
        assert_eq!(i.locate(0x1234), None);
    }

    #[test]
    fn a_frame_is_named_by_its_instruction_or_the_call_before_its_return_address() {
        let i = index();
        assert_eq!(i.frame(0xffff_ffff_8100_0000, false), "start+0x0/0x100");
        // A return address just past `start`'s end: the call was `start`'s last instruction.
        assert_eq!(i.frame(0xffff_ffff_8100_0100, true), "start+0x100/0x100");
        assert_eq!(i.frame(0xffff_ffff_8100_0100, false), "next+0x0/0x100");
        assert_eq!(i.frame(0x1234, true), "0x1234");
        assert_eq!(i.frame(0xffff_ffff_8100_0200, false), "0xffffffff81000200");
    }

    #[test]
    fn only_words_into_code_are_kept_and_marked_as_guesses() {
        let i = index();
        let mut bytes = vec![0xaa; 4];
        for w in [0x1234u64, 0xffff_ffff_8100_0105, 0xffff_ffff_8100_0010] {
            bytes.extend(w.to_le_bytes());
        }
        let words = i.scan(0x7000_0004, &bytes);
        assert_eq!(words.len(), 2);
        assert_eq!(words[0].addr, 0x7000_0010);
        assert_eq!(words[0].symbol, "? next+0x5/0x100");
        assert_eq!(words[1].symbol, "? start+0x10/0x100");
    }
}
