//! `irq-line`: QEMU's pc-testdev interrupt-line ports, seen from the guest. The I/O APIC's pin
//! `line=N` (default 14) is routed to vector 31 on this CPU (the 8259s are masked).
//!
//! - `trigger=edge` (the default): the guest raises the line with a byte to port 0x2000+N,
//!   waits for the interrupt, lowers it, and raises it again: two rising edges, two
//!   interrupts. A line that the port did not raise, or did not lower (no second edge), gives
//!   fewer.
//! - `trigger=level`: the guest raises the line once; the handler lowers it, then ends the
//!   interrupt at the local APIC, as kvm-unit-tests' `ioapic` handlers do: one interrupt. A
//!   second one means the I/O APIC saw the end of the interrupt while the line was still high.
//!
//! The handler also looks at the local APIC's in-service bit of its vector, which the interrupt
//! sets as it is delivered and the handler's EOI clears; a host whose KVM ends each interrupt
//! as it delivers it shows the bit clear (`in-service` counts the interrupts that saw it set).
//! Prints `drv: irq-line line=N trigger=edge|level interrupts=K in-service=S` and exits 0 if K
//! is as above, else 1.

use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use crate::cmdline::Config;
use crate::serial::{self, outb};

/// The vector the line is routed to: reserved by Intel, no CPU exception uses it, and it has a
/// stub in the guest's 32-gate IDT.
pub const VECTOR: u64 = 31;
const IOAPIC_SELECT: usize = 0xfec0_0000;
const IOAPIC_WINDOW: usize = 0xfec0_0010;
const APIC_EOI: usize = 0xfee0_00b0;
const APIC_SVR: usize = 0xfee0_00f0;
/// The in-service register holding vectors 0-31.
const APIC_ISR0: usize = 0xfee0_0100;
/// The interrupt request register holding vectors 0-31.
const APIC_IRR0: usize = 0xfee0_0200;
const LINE_PORT: u16 = 0x2000;

static INTERRUPTS: AtomicU64 = AtomicU64::new(0);
static IN_SERVICE: AtomicU64 = AtomicU64::new(0);
static OWNED: AtomicU64 = AtomicU64::new(0);
/// trigger=level: the port the handler lowers the line with (0: edge, the guest lowers it).
static LEVEL_PORT: AtomicU16 = AtomicU16::new(0);

/// Whether vector 31 is this scenario's.
pub fn owns_vector(vector: u64) -> bool {
    vector == VECTOR && OWNED.load(Ordering::SeqCst) != 0
}

/// The interrupt: count it and whether it is in service; lower a level-triggered line; end
/// it at the local APIC.
pub fn on_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the xAPIC ISR register, identity-mapped; KVM's in-kernel LAPIC serves it.
    let isr = unsafe { core::ptr::read_volatile(APIC_ISR0 as *const u32) };
    if isr & (1 << VECTOR) != 0 {
        IN_SERVICE.fetch_add(1, Ordering::SeqCst);
    }
    let port = LEVEL_PORT.load(Ordering::SeqCst);
    if port != 0 {
        // SAFETY: the pc-testdev line port: its only effect is the interrupt line.
        unsafe { outb(port, 0) };
    }
    // SAFETY: the xAPIC EOI register, identity-mapped; KVM's in-kernel LAPIC serves it.
    unsafe { core::ptr::write_volatile(APIC_EOI as *mut u32, 0) };
}

/// Whether the local APIC holds this scenario's interrupt pending (its IRR bit).
fn pending() -> bool {
    // SAFETY: the xAPIC IRR register, identity-mapped; KVM's in-kernel LAPIC serves it.
    let irr = unsafe { core::ptr::read_volatile(APIC_IRR0 as *const u32) };
    irr & (1 << VECTOR) != 0
}

fn ioapic_write(register: u32, value: u32) {
    // SAFETY: the I/O APIC's select and window registers, identity-mapped by the static page
    // tables; KVM's in-kernel I/O APIC serves them.
    unsafe {
        core::ptr::write_volatile(IOAPIC_SELECT as *mut u32, register);
        core::ptr::write_volatile(IOAPIC_WINDOW as *mut u32, value);
    }
}

/// How long to wait for an interrupt, in polls of the count with interrupts on. Where KVM runs
/// guest kernel code natively the interrupt comes before the first poll. Our PVM hosts' KVM
/// injects a pending interrupt only now and then (18 ms after the line rose, once under load),
/// and may let a one-instruction window (`sti; nop; cli`) pass for half a second; so the wait
/// keeps interrupts on, and its bound, about a second of their emulated code, only ends a run
/// whose line never rose.
const WAIT_POLLS: u64 = 1_000_000;

/// How long a level-triggered run goes on polling with interrupts on after its interrupt, for a
/// second one that should not come and is not already pending: where KVM runs guest kernel
/// code natively, far longer than a delivery takes; about a tenth of a second of our PVM
/// hosts' emulated code.
const SETTLE_POLLS: u64 = 100_000;

/// Waits with interrupts on until `n` interrupts have come, or `polls` went by.
fn wait_for(n: u64, polls: u64) {
    // SAFETY: lets the line's interrupt in (the IDT is installed and vector 31 is this
    // scenario's); `cli` below shuts interrupts out again.
    unsafe { core::arch::asm!("sti", options(nostack)) };
    for _ in 0..polls {
        if INTERRUPTS.load(Ordering::SeqCst) >= n {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: as above.
    unsafe { core::arch::asm!("cli", options(nostack)) };
}

pub fn run(cfg: &Config) -> ! {
    let line = cfg.line.min(23);
    crate::idt::install();
    OWNED.store(1, Ordering::SeqCst);
    // SAFETY: masking both 8259s (OCW1) only stops their interrupts; the APIC SVR write enables
    // the local APIC (identity-mapped register); the line port is drvisor's pc-testdev.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        core::ptr::write_volatile(APIC_SVR as *mut u32, 0x1ff);
    }
    // Redirection entry: vector 31, fixed, physical destination APIC 0, active high, edge or
    // level (bit 15).
    let trigger = if cfg.level { 1 << 15 } else { 0 };
    ioapic_write(0x11 + 2 * line, 0);
    ioapic_write(0x10 + 2 * line, VECTOR as u32 | trigger);
    let port = LINE_PORT + line as u16;
    let want = if cfg.level {
        LEVEL_PORT.store(port, Ordering::SeqCst);
        // SAFETY: the pc-testdev line port: its only effect is the interrupt line.
        unsafe { outb(port, 1) };
        wait_for(1, WAIT_POLLS);
        // A second interrupt already pending in the local APIC (its IRR bit) is waited for as
        // long as the first; otherwise a short while, for one that should not come at all.
        wait_for(2, if pending() { WAIT_POLLS } else { SETTLE_POLLS });
        1
    } else {
        for n in 1..=2 {
            // SAFETY: as above.
            unsafe { outb(port, 1) };
            wait_for(n, WAIT_POLLS);
            // SAFETY: as above.
            unsafe { outb(port, 0) };
        }
        2
    };
    let got = INTERRUPTS.load(Ordering::SeqCst);
    serial::line()
        .s("irq-line line=")
        .dec(u64::from(line))
        .s(if cfg.level {
            " trigger=level"
        } else {
            " trigger=edge"
        })
        .s(" interrupts=")
        .dec(got)
        .s(" in-service=")
        .dec(IN_SERVICE.load(Ordering::SeqCst));
    crate::finish(if got == want { 0 } else { 1 })
}
