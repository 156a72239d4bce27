//! `cpuid`: prints the feature leaves the guest's CPUID reports, then status 0:
//! `drv: cpuid identity vendor=GenuineIntel signature=0x... max=0x... max_ext=0x...` (leaf 0's
//! vendor and highest leaf, leaf 1's EAX, leaf 0x80000000's highest leaf), `drv: cpuid leaf=1 ecx=0x... edx=0x...`, `drv: cpuid leaf=7 ebx=0x... ecx=0x... edx=0x...`
//! (subleaf 0; all zero where the maximum basic leaf is below 7) and
//! `drv: cpuid leaf=0x80000001 ecx=0x... edx=0x...` (zero where the maximum extended leaf is
//! below it). It lets the VMM's tests check what `--cpuid` and `--cpu-features` give a guest.

use crate::cmdline::Config;
use crate::serial;

/// `cpuid` with EAX = `leaf`, ECX = `subleaf`: `[eax, ebx, ecx, edx]`.
fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: `cpuid` only writes the four registers named here; RBX (reserved by LLVM) is
    // saved in a scratch register and restored, as `core::arch::x86_64::__cpuid_count` does.
    unsafe {
        core::arch::asm!(
            "mov {0:r}, rbx",
            "cpuid",
            "xchg {0:r}, rbx",
            out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags),
        );
    }
    [eax, ebx, ecx, edx]
}

pub fn run(_cfg: &Config) -> ! {
    let max_basic = cpuid(0, 0)[0];
    let max_extended = cpuid(0x8000_0000, 0)[0];
    let [_, b, c, d] = cpuid(0, 0);
    let mut vendor = [0u8; 12];
    for (at, word) in [b, d, c].into_iter().enumerate() {
        vendor[at * 4..at * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    serial::line()
        .s("cpuid identity vendor=")
        .s(core::str::from_utf8(&vendor).unwrap_or("?"))
        .s(" signature=")
        .hex(u64::from(cpuid(1, 0)[0]))
        .s(" max=")
        .hex(u64::from(max_basic))
        .s(" max_ext=")
        .hex(u64::from(max_extended));
    let [_, _, ecx1, edx1] = cpuid(1, 0);
    serial::line()
        .s("cpuid leaf=1 ecx=")
        .hex(u64::from(ecx1))
        .s(" edx=")
        .hex(u64::from(edx1));
    let [_, ebx7, ecx7, edx7] = if max_basic >= 7 { cpuid(7, 0) } else { [0; 4] };
    serial::line()
        .s("cpuid leaf=7 ebx=")
        .hex(u64::from(ebx7))
        .s(" ecx=")
        .hex(u64::from(ecx7))
        .s(" edx=")
        .hex(u64::from(edx7));
    let [_, _, ecx_ext, edx_ext] = if max_extended >= 0x8000_0001 {
        cpuid(0x8000_0001, 0)
    } else {
        [0; 4]
    };
    serial::line()
        .s("cpuid leaf=0x80000001 ecx=")
        .hex(u64::from(ecx_ext))
        .s(" edx=")
        .hex(u64::from(edx_ext));
    crate::finish(0)
}
