//! The `drvisor` command.

mod announce;
mod api_server;
mod arm;
mod boot_flags;
mod ci;
mod cli;
#[cfg(test)]
mod cli_tests;
mod cmdline;
mod events_out;
mod inputs;
mod requests;
mod signals;
mod summary;
mod symbols_cmd;
mod trace;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, ValueEnum};
use drvisor::control::{Facts, Session};
use drvisor::debug::plan_view;
use drvisor::quote::cut;
use drvisor::watch::Engine;
use drvisor::{exit_code, memory, probe, Console, Vm, VmConfig};
use drvisor_api::HitAction;
use drvisor_debug::{HostBpId, Policy};

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

    /// This failure's code as `--exit-status qemu` reports it (see
    /// [`exit_code::own_code_under_qemu`]).
    fn under_qemu(self) -> Self {
        Failure {
            code: exit_code::own_code_under_qemu(self.code),
            ..self
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
        .with_writer(drvisor::console_lines::MessageWriter::stdio)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = Cli::command()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (m, cli)));
    let (matches, cli) = match parsed {
        Ok(parsed) => parsed,
        Err(e)
            if e.use_stderr()
                && e.kind() != clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            announce::say(clap_error_line(&e, &argv));
            announce::flush();
            return ExitCode::from(exit_code::USAGE);
        }
        // --help and --version print to stdout and succeed.
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Run(args) => {
            // drvisor's own failures before the run are even under `--exit-status qemu` too.
            let qemu = args.exit_status == "qemu";
            run(*args, &matches).map_err(|f| if qemu { f.under_qemu() } else { f })
        }
        Command::Probe { json, refresh } => probe_host(json, refresh),
        Command::Ctl(args) => Ok(drvisor_api::ctl::run(*args)),
        Command::Ci(args) => Ok(ci::main(*args)),
        Command::Symbols(args) => symbols_cmd::run(&args),
        Command::GuestImage { write } => write_guest_image(&write),
        Command::Trace { events, output } => trace::write(&events, output.as_deref()),
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            announce::say(&f.message);
            f.code
        }
    };
    announce::flush();
    ExitCode::from(code)
}

/// `drvisor guest-image --write FILE`: the embedded test guest's ELF, for gdb's symbols or
/// `--kernel`. A path that cannot be written is the user's mistake (exit 2).
fn write_guest_image(path: &std::path::Path) -> Result<u8, Failure> {
    std::fs::write(path, drvisor::guest_image::ELF).map_err(|e| {
        Failure::usage(format!(
            "guest-image --write {}: {e}",
            cut(&path.display().to_string())
        ))
    })?;
    announce::say(format!(
        "wrote the test guest's ELF ({} bytes) to {}",
        drvisor::guest_image::ELF.len(),
        path.display()
    ));
    Ok(0)
}

/// clap's error as one line: its first line without the `error: ` prefix, with what it lists
/// below it (the missing arguments, the values to pick from), quoted input cut, and the
/// `--help` of the subcommand it is about (`drvisor ctl break add`): the one its usage names,
/// else (a bad value comes without usage) the last one `argv` names.
fn clap_error_line(e: &clap::Error, argv: &[std::ffi::OsString]) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // clap lists on indented lines of their own, up to a blank line, the missing arguments
    // (`  --sock <PATH>`) or the values to pick from (`  [possible values: hw, page, auto]`).
    let mut named = Vec::new();
    let mut choices = String::new();
    for line in lines.map(str::trim).take_while(|l| !l.is_empty()) {
        let listed = ["[possible values: ", "[subcommands: "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .and_then(|l| l.strip_suffix(']'));
        match listed {
            Some(values) => choices = format!("; use one of: {values}"),
            None if !line.starts_with('[') => named.push(line),
            None => {}
        }
    }
    let line = if named.is_empty() {
        first.to_owned()
    } else {
        format!("{first} {}", named.join(", "))
    };
    // `Usage: drvisor ctl --sock <PATH> <COMMAND>`: the words before the first flag or value.
    let command = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '<', '[']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| subcommand_path(argv));
    format!("{}{choices} (see {command} --help)", cut_quoted(&line))
}

