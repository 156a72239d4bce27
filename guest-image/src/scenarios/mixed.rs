//! `mixed`: watched and unwatched accesses on one page, for page-protection watchpoints (a watch
//! on offset 0 makes the whole page trap, so the writes at 2048 and the reads at 1024 trap too
//! and must be performed/served without counting as hits). README.md, "`mixed`", has the exact
//! access pattern.
//!
//! `drv_mixed_page` (4096 bytes) is alone in linker section `.drv_mixed`. Iteration i
//! (0..count) does, in this order: u64 write `i + 1` at offset 0, u64 write `0x100 + i` at
//! offset 2048, u64 read at offset 1024 (which holds `READ_INIT` from the image and is never
//! written). Every access is one `mov` of 8 bytes (`crate::access`).

use crate::access::{fnv1a_u64_reads, read_u64, write_u64};
use crate::cmdline::Config;
use crate::serial;

pub const WATCHED_OFFSET: usize = 0;
pub const UNWATCHED_OFFSET: usize = 2048;
pub const READ_OFFSET: usize = 1024;
pub const PAGE_SIZE: usize = 4096;
/// Initial (and permanent) u64 at `READ_OFFSET`; every other byte starts as 0.
pub const READ_INIT: u64 = 0x0123_4567_89ab_cdef;

const fn initial() -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    let v = READ_INIT.to_le_bytes();
    let mut b = 0;
    while b < 8 {
        page[READ_OFFSET + b] = v[b];
        b += 1;
    }
    page
}

/// The mixed-access page: 4096-aligned, alone in section `.drv_mixed`.
#[no_mangle]
#[used]
#[link_section = ".drv_mixed"]
pub static mut drv_mixed_page: [u8; PAGE_SIZE] = initial();

pub fn run(cfg: &Config) -> ! {
    let base = &raw mut drv_mixed_page as *mut u8;
    let mut read_sum: u64 = 0;
    for i in 0..cfg.count {
        // SAFETY: offsets 0, 2048 and 1024 (+8) are inside the page, which only this scenario
        // (on CPU 0) touches.
        unsafe {
            write_u64(base.add(WATCHED_OFFSET), i.wrapping_add(1));
            write_u64(base.add(UNWATCHED_OFFSET), 0x100u64.wrapping_add(i));
            read_sum = read_sum.wrapping_add(read_u64(base.add(READ_OFFSET)));
        }
    }
    // Read back what the VMM made of the writes (one u64 read each, watched first).
    // SAFETY: inside the page.
    let (last_watched, last_unwatched) = unsafe {
        (
            read_u64(base.add(WATCHED_OFFSET)),
            read_u64(base.add(UNWATCHED_OFFSET)),
        )
    };
    // SAFETY: the whole page, page-aligned.
    let checksum = unsafe { fnv1a_u64_reads(base, PAGE_SIZE) };

    serial::line()
        .s("scenario=mixed watched_offset=")
        .dec(WATCHED_OFFSET as u64)
        .s(" unwatched_offset=")
        .dec(UNWATCHED_OFFSET as u64)
        .s(" read_offset=")
        .dec(READ_OFFSET as u64)
        .s(" writes_each=")
        .dec(cfg.count)
        .s(" reads=")
        .dec(cfg.count)
        .s(" last_watched=")
        .hex(last_watched)
        .s(" last_unwatched=")
        .hex(last_unwatched)
        .s(" read_sum=")
        .hex(read_sum);
    serial::line().s("scenario=mixed checksum=").hex(checksum);

    // A VMM that lost, misplaced or mis-served a trapped access shows up here.
    let n = cfg.count;
    let (want_watched, want_unwatched) = if n == 0 { (0, 0) } else { (n, 0xff + n) };
    let want_sum = n.wrapping_mul(READ_INIT);
    let want_checksum = expected_checksum(want_watched, want_unwatched);
    let ok = last_watched == want_watched
        && last_unwatched == want_unwatched
        && read_sum == want_sum
        && checksum == want_checksum;
    if !ok {
        serial::line()
            .s("error mixed: expected last_watched=")
            .hex(want_watched)
            .s(" last_unwatched=")
            .hex(want_unwatched)
            .s(" read_sum=")
            .hex(want_sum)
            .s(" checksum=")
            .hex(want_checksum);
    }
    crate::finish(if ok { 0 } else { 1 })
}

/// FNV-1a 64 of the page as it should be: `watched` at offset 0, `unwatched` at 2048,
/// `READ_INIT` at 1024, zeros elsewhere. Computed without touching the page.
fn expected_checksum(watched: u64, unwatched: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for off in 0..PAGE_SIZE {
        let word = match off & !7 {
            WATCHED_OFFSET => watched,
            UNWATCHED_OFFSET => unwatched,
            READ_OFFSET => READ_INIT,
            _ => 0,
        };
        let byte = (word >> ((off & 7) * 8)) as u8;
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
