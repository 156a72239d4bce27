//! What one `KVM_RUN` exit means, decided without touching the vCPU: port I/O goes to the bus,
//! everything else becomes a [`Step`] for the run loop. Tested with fabricated exits.

use kvm_bindings::kvm_debug_exit_arch;
use kvm_ioctls::VcpuExit;

use crate::devices::{PioBus, PortAccess};
use crate::watch::{MmioAccess, PageWatchEngine, PendingPageHit};

/// What the run loop does next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Re-enter the guest.
    Resume,
    /// The vCPU halted with no interrupt source to wake it (only without an in-kernel irqchip).
    Halted,
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted.
    TripleFault,
    /// `KVM_EXIT_INTERNAL_ERROR`; details are read from `kvm_run` by the caller.
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY` with its hardware reason.
    FailEntry(u64),
    /// An unowned port under `--strict-ports`.
    UnknownPort(u16),
    /// `KVM_EXIT_DEBUG`: goes to the debug dispatcher.
    Debug(kvm_debug_exit_arch),
    /// Page-watch hits from an MMIO exit on guest RAM (already performed).
    PageHits(Vec<PendingPageHit>),
    /// An exit drvisor does not handle.
    Unhandled(&'static str),
}

/// Policy for guest accesses that reach no device.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnknownAccessPolicy {
    /// End the run on an unowned port instead of logging it once and going on.
    pub strict_ports: bool,
}

/// Where MMIO exits on guest RAM go (the page-watch engine; a test double in unit tests).
pub trait RamAccess {
    /// Performs an access that exited as MMIO; `None` if `gpa` is not guest RAM.
    fn on_mmio(&self, gpa: u64, access: MmioAccess<'_>) -> Option<Vec<PendingPageHit>>;
}

impl RamAccess for PageWatchEngine {
    fn on_mmio(&self, gpa: u64, access: MmioAccess<'_>) -> Option<Vec<PendingPageHit>> {
        PageWatchEngine::on_mmio(self, gpa, access)
    }
}

/// MMIO devices outside RAM first (a cheap range check), then guest RAM through `ram`.
pub struct GuestMmio<'a> {
    /// Devices such as pc-testdev's MMIO RAM.
    pub devices: &'a crate::devices::MmioBus,
    /// Guest RAM: the page-watch engine.
    pub ram: &'a dyn RamAccess,
}

impl RamAccess for GuestMmio<'_> {
    fn on_mmio(&self, gpa: u64, mut access: MmioAccess<'_>) -> Option<Vec<PendingPageHit>> {
        let done = match &mut access {
            MmioAccess::Read(data) => self.devices.read(gpa, data),
            MmioAccess::Write(data) => self.devices.write(gpa, data),
        };
        if done {
            Some(Vec::new())
        } else {
            self.ram.on_mmio(gpa, access)
        }
    }
}

/// Classifies `exit` for vCPU `vcpu`, performing port I/O on `bus` and guest-RAM MMIO on `ram`.
pub fn classify(
    exit: VcpuExit<'_>,
    bus: &PioBus,
    ram: &dyn RamAccess,
    policy: UnknownAccessPolicy,
    vcpu: usize,
) -> Step {
    match exit {
        VcpuExit::IoOut(port, data) => port_step(bus.write(port, data), port, policy, vcpu, "out"),
        VcpuExit::IoIn(port, data) => port_step(bus.read(port, data), port, policy, vcpu, "in"),
        VcpuExit::MmioRead(addr, data) => match ram.on_mmio(addr, MmioAccess::Read(&mut *data)) {
            Some(hits) => page_step(hits),
            None => {
                // Nothing is mapped outside RAM: reads float high, as on a bus with no device.
                tracing::debug!(
                    vcpu,
                    "MMIO read of {addr:#x} with no device; returning all ones"
                );
                data.fill(0xff);
                Step::Resume
            }
        },
        VcpuExit::MmioWrite(addr, data) => match ram.on_mmio(addr, MmioAccess::Write(data)) {
            Some(hits) => page_step(hits),
            None => {
                tracing::debug!(vcpu, "MMIO write to {addr:#x} with no device; ignored");
                Step::Resume
            }
        },
        VcpuExit::Hlt => Step::Halted,
        VcpuExit::Shutdown => Step::TripleFault,
        VcpuExit::InternalError => Step::InternalError,
        VcpuExit::FailEntry(reason, _cpu) => Step::FailEntry(reason),
        VcpuExit::Debug(arch) => Step::Debug(arch),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => Step::Resume,
        other => Step::Unhandled(exit_name(&other)),
    }
}

/// Like [`classify`], for an exit whose port I/O, if any, has elements of `io_size` bytes
/// (`kvm_run.io.size`). A `rep ins`/`rep outs` arrives as one `KVM_EXIT_IO` with `count`
/// elements; each element is one access to the device, as on hardware, so a device sees
/// `count` reads of `io_size` bytes rather than one read of `count * io_size`.
pub fn classify_elements(
    exit: VcpuExit<'_>,
    io_size: usize,
    bus: &PioBus,
    ram: &dyn RamAccess,
    policy: UnknownAccessPolicy,
    vcpu: usize,
) -> Step {
    let each = |step: &mut Step, exit: VcpuExit<'_>| {
        if *step == Step::Resume {
            *step = classify(exit, bus, ram, policy, vcpu);
        }
    };
    let mut step = Step::Resume;
    match exit {
        VcpuExit::IoIn(port, data) if io_size > 0 && data.len() > io_size => {
            for element in data.chunks_mut(io_size) {
                each(&mut step, VcpuExit::IoIn(port, element));
            }
            step
        }
        VcpuExit::IoOut(port, data) if io_size > 0 && data.len() > io_size => {
            for element in data.chunks(io_size) {
                each(&mut step, VcpuExit::IoOut(port, element));
            }
            step
        }
        other => classify(other, bus, ram, policy, vcpu),
    }
}

fn page_step(hits: Vec<PendingPageHit>) -> Step {
    if hits.is_empty() {
        Step::Resume
    } else {
        Step::PageHits(hits)
    }
}

fn port_step(
    access: PortAccess,
    port: u16,
    policy: UnknownAccessPolicy,
    vcpu: usize,
    dir: &str,
) -> Step {
    match access {
        PortAccess::Handled => Step::Resume,
        _ if policy.strict_ports => Step::UnknownPort(port),
        PortAccess::FirstUnknown => {
            tracing::warn!(vcpu, "guest `{dir}` on port {port:#x}, which no device owns; ignoring it (reported once per port)");
            Step::Resume
        }
        PortAccess::RepeatedUnknown => Step::Resume,
    }
}

fn exit_name(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::Exception => "KVM_EXIT_EXCEPTION",
        VcpuExit::Hypercall(_) => "KVM_EXIT_HYPERCALL",
        VcpuExit::SystemEvent(..) => "KVM_EXIT_SYSTEM_EVENT",
        VcpuExit::Unknown => "KVM_EXIT_UNKNOWN",
        _ => "an unexpected exit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::PioDevice;
    use std::sync::{Arc, Mutex};

    /// No guest RAM behind any MMIO exit.
    struct NoRam;
    impl RamAccess for NoRam {
        fn on_mmio(&self, _: u64, _: MmioAccess<'_>) -> Option<Vec<PendingPageHit>> {
            None
        }
    }

    struct Sink;
    impl PioDevice for Sink {
        fn read(&mut self, _: u16, d: &mut [u8]) {
            d.fill(0x42)
        }
        fn write(&mut self, _: u16, _: &[u8]) {}
    }

    fn bus() -> PioBus {
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Sink)));
        bus
    }

    /// Counts accesses and serves a rising byte.
    struct Counter(u8);
    impl PioDevice for Counter {
        fn read(&mut self, _: u16, d: &mut [u8]) {
            self.0 += 1;
            d.fill(self.0)
        }
        fn write(&mut self, _: u16, d: &[u8]) {
            self.0 += d.len() as u8;
        }
    }

    #[test]
    fn string_io_reaches_the_device_element_by_element() {
        let counter = Arc::new(Mutex::new(Counter(0)));
        let mut bus = PioBus::default();
        bus.insert(0xe0, 4, counter.clone());
        let lax = UnknownAccessPolicy::default();
        let mut data = [0u8; 6];
        let step = classify_elements(VcpuExit::IoIn(0xe0, &mut data), 2, &bus, &NoRam, lax, 0);
        assert_eq!(step, Step::Resume);
        assert_eq!(data, [1, 1, 2, 2, 3, 3]);
        let step = classify_elements(VcpuExit::IoOut(0xe0, &[0; 4]), 4, &bus, &NoRam, lax, 0);
        assert_eq!(step, Step::Resume);
        assert_eq!(counter.lock().unwrap().0, 7);
    }

    #[test]
    fn port_io_to_a_device_resumes() {
        let bus = bus();
        let lax = UnknownAccessPolicy::default();
        assert_eq!(
            classify(VcpuExit::IoOut(0x3f8, b"x"), &bus, &NoRam, lax, 0),
            Step::Resume
        );
        let mut d = [0u8];
        assert_eq!(
            classify(VcpuExit::IoIn(0x3fd, &mut d), &bus, &NoRam, lax, 0),
            Step::Resume
        );
        assert_eq!(d[0], 0x42);
    }

    #[test]
    fn unknown_ports_resume_unless_strict() {
        let bus = bus();
        let lax = UnknownAccessPolicy::default();
        let strict = UnknownAccessPolicy { strict_ports: true };
        assert_eq!(
            classify(VcpuExit::IoOut(0x1234, &[0]), &bus, &NoRam, lax, 0),
            Step::Resume
        );
        assert_eq!(
            classify(VcpuExit::IoOut(0x1234, &[0]), &bus, &NoRam, lax, 0),
            Step::Resume
        );
        assert_eq!(
            classify(VcpuExit::IoOut(0x1234, &[0]), &bus, &NoRam, strict, 0),
            Step::UnknownPort(0x1234)
        );
    }

    #[test]
    fn guest_faults_become_steps() {
        let bus = bus();
        let lax = UnknownAccessPolicy::default();
        assert_eq!(
            classify(VcpuExit::Shutdown, &bus, &NoRam, lax, 0),
            Step::TripleFault
        );
        assert_eq!(
            classify(VcpuExit::InternalError, &bus, &NoRam, lax, 0),
            Step::InternalError
        );
        assert_eq!(
            classify(VcpuExit::FailEntry(7, 0), &bus, &NoRam, lax, 0),
            Step::FailEntry(7)
        );
        let mut d = [0u8; 4];
        assert_eq!(
            classify(
                VcpuExit::MmioRead(0xfee0_0000, &mut d),
                &bus,
                &NoRam,
                lax,
                0
            ),
            Step::Resume
        );
        assert_eq!(d, [0xff; 4]);
    }
}
