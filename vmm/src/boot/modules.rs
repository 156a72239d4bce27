//! Boot modules (`--initrd` and `--module`) for PVH and multiboot kernels: copied into guest
//! RAM right after the kernel, each page-aligned, as QEMU's multiboot loader places them.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Error, Module, PlacedModule};

const PAGE: u64 = 0x1000;

/// Copies `modules` into `mem` from the first page at or above `kernel_end`, and returns where
/// each went. Every module must end below 4 GiB and within RAM: both protocols carry 32-bit
/// addresses (multiboot) or are read by 32-bit entry code (PVH).
pub fn place(
    mem: &GuestMemoryMmap,
    kernel_end: u64,
    modules: &[Module],
) -> Result<Vec<PlacedModule>, Error> {
    let limit = crate::layout::low_ram_end(super::ram_size(mem));
    let mut next = kernel_end.div_ceil(PAGE) * PAGE;
    let mut placed = Vec::with_capacity(modules.len());
    for m in modules {
        let start = next;
        let end = start + m.bytes.len() as u64;
        if end > limit {
            return Err(Error::ModuleTooBig {
                what: m.name.clone(),
                size: m.bytes.len(),
            });
        }
        mem.write_slice(&m.bytes, GuestAddress(start))
            .map_err(Error::guest_write("a module"))?;
        placed.push(PlacedModule {
            start,
            end,
            cmdline: m.cmdline.clone(),
        });
        next = end.div_ceil(PAGE) * PAGE;
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(len: usize) -> Module {
        Module {
            name: "m".into(),
            bytes: vec![0x5a; len],
            cmdline: "c".into(),
        }
    }

    #[test]
    fn modules_follow_the_kernel_page_aligned() {
        let mem = crate::memory::create(4).unwrap();
        let placed = place(&mem, 0x10_0001, &[module(10), module(0x1001)]).unwrap();
        assert_eq!((placed[0].start, placed[0].end), (0x10_1000, 0x10_100a));
        assert_eq!((placed[1].start, placed[1].end), (0x10_2000, 0x10_3001));
        let byte: u8 = mem.read_obj(GuestAddress(0x10_3000)).unwrap();
        assert_eq!(byte, 0x5a);
    }

    #[test]
    fn a_module_beyond_ram_is_refused() {
        let mem = crate::memory::create(2).unwrap();
        assert!(matches!(
            place(&mem, 0x10_0000, &[module(2 << 20)]),
            Err(Error::ModuleTooBig { .. })
        ));
    }
}
