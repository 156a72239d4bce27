//! `s3`: suspends to RAM (ACPI S3) and checks, in the real-mode code it wakes at, what the reset
//! left. Before sleeping it arms a breakpoint of its own (DR0 = [`GUEST_BP`], DR7 L0), copies
//! the resume code to [`RESUME_AT`] and puts that address in the FACS's waking vector, clears
//! the marker byte at [`MARKER`], sets the CMOS alarm to fire at every update (all three bytes
//! "don't care") with `AIE`, and, unless `wake=none`, sets `PM1_EN.RTC_EN`. Then it writes
//! `SLP_EN | SLP_TYP=1` to `PM1_CNT`, and after that write stores 1 in the marker for ever.
//! With `vector=x` it also puts 32-bit resume code at [`RESUME32_AT`] in the FACS's
//! `X_Firmware_Waking_Vector`, which then wins (entered in flat protected mode, paging off).
//! Prints:
//! ```text
//! drv: s3 facs=0x.. pm1a_evt=0x.. pm1a_cnt=0x.. wake=rtc|none vector=real|x
//! drv: s3 x2apic=0|1                         (whether it turned x2APIC on)
//! drv: s3 sleeping
//! drv: s3 resumed mode=16|32                (from the resume code)
//! ```
//! The resume code ends the run with status 0x20 plus a bit for each check that failed: 1 DR7
//! is not 0x400, 2 DR0 is not 0, 4 CR0 is not 0x60000010 (real mode) or 0x11 (PE and ET: 32-bit)
//! or `IA32_APIC_BASE` is not 0xfee00900 (the BSP's, enabled, xAPIC: the guest turns x2APIC on
//! before it sleeps where CPUID offers it), 8 `PM1_STS` is not `WAK_STS | RTC_STS`, 16 the marker is not 0 (an instruction after the
//! sleep's `out` ran). Status 0x20 (32): all as after a reset. With `wake=none` nothing wakes it: the run goes on until stopped. No
//! FADT: `drv: s3 error no FADT`, status 1.

use crate::cmdline::Config;
use crate::scenarios::acpi::{find_rsdp, read32, read64, sig};
use crate::serial;

/// Where the real-mode resume code runs: free low RAM (the AP trampoline is at 0x1000,
/// drvisor's `hvm_start_info` at 0x6000).
const RESUME_AT: u64 = 0x3000;
/// Where the 32-bit resume code runs (`vector=x`).
const RESUME32_AT: u64 = 0x3400;
/// The byte the code after the sleep request would change.
const MARKER: u64 = 0x3800;
/// The guest's own breakpoint address (never executed: only the DR file matters).
const GUEST_BP: u64 = 0x12_3450;

core::arch::global_asm!(
    r#"
    /* The checks, in 16- or 32-bit code: prints `drv: s3 resumed mode=M` (the message at
       `msg`, an address after the copy), then exits with 0x20 plus a bit per failed check. */
    .macro drv_s3_checks cr0, msg
    movl $\msg, %esi
    movw $0x3f8, %dx
7:  movb (%esi), %al
    testb %al, %al
    jz 8f
    outb %al, %dx
    incl %esi
    jmp 7b
8:  xorl %ebx, %ebx
    movl %dr7, %eax
    cmpl $0x400, %eax
    je 1f
    orb $1, %bl
1:  movl %dr0, %eax
    testl %eax, %eax
    jz 2f
    orb $2, %bl
2:  movl %cr0, %eax
    cmpl $\cr0, %eax
    jne 9f
    /* IA32_APIC_BASE: the BSP's, enabled, xAPIC (the guest left x2APIC on if it could). */
    movl $0x1b, %ecx
    rdmsr
    cmpl $0xfee00900, %eax
    je 3f
9:  orb $4, %bl
3:  movw $0x600, %dx
    inw %dx, %ax
    cmpw $0x8400, %ax
    je 4f
    orb $8, %bl
4:  cmpb $0, 0x3800
    je 5f
    orb $16, %bl
5:  movb %bl, %al
    orb $0x20, %al
    outb %al, $0xf4
6:  hlt
    jmp 6b
    .endm

    .pushsection .rodata.drv_s3_resume, "a"
    .globl drv_s3_resume16_start
    .globl drv_s3_resume16_end
    .globl drv_s3_resume32_start
    .globl drv_s3_resume32_end
    .code16
drv_s3_resume16_start:
    drv_s3_checks 0x60000010, (0x3000 + drv_s3_msg16 - drv_s3_resume16_start)
drv_s3_msg16:
    .asciz "drv: s3 resumed mode=16\n"
drv_s3_resume16_end:
    .code32
drv_s3_resume32_start:
    drv_s3_checks 0x11, (0x3400 + drv_s3_msg32 - drv_s3_resume32_start)
drv_s3_msg32:
    .asciz "drv: s3 resumed mode=32\n"
drv_s3_resume32_end:
    .code64
    .popsection
"#,
    options(att_syntax)
);

extern "C" {
    static drv_s3_resume16_start: u8;
    static drv_s3_resume16_end: u8;
    static drv_s3_resume32_start: u8;
    static drv_s3_resume32_end: u8;
}

