//! A VM built from a [`VmConfig`]: KVM, guest memory, the irqchip, devices and vCPUs. This is
//! the one place that knows how the pieces fit together.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, Entry, KernelImage, Module};
use crate::console_lines::{ConsoleLines, GuestConsole};
use crate::cpu;
use crate::debug::{DebugCaps, DebugController};
use crate::devices::{
    spawn_rtc_timer, AlarmSignal, CmosRtc, ExitPort, ExitStatus, FwCfg, HostClock, HostSignal,
    HostSignalPort, MmioBus, MprotectFlush, PioBus, Pm1Events, Pm1Registers, PmTimer,
    SerialConsole, Sleeper, TestDevIomem, TestDevIrqLines, TestDevPort, WakeEvent, CMOS_PORT,
    CMOS_PORTS, COM1_BASE, COM1_GSI, EXIT_PORT, EXIT_PORTS, FW_CFG_PORT, FW_CFG_PORTS,
    HOST_SIGNAL_PORT, IOMEM_BASE, IOMEM_LEN, IRQ_LINE_PORT, IRQ_LINE_PORTS, PM1_EVT_PORT,
    PM1_PORTS, PM_TIMER_PORT, PM_TIMER_PORTS, RTC_GSI, TESTDEV_PORT, TESTDEV_PORTS,
};
use crate::event_loop::{self, Subscriber};
use crate::events::{Event, EventBus};
use crate::fault_injection::InjectedFault;
use crate::memory;
use crate::outcome::Outcome;
use crate::pc_platform;
use crate::probe;
use crate::run_control::RunControl;
use crate::sleep::SleepControl;
use crate::vcpu::parked::ParkedRegs;
use crate::vcpu::{UnknownAccessPolicy, Vcpu, VcpuGate, VcpuShared};
use crate::watch::{PageWatchEngine, Translator};

mod early;

