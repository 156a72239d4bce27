//! `remap` and `remap-to-code`: map one virtual page, use it, then point the same virtual page
//! at another physical page, the way a kernel replaces one of its mappings.
//!
//! PML4 entry 510 leads, through a PDPT, a PD and a PT of this module's own (4 KiB pages), to
//! one page: `ALIAS + (drv_watch_u64 & 0xfff)` is `drv_watch_u64` first. Then:
//! 1. one write of 1 to `drv_watch_u8` (a page exit where a host watches that page), and
//!    `count` 8-byte writes of 1..=count through the alias;
//! 2. the PT entry is pointed at another page, and the alias's TLB entry flushed (`invlpg`):
//!    - `remap`: a page of its own, `drv_remap_page`, and `count` more writes,
//!      count+1..=2*count, through the alias;
//!    - `remap-to-code`: the page holding `drv_target_0`'s code, and `count` 8-byte reads
//!      through the alias;
//!
//!    each after one more write (of 2) to `drv_watch_u8`;
//! 3. `drv: scenario=remap alias=0x.. writes=N first=A second=B`, where A is `drv_watch_u64`
//!    and B the same offset in `drv_remap_page` (`remap`: N, 2N), or
//!    `drv: scenario=remap-to-code alias=0x.. reads=N`; status 0.

use crate::access::{read_u64, write_u64};
use crate::cmdline::Config;
use crate::serial;
use crate::targets::{drv_watch_u64, drv_watch_u8};

/// Where PML4 entry 510 maps: 512 GiB below the top 512 GiB.
pub const ALIAS: u64 = 0xffff_ff00_0000_0000;
const PRESENT_WRITABLE: u64 = 0x3;

#[repr(C, align(4096))]
struct Page([u64; 512]);

/// The PDPT, PD and PT behind PML4 entry 510.
static mut REMAP_TABLES: [Page; 3] = [const { Page([0; 512]) }; 3];

/// The page the alias moves to in `remap`: alone on its page.
#[no_mangle]
static mut drv_remap_page: Page = Page([0; 512]);

unsafe extern "C" {
    static mut drv_pml4: [u64; 512];
}

fn page_of(addr: u64) -> u64 {
    addr & !0xfff
}

/// Points the alias's PT entry at `page` and flushes the alias from the TLB.
///
/// # Safety
/// CPU 0 only; `page` is RAM this scenario may let the alias reach.
unsafe fn point_alias_at(page: u64, alias: u64) {
    // SAFETY: the PT is this module's; the caller vouches for `page`.
    unsafe {
        let pt = &raw mut REMAP_TABLES[2].0;
        (&raw mut (*pt)[0]).write_volatile(page | PRESENT_WRITABLE);
        core::arch::asm!("invlpg [{a}]", a = in(reg) alias, options(nostack, preserves_flags));
    }
}

/// Sets up PML4 entry 510 to reach `drv_watch_u64`'s page; returns the alias of
/// `drv_watch_u64`.
fn map_alias() -> u64 {
    let target = (&raw const drv_watch_u64) as u64;
    let alias = ALIAS + (target & 0xfff);
    // SAFETY: single-threaded (CPU 0 only); the tables are identity-mapped statics of this
    // module, entry 510 is unused until now, and reloading CR3 makes the new entry seen.
    unsafe {
        let tables = &raw mut REMAP_TABLES;
        let (pdpt, pd, pt) = (
            (&raw mut (*tables)[0]) as u64,
            (&raw mut (*tables)[1]) as u64,
            (&raw mut (*tables)[2]) as u64,
        );
        (&raw mut (*tables)[0].0[0]).write_volatile(pd | PRESENT_WRITABLE);
        (&raw mut (*tables)[1].0[0]).write_volatile(pt | PRESENT_WRITABLE);
        point_alias_at(page_of(target), alias);
        let pml4 = &raw mut drv_pml4;
        (&raw mut (*pml4)[510]).write_volatile(pdpt | PRESENT_WRITABLE);
        core::arch::asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
    }
    alias
}

/// A write the host can see whatever the alias maps: a page exit where `drv_watch_u8` is
/// watched.
fn signal(value: u8) {
    // SAFETY: a plain byte store to the guest's own global.
    unsafe { (&raw mut drv_watch_u8).write_volatile(value) };
}

pub fn run(cfg: &Config) -> ! {
    let alias = map_alias();
    signal(1);
    for i in 1..=cfg.count {
        // SAFETY: the alias maps drv_watch_u64's own 8 bytes.
        unsafe { write_u64(alias as *mut u8, i) };
    }
    // SAFETY: drv_remap_page is this module's own page; the alias keeps its offset.
    unsafe { point_alias_at((&raw const drv_remap_page) as u64, alias) };
    signal(2);
    for i in cfg.count + 1..=2 * cfg.count {
        // SAFETY: the alias maps drv_remap_page at drv_watch_u64's offset: 8 bytes inside it.
        unsafe { write_u64(alias as *mut u8, i) };
    }
    // SAFETY: both are the guest's own memory, read once each.
    let (first, second) = unsafe {
        (
            (&raw const drv_watch_u64).read_volatile(),
            read_u64(((&raw const drv_remap_page) as u64 + (alias & 0xfff)) as *const u8),
        )
    };
    serial::line()
        .s("scenario=remap alias=")
        .hex(alias)
        .s(" writes=")
        .dec(cfg.count)
        .s(" first=")
        .dec(first)
        .s(" second=")
        .dec(second);
    crate::finish(0)
}

pub fn run_to_code(cfg: &Config) -> ! {
    let alias = map_alias();
    signal(1);
    for i in 1..=cfg.count {
        // SAFETY: the alias maps drv_watch_u64's own 8 bytes.
        unsafe { write_u64(alias as *mut u8, i) };
    }
    let code = crate::targets::target_addr(0);
    // SAFETY: the alias is only read from now on: the code page stays as it is.
    unsafe { point_alias_at(page_of(code), alias) };
    signal(2);
    for _ in 0..cfg.count {
        // SAFETY: the alias maps 8 bytes of the code page (its offset is below 0xff8).
        unsafe { read_u64(alias as *const u8) };
    }
    serial::line()
        .s("scenario=remap-to-code alias=")
        .hex(alias)
        .s(" reads=")
        .dec(cfg.count);
    crate::finish(0)
}