/// CPUID leaf 1's ECX.
fn cpuid1_ecx() -> u32 {
    core::arch::x86_64::__cpuid(1).ecx
}

/// The FADT's address: the XSDT entry with signature `FACP`.
fn find_fadt() -> Option<u64> {
    let xsdt = read64(find_rsdp()? + 24);
    let entries = u64::from(read32(xsdt + 4)).saturating_sub(36) / 8;
    (0..entries)
        .map(|i| read64(xsdt + 36 + 8 * i))
        .find(|&t| read32(t) == sig(b"FACP"))
}

/// # Safety
/// Port I/O: the caller vouches for the port.
unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

fn cmos_write(reg: u8, value: u8) {
    // SAFETY: the CMOS index and data ports; no memory.
    unsafe {
        serial::outb(0x70, reg);
        serial::outb(0x71, value);
    }
}

fn cmos_read(reg: u8) -> u8 {
    // SAFETY: as above; reading register C clears its flags, as intended.
    unsafe {
        serial::outb(0x70, reg);
        serial::inb(0x71)
    }
}

pub fn run(cfg: &Config) -> ! {
    let Some(fadt) = find_fadt() else {
        serial::line().s("s3 error no FADT");
        crate::finish(1)
    };
    let facs = u64::from(read32(fadt + 36));
    // Both fit 16 bits: the FADT's port fields (drvisor's are 0x600 and 0x604).
    let pm1a_evt = read32(fadt + 56) as u16;
    let pm1a_cnt = read32(fadt + 64) as u16;
    serial::line()
        .s("s3 facs=")
        .hex(facs)
        .s(" pm1a_evt=")
        .hex(u64::from(pm1a_evt))
        .s(" pm1a_cnt=")
        .hex(u64::from(pm1a_cnt))
        .s(if cfg.wake_none {
            " wake=none"
        } else {
            " wake=rtc"
        })
        .s(if cfg.s3_x_vector {
            " vector=x"
        } else {
            " vector=real"
        });
    // SAFETY: the resume code's bounds come from the asm above; the copy goes to identity-mapped
    // low RAM nothing else uses (see RESUME_AT); the FACS and the marker are RAM too.
    unsafe {
        let copy = |start: *const u8, end: *const u8, to: u64| {
            let len = end as usize - start as usize;
            core::ptr::copy_nonoverlapping(start, to as *mut u8, len);
        };
        copy(
            &raw const drv_s3_resume16_start,
            &raw const drv_s3_resume16_end,
            RESUME_AT,
        );
        copy(
            &raw const drv_s3_resume32_start,
            &raw const drv_s3_resume32_end,
            RESUME32_AT,
        );
        core::ptr::write_volatile(MARKER as *mut u8, 0);
        core::ptr::write_volatile((facs + 12) as *mut u32, RESUME_AT as u32);
        // X_Firmware_Waking_Vector, which wins over the 32-bit one when it is not 0.
        let x_vector = if cfg.s3_x_vector { RESUME32_AT } else { 0 };
        core::ptr::write_volatile((facs + 24) as *mut u64, x_vector);
    }
    // x2APIC on, where the CPU has it: the wake must bring the local APIC back to xAPIC.
    let x2apic = cpuid1_ecx() & (1 << 21) != 0;
    if x2apic {
        // SAFETY: IA32_APIC_BASE with EXTD set on top of EN: the architectural way into x2APIC
        // mode; nothing in this scenario uses the local APIC afterwards.
        unsafe {
            let (lo, hi): (u32, u32);
            core::arch::asm!("rdmsr", in("ecx") 0x1bu32, out("eax") lo, out("edx") hi, options(nomem, nostack));
            core::arch::asm!("wrmsr", in("ecx") 0x1bu32, in("eax") lo | 0xc00, in("edx") hi, options(nomem, nostack));
        }
    }
    serial::line().s("s3 x2apic=").dec(u64::from(x2apic));
    // SAFETY: the guest's own debug registers: an exec breakpoint on an address never run.
    unsafe {
        core::arch::asm!("mov dr0, {}", in(reg) GUEST_BP, options(nomem, nostack));
        core::arch::asm!("mov dr7, {}", in(reg) 0x401u64, options(nomem, nostack));
    }
    for alarm in [0x01, 0x03, 0x05] {
        cmos_write(alarm, 0xc0);
    }
    cmos_read(0x0c);
    cmos_write(0x0b, cmos_read(0x0b) | 0x20);
    if !cfg.wake_none {
        // SAFETY: PM1_EN: RTC_EN only.
        unsafe { outw(pm1a_evt + 2, 0x400) };
    }
    serial::line().s("s3 sleeping");
    // SAFETY: PM1_CNT: SLP_EN with SLP_TYP 1 (\_S3). After it, the marker: no instruction
    // should get that far.
    unsafe {
        outw(pm1a_cnt, 0x2400);
        loop {
            core::ptr::write_volatile(MARKER as *mut u8, 1);
        }
    }
}
