//! The PVH boot protocol (<https://xenbits.xen.org/docs/unstable/misc/pvh.html>): an ELF kernel
//! with a `XEN_ELFNOTE_PHYS32_ENTRY` note, started in 32-bit protected mode with EBX pointing at
//! an `hvm_start_info`. QEMU, Firecracker and Cloud Hypervisor boot the same images this way.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{Entry, Error, KernelImage};
use crate::layout::{CMDLINE, EBDA_START, HIMEM_START, PVH_MEMMAP, PVH_START_INFO};

/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// e820 type of usable RAM.
const E820_RAM: u32 = 1;

/// Loads a PVH ELF and writes its `hvm_start_info`, memory map and command line.
pub fn load(mem: &GuestMemoryMmap, kernel: &KernelImage, cmdline: &str) -> Result<Entry, Error> {
    let loaded = kernel.load_with::<Elf>(mem)?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(Error::NoPvhNote {
            what: kernel.name().to_owned(),
        });
    };
    super::write_cmdline(mem, cmdline)?;

    let memmap = memory_map(super::ram_size(mem));
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_START_INFO));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP));
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| Error::BootParams(e.to_string()))?;
    Ok(Entry::Pvh {
        entry: entry.0,
        start_info: PVH_START_INFO,
    })
}

/// Low RAM below the EBDA, and everything from 1 MiB up.
fn memory_map(ram: u64) -> Vec<hvm_memmap_table_entry> {
    let ram_entry = |addr: u64, size: u64| hvm_memmap_table_entry {
        addr,
        size,
        type_: E820_RAM,
        reserved: 0,
    };
    vec![
        ram_entry(0, EBDA_START),
        ram_entry(HIMEM_START, ram - HIMEM_START),
    ]
}
