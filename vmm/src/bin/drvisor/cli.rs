//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use drvisor::cpu::CpuidMode;
use drvisor::watch::EngineChoice;
use drvisor_api::HitAction;
use drvisor_debug::Policy;

/// drvisor: a KVM micro-VMM that virtualizes the guest's x86 debug registers.
#[derive(Debug, Parser)]
#[command(name = "drvisor", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel (by default the embedded test guest) and run it to completion.
    Run(Box<RunArgs>),
    /// Probe which guest-debug mechanisms this host's KVM delivers.
    Probe {
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
        /// Run the experiments again instead of reading this host's cached answers (which are
        /// replaced).
        #[arg(long)]
        refresh: bool,
    },
    /// Drive a running `drvisor run --api-sock PATH` over its REST control plane.
    Ctl(Box<drvisor_api::ctl::CtlArgs>),
    /// Run spec files (TOML) as a CI suite: JUnit XML, a JSON report, an exit code.
    Ci(Box<crate::ci::CiArgs>),
    /// Turn a run's events file (`--events`) into the Trace Event Format that Perfetto
    /// (ui.perfetto.dev) and chrome://tracing open: a track per vCPU with its hits, and the
    /// VM's pauses and plan changes.
    Trace {
        /// The events file `drvisor run --events FILE` wrote.
        #[arg(value_name = "EVENTS.jsonl")]
        events: PathBuf,
        /// Where to write the trace (default: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Look symbols up as `drvisor run` would, without booting: prints `ADDRESS SYMBOL` for
    /// each (from --symbols, else the kernel's own: its ELF symbol table or its kallsyms).
    Symbols(Box<SymbolsArgs>),
    /// Write the embedded test guest's ELF (with its symbols) to a file, for gdb or for
    /// `drvisor run --kernel`.
    GuestImage {
        /// The file to write (created or replaced).
        #[arg(long, value_name = "FILE")]
        write: PathBuf,
    },
}

/// `drvisor symbols`.
#[derive(Debug, Args)]
pub struct SymbolsArgs {
    /// The kernel whose symbols to read (a bzImage or an ELF).
    #[arg(long)]
    pub kernel: PathBuf,
    /// A System.map to resolve symbols with (default: the kernel's own).
    #[arg(long)]
    pub symbols: Option<PathBuf>,
    /// Each symbol to look up, as `--break` takes it (`NAME`, `NAME@ADDRESS`, `NAME+OFFSET`).
    #[arg(required = true, value_name = "SYMBOL")]
    pub names: Vec<String>,
}

