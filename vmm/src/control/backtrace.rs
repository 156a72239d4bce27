//! A hit's backtrace (`--capture` on a kernel with an ORC table): the kernel's stack walked
//! with [`crate::kernel::orc_unwind`], reading guest memory on the vCPU's thread through the
//! guest's page tables (no ioctl), each frame named as the kernel names it. The first such
//! hit decodes the table ([`LazyOrc`]).

use vm_memory::GuestMemory;

use crate::guest_paging::SystemRegisters;
use crate::kernel::orc_unwind::{self, Memory, Start};
use crate::kernel::LazyOrc;
use crate::stack_words::CodeIndex;

/// The most frames a hit event carries (the kernel's own walks stop far earlier in practice).
pub const MAX_FRAMES: usize = 64;

/// Guest memory as the vCPU sees it at the hit.
struct GuestView<'a, M> {
    mem: &'a M,
    paging: &'a SystemRegisters,
}

impl<M: GuestMemory> Memory for GuestView<'_, M> {
    fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let mut word = [0u8; 8];
        crate::guest_paging::read_into(self.mem, self.paging, vaddr, &mut word)
            .then(|| u64::from_le_bytes(word))
    }
}

/// The named frames from (`rip`, `rsp`, `rbp`), innermost first, and why the walk ended;
/// no frame, and why, where the kernel has no ORC table this reader decodes. Nothing for a
/// hit outside the kernel (CPL 3).
pub fn at_hit(
    orc: &LazyOrc,
    code: &CodeIndex,
    mem: &impl GuestMemory,
    paging: &SystemRegisters,
    start: Start,
) -> Option<(Vec<String>, String)> {
    if paging.cpl != 0 {
        return None;
    }
    let orc = match orc.table() {
        Ok(table) => table,
        Err(why) => return Some((Vec::new(), format!("no backtrace: {why}"))),
    };
    let view = GuestView { mem, paging };
    let walked = orc_unwind::unwind(orc, start, &view, MAX_FRAMES);
    let frames = walked
        .frames
        .iter()
        .map(|f| code.frame(f.ip, f.returns))
        .collect();
    Some((frames, walked.stop.to_string()))
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::guest_paging::read::tests::{long_mode, ram};
    use crate::kernel::orc::{Error, OrcSections};
    use crate::kernel::OrcError;
    use crate::symbols::SymbolTable;

    const TEXT: u64 = 0xffff_ffff_8100_0000;

    fn paging(cpl: u8) -> SystemRegisters {
        SystemRegisters { cpl, ..long_mode() }
    }

    /// `leaf` (SP + 8 at its start) called from `top` (the end of the stack).
    fn orc() -> LazyOrc {
        let entry = |sp_off: i16, bits: u16| {
            let mut e = sp_off.to_le_bytes().to_vec();
            e.extend([0, 0]);
            e.extend(bits.to_le_bytes());
            e
        };
        let base = TEXT + 0x10_0000;
        let ips: Vec<u8> = [TEXT + 0x100, TEXT + 0x200, TEXT + 0x300]
            .iter()
            .enumerate()
            .flat_map(|(i, ip)| (ip.wrapping_sub(base + 4 * i as u64) as i64 as i32).to_le_bytes())
            .collect();
        let entries = [entry(8, 5), entry(0, 1 << 10), entry(0, 0)].concat();
        LazyOrc::new(Ok(OrcSections::from_sections(base, &ips, &entries).unwrap()))
    }

    fn code() -> CodeIndex {
        let map = "ffffffff81000100 T leaf\nffffffff81000200 T top\nffffffff81000300 T after\n";
        CodeIndex::new(&SymbolTable::from_system_map(map, "map").unwrap())
    }

    #[test]
    fn walks_guest_memory_through_the_page_tables() {
        let mem = ram();
        // The return address into `top` at virtual 0x8000 (physical 2 MiB + 0x8000).
        mem.write_obj(TEXT + 0x234, GuestAddress((2 << 20) + 0x8000))
            .unwrap();
        let start = Start {
            rip: TEXT + 0x100,
            rsp: 0x8000,
            rbp: 0,
        };
        let (frames, end) = at_hit(&orc(), &code(), &mem, &paging(0), start).unwrap();
        assert_eq!(frames, ["leaf+0x0/0x100", "top+0x34/0x100"]);
        assert_eq!(end, "end of stack");
        // RSP where the guest maps nothing: the walk says where it stopped.
        let start = Start {
            rsp: 0x20_0000,
            ..start
        };
        let (frames, end) = at_hit(&orc(), &code(), &mem, &paging(0), start).unwrap();
        assert_eq!(frames, ["leaf+0x0/0x100"]);
        assert_eq!(end, "stack memory at 0x200000 not mapped");
    }

    #[test]
    fn a_user_mode_hit_has_no_kernel_backtrace() {
        let start = Start {
            rip: TEXT + 0x100,
            rsp: 0x8000,
            rbp: 0,
        };
        let orc = orc();
        assert_eq!(at_hit(&orc, &code(), &ram(), &paging(3), start), None);
        assert!(!orc.is_decoded(), "a user-mode hit decoded the table");
    }

    #[test]
    fn a_kernel_without_orc_says_why_at_each_kernel_mode_hit() {
        let orc = LazyOrc::new(Err(OrcError::Orc(Error::NoSection(".orc_unwind_ip"))));
        let start = Start {
            rip: TEXT + 0x100,
            rsp: 0x8000,
            rbp: 0,
        };
        let (frames, end) = at_hit(&orc, &code(), &ram(), &paging(0), start).unwrap();
        assert!(frames.is_empty());
        assert_eq!(
            end,
            "no backtrace: the kernel has no .orc_unwind_ip section (built without \
             CONFIG_UNWINDER_ORC)"
        );
    }
}
