//! IDT with 32 exception gates, the exception entry stubs, and debug-register access.
//!
//! Each stub pushes a dummy error code (for vectors where the CPU pushes none) and its vector
//! number, then `drv_isr_common` saves all GPRs and calls `drv_exception(&mut Frame)`. On return
//! the GPRs are restored from the (possibly modified) frame and `iretq` resumes the interrupted
//! code. Vector 1 (#DB) goes to the guest-dr handler (to the evict one while that scenario
//! runs); any other vector prints `drv: unexpected exception vector=V rip=0x.. error=0x..` and
//! exits with status 4.

use crate::serial;

core::arch::global_asm!(
    r#"
    .pushsection .text.drv_isr, "ax"
    .macro DRV_ISR vec, has_err
    .type drv_isr_\vec, @function
drv_isr_\vec:
    .if \has_err == 0
    push 0
    .endif
    push \vec
    jmp drv_isr_common
    .endm

    /* Vectors 8, 10-14, 17, 21, 29, 30 push an error code. */
    DRV_ISR 0,0
    DRV_ISR 1,0
    DRV_ISR 2,0
    DRV_ISR 3,0
    DRV_ISR 4,0
    DRV_ISR 5,0
    DRV_ISR 6,0
    DRV_ISR 7,0
    DRV_ISR 8,1
    DRV_ISR 9,0
    DRV_ISR 10,1
    DRV_ISR 11,1
    DRV_ISR 12,1
    DRV_ISR 13,1
    DRV_ISR 14,1
    DRV_ISR 15,0
    DRV_ISR 16,0
    DRV_ISR 17,1
    DRV_ISR 18,0
    DRV_ISR 19,0
    DRV_ISR 20,0
    DRV_ISR 21,1
    DRV_ISR 22,0
    DRV_ISR 23,0
    DRV_ISR 24,0
    DRV_ISR 25,0
    DRV_ISR 26,0
    DRV_ISR 27,0
    DRV_ISR 28,0
    DRV_ISR 29,1
    DRV_ISR 30,1
    DRV_ISR 31,0

    .type drv_isr_common, @function
drv_isr_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    cld
    mov rdi, rsp            /* &mut Frame */
    mov rbx, rsp            /* callee-saved copy */
    and rsp, -16            /* SysV call alignment */
    call drv_exception
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16             /* vector, error code */
    iretq
    .popsection

    .pushsection .rodata.drv_isr_table, "a"
    .balign 8
    .global drv_isr_table
drv_isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad drv_isr_\v
    .endr
    .popsection
"#
);

/// The stack frame `drv_isr_common` builds, lowest address first.
#[repr(C)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // The CPU's iretq frame.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// RFLAGS.RF: suppresses instruction breakpoints for the next instruction after iretq.
pub const RFLAGS_RF: u64 = 1 << 16;

/// One 16-byte 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_hi: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; 32]);

/// Operand of `lidt`.
#[repr(C, packed)]
struct IdtDescriptor {
    limit: u16,
    base: u64,
}

const EMPTY_GATE: Gate = Gate {
    offset_lo: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_hi: 0,
    reserved: 0,
};

struct IdtCell(core::cell::UnsafeCell<Idt>);

// SAFETY: the IDT is written only by `install`, on CPU 0, before any exception can use it.
unsafe impl Sync for IdtCell {}

static IDT: IdtCell = IdtCell(core::cell::UnsafeCell::new(Idt([EMPTY_GATE; 32])));

extern "C" {
    static drv_isr_table: [u64; 32];
}

/// Loads the IDT that `install` built on this CPU (the other CPUs, after CPU 0 installed it).
pub fn load() {
    // SAFETY: the gates were written by `install` before any caller gets here (the caller
    // waits for CPU 0); only their address is taken.
    let gates = unsafe { &(*IDT.0.get()).0 };
    let desc = IdtDescriptor {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: gates.as_ptr() as u64,
    };
    // SAFETY: the descriptor points at a valid, 'static IDT whose gates point at our stubs.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &desc, options(readonly, nostack, preserves_flags))
    };
}

