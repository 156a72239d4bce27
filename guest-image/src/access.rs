//! Single-instruction memory accesses of an exact width, for the page-protection watch
//! scenarios (`ranges`, `mixed`) and the `evict` scenario's writes to `drv_watch_u32`.
//!
//! A VMM that write-protects or unmaps a page sees every access to it as one trapped access of
//! the instruction's operand size, so each helper is exactly one `mov` of the stated width
//! (inline asm: LLVM can neither split, widen, merge nor drop it, also when it is unaligned).
//! `check-image.sh` does not need to know about these: they are plain `mov`s.

use core::arch::asm;

/// One 8-byte store `mov qword ptr [addr], value`; `addr` need not be aligned.
///
/// # Safety
/// `addr..addr + 8` must be mapped, writable memory the caller owns.
#[inline(always)]
pub unsafe fn write_u64(addr: *mut u8, value: u64) {
    // SAFETY: the caller vouches for the 8 bytes at addr.
    unsafe {
        asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) value,
            options(nostack, preserves_flags))
    };
}

/// One 4-byte store `mov dword ptr [addr], value`; `addr` need not be aligned.
///
/// # Safety
/// `addr..addr + 4` must be mapped, writable memory the caller owns.
#[inline(always)]
pub unsafe fn write_u32(addr: *mut u8, value: u32) {
    // SAFETY: the caller vouches for the 4 bytes at addr.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) value,
            options(nostack, preserves_flags))
    };
}

/// One 8-byte load `mov r64, qword ptr [addr]`.
///
/// # Safety
/// `addr..addr + 8` must be mapped, readable memory.
#[inline(always)]
pub unsafe fn read_u64(addr: *const u8) -> u64 {
    let v: u64;
    // SAFETY: the caller vouches for the 8 bytes at addr. Not `pure`: never merged or dropped.
    unsafe {
        asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = lateout(reg) v,
            options(nostack, preserves_flags, readonly))
    };
    v
}

/// One 4-byte load `mov r32, dword ptr [addr]` (zero-extended).
///
/// # Safety
/// `addr..addr + 4` must be mapped, readable memory.
#[inline(always)]
pub unsafe fn read_u32(addr: *const u8) -> u32 {
    let v: u32;
    // SAFETY: the caller vouches for the 4 bytes at addr. Not `pure`: never merged or dropped.
    unsafe {
        asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = lateout(reg) v,
            options(nostack, preserves_flags, readonly))
    };
    v
}

/// FNV-1a 64 over `len` bytes at `base` (`len` a multiple of 8), reading them with one aligned
/// 8-byte load per 8 bytes, ascending (`len / 8` loads; the bytes are hashed in address order).
///
/// # Safety
/// `base` must be 8-byte aligned and `base..base + len` mapped, readable memory.
pub unsafe fn fnv1a_u64_reads(base: *const u8, len: usize) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut off = 0;
    while off < len {
        // SAFETY: off + 8 <= len (len is a multiple of 8); the caller vouches for the range.
        let word = unsafe { read_u64(base.add(off)) };
        for byte in word.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        off += 8;
    }
    hash
}
