//! Reading guest-virtual memory through the guest's page tables, page by page.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::cpu_structures::physical;
use super::SystemRegisters;

const PAGE: u64 = 0x1000;

/// Up to `len` bytes at guest-virtual `addr`, page by page; it stops at the first page that
/// does not translate or is not RAM, so the result may be shorter.
pub fn read(mem: &impl GuestMemory, paging: &SystemRegisters, addr: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = addr;
    while out.len() < len {
        let in_page = (PAGE - at % PAGE).min((len - out.len()) as u64) as usize;
        let Some(gpa) = physical(mem, paging, at) else {
            break;
        };
        let mut piece = vec![0u8; in_page];
        if mem.read_slice(&mut piece, GuestAddress(gpa)).is_err() {
            break;
        }
        out.extend_from_slice(&piece);
        at = match at.checked_add(in_page as u64) {
            Some(next) => next,
            None => break,
        };
    }
    out
}

/// Fills `buf` from guest-virtual `addr`, page by page, without allocating; `false` if a byte
/// is not mapped or not RAM (what it filled so far is then meaningless). For conditions.
pub fn read_into(
    mem: &impl GuestMemory,
    paging: &SystemRegisters,
    addr: u64,
    buf: &mut [u8],
) -> bool {
    let mut done = 0;
    let mut at = addr;
    while done < buf.len() {
        let in_page = (PAGE - at % PAGE).min((buf.len() - done) as u64) as usize;
        let Some(gpa) = physical(mem, paging, at) else {
            return false;
        };
        if mem
            .read_slice(&mut buf[done..done + in_page], GuestAddress(gpa))
            .is_err()
        {
            return false;
        }
        done += in_page;
        at = match at.checked_add(in_page as u64) {
            Some(next) => next,
            None => return done == buf.len(),
        };
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    use crate::guest_paging::bits::{CR0_PG, EFER_LMA};

    /// 8 MiB of RAM: PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000, whose entry 0 maps virtual
    /// 0..2 MiB to physical 2..4 MiB with a 2 MiB page; 2..4 MiB virtual is not mapped.
    pub(crate) fn ram() -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let w = |addr: u64, v: u64| mem.write_obj(v, GuestAddress(addr)).unwrap();
        w(0x1000, 0x2000 | 3);
        w(0x2000, 0x3000 | 3);
        w(0x3000, (2 << 20) | 0x83);
        mem
    }

    /// Long mode with paging through [`ram`]'s tables, at CPL 0.
    pub(crate) fn long_mode() -> SystemRegisters {
        SystemRegisters {
            cr0: CR0_PG | 1,
            cr3: 0x1000,
            efer: EFER_LMA,
            ..Default::default()
        }
    }

    #[test]
    fn reads_through_the_page_tables_across_pages() {
        let mem = ram();
        for i in 0..16u64 {
            mem.write_obj(i as u8, GuestAddress((2 << 20) + 0xff8 + i))
                .unwrap();
        }
        let got = read(&mem, &long_mode(), 0xff8, 16);
        assert_eq!(got, (0..16).collect::<Vec<u8>>());
    }

    #[test]
    fn stops_where_the_guest_maps_nothing() {
        let mem = ram();
        // The last 8 bytes of the mapped 2 MiB, then the unmapped range.
        let got = read(&mem, &long_mode(), (2 << 20) - 8, 64);
        assert_eq!(got.len(), 8);
    }

    #[test]
    fn reading_into_a_buffer_crosses_pages_and_refuses_holes() {
        let mem = ram();
        for i in 0..8u64 {
            mem.write_obj(i as u8 + 1, GuestAddress((2 << 20) + 0xffc + i))
                .unwrap();
        }
        let mut buf = [0u8; 8];
        assert!(read_into(&mem, &long_mode(), 0xffc, &mut buf));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!read_into(&mem, &long_mode(), (2 << 20) - 4, &mut buf));
        assert!(!read_into(&mem, &long_mode(), u64::MAX - 3, &mut buf));
    }

    #[test]
    fn paging_off_reads_physical_memory() {
        let mem = ram();
        mem.write_obj(0xabu8, GuestAddress(0x5000)).unwrap();
        let got = read(&mem, &SystemRegisters::default(), 0x5000, 1);
        assert_eq!(got, [0xab]);
    }
}