/// The subcommand `argv` names, as `drvisor ctl break add`: the words that are subcommands,
/// each of the one before, skipping the values of the flags that take one.
fn subcommand_path(argv: &[std::ffi::OsString]) -> String {
    let mut root = Cli::command();
    root.build();
    let mut path = vec![root.get_name().to_owned()];
    let mut cmd = &root;
    let mut words = argv.iter().skip(1).filter_map(|w| w.to_str());
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if word.starts_with('-') {
            let arg = match word.strip_prefix("--") {
                Some(long) => cmd.get_arguments().find(|a| a.get_long() == Some(long)),
                None => match word.chars().skip(1).collect::<Vec<_>>()[..] {
                    [short] => cmd.get_arguments().find(|a| a.get_short() == Some(short)),
                    _ => None,
                },
            };
            if arg.is_some_and(|a| a.get_action().takes_values()) {
                words.next();
            }
        } else if let Some(sub) = cmd.find_subcommand(word) {
            path.push(sub.get_name().to_owned());
            cmd = sub;
        }
    }
    path.join(" ")
}

/// Cuts each `'...'` quoted value of a clap message, keeping its words.
fn cut_quoted(line: &str) -> String {
    line.split('\'')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                cut(part).into_owned()
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("'")
}

fn run(args: RunArgs, matches: &clap::ArgMatches) -> Result<u8, Failure> {
    // Before any thread starts: each installs its filter as it starts.
    drvisor::seccomp::set_mode(args.seccomp.into())
        .map_err(|e| Failure::vmm(format!("--seccomp: {e}")))?;
    // Checks of the flags alone come first: no file is opened before they pass.
    let ram_bytes = memory::size_of(args.mem)
        .map_err(|e| Failure::usage(format!("--mem {}: {e}", args.mem)))?;
    let policy: Policy = args.policy.into();
    let exit_status = args
        .exit_status
        .parse()
        .map_err(|e| Failure::usage(format!("--exit-status: {e}")))?;
    let cmdline = cmdline::command_line(&args)?;
    let cpu_features = cpu_features(&args.cpu_features)?;
    let flags = requests::Flags {
        breaks: &args.breaks,
        watches: &args.watches,
        vcpus: &args.vcpus_of,
        actions: &args.actions,
        engines: &args.engines,
        captures: &args.captures,
        conditions: &args.conditions,
    };
    let parsed = requests::parse(matches, flags).map_err(Failure::usage)?;
    let gdb = args
        .gdb
        .as_deref()
        .map(drvisor::gdb::parse_listen)
        .transpose()
        .map_err(|e| Failure::usage(format!("--gdb: {e}")))?;

    // The VM, its RAM and its irqchip now, before the files are read: destroying the VM at the
    // run's end waits for a grace period that the irqchip starts (drvisor::vm::EarlyVm). Its error
    // waits its turn, at the VM's build below, behind any error in the inputs.
    let early = drvisor::EarlyVm::create(drvisor::vm::Shape {
        vcpus: args.vcpus,
        mem_mib: args.mem,
        pit: args.pit(),
        memslot_limit: None,
    });
    let stopper =
        signals::install().map_err(|e| Failure::vmm(format!("cannot handle signals: {e}")))?;

    // Then the checks of the input files that need no content, then their content.
    let opened = inputs::open_all(&args, ram_bytes)?;
    let inputs::Inputs {
        kernel,
        initrd,
        modules,
        image,
    } = opened.read(&cmdline)?;
    let image = Arc::new(image);
    // Only breakpoints given here wait for the symbols before the VM starts.
    let requests = if parsed.is_empty() {
        Vec::new()
    } else {
        requests::resolve(parsed, &image.get().symbols).map_err(Failure::usage)?
    };
    let sink = events_out::open(args.events.as_deref())?;

    let mut config = VmConfig::new(kernel, cmdline);
    config.initrd = initrd;
    config.modules = modules;
    config.exit_status = exit_status;
    config.vcpus = args.vcpus;
    config.mem_mib = args.mem;
    config.console = Console::Stdio;
    config.strict_ports = args.strict_ports;
    config.policy = policy;
    config.cpuid = args.cpuid.into();
    config.cpu_features = cpu_features.clone();
    config.cpu_model = args.cpu_model.into();
    config.cpu_vendor = args.cpu_vendor;
    config.acpi = args.acpi == cli::AcpiArg::On;
    config.pit = args.pit();
    config.probe_cache = probe::cache::default_dir();
    config.guest_dr_resync = std::time::Duration::from_micros(args.guest_dr_resync_us);
    config.inject_fault = drvisor::fault_injection::InjectedFault::from_env()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let vm = early
        .and_then(|early| Vm::build(early, config))
        .map_err(vm_failure)?;
    announce_hidden_features(&vm, args.cpuid);
    if let Some(line) = announce::also_hidden(vm.cpu_features_also_hidden()) {
        announce::say(line);
    }
    warn_unhideable_features(&vm, &cpu_features, args.cpu_model.into());
    stopper.attach(vm.run_control().clone());
    let events = events_out::EventsOut::start(sink, vm.events().clone(), vm.run_control().clone())?;
    let facts = Facts {
        kernel: args.kernel.as_ref().map_or_else(
            || "embedded test guest".to_owned(),
            |k| k.display().to_string(),
        ),
        memory_mib: args.mem,
        policy: args
            .policy
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned()),
        vcpus: args.vcpus as u32,
    };
    let streaming = args.api_sock.is_some() || args.api_tcp.is_some();
    let session = Session::new(&vm, facts, image.clone(), streaming)
        .map_err(|e| Failure::vmm(format!("cannot start the event stream: {e}")))?;
    // A capturing hit's backtrace needs the ORC table, decoded at the first such hit; without
    // it the hit events say only which stack words point into code, and why there is no
    // backtrace (here in one line, where a breakpoint given here captures).
    if requests.iter().any(|r| r.capture > 0) {
        if let Some(why) = image.get().orc.missing() {
            announce::say(format!("hit events carry no backtrace: {why}"));
        }
    }
    if args.paused || args.gdb_wait {
        // No vCPU has run yet: the gate is closed before the first entry.
        session.pause_before_run(if args.paused {
            "--paused"
        } else {
            "--gdb-wait"
        });
    }

    if args.show_plan {
        let exec_note = session.caps().exec_note();
        session.observe_plan(Arc::new(move |plan, labels| {
            announce::say(plan_view::describe(plan, labels, exec_note));
        }));
    }
    let mut pausing = false;
    let mut labels = BTreeMap::new();
    let mut engines = BTreeMap::new();
    let notices = announce::PauseNotices::default();
    let told = notices.clone();
    session.observe_pauses(Box::new(move |paused, reason| {
        if let Some(line) = told.taken(reason).filter(|_| paused) {
            announce::say(line);
        }
    }));
    for r in &requests {
        pausing |= r.action == HitAction::Pause;
        let on_hit = notices.wrap(session.on_hit(r));
        let (id, engine) = arm::arm(&session, r, on_hit).map_err(Failure::usage)?;
        labels.insert(id.0, cut(&r.label).into_owned());
        engines.insert(id.0, (engine, matches!(r.what, requests::What::Break(_))));
    }
    // Each breakpoint's state once all are in: a later one can take no slot from an earlier.
    let states = plan_view::breakpoint_states(
        &session.plan(),
        &labels
            .iter()
            .map(|(&id, l)| (HostBpId(id), l.clone()))
            .collect(),
    );
    for (id, label) in &labels {
        let (engine, exec) = engines[id];
        let (word, warning) = match engine {
            Engine::Hw => announce::hw_state(states.iter().find(|s| s.id == *id)),
            Engine::Page => match session.waiting_reason(*id) {
                Some((why, _)) => (
                    "pending",
                    Some(format!(
                        "watch #{id} {label} is pending: {why}; it arms itself once the guest \
                         maps it (accesses before that are not seen)"
                    )),
                ),
                None => ("armed", None),
            },
        };
        let note = match session.caps().exec_note() {
            Some(note) if exec && word != "pending" => format!(" ({note})"),
            _ => String::new(),
        };
        tracing::info!("{label} is {word}{note} as #{id} on the {engine} engine");
        if let Some(warning) = warning {
            announce::say(warning);
        }
    }
    let page_watches = session.page_watch_states();
    if args.show_plan && !page_watches.is_empty() {
        announce::say(drvisor::watch::describe_page_watches(&page_watches));
    }
    if pausing || args.paused {
        resume_on_sigusr1(session.clone())?;
    }
    signal_guest_on_sigusr2(session.clone())?;
    let server = api_server::start(&args, session.clone())?;
    let gdb_stub = match &gdb {
        Some(at) => Some(drvisor::gdb::serve(session.clone(), at).map_err(|e| {
            Failure::usage(format!(
                "--gdb {}: {e}",
                cut(args.gdb.as_deref().unwrap_or_default())
            ))
        })?),
        None => None,
    };
    if let (Some(_), Some(at)) = (&gdb_stub, &args.gdb) {
        // `serve` returns once the listener is bound: gdb can connect from now on.
        announce::say(format!("gdb stub listening on {}", cut(at)));
    }

    let outcome = vm.run().map_err(vm_failure)?;
    let traps = session.page_traps();
    if let Some((traps, false_traps)) = traps {
        events.page_traps(traps, false_traps);
    }
    let outcome = events.finish(outcome);
    session.finished(&outcome);
    if let Some(stub) = gdb_stub {
        // gdb hears how the run ended before the process goes.
        stub.finish(std::time::Duration::from_secs(2));
    }
    drop(server);
    let late = session.late_guest_slots();
    if late > 0 {
        // Never silent: where MOV DR cannot be trapped (SVM), a guest slot armed while host
        // breakpoints were loaded was in hardware only from the vCPU's next exit on.
        announce::say(format!(
            "{late} time(s) the guest armed a debug register while host breakpoints were \
             loaded; this host cannot trap MOV DR, so each took effect only when drvisor next \
             read the vCPU's debug registers (at its next exit, or its periodic resync kick), \
             and a hit before that could not reach the guest (each is a guest-dr-late event)"
        ));
    }
    if args.show_plan {
        let r = session.resumes();
        if r != Default::default() {
            announce::say(format!(
                "exec breakpoints resumed: emulated={} stepped={} rf={}",
                r.emulated, r.stepped, r.rf
            ));
        }
    }
    // The image's reading ends before the run does: its line (where the symbols came from)
    // is never lost to a short run.
    let symbols = &image.get().symbols;
    if !args.quiet {
        for line in summary::lines(&session.breakpoints(), traps, &outcome) {
            announce::say(line);
        }
    }
    if !outcome.is_guest_status() {
        announce::say(announce::outcome(&outcome, &labels, symbols));
    }
    Ok(outcome.exit_code_under(exit_status))
}

