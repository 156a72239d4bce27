//! The `drvisor` command.

mod arm;
mod cli;
mod events_out;
mod requests;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use drvisor::boot::KernelImage;
use drvisor::debug::{plan_view, DebugController};
use drvisor::symbols::SymbolTable;
use drvisor::{exit_code, guest_image, probe, Console, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_debug::Policy;

use cli::{Cli, Command, RunArgs};

/// A one-line error and the exit code it ends the process with.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit_code::USAGE,
            message: message.into(),
        }
    }

    fn vmm(message: impl Into<String>) -> Self {
        Failure {
            code: exit_code::VMM_ERROR,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DRVISOR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Run(args) => run(*args, &matches),
        Command::Probe { json } => probe_host(json),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            say(&f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(args: RunArgs, matches: &clap::ArgMatches) -> Result<u8, Failure> {
    let kernel = match &args.kernel {
        None => guest_image::kernel(),
        Some(path) => KernelImage::from_file(path)
            .map_err(|e| Failure::usage(format!("cannot read kernel {}: {e}", path.display())))?
            .map_err(|e| Failure::usage(e.to_string()))?,
    };
    let initrd =
        match &args.initrd {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Failure::usage(format!("cannot read initrd {}: {e}", path.display()))
            })?),
        };
    let policy: Policy = args
        .policy
        .parse()
        .map_err(|e| Failure::usage(format!("--policy: {e}")))?;
    let symbols = symbol_table(&args, &kernel)?;
    let flags = requests::Flags {
        breaks: &args.breaks,
        watches: &args.watches,
        vcpus: &args.vcpus_of,
        actions: &args.actions,
        engines: &args.engines,
    };
    let requests = requests::from_matches(matches, flags, &symbols).map_err(Failure::usage)?;
    let sink = events_out::open(args.events.as_deref())?;

    let mut config = VmConfig::new(kernel, command_line(&args)?);
    config.initrd = initrd;
    config.vcpus = args.vcpus;
    config.mem_mib = args.mem;
    config.console = Console::Stdio;
    config.strict_ports = args.strict_ports;
    config.policy = policy;
    let vm = Vm::try_from(config).map_err(vm_failure)?;
    let events = events_out::EventsOut::start(sink, vm.events().clone(), vm.run_control().clone())?;

    let ctl = vm.debug().clone();
    if args.show_plan {
        ctl.observe_plan(Arc::new(|plan, labels| {
            eprint!("drvisor: {}", plan_view::describe(plan, labels));
        }));
    }
    let mut pausing = false;
    for r in &requests {
        pausing |= r.action == HitAction::Pause;
        let (id, engine) =
            arm::arm(r, events.report_and(r.action), &ctl, vm.watch()).map_err(Failure::usage)?;
        tracing::info!("{} armed as #{} on the {engine} engine", r.label, id.0);
    }
    if args.show_plan && !vm.watch().states().is_empty() {
        eprint!(
            "drvisor: {}",
            plan_view::describe_page_watches(&vm.watch().states())
        );
    }
    if pausing {
        resume_on_sigusr1(ctl.clone())?;
    }

    let pages = vm.watch().clone();
    let outcome = vm.run().map_err(vm_failure)?;
    if !pages.states().is_empty() {
        let (traps, false_traps) = pages.trap_counts();
        events.page_traps(traps, false_traps);
    }
    let outcome = events.finish(outcome);
    if args.show_plan {
        let r = ctl.resumes();
        if r != Default::default() {
            say(&format!(
                "exec breakpoints resumed: emulated={} stepped={} rf={}",
                r.emulated, r.stepped, r.rf
            ));
        }
    }
    if !matches!(outcome, drvisor::Outcome::GuestExit { .. }) {
        say(&outcome.to_string());
    }
    Ok(outcome.exit_code())
}

/// One line on stderr. A stderr that cannot be written (a closed pipe) is not a reason to
/// panic: the exit code still says what happened.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "drvisor: {message}");
}

/// A paused VM resumes when the process receives SIGUSR1 (`kill -USR1 <pid>`).
fn resume_on_sigusr1(ctl: Arc<DebugController>) -> Result<(), Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])
        .map_err(|e| Failure::vmm(format!("cannot watch SIGUSR1: {e}")))?;
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if ctl.is_paused() {
                eprintln!("drvisor: resuming (SIGUSR1)");
                ctl.resume();
            }
        }
    });
    Ok(())
}

fn symbol_table(args: &RunArgs, kernel: &KernelImage) -> Result<SymbolTable, Failure> {
    match &args.symbols {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::usage(format!("cannot read --symbols {}: {e}", path.display()))
            })?;
            SymbolTable::from_system_map(&text, &path.display().to_string())
                .map_err(|e| Failure::usage(e.to_string()))
        }
        None => Ok(SymbolTable::from_elf(kernel.bytes())),
    }
}

/// The kernel command line: the scenario, the vCPU count for the test guest, and the user's.
fn command_line(args: &RunArgs) -> Result<String, Failure> {
    let mut parts = Vec::new();
    if let Some(scenario) = &args.scenario {
        if args.kernel.is_none() && !guest_image::SCENARIOS.contains(&scenario.as_str()) {
            return Err(Failure::usage(format!(
                "unknown scenario `{scenario}`; the embedded guest knows: {}",
                guest_image::SCENARIOS.join(", ")
            )));
        }
        parts.push(format!("scenario={scenario}"));
    }
    if args.kernel.is_none() {
        parts.push(format!("ncpus={}", args.vcpus));
    }
    if !args.cmdline.is_empty() {
        parts.push(args.cmdline.clone());
    }
    Ok(parts.join(" "))
}

fn vm_failure(e: drvisor::vm::Error) -> Failure {
    Failure {
        code: if e.is_usage() {
            exit_code::USAGE
        } else {
            exit_code::VMM_ERROR
        },
        message: e.to_string(),
    }
}

fn probe_host(json: bool) -> Result<u8, Failure> {
    let kvm = kvm_ioctls::Kvm::new().map_err(|e| {
        Failure::usage(format!(
            "cannot open /dev/kvm: {e}; drvisor needs read/write access to it"
        ))
    })?;
    let report =
        probe::run_all(&kvm).map_err(|e| Failure::vmm(format!("the probe VM failed: {e}")))?;
    if json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Failure::vmm(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(0)
}
