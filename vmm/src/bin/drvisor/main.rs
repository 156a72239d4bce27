//! The `drvisor` command.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use drvisor::boot::KernelImage;
use drvisor::{exit_code, guest_image, probe, Console, Vm, VmConfig};

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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Probe { json } => probe_host(json),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("drvisor: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(args: RunArgs) -> Result<u8, Failure> {
    let kernel = match &args.kernel {
        None => guest_image::kernel(),
        Some(path) => KernelImage::from_file(path)
            .map_err(|e| Failure::usage(format!("cannot read kernel {}: {e}", path.display())))?
            .map_err(|e| Failure::usage(e.to_string()))?,
    };
    let initrd = match &args.initrd {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Failure::usage(format!("cannot read initrd {}: {e}", path.display()))
        })?),
    };
    let cmdline = command_line(&args)?;
    let config = VmConfig {
        kernel,
        initrd,
        cmdline,
        vcpus: args.vcpus,
        mem_mib: args.mem,
        console: Console::Stdio,
        strict_ports: args.strict_ports,
    };
    let vm = Vm::try_from(config).map_err(vm_failure)?;
    let outcome = vm.run().map_err(vm_failure)?;
    if !matches!(outcome, drvisor::Outcome::GuestExit { .. }) {
        eprintln!("drvisor: {outcome}");
    }
    Ok(outcome.exit_code())
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
    let report = probe::run_all(&kvm).map_err(|e| Failure {
        code: exit_code::VMM_ERROR,
        message: format!("the probe VM failed: {e}"),
    })?;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure {
            code: exit_code::VMM_ERROR,
            message: e.to_string(),
        })?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    Ok(0)
}