/// The `--cpu-features` lists, each as given, as one set of edits.
fn cpu_features(lists: &[String]) -> Result<drvisor::cpu::FeatureEdits, Failure> {
    if lists.is_empty() {
        return Ok(Default::default());
    }
    drvisor::cpu::FeatureEdits::parse(&lists.join(","))
        .map_err(|e| Failure::usage(format!("--cpu-features: {e}")))
}

/// SIGUSR2 (`kill -USR2 <pid>`) signals the guest on port 0x520: a guest that waits for the host
/// (the test guest's `soak`, `ranges until=signal`) goes on.
fn signal_guest_on_sigusr2(session: Arc<Session>) -> Result<(), Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])
        .map_err(|e| Failure::vmm(format!("cannot watch SIGUSR2: {e}")))?;
    std::thread::Builder::new()
        .name("sigusr2".into())
        .spawn(move || {
            drvisor::seccomp::enter_or_exit(drvisor::seccomp::ThreadKind::Helper);
            for _ in signals.forever() {
                session.signal_guest();
            }
        })
        .map_err(|e| Failure::vmm(format!("cannot watch SIGUSR2: {e}")))?;
    Ok(())
}

/// A paused VM resumes when the process receives SIGUSR1 (`kill -USR1 <pid>`), an alias of
/// the REST plane's resume. A signal sent in answer to a `pause` hit's event is never lost,
/// even when it arrives before the pause is taken.
fn resume_on_sigusr1(session: Arc<Session>) -> Result<(), Failure> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])
        .map_err(|e| Failure::vmm(format!("cannot watch SIGUSR1: {e}")))?;
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            drvisor::seccomp::enter_or_exit(drvisor::seccomp::ThreadKind::Helper);
            for _ in signals.forever() {
                if session.resume("signal") {
                    announce::say("resuming (SIGUSR1)");
                }
            }
        })
        .map_err(|e| Failure::vmm(format!("cannot watch SIGUSR1: {e}")))?;
    Ok(())
}

