//! `late-map`: maps memory at a new virtual address only now, the way a kernel sets up its own
//! addresses after it boots. PML4 entry 511 is pointed at the identity map's PDPT, so
//! `ALIAS + x` is physical `x` (the first 4 GiB) from this moment on. Then one write of 1 to
//! `drv_watch_u8` (a page exit where a host watches that page), then `count` 8-byte writes of
//! 1..=count to `drv_watch_u64` through the alias, then
//! `drv: scenario=late-map alias=0x.. writes=N`; status 0. A host watch given on the alias
//! address before the guest ran waits until this mapping exists, and sees every write after.

use crate::access::write_u64;
use crate::cmdline::Config;
use crate::serial;
use crate::targets::{drv_watch_u64, drv_watch_u8};

/// Where PML4 entry 511 maps: the top 512 GiB of the address space.
pub const ALIAS: u64 = 0xffff_ff80_0000_0000;

unsafe extern "C" {
    static mut drv_pml4: [u64; 512];
}

pub fn run(cfg: &Config) -> ! {
    // SAFETY: single-threaded (CPU 0 only); entry 0 points at the identity PDPT and entry 511
    // is unused until now; reloading CR3 flushes the TLB so the new entry is seen.
    unsafe {
        let pml4 = &raw mut drv_pml4;
        let pdpt = (*pml4)[0];
        (&raw mut (*pml4)[511]).write_volatile(pdpt);
        core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
        (&raw mut drv_watch_u8).write_volatile(1);
    }
    let alias = ALIAS + (&raw const drv_watch_u64) as u64;
    for i in 1..=cfg.count {
        // SAFETY: the alias maps drv_watch_u64's own 8 bytes.
        unsafe { write_u64(alias as *mut u8, i) };
    }
    serial::line()
        .s("scenario=late-map alias=")
        .hex(alias)
        .s(" writes=")
        .dec(cfg.count);
    crate::finish(0)
}