/// `drvisor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel to boot: an ELF32/ELF64 with a PVH note, a multiboot image, or a Linux bzImage.
    /// Default: the embedded test guest.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk: a bzImage's, or module 0 of a PVH or multiboot kernel (a regular file
    /// that fits in guest RAM).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// A boot module for a PVH or multiboot kernel, with its own command line (repeatable;
    /// after the --initrd, in order).
    #[arg(long = "module", value_name = "FILE[,CMDLINE]")]
    pub modules: Vec<String>,
    /// How the value written to the exit port 0xf4 becomes the exit status: `raw` passes it
    /// through, `qemu` returns (value << 1) | 1 as QEMU's isa-debug-exit does.
    #[arg(long, default_value = "raw", value_name = "raw|qemu")]
    pub exit_status: String,
    /// Extra kernel command line (may not repeat `scenario=` from --scenario, nor `ncpus=` for
    /// the embedded guest). It may begin with `-` (`--cmdline -x`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub cmdline: String,
    /// Number of vCPUs (1 to what KVM allows; 1 to 32 with the embedded test guest).
    #[arg(long, default_value_t = 1)]
    pub vcpus: usize,
    /// Guest RAM in MiB (2 to 1048576).
    #[arg(long, default_value_t = 64)]
    pub mem: u64,
    /// Test-guest scenario to run (adds `scenario=NAME` to the command line).
    #[arg(long)]
    pub scenario: Option<String>,
    /// End the run when the guest touches a port no device owns (default: log it once, go on).
    #[arg(long)]
    pub strict_ports: bool,
    /// Host exec breakpoint at a symbol or address (repeatable). `--vcpu` and `--action` after it
    /// apply to it.
    #[arg(long = "break", value_name = "SYMBOL|ADDR")]
    pub breaks: Vec<String>,
    /// Host watchpoint: `[phys:]SYMBOL|ADDR[:w|r|rw][:LEN]` (repeatable; each part at most once;
    /// default `w`, LEN in bytes, 0x hex or decimal, default the symbol's size). Addresses are
    /// guest-virtual unless prefixed with `phys:`.
    #[arg(long = "watch", value_name = "[phys:]SYMBOL|ADDR[:w|r|rw][:LEN]")]
    pub watches: Vec<String>,
    /// Engine for the preceding --watch: hardware slots, page protection, or auto (default:
    /// hardware only where this host delivers it and the range fits a free slot).
    #[arg(long = "engine", value_name = "ENGINE")]
    pub engines: Vec<EngineArg>,
    /// Only this vCPU, for the preceding --break or --watch (default: every vCPU).
    #[arg(long = "vcpu", value_name = "N")]
    pub vcpus_of: Vec<u32>,
    /// What a hit of the preceding --break or --watch does (default: continue).
    #[arg(long = "action", value_name = "ACTION")]
    pub actions: Vec<ActionArg>,
    /// Record BYTES of the stack from RSP (1 to 4096) in each hit event of the preceding
    /// --break or --watch, read through the guest's page tables.
    #[arg(long = "capture", value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1..=drvisor::control::snippet::MAX_CAPTURE as i64))]
    pub captures: Vec<u16>,
    /// Report and act on the preceding --break or --watch only at hits where EXPR holds, e.g.
    /// 'hits % 10 == 0', 'rdi == 3', '*(u32 *)(rsp + 8) != 0' (evaluated in the VMM at the
    /// hit; the grammar is in docs/conditions.md).
    #[arg(long = "if", value_name = "EXPR", allow_hyphen_values = true)]
    pub conditions: Vec<String>,
    /// Who wins when host and guest breakpoints cannot both fit in the four slots.
    #[arg(long, default_value = "host-first", value_name = "POLICY")]
    pub policy: PolicyArg,
    /// The guest's CPUID: `filtered` leaves out the CPU features the host probe found the
    /// guest's kernel cannot use here (`drvisor probe` lists them), `host` passes
    /// KVM_GET_SUPPORTED_CPUID through unchanged.
    #[arg(long, default_value = "filtered", value_name = "filtered|host")]
    pub cpuid: CpuidArg,
    /// The CPU the guest is shown: `host` (the host's, as KVM offers it) or `qemu64` (QEMU's
    /// `-cpu qemu64` under KVM: family 15 model 107, SSE3, CX16, x2APIC, nothing newer; what
    /// this host lacks stays absent). `--cpu-features` edits it.
    #[arg(long = "cpu-model", default_value = "host", value_name = "host|qemu64")]
    pub cpu_model: CpuModelArg,
    /// The CPU vendor string the guest is shown, 12 characters (`GenuineIntel`,
    /// `AuthenticAMD`), as QEMU's `-cpu ...,vendor=`; default: the host's.
    #[arg(long = "cpu-vendor", value_name = "VENDOR")]
    pub cpu_vendor: Option<drvisor::cpu::CpuVendor>,
    /// CPU features to hide from the guest's CPUID or require in it, QEMU's `-cpu` way:
    /// `-x2apic,-avx512f,+tsc-deadline` (repeatable). Hiding a feature hides what needs it
    /// (-xsave takes AVX along, -avx AVX2 and AVX-512); a required one this host's KVM cannot
    /// give is refused. The names are in docs/cli.md.
    #[arg(
        long = "cpu-features",
        value_name = "[+-]NAME,...",
        allow_hyphen_values = true
    )]
    pub cpu_features: Vec<String>,
    /// ACPI tables for the guest (RSDP in the BIOS area, XSDT, FADT, FACS, DSDT, MADT) and the
    /// ACPI PM timer and PM1 registers at ports 0x600-0x60b; `off` leaves the MP table as the
    /// only description of the machine.
    #[arg(long, default_value = "on", value_name = "on|off")]
    pub acpi: AcpiArg,
    /// The in-kernel 8254 PIT at ports 0x40-0x43 and 0x61. Default: on with --kernel, off for
    /// the embedded test guest, which never touches it (its teardown is most of a short run's
    /// end). `on` or `off` overrides.
    #[arg(long, value_name = "on|off")]
    pub pit: Option<PitArg>,
    /// Where the host cannot show drvisor the guest's own debug-register writes in time (SVM),
    /// a vCPU running host breakpoints with no exit for this many microseconds is kicked out
    /// so they are read and placed (each one found late is a `guest-dr-late` event). 0: never
    /// kicked, the writes are seen at the vCPU's own exits only.
    #[arg(long, default_value_t = 1000, value_name = "US")]
    pub guest_dr_resync_us: u64,
    /// Print each vCPU's slot plan, to stderr, whenever it changes.
    #[arg(long)]
    pub show_plan: bool,
    /// seccomp filters, one per kind of thread (docs/security.md): `enforce` ends the run,
    /// reported, at a system call outside a thread's list; `log` lets it through and the
    /// kernel logs it; `none` installs none (for debugging drvisor).
    #[arg(long, default_value = "enforce", value_name = "enforce|log|none")]
    pub seccomp: SeccompArg,
    /// Leave out the summary a run ends with (each breakpoint's engine, state and hits, the
    /// page traps, the guest's status); the JSON events are written all the same.
    #[arg(long)]
    pub quiet: bool,
    /// Write hit events (JSON lines) to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// A System.map to resolve symbols with (default: the kernel ELF's symbol table).
    #[arg(long, value_name = "FILE")]
    pub symbols: Option<PathBuf>,
    /// Serve the REST control plane (HTTP/1.1) on this Unix socket, created with mode 0600 and
    /// removed at exit (`drvisor ctl --sock PATH` drives it).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Also serve it on TCP, loopback only (needs --api-token-file).
    #[arg(long, value_name = "127.0.0.1:PORT", requires = "api_token_file")]
    pub api_tcp: Option<std::net::SocketAddr>,
    /// The bearer token TCP clients must send (`Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "FILE", requires = "api_tcp")]
    pub api_token_file: Option<PathBuf>,
    /// Serve gdb's remote protocol: `tcp:127.0.0.1:PORT` (loopback only) or `unix:PATH`
    /// (`target remote :PORT` in gdb). gdb's breakpoints share the slots with everyone else's.
    #[arg(long, value_name = "tcp:ADDR|unix:PATH")]
    pub gdb: Option<String>,
    /// Keep every vCPU out of the guest until gdb attaches and continues.
    #[arg(long, requires = "gdb")]
    pub gdb_wait: bool,
    /// Keep every vCPU out of the guest until the first resume (`PUT /vm/state`, `drvisor ctl
    /// resume` or SIGUSR1), so breakpoints can be set before the first instruction.
    #[arg(long)]
    pub paused: bool,
}