fn vm_failure(e: drvisor::vm::Error) -> Failure {
    use drvisor::vm::Error;
    // The library names no flag; the command line says which one to change.
    let message = match &e {
        Error::VcpuCount { asked, .. } => format!("--vcpus {asked}: {e}"),
        Error::Memory(memory::Error::Mmap { mib, .. }) => format!("--mem {mib}: {e}"),
        Error::Memory(_) => format!("--mem: {e}"),
        Error::Boot(boot) => boot_flags::message(boot),
        Error::CpuFeatures(drvisor::cpu::ApplyError::FilteredOut { .. }) => {
            format!("--cpu-features: {e}; --cpuid host keeps it")
        }
        Error::CpuFeatures(_) => format!("--cpu-features: {e}"),
        _ => e.to_string(),
    };
    Failure {
        code: if e.is_usage() {
            exit_code::USAGE
        } else {
            exit_code::VMM_ERROR
        },
        message,
    }
}

/// Logs (`DRVISOR_LOG=info`) the features the guest's CPUID leaves out, and those it shows although the guest's
/// kernel cannot use them (a bit this KVM does not let `KVM_SET_CPUID2` clear), so that a
/// kernel that behaves differently under drvisor than under `--cpuid host` is explained.
fn announce_hidden_features(vm: &Vm, cpuid: cli::CpuidArg) {
    let Some(report) = vm.probe() else { return };
    if cpuid != cli::CpuidArg::Filtered {
        return;
    }
    let names = |hideable: bool| -> Vec<&str> {
        report
            .instructions
            .iter()
            .filter(|r| r.offered && !r.works && r.hideable == hideable)
            .map(|r| r.feature.name())
            .collect()
    };
    let (hidden, shown) = (names(true), names(false));
    if !hidden.is_empty() {
        tracing::info!(
            "the guest's CPUID leaves out {} (its instructions fail at CPL0 on this host, see `drvisor probe`; --cpuid host keeps it)",
            hidden.join(", ")
        );
    }
    if !shown.is_empty() {
        tracing::info!(
            "the guest still sees {} in its CPUID although their instructions fail at CPL0 here: this KVM shows the host CPU's bit where KVM_GET_SUPPORTED_CPUID has none, and KVM_SET_CPUID2 cannot clear it",
            shown.join(", ")
        );
    }
}

