//! Scenarios that end the VM abnormally on purpose, and `bad-port`.

use crate::{idt, serial};

/// `triple-fault`: zero-limit IDT, then `ud2`: #UD cannot be delivered -> #DF cannot -> triple
/// fault (shutdown). Never reaches a summary line.
pub fn triple_fault() -> ! {
    serial::line().s("scenario=triple-fault about to fault");
    idt::load_null();
    // SAFETY: faulting is the point of this scenario; nothing runs after it.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// `emu-fail`: zero-limit IDT, then `int3`. On a KVM that emulates CPL0 code this is an
/// emulation failure (KVM_EXIT_INTERNAL_ERROR); on real VMX/SVM it is a triple fault.
pub fn emu_fail() -> ! {
    serial::line().s("scenario=emu-fail about to execute int3");
    idt::load_null();
    // SAFETY: as above: the deliberate, only `int3` in this kernel; nothing runs after it.
    unsafe { core::arch::asm!("int3", options(noreturn, nomem, nostack)) }
}

/// `bad-port`: three byte writes to port 0x1234, which no device claims.
pub fn bad_port() -> ! {
    let mut wrote = 0;
    for _ in 0..3 {
        // SAFETY: port 0x1234 has no device behind it; the VMM is expected to report it.
        unsafe { serial::outb(0x1234, 0x5a) };
        wrote += 1;
    }
    serial::line().s("scenario=bad-port wrote=").dec(wrote);
    crate::finish(0)
}

/// `panic`: exercises the panic handler (`drv: panic at FILE:LINE: MESSAGE`, status 3).
pub fn panic() -> ! {
    panic!("requested by scenario=panic")
}

/// `unexpected-exception`: installs the IDT and executes `ud2`, exercising the handler for
/// unexpected vectors (`drv: unexpected exception vector=6 ...`, status 4).
pub fn unexpected_exception() -> ! {
    idt::install();
    // SAFETY: the #UD goes to our own handler, which ends the run.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
