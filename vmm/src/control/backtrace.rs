//! A hit's backtrace (`--capture` on a kernel with an ORC table): the kernel's stack walked
//! with [`crate::kernel::orc_unwind`], reading guest memory on the vCPU's thread through the
//! guest's page tables (no ioctl), each frame named as the kernel names it.

use vm_memory::GuestMemory;

use crate::kernel::orc::OrcTable;
use crate::kernel::orc_unwind::{self, Memory, Start};
use crate::stack_words::CodeIndex;
use crate::watch::cpu_structures::Registers;

/// The most frames a hit event carries (the kernel's own walks stop far earlier in practice).
pub const MAX_FRAMES: usize = 64;

/// Guest memory as the vCPU sees it at the hit.
struct GuestView<'a, M> {
    mem: &'a M,
    paging: &'a Registers,
}

impl<M: GuestMemory> Memory for GuestView<'_, M> {
    fn read_u64(&self, vaddr: u64) -> Option<u64> {
        let mut word = [0u8; 8];
        super::snippet::read_into(self.mem, self.paging, vaddr, &mut word)
            .then(|| u64::from_le_bytes(word))
    }
}

/// The named frames from (`rip`, `rsp`, `rbp`), innermost first, and why the walk ended.
/// Nothing for a hit outside the kernel (CPL 3).
pub fn at_hit(
    orc: &OrcTable,
    code: &CodeIndex,
    mem: &impl GuestMemory,
    paging: &Registers,
    start: Start,
) -> Option<(Vec<String>, String)> {
    if paging.cpl != 0 {
        return None;
    }
    let view = GuestView { mem, paging };
    let walked = orc_unwind::unwind(orc, start, &view, MAX_FRAMES);
    let frames = walked
        .frames
        .iter()
        .map(|f| code.frame(f.ip, f.returns))
        .collect();
    Some((frames, walked.stop.to_string()))
}
