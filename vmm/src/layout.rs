//! Where drvisor puts things in guest-physical memory.
//!
//! The low addresses follow the conventions of Firecracker and the Linux boot protocol, so a
//! reader who knows either recognises them. Everything below [`HIMEM_START`] is boot data;
//! kernels are loaded at [`HIMEM_START`] and above.

/// The boot GDT (both boot paths).
pub const BOOT_GDT: u64 = 0x500;
/// The boot IDT: empty, so any early exception is a triple fault the VMM reports.
pub const BOOT_IDT: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_START_INFO: u64 = 0x6000;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// PVH memory map table.
pub const PVH_MEMMAP: u64 = 0x8000;
/// Page tables for the 64-bit Linux entry: PML4, PDPT and one page directory.
pub const PML4: u64 = 0x9000;
/// See [`PML4`].
pub const PDPT: u64 = 0xa000;
/// See [`PML4`].
pub const PD: u64 = 0xb000;
/// The multiboot information or the PVH module list, and the strings they point to.
pub const BOOT_INFO: u64 = 0xc000;
/// End of [`BOOT_INFO`]'s room.
pub const BOOT_INFO_END: u64 = 0x10000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// Room for the command line, NUL included.
pub const CMDLINE_MAX: usize = 0x1000;
/// End of the low boot area that e820 reports as RAM (the EBDA starts here).
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory, where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