/// `--acpi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcpiArg {
    /// ACPI tables and the PM registers.
    On,
    /// Neither: the MP table only.
    Off,
}

/// `--pit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PitArg {
    /// The PIT, with a dummy speaker.
    On,
    /// No PIT: accesses to its ports are unowned.
    Off,
}

impl RunArgs {
    /// Whether the guest gets a PIT: as asked, else only a kernel of the user's own does.
    pub fn pit(&self) -> bool {
        self.pit.map_or(self.kernel.is_some(), |p| p == PitArg::On)
    }
}

/// `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// A hardware debug-register slot.
    Hw,
    /// Page protection.
    Page,
    /// Hardware where this host delivers it and a slot is free, else page protection.
    Auto,
}

impl From<EngineArg> for EngineChoice {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Hw => EngineChoice::Hw,
            EngineArg::Page => EngineChoice::Page,
            EngineArg::Auto => EngineChoice::Auto,
        }
    }
}

/// `--action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// Report the hit and go on.
    Continue,
    /// Report the hit and pause every vCPU until resumed (the REST plane, or SIGUSR1).
    Pause,
    /// Report the hit and end the run (exit code 74).
    Stop,
}

impl From<ActionArg> for HitAction {
    fn from(a: ActionArg) -> Self {
        match a {
            ActionArg::Continue => HitAction::Continue,
            ActionArg::Pause => HitAction::Pause,
            ActionArg::Stop => HitAction::Stop,
        }
    }
}

/// `--seccomp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SeccompArg {
    /// End the run at a forbidden system call, with the thread and the call.
    Enforce,
    /// Let it through; the kernel logs it.
    Log,
    /// No filters.
    None,
}

impl From<SeccompArg> for drvisor::seccomp::Mode {
    fn from(a: SeccompArg) -> Self {
        match a {
            SeccompArg::Enforce => drvisor::seccomp::Mode::Enforce,
            SeccompArg::Log => drvisor::seccomp::Mode::Log,
            SeccompArg::None => drvisor::seccomp::Mode::None,
        }
    }
}

/// `--policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Host breakpoints win; the guest's surplus slots wait.
    HostFirst,
    /// The guest's slots win; the host's surplus waits.
    GuestFirst,
    /// A host breakpoint that would take a slot the guest uses is refused.
    Deny,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::HostFirst => Policy::HostFirst,
            PolicyArg::GuestFirst => Policy::GuestFirst,
            PolicyArg::Deny => Policy::Deny,
        }
    }
}

/// `--cpu-model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CpuModelArg {
    /// The host's CPU.
    Host,
    /// QEMU's `qemu64`.
    Qemu64,
}

impl From<CpuModelArg> for drvisor::cpu::CpuModel {
    fn from(m: CpuModelArg) -> Self {
        match m {
            CpuModelArg::Host => drvisor::cpu::CpuModel::Host,
            CpuModelArg::Qemu64 => drvisor::cpu::CpuModel::Qemu64,
        }
    }
}

/// `--cpuid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CpuidArg {
    /// KVM's list less what the guest cannot run here.
    Filtered,
    /// KVM's list as it is.
    Host,
}

impl From<CpuidArg> for CpuidMode {
    fn from(c: CpuidArg) -> Self {
        match c {
            CpuidArg::Filtered => CpuidMode::Filtered,
            CpuidArg::Host => CpuidMode::Host,
        }
    }
}
