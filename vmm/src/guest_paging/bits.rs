//! The architectural bits the walkers, the emulator's checks and the boot state share.

/// CR0.PG: paging on.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// A page-table entry: present.
pub const PRESENT: u64 = 1 << 0;
/// Writable.
pub const WRITABLE: u64 = 1 << 1;
/// User-accessible.
pub const USER: u64 = 1 << 2;
/// Accessed (set by the processor).
pub const ACCESSED: u64 = 1 << 5;
/// Dirty (set by the processor, in the last level).
pub const DIRTY: u64 = 1 << 6;
/// A large page (2 MiB in a PD entry, 1 GiB in a PDPT entry).
pub const LARGE: u64 = 1 << 7;
/// No execute.
pub const NX: u64 = 1 << 63;
/// Physical-address bits 12-51 of an entry.
pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