/// Warns about features `--cpu-features` or `--cpu-model` hide that the guest sees all the
/// same: the probe found this KVM showing them although `KVM_GET_SUPPORTED_CPUID` does not
/// list them, and `KVM_SET_CPUID2` decides only the bits of that list.
fn warn_unhideable_features(
    vm: &Vm,
    edits: &drvisor::cpu::FeatureEdits,
    model: drvisor::cpu::CpuModel,
) {
    let Some(report) = vm.probe() else { return };
    let unhideable: Vec<&str> = report
        .instructions
        .iter()
        .filter(|r| r.offered && !r.hideable)
        .filter_map(|r| drvisor::cpu::feature_table::lookup(r.feature.name()))
        .map(|f| f.name)
        .collect();
    let by_features = edits.hidden_with_dependents();
    let by_model: Vec<&str> = model.hides(edits).iter().map(|f| f.name).collect();
    let option = format!("--cpu-model {}", model.name());
    for (flag, hidden) in [("--cpu-features", by_features), (option.as_str(), by_model)] {
        let seen: Vec<&str> = unhideable
            .iter()
            .copied()
            .filter(|name| hidden.contains(name))
            .collect();
        if !seen.is_empty() {
            announce::say(format!(
                "warning: {flag} cannot hide {} here: this KVM shows the guest the host CPU's bit where KVM_GET_SUPPORTED_CPUID has none, and KVM_SET_CPUID2 cannot clear it (see `drvisor probe`)",
                seen.join(", ")
            ));
        }
    }
}

/// `drvisor probe [--refresh]`: the table, from this host's cache unless `refresh` (or the cache
/// is cold, or of another host); the experiments' answers are cached for the next start.
fn probe_host(json: bool, refresh: bool) -> Result<u8, Failure> {
    // The same words as `drvisor run`'s, with the kvm-group hint.
    let kvm = kvm_ioctls::Kvm::new()
        .map_err(|e| Failure::usage(drvisor::vm::Error::KvmAccess(e).to_string()))?;
    let (report, source) = probe::cache::answers(
        &kvm,
        probe::cache::default_dir().as_deref(),
        probe::cache::Want::All,
        refresh,
    )
    .map_err(|e| Failure::vmm(format!("the probe VM failed: {e}")))?;
    if let probe::cache::Source::Cache(path) = source {
        announce::say(format!(
            "the answers cached for this host in {} (`drvisor probe --refresh` runs the experiments again)",
            path.display()
        ));
    }
    if json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Failure::vmm(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(0)
}
