//! `ranges`: a known pattern of 8-byte writes and 4-byte reads over a 17-page buffer, for
//! page-protection watchpoints on many byte ranges at once (README.md, "`ranges`", has the exact
//! access pattern a test needs to count the hits on any byte range).
//!
//! `drv_range_buf` (69632 bytes = 17 pages) is alone in linker section `.drv_ranges`. Its first
//! 65536 bytes are 128 cells of 512 bytes; the 17th page exists only so that the straddling
//! write at offset 65532 (crossing pages 15 and 16) touches no byte any cell access touches.
//! Every access is one `mov` of the stated width (`crate::access`).

use crate::access::{fnv1a_u64_reads, read_u32, write_u64};
use crate::cmdline::Config;
use crate::serial;

pub const CELLS: usize = 128;
pub const CELL_SIZE: usize = 512;
/// Offset inside a cell of the u32 that the cell's reads load.
pub const READ_OFFSET: usize = 256;
/// Byte offset in the buffer of the straddling 8-byte writes (crosses 65536 = page 15 / 16).
pub const STRADDLE_OFFSET: usize = 65532;
/// Straddling writes per repetition.
pub const STRADDLE_WRITES: u64 = 3;
/// First straddle value; write i (0..3) of a repetition stores `STRADDLE_VALUE + i`.
pub const STRADDLE_VALUE: u64 = 0x1111_2222_3333_4444;
pub const BUF_SIZE: usize = 17 * 4096;
/// Initial value of the u32 at `k * CELL_SIZE + READ_OFFSET` (cell k), so the reads return
/// something a VMM serving them could get wrong. Every other byte starts as 0.
pub const READ_INIT_BASE: u32 = 0x5244_0000;

const _: () = assert!(CELLS * CELL_SIZE + 4096 == BUF_SIZE);
const _: () = assert!(STRADDLE_OFFSET + 8 <= BUF_SIZE && STRADDLE_OFFSET < CELLS * CELL_SIZE);

const fn initial() -> [u8; BUF_SIZE] {
    let mut buf = [0u8; BUF_SIZE];
    let mut k = 0;
    while k < CELLS {
        let v = (READ_INIT_BASE + k as u32).to_le_bytes();
        let off = k * CELL_SIZE + READ_OFFSET;
        buf[off] = v[0];
        buf[off + 1] = v[1];
        buf[off + 2] = v[2];
        buf[off + 3] = v[3];
        k += 1;
    }
    buf
}

/// What byte `off` of the buffer holds after `repeats` repetitions (`done` = repeats > 0).
const fn expected_byte(off: usize, done: bool) -> u8 {
    let (k, r) = (off / CELL_SIZE, off % CELL_SIZE);
    if done && off >= STRADDLE_OFFSET && off < STRADDLE_OFFSET + 8 {
        // The last straddle write of a repetition wins.
        (STRADDLE_VALUE + STRADDLE_WRITES - 1).to_le_bytes()[off - STRADDLE_OFFSET]
    } else if k >= CELLS {
        0
    } else if done && r < 8 * (k % 5 + 1) {
        (((k as u64) << 32) | (r as u64 / 8 + 1)).to_le_bytes()[r % 8]
    } else if r >= READ_OFFSET && r < READ_OFFSET + 4 {
        (READ_INIT_BASE + k as u32).to_le_bytes()[r - READ_OFFSET]
    } else {
        0
    }
}

/// FNV-1a 64 of the expected buffer contents, evaluated at compile time.
const fn expected_checksum(done: bool) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut off = 0;
    while off < BUF_SIZE {
        hash = (hash ^ expected_byte(off, done) as u64).wrapping_mul(0x0000_0100_0000_01b3);
        off += 1;
    }
    hash
}

/// Sum of the values one repetition's reads return (cell k reads `READ_INIT_BASE + k`,
/// `k % 3` times).
const fn read_sum_per_repeat() -> u64 {
    let mut sum = 0u64;
    let mut k = 0;
    while k < CELLS {
        sum += (k % 3) as u64 * (READ_INIT_BASE as u64 + k as u64);
        k += 1;
    }
    sum
}

