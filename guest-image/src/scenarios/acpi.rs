//! `acpi`: finds the machine's ACPI tables as an OS does and reads its PM timer.
//!
//! Scans 0xe0000-0xfffff for the RSDP (`RSD PTR ` on a 16-byte boundary, its first 20 bytes
//! summing to 0), follows the XSDT to every table it lists, the FADT to the FACS and the DSDT,
//! checks each table's checksum over its length, counts the MADT's enabled local APICs, I/O
//! APICs and interrupt source overrides, and reads the FADT's PM timer port until it has
//! advanced by [`WINDOW`] ticks (50 ms at 3.579545 MHz), each read between two TSC reads, so the
//! TSC ticks between the first and the last read are known to lie in `tsc_min..=tsc_max`.
//! Prints:
//! ```text
//! drv: acpi rsdp=0x.. revision=R checksum=ok|bad xsdt=0x..
//! drv: acpi table=SIG addr=0x.. length=N checksum=ok|bad     (XSDT, each listed table, DSDT, FACS)
//! drv: acpi fadt pm_tmr_blk=0x.. pm_tmr_len=N tmr_val_ext=0|1 hw_reduced=0|1 sci_int=N
//! drv: acpi madt lapics=N ioapics=N overrides=N
//! drv: acpi pm_timer port=0x.. reads=N backwards=N delta=D tsc_min=A tsc_max=B
//! ```
//! Status 0 iff the RSDP is there, every checksum holds, the FADT, MADT, FACS and DSDT are found,
//! the machine is not hardware-reduced, the PM timer is 4 bytes wide, it never went backwards and
//! it advanced by at least [`WINDOW`] ticks within [`MAX_READS`] reads, and the MADT has one
//! local APIC per CPU (`ncpus=`). No RSDP: `drv: acpi error no RSDP in 0xe0000-0xfffff`, status 1.
//!
//! Every table access is a raw read of identity-mapped memory (no slices: no bounds-check
//! panics, which would pull in `core::fmt`).

use crate::cmdline::Config;
use crate::serial;

/// PM timer ticks to wait for: 50 ms.
const WINDOW: u32 = 178_977;
/// Reads of the PM timer before giving up (each is an exit to the VMM).
const MAX_READS: u64 = 200_000;

