//! The boot-information area: the multiboot information or the PVH module list, with the
//! strings they point to, packed into [`crate::layout::BOOT_INFO`]..[`crate::layout::BOOT_INFO_END`],
//! or the same room above a kernel that loads over it.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::Error;
use crate::layout::{BOOT_INFO, BOOT_INFO_END};

/// A bump allocator over the boot-information area.
pub struct InfoArea {
    next: u64,
    end: u64,
}

impl Default for InfoArea {
    fn default() -> Self {
        InfoArea::at(BOOT_INFO)
    }
}

/// The area's size, wherever it is.
const ROOM: u64 = BOOT_INFO_END - BOOT_INFO;

impl InfoArea {
    /// The area at `start` instead: for a kernel that loads over [`BOOT_INFO`].
    pub fn at(start: u64) -> Self {
        InfoArea {
            next: start,
            end: start + ROOM,
        }
    }

    /// Where the area is.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.end - ROOM..self.end
    }

    /// Writes `bytes` at the next `align`-aligned address and returns that address.
    pub fn push(&mut self, mem: &GuestMemoryMmap, bytes: &[u8], align: u64) -> Result<u64, Error> {
        let addr = self.next.div_ceil(align) * align;
        let end = addr + bytes.len() as u64;
        if end > self.end {
            return Err(Error::BootInfoFull { room: ROOM });
        }
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(Error::guest_write("the boot information"))?;
        self.next = end;
        Ok(addr)
    }

    /// Writes `s` NUL-terminated and returns its address.
    pub fn push_str(&mut self, mem: &GuestMemoryMmap, s: &str) -> Result<u64, Error> {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.push(mem, &bytes, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_aligned_and_bounded() {
        let mem = crate::memory::create(2).unwrap();
        let mut area = InfoArea::default();
        assert_eq!(area.push_str(&mem, "ab").unwrap(), BOOT_INFO);
        assert_eq!(area.push(&mem, &[1; 4], 8).unwrap(), BOOT_INFO + 8);
        let too_big = vec![0u8; (BOOT_INFO_END - BOOT_INFO) as usize];
        assert!(matches!(
            area.push(&mem, &too_big, 1),
            Err(Error::BootInfoFull { .. })
        ));
    }
}
