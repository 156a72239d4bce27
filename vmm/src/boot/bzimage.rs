//! The Linux x86 boot protocol for a bzImage (Documentation/arch/x86/boot.rst): the protected-mode
//! kernel is loaded at 1 MiB, the zero page carries the setup header, e820 map, command line and
//! initrd, and the vCPU starts in 64-bit mode at `startup_64` (load address + 0x200).

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::BzImage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Entry, Error, KernelImage};
use crate::layout::{low_ram_end, CMDLINE, CMDLINE_MAX, ZERO_PAGE};

/// `type_of_loader`: 0xff, "undefined" boot loader, as Firecracker and QEMU's direct boot use.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags.CAN_USE_HEAP`.
const CAN_USE_HEAP: u8 = 0x80;
/// The 64-bit entry sits 0x200 bytes into the protected-mode kernel (boot.rst, "64-bit BOOT PROTOCOL").
const STARTUP_64_OFFSET: u64 = 0x200;
const PAGE: u64 = 0x1000;

/// Loads a bzImage and an optional initrd, and writes the zero page.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &KernelImage,
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> Result<Entry, Error> {
    let loaded = kernel.load_with::<BzImage>(mem)?;
    super::write_cmdline(mem, cmdline)?;

    let ram = super::ram_size(mem);
    let mut params = boot_params::default();
    if let Some(header) = loaded.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = CMDLINE_MAX as u32;
    params.hdr.code32_start = loaded.kernel_load.0 as u32;

    if let Some(initrd) = initrd {
        let kernel_end = loaded.kernel_load.0 + loaded.kernel_end;
        let addr = initrd_address(ram, kernel_end, initrd.len())?;
        mem.write_slice(initrd, GuestAddress(addr))
            .map_err(Error::guest_write("the initrd"))?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = initrd.len() as u32;
    }

    let e820: Vec<boot_e820_entry> = super::e820::memory_map(ram)
        .iter()
        .map(|r| boot_e820_entry {
            addr: r.addr,
            size: r.size,
            r#type: r.type_number(),
        })
        .collect();
    params.e820_table[..e820.len()].copy_from_slice(&e820);
    params.e820_entries = e820.len() as u8;

    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|source| Error::ZeroPage { source })?;
    Ok(Entry::Linux64 {
        entry: loaded.kernel_load.0 + STARTUP_64_OFFSET,
        zero_page: ZERO_PAGE,
    })
}

/// The initrd goes at the top of the RAM below 4 GiB, page-aligned, as QEMU and Firecracker
/// place it; it must not overlap the kernel, and the boot protocol limits it to 32-bit addresses.
fn initrd_address(ram: u64, kernel_end: u64, size: usize) -> Result<u64, Error> {
    let top = low_ram_end(ram);
    let addr = top
        .checked_sub(size as u64)
        .map(|a| a & !(PAGE - 1))
        .filter(|&a| a >= kernel_end)
        .ok_or(Error::InitrdTooBig { size })?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_to_the_top_of_ram_page_aligned() {
        assert_eq!(
            initrd_address(64 << 20, 2 << 20, 0x1800).unwrap(),
            (64 << 20) - 0x2000
        );
    }

    #[test]
    fn initrd_stays_below_the_hole_under_4_gib() {
        assert_eq!(
            initrd_address(8 << 30, 2 << 20, 0x1000).unwrap(),
            crate::layout::RAM_HOLE_START - 0x1000
        );
    }

    #[test]
    fn initrd_that_would_overlap_the_kernel_is_refused() {
        assert!(matches!(
            initrd_address(4 << 20, 3 << 20, 2 << 20),
            Err(Error::InitrdTooBig { .. })
        ));
    }
}
