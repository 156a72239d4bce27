//! Guest memory at a hit (`--capture`): read on the vCPU's thread, through the guest's page
//! tables as the registers that came with the exit locate them ([`crate::guest_paging`]), so it
//! costs no ioctl.

use drvisor_api::MemorySnippet;
use vm_memory::GuestMemory;

use crate::guest_paging::{read, SystemRegisters};

pub use drvisor_api::MAX_CAPTURE;

/// `len` bytes of the stack from `rsp` (at most [`MAX_CAPTURE`]).
pub fn stack_bytes(
    mem: &impl GuestMemory,
    paging: &SystemRegisters,
    rsp: u64,
    len: u16,
) -> Vec<u8> {
    read(mem, paging, rsp, usize::from(len.min(MAX_CAPTURE)))
}

/// `bytes` read from `addr`, as the wire type.
pub fn as_snippet(addr: u64, bytes: &[u8]) -> MemorySnippet {
    MemorySnippet {
        addr,
        bytes: bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[test]
    fn a_stack_snippet_is_its_bytes_in_hex() {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_obj(0x0302_0100u32, GuestAddress(0x5000)).unwrap();
        // Paging off: virtual is physical.
        let bytes = stack_bytes(&mem, &SystemRegisters::default(), 0x5000, 4);
        let snippet = as_snippet(0x5000, &bytes);
        assert_eq!(snippet.addr, 0x5000);
        assert_eq!(snippet.bytes, "00010203");
    }
}