pub use early::{EarlyVm, Shape};
/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0}; drvisor needs read/write access to it (are you in the `kvm` group?)")]
    KvmAccess(kvm_ioctls::Error),
    /// A vCPU count KVM cannot give.
    #[error("{asked} vCPUs is out of range: this host's KVM allows 1 to {max}")]
    VcpuCount {
        /// What the user asked for.
        asked: usize,
        /// KVM_CAP_MAX_VCPUS.
        max: usize,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// Loading the kernel.
    #[error(transparent)]
    Boot(#[from] boot::Error),
    /// A KVM setup call failed.
    #[error("KVM setup failed at {step}: {source}")]
    Kvm {
        /// What was being set up.
        step: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// Setting a vCPU's boot state.
    #[error(transparent)]
    Cpu(#[from] cpu::Error),
    /// Setting a vCPU's boot MSRs.
    #[error(transparent)]
    BootMsrs(#[from] cpu::msrs::Error),
    /// The PC platform pieces: VMX TSS and identity map, PIT.
    #[error(transparent)]
    Platform(#[from] pc_platform::Error),
    /// Installing guest RAM as memslots.
    #[error(transparent)]
    Memslots(#[from] crate::watch::Error),
    /// A feature required of the guest's CPUID that it cannot have.
    #[error(transparent)]
    CpuFeatures(#[from] cpu::ApplyError),
    /// [`Vm::build`] was given an [`EarlyVm`] made for another configuration (a bug in the
    /// caller).
    #[error(
        "the VM started early was made for {early:?}, and its configuration asks for {config:?}"
    )]
    ShapeMismatch {
        /// What the early VM was made for.
        early: Shape,
        /// What the configuration asks for.
        config: Shape,
    },
    /// The host refused an EventFd, a thread or epoll.
    #[error("host resource: {0}")]
    Host(#[from] std::io::Error),
}

impl Error {
    /// Whether this is the user's mistake (exit code 2) rather than a host or VMM failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::KvmAccess(_)
                | Error::VcpuCount { .. }
                | Error::Memory(_)
                | Error::CpuFeatures(_)
        ) || matches!(self, Error::Boot(e) if e.is_usage())
    }
}

/// Where guest console output goes.
pub enum Console {
    /// The process's stdout, with stdin as console input. drvisor's messages on stderr wait
    /// for the end of the guest's line (see [`crate::console_lines`]).
    Stdio,
    /// A writer; no console input (benchmarks and in-process tests).
    Writer(Box<dyn Write + Send>),
}

/// Everything needed to build a VM.
pub struct VmConfig {
    /// The kernel.
    pub kernel: KernelImage,
    /// An initrd: a bzImage's, or module 0 of a PVH or multiboot kernel.
    pub initrd: Option<Vec<u8>>,
    /// Boot modules after the initrd (PVH and multiboot kernels).
    pub modules: Vec<Module>,
    /// How the value the guest writes to the exit port becomes the exit status.
    pub exit_status: ExitStatus,
    /// The kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Guest console.
    pub console: Console,
    /// End the run on a port no device owns.
    pub strict_ports: bool,
    /// Who wins when host and guest breakpoints cannot both fit.
    pub policy: drvisor_debug::Policy,
    /// What this host delivers; `None` asks the probe (see `probe_cache`).
    pub debug_caps: Option<DebugCaps>,
    /// Where the probe's answers are cached per host ([`probe::cache::default_dir`] for the
    /// command line); `None` (the default) runs the probe's tiny VMs at every start.
    pub probe_cache: Option<std::path::PathBuf>,
    /// The guest's CPUID: KVM's, less what the probe found unusable (the default), or KVM's.
    pub cpuid: cpu::CpuidMode,
    /// Features to hide from the guest's CPUID (with all that need them) or to require in it,
    /// applied after `cpuid`.
    pub cpu_features: cpu::FeatureEdits,
    /// The CPU model the guest is shown (`--cpu-model`); the features above edit it.
    pub cpu_model: cpu::CpuModel,
    /// The vendor string the guest is shown (`--cpu-vendor`); `None` keeps the host's.
    pub cpu_vendor: Option<cpu::CpuVendor>,
    /// The most memslots the watch engine may use; `None` for all KVM offers
    /// (`KVM_CAP_NR_MEMSLOTS`). A lower limit leaves slots for other users of the VM.
    pub memslot_limit: Option<usize>,
    /// Test only: a real KVM failure to provoke on vCPU 0 (see [`crate::fault_injection`]).
    pub inject_fault: Option<InjectedFault>,
    /// On hosts that cannot see the guest's MOV DR in time (SVM), how often a vCPU running host
    /// breakpoints with no exit of its own is kicked out of `KVM_RUN` so drvisor reads and
    /// re-plans its guest DR file ([`crate::debug::GUEST_DR_RESYNC`] by default); zero turns
    /// the kicks off (then the guest's changes are seen only at the vCPU's own exits).
    pub guest_dr_resync: std::time::Duration,
    /// Give the guest ACPI tables and the ACPI PM registers (the default): the RSDP in the BIOS
    /// area, the FADT's PM timer and PM1 blocks at ports 0x600-0x60b, the MADT
    /// ([`crate::boot::acpi`]). `false` leaves the MP table as the only description of the
    /// machine and the ports unowned, as before ACPI.
    pub acpi: bool,
    /// Give the guest the in-kernel 8254 PIT (the default; Linux calibrates with it). `false`
    /// leaves its ports unowned; a VM without it also ends faster, since destroying the PIT
    /// waits for SRCU grace periods (BENCHMARKS.md, start-up).
    pub pit: bool,
    /// Run the debug hooks on every vCPU (the default). `false` detaches them entirely, as if
    /// drvisor had no debug support; it exists to measure what attaching costs.
    pub debug_attached: bool,
}

impl VmConfig {
    /// A configuration for `kernel` with defaults: one vCPU, 64 MiB, console to a sink.
    pub fn new(kernel: KernelImage, cmdline: impl Into<String>) -> Self {
        VmConfig {
            kernel,
            initrd: None,
            modules: Vec::new(),
            exit_status: ExitStatus::Raw,
            cmdline: cmdline.into(),
            vcpus: 1,
            mem_mib: 64,
            console: Console::Writer(Box::new(std::io::sink())),
            strict_ports: false,
            policy: drvisor_debug::Policy::default(),
            debug_caps: None,
            probe_cache: None,
            cpuid: cpu::CpuidMode::default(),
            cpu_features: cpu::FeatureEdits::default(),
            cpu_model: cpu::CpuModel::default(),
            cpu_vendor: None,
            debug_attached: true,
            acpi: true,
            pit: true,
            guest_dr_resync: crate::debug::GUEST_DR_RESYNC,
            memslot_limit: None,
            inject_fault: None,
        }
    }
}

/// A VM ready to run.
pub struct Vm {
    _kvm: Kvm,
    _vm_fd: Arc<VmFd>,
    vcpus: Vec<Vcpu>,
    shared: Arc<VcpuShared>,
    serial: Arc<Mutex<SerialConsole>>,
    entry: Entry,
    debug: Arc<DebugController>,
    watch: Arc<PageWatchEngine>,
    host_signal: Arc<HostSignal>,
    events: Arc<EventBus<Event>>,
    rtc: Arc<Mutex<CmosRtc>>,
    rtc_signal: Arc<AlarmSignal>,
    guest_dr_resync: std::time::Duration,
    probe: Option<probe::ProbeReport>,
    cpu_features_also_hidden: Vec<&'static str>,
}

fn kvm_err(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm { step, source }
}

impl TryFrom<VmConfig> for Vm {
    type Error = Error;

    fn try_from(config: VmConfig) -> Result<Self, Error> {
        let early = EarlyVm::create(config.shape())?;
        Vm::build(early, config)
    }
}

impl VmConfig {
    /// What [`EarlyVm::create`] needs of this configuration.
    pub fn shape(&self) -> Shape {
        Shape {
            vcpus: self.vcpus,
            mem_mib: self.mem_mib,
            pit: self.pit,
            memslot_limit: self.memslot_limit,
        }
    }
}

impl Vm {
    /// Finishes `early` as `config` asks: loads the kernel, adds the devices and the vCPUs,
    /// then guest RAM's memslots (see [`EarlyVm`]). `early` must have been made for
    /// `config`'s [`shape`](VmConfig::shape).
    pub fn build(early: EarlyVm, config: VmConfig) -> Result<Self, Error> {
        if early.shape != config.shape() {
            return Err(Error::ShapeMismatch {
                early: early.shape,
                config: config.shape(),
            });
        }
        let EarlyVm {
            kvm,
            vm_fd,
            mem,
            max_slots,
            ..
        } = early;
        let entry = boot::load(
            &mem,
            &config.kernel,
            config.initrd.as_deref(),
            &config.modules,
            &config.cmdline,
        )?;
        // Every format gets the MP table, as QEMU's firmware gives one, and unless turned off the
        // ACPI tables: Linux finds its APs and the I/O APIC in the MADT (or, without ACPI, the MP
        // table); a kernel that looks for neither never sees them.
        boot::mptable::write(&mem, config.vcpus)?;
        let bios_handoff = matches!(config.kernel.format(), boot::KernelFormat::Multiboot(_));
        if bios_handoff {
            crate::bios_handoff::write_memory(&mem)
                .map_err(boot::Error::guest_write("the BIOS vector table"))?;
        }
        let facs = if config.acpi {
            let placed = boot::acpi::write(&mem, config.vcpus)?;
            boot::acpi::hand_over(&mem, &entry, placed.rsdp)?;
            Some(placed.facs)
        } else {
            None
        };
        if bios_handoff && config.pit && kvm.check_extension(kvm_ioctls::Cap::Pit2) {
            crate::bios_handoff::program_timers(&vm_fd).map_err(kvm_err(
                "KVM_SET_IRQCHIP and KVM_SET_PIT2 (the BIOS's PIC and PIT)",
            ))?;
        }

        let cache = config.probe_cache.as_deref();
        let ask_probe = || {
            probe::cache::answers(&kvm, cache, probe::cache::Want::Routing, false)
                .map(|(report, _)| report)
                .map_err(kvm_err("the host probe"))
        };
        let (caps, probe) = match config.debug_caps {
            Some(caps) => (caps, None),
            None => {
                let report = ask_probe()?;
                (DebugCaps::from_probe(&report), Some(report))
            }
        };
        let control = Arc::new(RunControl::new()?);
        let gate = Arc::new(VcpuGate::new(config.vcpus, control.clone()));
        let debug = Arc::new(DebugController::new(
            caps,
            config.policy,
            config.vcpus,
            control.clone(),
            gate.clone(),
        ));
        if !config.debug_attached {
            debug.detach();
        }
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK)?;
        vm_fd
            .register_irqfd(&serial_irq, COM1_GSI)
            .map_err(kvm_err("KVM_IRQFD (COM1)"))?;
        let (out, stdin): (Box<dyn Write + Send>, bool) = match config.console {
            Console::Stdio => (
                Box::new(GuestConsole::new(
                    std::io::stdout(),
                    ConsoleLines::stdio().clone(),
                )),
                true,
            ),
            Console::Writer(w) => (w, false),
        };
        let serial = Arc::new(Mutex::new(SerialConsole::new(serial_irq, out, stdin)?));
        let mut bus = PioBus::default();
        bus.insert(COM1_BASE, 8, serial.clone());
        bus.insert(
            EXIT_PORT,
            EXIT_PORTS,
            Arc::new(Mutex::new(ExitPort::new(
                control.clone(),
                config.exit_status,
            ))),
        );
        let host_signal = Arc::new(HostSignal::default());
        bus.insert(
            HOST_SIGNAL_PORT,
            1,
            Arc::new(Mutex::new(HostSignalPort(host_signal.clone()))),
        );
        bus.insert(
            FW_CFG_PORT,
            FW_CFG_PORTS,
            Arc::new(Mutex::new(FwCfg::new(
                boot::ram_size(&mem),
                config.vcpus as u16,
            ))),
        );

        // pc-testdev, as kvm-unit-tests' runner configures QEMU: its scratch port, and its MMIO
        // RAM where no guest RAM is (it would shadow RAM otherwise).
        bus.insert(
            TESTDEV_PORT,
            TESTDEV_PORTS,
            Arc::new(Mutex::new(TestDevPort::with_flush(Arc::new(
                MprotectFlush(mem.clone()),
            )))),
        );
        bus.insert(
            IRQ_LINE_PORT,
            IRQ_LINE_PORTS,
            Arc::new(Mutex::new(TestDevIrqLines::new(vm_fd.clone()))),
        );
        // The PC's clock, which Linux reads at boot (and waits for where there is none), with
        // its IRQ 8 for the alarm and update interrupts.
        let rtc_irq = EventFd::new(libc::EFD_NONBLOCK)?;
        vm_fd
            .register_irqfd(&rtc_irq, RTC_GSI)
            .map_err(kvm_err("KVM_IRQFD (the RTC's IRQ 8)"))?;
        let rtc_signal = Arc::new(AlarmSignal::default());
        let rtc = Arc::new(Mutex::new(
            CmosRtc::new(Box::new(HostClock)).with_irq(rtc_irq, rtc_signal.clone()),
        ));
        bus.insert(CMOS_PORT, CMOS_PORTS, rtc.clone());
        let sleep = facs.map(|facs| {
            let events = Arc::new(Pm1Events::default());
            let sleep = Arc::new(SleepControl::new(
                gate.clone(),
                control.clone(),
                events.clone(),
                mem.clone(),
                facs,
            ));
            (events, sleep)
        });
        if let Some((events, sleep)) = &sleep {
            // The FADT's fixed hardware: PM1 event and control registers, and the PM timer.
            let sleeper: Arc<dyn Sleeper> = sleep.clone();
            bus.insert(
                PM1_EVT_PORT,
                PM1_PORTS,
                Arc::new(Mutex::new(Pm1Registers::new(events.clone(), Some(sleeper)))),
            );
            bus.insert(
                PM_TIMER_PORT,
                PM_TIMER_PORTS,
                Arc::new(Mutex::new(PmTimer::default())),
            );
        }
        let mut mmio = MmioBus::default();
        if !vm_memory::GuestMemoryBackend::address_in_range(
            &mem,
            vm_memory::GuestAddress(IOMEM_BASE),
        ) {
            mmio.insert(
                IOMEM_BASE,
                IOMEM_LEN,
                Arc::new(Mutex::new(TestDevIomem::default())),
            );
        }

        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let hidden = match (config.cpuid, &probe) {
            (cpu::CpuidMode::Host, _) => Vec::new(),
            (cpu::CpuidMode::Filtered, Some(report)) => report.unusable_features(),
            // Cached answers cost nothing; without a cache only the instruction rows run.
            (cpu::CpuidMode::Filtered, None) if cache.is_some() => ask_probe()?.unusable_features(),
            (cpu::CpuidMode::Filtered, None) => {
                probe::unusable_features(&kvm).map_err(kvm_err("the host probe"))?
            }
        };
        let filtered = cpu::with_hypervisor_leaves(&cpu::hide_features(&supported, &hidden));
        let filtered = match config.cpu_vendor {
            Some(vendor) => vendor.apply(&filtered),
            None => filtered,
        };
        let filtered = config.cpu_model.shape(&filtered, &config.cpu_features);
        let cpu::Applied {
            cpuid: supported,
            also_hidden: cpu_features_also_hidden,
        } = config.cpu_features.apply(&supported, &filtered)?;
        let count = config.vcpus as u8;
        // With KVM_CAP_SYNC_REGS, KVM copies the general registers into kvm_run at every exit,
        // so a hit's context costs no KVM_GET_REGS (about 6 us per ioctl on our hosts).
        // Registers, system registers and events all arrive with the exit (mask 7), or none.
        let sync_regs = kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs) & 7 == 7;
        let mcg_cap = cpu::mce::supported(&kvm).and_then(cpu::mce::mcg_cap);
        let host_msrs = kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
        let mut vcpus = Vec::with_capacity(config.vcpus);
        let mut boot_paging = Vec::new();
        for index in 0..count {
            let fd = vm_fd
                .create_vcpu(u64::from(index))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            fd.set_cpuid2(&cpu::per_vcpu_cpuid(&supported, index, count))
                .map_err(kvm_err("KVM_SET_CPUID2"))?;
            if let Some(cap) = mcg_cap {
                cpu::mce::setup(&fd, cap).map_err(kvm_err("KVM_X86_SETUP_MCE"))?;
            }
            cpu::lapic::setup(&fd)
                .map_err(kvm_err("KVM_GET_LAPIC/KVM_SET_LAPIC (LINT0, LINT1)"))?;
            // What a wake from S3 resets the vCPU to: only a VM with ACPI can sleep.
            let power_on = match &sleep {
                Some(_) => Some(cpu::power_on::PowerOn::capture(&fd).map_err(kvm_err(
                    "KVM_GET_REGS/SREGS/FPU/LAPIC/VCPU_EVENTS (the power-on state)",
                ))?),
                None => None,
            };
            cpu::msrs::setup(&fd, host_msrs.as_slice())?;
            start_state(&fd, &mem, &entry, index)?;
            if sync_regs {
                boot_paging.push((index, fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?));
            }
            let mut vcpu = Vcpu::new(index.into(), fd, sync_regs);
            vcpu.power_on = power_on;
            vcpus.push(vcpu);
        }

        // Guest RAM becomes memslots last (see EarlyVm), through the watch engine, which
        // owns the layout from here.
        let watch = Arc::new(PageWatchEngine::install(
            vm_fd.clone(),
            mem.clone(),
            gate.clone(),
            debug.clone(),
            max_slots,
            config.kernel.executable_ranges(),
        )?);
        for (index, boot) in &boot_paging {
            // Guest-virtual addresses translate with the vCPU's paging registers, from its
            // boot state until its first exit brings the live ones (see watch::paging).
            watch.note_paging((*index).into(), &boot.into());
        }
        // Where the VMM cannot walk the tables (KVM does not sync the system registers with
        // every exit, or the guest pages in 32-bit or PAE mode), translations go through
        // KVM_TRANSLATE on vCPU 0 instead, with the vCPUs out of the guest.
        if let Some(first) = vcpus.first() {
            watch.set_translator(Translator::new(&first.fd)?);
        }
        if let (Some(fault), Some(first)) = (config.inject_fault, vcpus.first_mut()) {
            first.fail_first_entry = fault.apply(&mut first.fd);
            first.forbidden_call = fault == InjectedFault::ForbiddenCall;
        }
        let pages = Arc::downgrade(&watch);
        debug.on_change(Arc::new(move |plan| {
            if let Some(pages) = pages.upgrade() {
                pages.migrations.follow(plan, &pages);
            }
        }));
        // Never silent: a guest slot placed late is an event every client sees.
        let events = Arc::new(EventBus::new());
        let published = Arc::downgrade(&events);
        debug.on_late_guest_slot(Arc::new(move |late| {
            if let Some(bus) = published.upgrade() {
                bus.publish(Event::GuestDrLate(late_event(late)));
            }
        }));
        let parked = Arc::new(ParkedRegs::new(config.vcpus, control.clone()));
        let shared = Arc::new(VcpuShared {
            bus,
            mmio,
            control,
            mem,
            unknown_access: UnknownAccessPolicy {
                strict_ports: config.strict_ports,
            },
            debug: debug.clone(),
            debug_attached: config.debug_attached,
            gate,
            watch: watch.clone(),
            parked,
            sleep: sleep.map(|(_, sleep)| sleep),
        });
        Ok(Vm {
            _kvm: kvm,
            _vm_fd: vm_fd,
            vcpus,
            shared,
            serial,
            entry,
            debug,
            watch,
            host_signal,
            events,
            rtc,
            rtc_signal,
            probe,
            cpu_features_also_hidden,
            guest_dr_resync: config.guest_dr_resync,
        })
    }
}

/// Boot state for vCPU `index`.
///
/// The boot vCPU (index 0, KVM's default BSP) starts at the entry in the state its protocol
/// requires. The others are put, explicitly, in `KVM_MP_STATE_UNINITIALIZED`, KVM's power-on
/// state for an AP with the in-kernel LAPIC: KVM_RUN waits in the kernel until the guest's
/// INIT and SIPI, which start the AP in real mode at the SIPI vector, as on hardware. This holds
/// for every format: PVH, multiboot and Linux all bring up their APs this way.
fn start_state(
    fd: &kvm_ioctls::VcpuFd,
    mem: &GuestMemoryMmap,
    entry: &Entry,
    index: u8,
) -> Result<(), Error> {
    if index == 0 {
        cpu::configure(fd, mem, entry)?;
    } else {
        let waiting = kvm_bindings::kvm_mp_state {
            mp_state: kvm_bindings::KVM_MP_STATE_UNINITIALIZED,
        };
        fd.set_mp_state(waiting)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
    }
    Ok(())
}

/// An accessor of the engine's parts: public only with the `internals` feature (the crate's own
/// tests and benchmarks); clients go through [`crate::control::Session`].
macro_rules! internal {
    ($(#[$doc:meta])* fn $name:ident(&$self:ident) -> $ty:ty $body:block) => {
        $(#[$doc])*
        #[cfg(feature = "internals")]
        pub fn $name(&$self) -> $ty $body

        $(#[$doc])*
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code)]
        pub(crate) fn $name(&$self) -> $ty $body
    };
}

impl Vm {
    /// How the boot vCPU starts.
    pub fn entry(&self) -> Entry {
        self.entry
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.shared.mem
    }

    internal! {
        /// The debug controller: add and remove host breakpoints, before or during the run.
        fn debug(&self) -> &Arc<DebugController> {
            &self.debug
        }
    }

    internal! {
        /// The page-protection watch engine: watches of any length and number.
        fn watch(&self) -> &Arc<PageWatchEngine> {
            &self.watch
        }
    }

    /// The host's signal to the guest (port 0x520), for guests that wait for the host.
    pub fn host_signal(&self) -> &Arc<HostSignal> {
        &self.host_signal
    }

    /// The event bus: hit callbacks publish here, and each client (the `--events` writer, later
    /// the REST stream, gdb, the CI collector) reads it through a bounded view of its own.
    pub fn events(&self) -> &Arc<EventBus<Event>> {
        &self.events
    }

    /// The run's shared control, to end it from outside.
    pub fn run_control(&self) -> &Arc<RunControl> {
        &self.shared.control
    }

    /// The features the guest would have seen that its CPUID leaves out only because they
    /// need one that [`VmConfig::cpu_features`] hides.
    pub fn cpu_features_also_hidden(&self) -> &[&'static str] {
        &self.cpu_features_also_hidden
    }

    /// What the host probe measured, unless the capabilities were given.
    pub fn probe(&self) -> Option<&probe::ProbeReport> {
        self.probe.as_ref()
    }

    internal! {
        /// The registers of paused vCPUs.
        fn parked(&self) -> &Arc<ParkedRegs> {
            &self.shared.parked
        }
    }

    internal! {
        /// The vCPUs' entry gate: pause, resume, quiesce.
        fn gate(&self) -> &Arc<VcpuGate> {
            &self.shared.gate
        }
    }

    internal! {
        /// The vCPUs, before the run starts.
        fn vcpus(&self) -> &[Vcpu] {
            &self.vcpus
        }
    }

    /// Runs every vCPU on its own thread and the event loop on this one, until the run ends.
    pub fn run(self) -> Result<Outcome, Error> {
        let Vm {
            vcpus,
            shared,
            serial,
            _kvm,
            _vm_fd,
            debug,
            guest_dr_resync,
            rtc,
            rtc_signal,
            ..
        } = self;
        let done = shared.control.done_evt.try_clone()?;
        let mapping_timer = shared.watch.spawn_mapping_timer(shared.control.clone())?;
        let sleep = shared.sleep.clone();
        let rtc_timer = spawn_rtc_timer(
            rtc,
            rtc_signal.clone(),
            Box::new(move || {
                if let Some(sleep) = &sleep {
                    sleep.wake(WakeEvent::RtcAlarm);
                }
            }),
        )?;
        let caps = debug.caps();
        let resync_timer = if !guest_dr_resync.is_zero()
            && shared.debug_attached
            && !caps.gd_trap
            && !caps.guest_breakpoints_native
        {
            Some(debug.spawn_resync_timer(guest_dr_resync)?)
        } else {
            None
        };
        let mut threads = Vec::with_capacity(vcpus.len());
        for vcpu in vcpus {
            let shared = shared.clone();
            let name = format!("vcpu{}", vcpu.index);
            threads.push(std::thread::Builder::new().name(name).spawn(move || {
                crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Vcpu);
                if vcpu.forbidden_call {
                    crate::fault_injection::make_a_forbidden_call();
                }
                let index = vcpu.index;
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vcpu.run(&shared)));
                result.unwrap_or_else(|_| {
                    shared.control.finish(Outcome::VmmError {
                        vcpu: Some(index),
                        message: "the vCPU thread panicked".into(),
                    });
                    None
                })
            })?);
        }
        // Every long-lived thread is started: the main thread's own filter goes last (a thread
        // it started after would inherit it).
        crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Main);
        let console: Subscriber = serial.clone();
        let looped = event_loop::run_until_done(done, vec![console]);
        if looped.is_err() {
            shared.control.finish(Outcome::VmmError {
                vcpu: None,
                message: "the event loop failed".into(),
            });
        }
        let stopped_at: Vec<Option<u64>> = threads
            .into_iter()
            .map(|t| t.join().ok().flatten())
            .collect();
        let _ = mapping_timer.join();
        rtc_signal.stop();
        let _ = rtc_timer.join();
        if let Some(t) = resync_timer {
            let _ = t.join();
        }
        serial.lock().unwrap_or_else(|e| e.into_inner()).flush();
        looped?;
        let mut outcome = shared.control.outcome().unwrap_or(Outcome::VmmError {
            vcpu: None,
            message: "the run ended without an outcome".into(),
        });
        if let Outcome::Signalled { stopped_at: at, .. } = &mut outcome {
            *at = stopped_at;
        }
        Ok(outcome)
    }
}

/// The wire form of a late guest slot.
fn late_event(late: &crate::debug::LateGuestSlot) -> crate::events::GuestDrLate {
    use drvisor_debug::DrKind;
    crate::events::GuestDrLate {
        event: drvisor_api::EventName::GuestDrLate,
        vcpu: late.vcpu as u32,
        slot: late.slot.number(),
        addr: late.addr,
        kind: match late.kind {
            DrKind::Exec => drvisor_api::BreakKind::Exec,
            DrKind::Write => drvisor_api::BreakKind::Write,
            _ => drvisor_api::BreakKind::ReadWrite,
        },
        len: late.len,
        unseen_us: u64::try_from(late.unseen.as_micros()).unwrap_or(u64::MAX),
    }
}