pub(crate) fn read8(addr: u64) -> u8 {
    // SAFETY: `addr` lies in the first 4 GiB, identity-mapped by the boot page tables; the
    // tables are RAM (or, unwritten, zeros).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

pub(crate) fn read16(addr: u64) -> u16 {
    u16::from(read8(addr)) | u16::from(read8(addr + 1)) << 8
}

pub(crate) fn read32(addr: u64) -> u32 {
    u32::from(read16(addr)) | u32::from(read16(addr + 2)) << 16
}

pub(crate) fn read64(addr: u64) -> u64 {
    u64::from(read32(addr)) | u64::from(read32(addr + 4)) << 32
}

/// The byte sum of `len` bytes at `addr`.
fn sum(addr: u64, len: u64) -> u8 {
    let mut s = 0u8;
    let mut at = addr;
    while at < addr + len {
        s = s.wrapping_add(read8(at));
        at += 1;
    }
    s
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: reading the PM timer's port has no side effect; `in` touches no memory.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags))
    };
    value
}

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` only writes EDX:EAX.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    u64::from(hi) << 32 | u64::from(lo)
}

pub(crate) fn sig(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

/// The RSDP's address, scanning as Linux's `acpi_find_root_pointer` scans the BIOS area.
pub(crate) fn find_rsdp() -> Option<u64> {
    let want = u64::from_le_bytes(*b"RSD PTR ");
    let mut at = 0xe_0000;
    while at < 0x10_0000 {
        if read64(at) == want && sum(at, 20) == 0 {
            return Some(at);
        }
        at += 16;
    }
    None
}

fn ok(good: bool) -> &'static str {
    if good {
        "ok"
    } else {
        "bad"
    }
}

/// Prints the table at `addr` and returns whether its checksum holds over its length.
fn report_table(addr: u64) -> bool {
    let len = u64::from(read32(addr + 4));
    let good = len >= 36 && sum(addr, len) == 0;
    serial::line()
        .s("acpi table=")
        .b(&read32(addr).to_le_bytes())
        .s(" addr=")
        .hex(addr)
        .s(" length=")
        .dec(len)
        .s(" checksum=")
        .s(ok(good));
    good
}

/// The MADT's (enabled local APICs, I/O APICs, interrupt source overrides), or `None` if an
/// entry's length is broken.
fn count_madt(madt: u64) -> Option<(u64, u64, u64)> {
    let end = madt + u64::from(read32(madt + 4));
    let (mut lapics, mut ioapics, mut overrides) = (0, 0, 0);
    let mut at = madt + 44;
    while at < end {
        let len = u64::from(read8(at + 1));
        if len < 2 {
            return None;
        }
        match read8(at) {
            0 if read32(at + 4) & 1 != 0 => lapics += 1,
            1 => ioapics += 1,
            2 => overrides += 1,
            _ => {}
        }
        at += len;
    }
    (at == end).then_some((lapics, ioapics, overrides))
}

pub fn run(cfg: &Config) -> ! {
    let Some(rsdp) = find_rsdp() else {
        serial::line().s("acpi error no RSDP in 0xe0000-0xfffff");
        crate::finish(1)
    };
    let revision = read8(rsdp + 15);
    let mut good = revision >= 2 && sum(rsdp, u64::from(read32(rsdp + 20))) == 0;
    let xsdt = read64(rsdp + 24);
    serial::line()
        .s("acpi rsdp=")
        .hex(rsdp)
        .s(" revision=")
        .dec(u64::from(revision))
        .s(" checksum=")
        .s(ok(good))
        .s(" xsdt=")
        .hex(xsdt);
    good &= read32(xsdt) == sig(b"XSDT") && report_table(xsdt);

    let (mut fadt, mut madt) = (0, 0);
    let entries = u64::from(read32(xsdt + 4)).saturating_sub(36) / 8;
    for i in 0..entries {
        let addr = read64(xsdt + 36 + 8 * i);
        good &= report_table(addr);
        match read32(addr) {
            s if s == sig(b"FACP") => fadt = addr,
            s if s == sig(b"APIC") => madt = addr,
            _ => {}
        }
    }
    if fadt == 0 || madt == 0 {
        serial::line().s("acpi error the XSDT lists no FADT or no MADT");
        crate::finish(1)
    }

    let port = read32(fadt + 76);
    let tmr_len = read8(fadt + 91);
    let flags = read32(fadt + 112);
    let (tmr_val_ext, hw_reduced) = (flags >> 8 & 1, flags >> 20 & 1);
    serial::line()
        .s("acpi fadt pm_tmr_blk=")
        .hex(u64::from(port))
        .s(" pm_tmr_len=")
        .dec(u64::from(tmr_len))
        .s(" tmr_val_ext=")
        .dec(u64::from(tmr_val_ext))
        .s(" hw_reduced=")
        .dec(u64::from(hw_reduced))
        .s(" sci_int=")
        .dec(u64::from(read16(fadt + 46)));
    good &= tmr_len == 4 && hw_reduced == 0 && port != 0 && port <= 0xfffc;

    // The FACS has no checksum: its signature and length; 64-byte aligned.
    let facs = match read32(fadt + 36) {
        0 => read64(fadt + 132),
        a => u64::from(a),
    };
    let facs_len = read32(facs + 4);
    good &= read32(facs) == sig(b"FACS") && facs_len >= 64 && facs % 64 == 0;
    serial::line()
        .s("acpi table=FACS addr=")
        .hex(facs)
        .s(" length=")
        .dec(u64::from(facs_len));
    let dsdt = match read64(fadt + 140) {
        0 => u64::from(read32(fadt + 40)),
        a => a,
    };
    good &= read32(dsdt) == sig(b"DSDT") && report_table(dsdt);

    let counts = count_madt(madt);
    let (lapics, ioapics, overrides) = counts.unwrap_or((0, 0, 0));
    serial::line()
        .s("acpi madt lapics=")
        .dec(lapics)
        .s(" ioapics=")
        .dec(ioapics)
        .s(" overrides=")
        .dec(overrides);
    good &= counts.is_some() && lapics == u64::from(cfg.ncpus) && ioapics == 1;

    // The PM timer: read until it has moved WINDOW ticks, each read no earlier than the last,
    // each read bracketed by TSC reads (before, after).
    let port = port as u16;
    let before_first = rdtsc();
    let first = inl(port);
    let after_first = rdtsc();
    let (mut last, mut before_last, mut after_last) = (first, before_first, after_first);
    let (mut reads, mut backwards) = (1u64, 0u64);
    while reads < MAX_READS && last.wrapping_sub(first) < WINDOW {
        before_last = rdtsc();
        let now = inl(port);
        after_last = rdtsc();
        reads += 1;
        // A 32-bit counter that went back by less than half its range went backwards.
        if now.wrapping_sub(last) > u32::MAX / 2 {
            backwards += 1;
        }
        last = now;
    }
    let delta = last.wrapping_sub(first);
    // The TSC ticks between the two reads that gave `delta`: at least `tsc_min`, at most
    // `tsc_max`.
    serial::line()
        .s("acpi pm_timer port=")
        .hex(u64::from(port))
        .s(" reads=")
        .dec(reads)
        .s(" backwards=")
        .dec(backwards)
        .s(" delta=")
        .dec(u64::from(delta))
        .s(" tsc_min=")
        .dec(before_last.wrapping_sub(after_first))
        .s(" tsc_max=")
        .dec(after_last.wrapping_sub(before_first));
    good &= backwards == 0 && delta >= WINDOW;
    crate::finish(if good { 0 } else { 1 })
}