const CHECKSUM_AFTER: u64 = expected_checksum(true);
const CHECKSUM_UNTOUCHED: u64 = expected_checksum(false);
const READ_SUM_PER_REPEAT: u64 = read_sum_per_repeat();

/// The range-watch buffer: 17 pages, 4096-aligned, alone in section `.drv_ranges`.
#[no_mangle]
#[used]
#[link_section = ".drv_ranges"]
pub static mut drv_range_buf: [u8; BUF_SIZE] = initial();

pub fn run(cfg: &Config) -> ! {
    // `until=signal`: repeat until the host signals (port 0x520), at least once, and print the
    // number of repetitions done after each, so a test changes watches while the guest surely
    // runs, however fast this host runs it.
    let until_signal = cfg.until_signal;
    let repeats_wanted = if cfg.count_given { cfg.count } else { 1 };
    let base = &raw mut drv_range_buf as *mut u8;
    let mut read_sum: u64 = 0;
    let mut repeats: u64 = 0;
    loop {
        if until_signal {
            if repeats > 0 {
                // Progress a test can wait for: `repeats` repetitions are done.
                serial::line().s("scenario=ranges running=").dec(repeats);
                if crate::host_signal::raised() {
                    break;
                }
            }
        } else if repeats == repeats_wanted {
            break;
        }
        repeats += 1;
        for k in 0..CELLS {
            let cell = k * CELL_SIZE;
            for j in 0..=(k % 5) {
                // SAFETY: cell + 8*j + 8 <= cell + 40 <= 65536 <= BUF_SIZE: inside the buffer,
                // which only this scenario (on CPU 0) touches.
                unsafe { write_u64(base.add(cell + 8 * j), ((k as u64) << 32) | (j as u64 + 1)) };
            }
            for _ in 0..(k % 3) {
                // SAFETY: cell + 256 + 4 <= 65536: inside the buffer.
                read_sum = read_sum
                    .wrapping_add(u64::from(unsafe { read_u32(base.add(cell + READ_OFFSET)) }));
            }
        }
        for i in 0..STRADDLE_WRITES {
            // SAFETY: STRADDLE_OFFSET + 8 <= BUF_SIZE (asserted above); unaligned is fine.
            unsafe { write_u64(base.add(STRADDLE_OFFSET), STRADDLE_VALUE + i) };
        }
    }
    // SAFETY: the whole buffer, page-aligned (so 8-byte aligned), BUF_SIZE a multiple of 8.
    let checksum = unsafe { fnv1a_u64_reads(base, BUF_SIZE) };

    serial::line()
        .s("scenario=ranges cells=")
        .dec(CELLS as u64)
        .s(" cell_size=")
        .dec(CELL_SIZE as u64)
        .s(" repeats=")
        .dec(repeats)
        .s(" straddle_offset=")
        .dec(STRADDLE_OFFSET as u64)
        .s(" straddle_writes=")
        .dec(repeats.wrapping_mul(STRADDLE_WRITES));
    serial::line().s("scenario=ranges read_sum=").hex(read_sum);
    serial::line().s("scenario=ranges checksum=").hex(checksum);
    // A VMM that lost, misplaced or mis-served a trapped access shows up here.
    let want_sum = repeats.wrapping_mul(READ_SUM_PER_REPEAT);
    let want_checksum = if repeats > 0 {
        CHECKSUM_AFTER
    } else {
        CHECKSUM_UNTOUCHED
    };
    let mut ok = true;
    if read_sum != want_sum {
        serial::line()
            .s("error ranges: read_sum=")
            .hex(read_sum)
            .s(" expected=")
            .hex(want_sum);
        ok = false;
    }
    if checksum != want_checksum {
        serial::line()
            .s("error ranges: checksum=")
            .hex(checksum)
            .s(" expected=")
            .hex(want_checksum);
        ok = false;
    }
    crate::finish(if ok { 0 } else { 1 })
}
