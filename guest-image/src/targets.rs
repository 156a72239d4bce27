//! The symbols the VMM's tests put breakpoints and write traps on, and the loops that use them.
//!
//! * `drv_target_0..3`: four never-inlined functions with distinct bodies (each increments its
//!   own counter), so neither LLVM nor the linker can fold them into one address.
//! * `drv_target_arg(i, cell)`: a never-inlined function with arguments that vary from call to
//!   call (for breakpoint conditions): `i` in RDI, and in RSI the address of a u64 holding
//!   `3 * i`.
//! * `drv_watch_u8/u16/u32/u64`: globals alone on their own 4 KiB page (linker section
//!   `.drv_watch`, bounded by `__drv_watch_start`/`__drv_watch_end`).

use core::sync::atomic::{AtomicU64, Ordering};

/// `TARGET_CALLS[K]` = number of calls of `drv_target_K` since boot, over all CPUs.
/// Atomic (`lock`-prefixed add) so the `smp` totals are exact; the ordering is irrelevant.
pub static TARGET_CALLS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

#[no_mangle]
#[inline(never)]
pub extern "C" fn drv_target_0() {
    TARGET_CALLS[0].fetch_add(1, Ordering::Relaxed);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn drv_target_1() {
    TARGET_CALLS[1].fetch_add(1, Ordering::Relaxed);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn drv_target_2() {
    TARGET_CALLS[2].fetch_add(1, Ordering::Relaxed);
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn drv_target_3() {
    TARGET_CALLS[3].fetch_add(1, Ordering::Relaxed);
}

/// Calls of `drv_target_arg` since boot.
pub static ARG_CALLS: AtomicU64 = AtomicU64::new(0);

/// The u64 `drv_target_arg`'s second argument points at.
static ARG_CELL: AtomicU64 = AtomicU64::new(0);

/// Takes `i` (RDI) and the address of a u64 holding `3 * i` (RSI); counts the call.
#[no_mangle]
#[inline(never)]
pub extern "C" fn drv_target_arg(i: u64, cell: *const AtomicU64) {
    // SAFETY: `cell` is `ARG_CELL`'s address (see `arg_loop`), a static.
    let tripled = unsafe { (*cell).load(Ordering::Relaxed) };
    if tripled == i.wrapping_mul(3) {
        ARG_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Calls `drv_target_arg(i, &cell)` for i = 1..=`count`, the cell holding `3 * i`.
pub fn arg_loop(count: u64) {
    for i in 1..=count {
        ARG_CELL.store(i.wrapping_mul(3), Ordering::Relaxed);
        drv_target_arg(i, &ARG_CELL);
    }
}

/// Entry address of `drv_target_K`.
pub fn target_addr(k: u8) -> u64 {
    let f: extern "C" fn() = match k {
        0 => drv_target_0,
        1 => drv_target_1,
        2 => drv_target_2,
        _ => drv_target_3,
    };
    f as usize as u64
}

/// Calls the targets in the order 0,1,2,3,0,1,2,3,... `count` times each.
/// Returns the number of calls made (`4 * count`).
pub fn exec_loop(count: u64) -> u64 {
    for _ in 0..count {
        drv_target_0();
        drv_target_1();
        drv_target_2();
        drv_target_3();
    }
    count * 4
}

#[no_mangle]
#[used]
#[link_section = ".drv_watch"]
pub static mut drv_watch_u8: u8 = 0;

#[no_mangle]
#[used]
#[link_section = ".drv_watch"]
pub static mut drv_watch_u16: u16 = 0;

#[no_mangle]
#[used]
#[link_section = ".drv_watch"]
pub static mut drv_watch_u32: u32 = 0;

#[no_mangle]
#[used]
#[link_section = ".drv_watch"]
pub static mut drv_watch_u64: u64 = 0;

extern "C" {
    static __drv_watch_start: u8;
    static __drv_watch_end: u8;
}

/// Value written to `drv_watch_u64` in iteration `i` of `write_loop`.
pub fn u64_value(i: u64) -> u64 {
    i.wrapping_mul(0x0101_0101_0101_0101)
}

/// The known write sequence. Iteration `i` (1-based, `i = 1..=count`) does four volatile
/// writes, in this order:
///   `drv_watch_u8  = i as u8`, `drv_watch_u16 = i as u16`, `drv_watch_u32 = i as u32`,
///   `drv_watch_u64 = i.wrapping_mul(0x0101_0101_0101_0101)`.
/// Returns the number of writes made (`4 * count`).
pub fn write_loop(count: u64) -> u64 {
    for i in 1..=count {
        write_once(i);
    }
    count * 4
}

/// Iteration `i` of [`write_loop`]: the four writes.
pub fn write_once(i: u64) {
    // SAFETY: plain naturally-aligned statics; volatile so every write reaches memory (the VMM
    // traps them). Concurrent writers (smp, soak) only race on the stored value.
    unsafe {
        (&raw mut drv_watch_u8).write_volatile(i as u8);
        (&raw mut drv_watch_u16).write_volatile(i as u16);
        (&raw mut drv_watch_u32).write_volatile(i as u32);
        (&raw mut drv_watch_u64).write_volatile(u64_value(i));
    }
}

/// Current values of the four watch variables, each widened to u64.
pub fn watch_values() -> [u64; 4] {
    // SAFETY: volatile reads of naturally-aligned statics.
    unsafe {
        [
            u64::from((&raw const drv_watch_u8).read_volatile()),
            u64::from((&raw const drv_watch_u16).read_volatile()),
            u64::from((&raw const drv_watch_u32).read_volatile()),
            (&raw const drv_watch_u64).read_volatile(),
        ]
    }
}

/// FNV-1a (64-bit) over every byte of the watch page.
pub fn watch_page_checksum() -> u64 {
    // The linker script defines both symbols around the page-aligned `.drv_watch` output
    // section; only their addresses are taken (safe).
    let (start, end) = (
        &raw const __drv_watch_start as usize,
        &raw const __drv_watch_end as usize,
    );
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for addr in start..end {
        // SAFETY: addr is inside the mapped, initialised watch page.
        let byte = unsafe { (addr as *const u8).read_volatile() };
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
