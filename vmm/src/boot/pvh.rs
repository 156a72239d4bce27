//! The PVH boot protocol (<https://xenbits.xen.org/docs/unstable/misc/pvh.html>): an ELF kernel
//! with a `XEN_ELFNOTE_PHYS32_ENTRY` note, started in 32-bit protected mode with EBX pointing at
//! an `hvm_start_info`. QEMU, Firecracker and Cloud Hypervisor boot the same images this way.

use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::info_area::InfoArea;
use super::{Entry, Error, PlacedModule};
use crate::layout::{CMDLINE, PVH_MEMMAP, PVH_START_INFO};

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Writes the `hvm_start_info`, its memory map, the command line and the module list for a
/// kernel already loaded, entered at `entry`.
pub(super) fn write_start_info(
    mem: &GuestMemoryMmap,
    area: &mut InfoArea,
    entry: u64,
    cmdline: &str,
    modules: &[PlacedModule],
) -> Result<Entry, Error> {
    super::write_cmdline(mem, cmdline)?;
    let mut modlist = Vec::new();
    for m in modules {
        let entry = hvm_modlist_entry {
            paddr: m.start,
            size: m.end - m.start,
            cmdline_paddr: area.push_str(mem, &m.cmdline)?,
            reserved: 0,
        };
        modlist.extend_from_slice(entry.as_slice());
    }
    let modlist_paddr = if modules.is_empty() {
        0
    } else {
        area.push(mem, &modlist, 8)?
    };
    let memmap = memory_map(super::ram_size(mem));
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE,
        nr_modules: modules.len() as u32,
        modlist_paddr,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let write = |r: Result<(), vm_memory::GuestMemoryError>| {
        r.map_err(Error::guest_write("the PVH start information"))
    };
    for (i, e) in memmap.iter().enumerate() {
        let at = PVH_MEMMAP + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        write(mem.write_obj(*e, GuestAddress(at)))?;
    }
    write(mem.write_obj(start_info, GuestAddress(PVH_START_INFO)))?;
    Ok(Entry::Pvh {
        entry,
        start_info: PVH_START_INFO,
    })
}

/// [`super::e820::memory_map`] as PVH memory map entries.
fn memory_map(ram: u64) -> Vec<hvm_memmap_table_entry> {
    super::e820::memory_map(ram)
        .iter()
        .map(|r| hvm_memmap_table_entry {
            addr: r.addr,
            size: r.size,
            type_: r.type_number(),
            reserved: 0,
        })
        .collect()
}