/// Fills the IDT (32 interrupt gates, DPL0, code selector 0x08) and loads it on this CPU.
pub fn install() {
    // SAFETY: drv_isr_table is a read-only table of stub addresses emitted above.
    let stubs = unsafe { &drv_isr_table };
    // SAFETY: IDT is only written here, before any exception can use it, and by one CPU
    // (install is called by CPU 0 only).
    let gates = unsafe { &mut (*IDT.0.get()).0 };
    for (gate, &addr) in gates.iter_mut().zip(stubs.iter()) {
        *gate = Gate {
            offset_lo: addr as u16,
            selector: 0x08,
            ist: 0,
            type_attr: 0x8e, // present, DPL0, 64-bit interrupt gate
            offset_mid: (addr >> 16) as u16,
            offset_hi: (addr >> 32) as u32,
            reserved: 0,
        };
    }
    let desc = IdtDescriptor {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: gates.as_ptr() as u64,
    };
    // SAFETY: the descriptor points at a valid, 'static IDT whose gates point at our stubs.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &desc, options(readonly, nostack, preserves_flags))
    };
}

/// Loads an IDT with base 0 and limit 0: the next exception cannot be delivered (triple fault).
pub fn load_null() {
    let desc = IdtDescriptor { limit: 0, base: 0 };
    // SAFETY: deliberately breaks exception delivery; only the fault scenarios call this, right
    // before they fault on purpose.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &desc, options(readonly, nostack, preserves_flags))
    };
}

/// Called by `drv_isr_common` for every exception.
#[no_mangle]
extern "C" fn drv_exception(frame: &mut Frame) {
    if crate::scenarios::irq_line::owns_vector(frame.vector) {
        crate::scenarios::irq_line::on_interrupt();
        return;
    }
    if frame.vector == 1 {
        if crate::scenarios::dr_migrate::owns_debug_exceptions() {
            crate::scenarios::dr_migrate::on_debug_exception(frame);
        } else if crate::scenarios::evict::owns_debug_exceptions() {
            crate::scenarios::evict::on_debug_exception(frame);
        } else {
            crate::scenarios::guest_dr::on_debug_exception(frame);
        }
        return;
    }
    serial::line()
        .s("unexpected exception vector=")
        .dec(frame.vector)
        .s(" rip=")
        .hex(frame.rip)
        .s(" error=")
        .hex(frame.error_code);
    crate::finish(4);
}

/// Debug-register access.
pub mod dr {
    /// Reads DR6.
    pub fn read_dr6() -> u64 {
        let v: u64;
        // SAFETY: reading DR6 at CPL0 has no side effects.
        unsafe {
            core::arch::asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags))
        };
        v
    }

    /// Writes DR6.
    pub fn write_dr6(v: u64) {
        // SAFETY: DR6 is a status register; writing it only changes the reported status.
        unsafe {
            core::arch::asm!("mov dr6, {}", in(reg) v, options(nomem, nostack, preserves_flags))
        };
    }

    /// Writes DR7 (arms/disarms breakpoints).
    pub fn write_dr7(v: u64) {
        // SAFETY: the callers arm only exec breakpoints on addresses whose #DB the guest-dr
        // handler (installed first) deals with, or disarm everything.
        unsafe {
            core::arch::asm!("mov dr7, {}", in(reg) v, options(nomem, nostack, preserves_flags))
        };
    }

    /// Writes breakpoint address register DR`n` (n in 0..=3).
    pub fn write_addr(n: usize, addr: u64) {
        // SAFETY: an address register alone does nothing until DR7 enables it.
        unsafe {
            match n {
                0 => {
                    core::arch::asm!("mov dr0, {}", in(reg) addr, options(nomem, nostack, preserves_flags))
                }
                1 => {
                    core::arch::asm!("mov dr1, {}", in(reg) addr, options(nomem, nostack, preserves_flags))
                }
                2 => {
                    core::arch::asm!("mov dr2, {}", in(reg) addr, options(nomem, nostack, preserves_flags))
                }
                _ => {
                    core::arch::asm!("mov dr3, {}", in(reg) addr, options(nomem, nostack, preserves_flags))
                }
            }
        }
    }
}
