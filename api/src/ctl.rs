//! `drvisor ctl`: the command-line client of the REST control plane. The `drvisor` binary
//! embeds [`CtlArgs`] as its `ctl` subcommand and exits with [`run`]'s code.
//!
//! Output: a response as pretty JSON on stdout (with `--brief`, one line per object:
//! [`crate::ctl_brief`]); events one line each,
//! `<id> <kind> <data>` (`-` for no id). A failure is one line on stderr,
//! `drvisor ctl: <message> (<code>, HTTP <status>)` for an error the server answered.
//!
//! Exit codes: [`EXIT_OK`] 0, [`EXIT_REFUSED`] 2 (the server refused the request, 4xx, or
//! a local input such as the token file is unusable), [`EXIT_CONNECT`] 3 (cannot connect),
//! [`EXIT_SERVER`] 4 (the server failed, 5xx, or answered something undecodable).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::client::{Client, ClientError};
use crate::rest::{EngineChoice, MemoryQuery, NewBreakpoint, NewWatchpoint, WatchAccess};
use crate::HitAction;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The server refused the request (4xx), or a local input is unusable.
pub const EXIT_REFUSED: u8 = 2;
/// The server could not be reached.
pub const EXIT_CONNECT: u8 = 3;
/// The server failed (5xx), or its answer could not be understood.
pub const EXIT_SERVER: u8 = 4;

/// `--timeout`'s default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// `drvisor ctl`: talk to a running `drvisor run --api-sock ...`.
#[derive(Debug, Parser)]
#[command(name = "drvisor ctl")]
pub struct CtlArgs {
    /// The control plane's Unix socket.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "tcp",
        conflicts_with = "tcp"
    )]
    pub sock: Option<PathBuf>,
    /// A loopback TCP address of the control plane (needs --token-file).
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub tcp: Option<SocketAddr>,
    /// A file holding the bearer token for --tcp (mode 0600 or stricter, at most 4 KiB).
    #[arg(long, value_name = "FILE", requires = "tcp")]
    pub token_file: Option<PathBuf>,
    /// Send the token to a --tcp address that is not loopback, in clear text over the network.
    /// Without it such an address is refused: use an SSH tunnel to a loopback port instead.
    #[arg(long, requires = "tcp")]
    pub insecure_remote: bool,
    /// Seconds to wait for the connection and for the whole answer (for `events`, for the
    /// connection and the stream's start; the stream itself has no deadline).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// One line per answer, for a person (the VM's state, each breakpoint and watch), instead
    /// of pretty JSON; other answers are their JSON on one line.
    #[arg(long, global = true)]
    pub brief: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `drvisor ctl` subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The VM's state and shape.
    Vm,
    /// Exec breakpoints (and listing or removing any breakpoint or watch).
    #[command(subcommand)]
    Break(BreakCommand),
    /// Data watches.
    #[command(subcommand)]
    Watch(WatchCommand),
    /// Pause every vCPU.
    Pause,
    /// Resume every vCPU.
    Resume,
    /// End the run.
    Stop,
    /// One vCPU's registers (paused VM).
    Regs {
        /// The vCPU.
        vcpu: u32,
    },
    /// One vCPU's debug registers and slot map.
    Debugregs {
        /// The vCPU.
        vcpu: u32,
    },
    /// Read guest memory.
    Mem {
        /// A guest-physical address.
        #[arg(
            long,
            value_name = "ADDR",
            required_unless_present = "gva",
            conflicts_with = "gva"
        )]
        gpa: Option<String>,
        /// A guest-virtual address.
        #[arg(long, value_name = "ADDR")]
        gva: Option<String>,
        /// With --gva: the vCPU whose page tables translate it (default 0).
        #[arg(long, value_name = "N", requires = "gva")]
        vcpu: Option<u32>,
        /// Bytes (1-4096).
        #[arg(long)]
        len: u64,
    },
    /// What the host probe measured.
    Caps,
    /// The event stream: what the ring holds, or with --follow new events as they come.
    Events {
        /// Keep following until the VM stops.
        #[arg(long)]
        follow: bool,
        /// Start after this sequence number (default: the ring's oldest without --follow,
        /// only new events with it).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
    },
}

/// `drvisor ctl break ...`.
#[derive(Debug, Subcommand)]
pub enum BreakCommand {
    /// Add an exec breakpoint.
    Add {
        /// A symbol or an address.
        location: String,
        /// Only this vCPU.
        #[arg(long)]
        vcpu: Option<u32>,
        /// What a hit does.
        #[arg(long, value_enum, default_value_t = Action::Continue)]
        action: Action,
        /// Bytes of the stack from RSP that each hit event carries.
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1..=crate::MAX_CAPTURE as i64))]
        capture: Option<u16>,
        /// Only hits at which this condition holds are reported and act, e.g.
        /// 'rdi == 3 && hits > 10' (evaluated in the VMM; see docs/conditions.md).
        #[arg(long = "if", value_name = "EXPR")]
        condition: Option<String>,
    },
    /// Every breakpoint and watch.
    List,
    /// Remove a breakpoint or watch.
    Rm {
        /// Its id.
        id: u32,
    },
}

/// `drvisor ctl watch ...`.
#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Add a data watch.
    Add {
        /// A symbol or an address; `phys:` in front for a guest-physical one.
        location: String,
        /// Which accesses.
        #[arg(long, value_enum, default_value_t = Access::W)]
        access: Access,
        /// Bytes (default: the symbol's size).
        #[arg(long)]
        len: Option<u64>,
        /// Only this vCPU.
        #[arg(long)]
        vcpu: Option<u32>,
        /// What a hit does.
        #[arg(long, value_enum, default_value_t = Action::Continue)]
        action: Action,
        /// Which engine.
        #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
        engine: EngineArg,
        /// Bytes of the stack from RSP that each hit event carries.
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1..=crate::MAX_CAPTURE as i64))]
        capture: Option<u16>,
        /// Only hits at which this condition holds are reported and act, e.g.
        /// 'rdi == 3 && hits > 10' (evaluated in the VMM; see docs/conditions.md).
        #[arg(long = "if", value_name = "EXPR")]
        condition: Option<String>,
    },
}

/// `--action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Report and go on.
    Continue,
    /// Report and pause every vCPU.
    Pause,
    /// Report and end the run.
    Stop,
}

impl From<Action> for HitAction {
    fn from(a: Action) -> HitAction {
        match a {
            Action::Continue => HitAction::Continue,
            Action::Pause => HitAction::Pause,
            Action::Stop => HitAction::Stop,
        }
    }
}

/// `--access`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Access {
    /// Writes.
    W,
    /// Reads (page engine).
    R,
    /// Reads and writes.
    Rw,
}

impl From<Access> for WatchAccess {
    fn from(a: Access) -> WatchAccess {
        match a {
            Access::W => WatchAccess::Write,
            Access::R => WatchAccess::Read,
            Access::Rw => WatchAccess::ReadWrite,
        }
    }
}

/// `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// A debug-register slot where possible, else pages.
    Auto,
    /// A debug-register slot.
    Hw,
    /// Page protection.
    Page,
}

impl From<EngineArg> for EngineChoice {
    fn from(e: EngineArg) -> EngineChoice {
        match e {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Hw => EngineChoice::Hw,
            EngineArg::Page => EngineChoice::Page,
        }
    }
}

/// Runs `drvisor ctl` with stdout and stderr; returns the exit code.
pub fn run(args: CtlArgs) -> u8 {
    run_with(
        args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`run`] writing to `out` and `err`.
pub fn run_with(args: CtlArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match execute(args, out) {
        Ok(()) | Err(Failure::OutputClosed) => EXIT_OK,
        Err(Failure::Local(message)) => {
            let _ = writeln!(err, "drvisor ctl: {message}");
            EXIT_REFUSED
        }
        Err(Failure::Client(e)) => {
            let _ = writeln!(err, "drvisor ctl: {e}");
            exit_code(&e)
        }
    }
}

/// The exit code for a client error.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Connect { .. } => EXIT_CONNECT,
        ClientError::Api { status, .. } if *status < 500 => EXIT_REFUSED,
        _ => EXIT_SERVER,
    }
}

enum Failure {
    Local(String),
    Client(ClientError),
    /// Whoever read stdout closed it: nothing more to say, to anyone.
    OutputClosed,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

fn client(args: &CtlArgs) -> Result<Client, Failure> {
    let made = match (&args.sock, &args.tcp, &args.token_file) {
        (Some(sock), _, _) => Client::unix(sock),
        (None, Some(addr), Some(_)) if !addr.ip().is_loopback() && !args.insecure_remote => {
            return Err(Failure::Local(format!(
                "refusing to send the token in clear text to {addr}, which is not a loopback \
                 address; forward a loopback port with `ssh -L`, or give --insecure-remote"
            )))
        }
        (None, Some(addr), Some(file)) => {
            let token =
                crate::server::read_token_file(file).map_err(|e| Failure::Local(e.to_string()))?;
            Client::tcp(*addr, token)
        }
        _ => {
            return Err(Failure::Local(
                "give --sock PATH, or --tcp ADDR --token-file FILE".into(),
            ))
        }
    };
    Ok(made?.with_timeout(Some(Duration::from_secs(args.timeout))))
}

/// An answer `ctl` prints: pretty JSON, or with `--brief` one line per object.
trait Shown {
    fn json(&self) -> serde_json::Result<String>;
    fn brief(&self) -> serde_json::Result<String>;
}

/// An answer without a brief form of its own: `--brief` prints its JSON on one line.
struct Json<T>(T);

impl<T: Serialize> Shown for Json<T> {
    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&self.0)
    }
    fn brief(&self) -> serde_json::Result<String> {
        serde_json::to_string(&self.0)
    }
}

impl Shown for crate::rest::VmInfo {
    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
    fn brief(&self) -> serde_json::Result<String> {
        Ok(crate::ctl_brief::vm(self))
    }
}

impl Shown for crate::rest::Breakpoint {
    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
    fn brief(&self) -> serde_json::Result<String> {
        Ok(crate::ctl_brief::breakpoint(self))
    }
}

impl Shown for Vec<crate::rest::Breakpoint> {
    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
    fn brief(&self) -> serde_json::Result<String> {
        Ok(crate::ctl_brief::breakpoints(self))
    }
}

/// A failed write to stdout: a reader that went away (`ctl events | head -1`) ends the
/// command quietly; any other error is reported.
fn output_failed(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::OutputClosed,
        _ => Failure::Local(format!("writing output: {e}")),
    }
}

fn print(out: &mut dyn Write, value: &dyn Shown, brief: bool) -> Result<(), Failure> {
    let text = if brief { value.brief() } else { value.json() }
        .map_err(|e| Failure::Local(e.to_string()))?;
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(output_failed)
}

fn execute(args: CtlArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let c = client(&args)?;
    let brief = args.brief;
    let print = |out: &mut dyn Write, value: &dyn Shown| print(out, value, brief);
    match args.command {
        CtlCommand::Vm => print(out, &c.vm()?),
        CtlCommand::Pause => print(out, &c.pause()?),
        CtlCommand::Resume => print(out, &c.resume()?),
        CtlCommand::Stop => print(out, &c.stop()?),
        CtlCommand::Caps => print(out, &Json(c.capabilities()?)),
        CtlCommand::Regs { vcpu } => print(out, &Json(c.registers(vcpu)?)),
        CtlCommand::Debugregs { vcpu } => print(out, &Json(c.debugregs(vcpu)?)),
        CtlCommand::Mem {
            gpa,
            gva,
            vcpu,
            len,
        } => print(
            out,
            &Json(c.memory(&MemoryQuery {
                gpa,
                gva,
                vcpu,
                len,
            })?),
        ),
        CtlCommand::Break(BreakCommand::Add {
            location,
            vcpu,
            action,
            capture,
            condition,
        }) => {
            let req = NewBreakpoint {
                location,
                vcpu,
                action: action.into(),
                capture,
                condition,
            };
            print(out, &c.add_breakpoint(&req)?)
        }
        CtlCommand::Break(BreakCommand::List) => print(out, &c.breakpoints()?),
        CtlCommand::Break(BreakCommand::Rm { id }) => Ok(c.remove_breakpoint(id)?),
        CtlCommand::Watch(WatchCommand::Add {
            location,
            access,
            len,
            vcpu,
            action,
            engine,
            capture,
            condition,
        }) => {
            let req = NewWatchpoint {
                location,
                access: access.into(),
                len,
                vcpu,
                action: action.into(),
                engine: engine.into(),
                capture,
                condition,
            };
            print(out, &c.add_watchpoint(&req)?)
        }
        CtlCommand::Events { follow, since } => {
            let since = if follow {
                since
            } else {
                Some(since.unwrap_or(0))
            };
            // The deadline covers the connection and the stream's start, not the stream.
            let stream = c.events(since, follow)?;
            for ev in stream {
                let ev = ev?;
                let id = ev.id.map_or_else(|| "-".to_owned(), |n| n.to_string());
                writeln!(out, "{id} {} {}", ev.kind, ev.data)
                    .and_then(|()| out.flush())
                    .map_err(output_failed)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        CtlArgs::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_parses() {
        let a = parse(&[
            "--sock", "/tmp/s", "watch", "add", "jiffies", "--access", "rw", "--len", "8",
            "--engine", "page",
        ])
        .unwrap();
        assert!(matches!(
            a.command,
            CtlCommand::Watch(WatchCommand::Add {
                access: Access::Rw,
                len: Some(8),
                engine: EngineArg::Page,
                ..
            })
        ));
        assert!(parse(&["--sock", "/tmp/s", "break", "rm", "3"]).is_ok());
        assert!(parse(&["--tcp", "127.0.0.1:1", "--token-file", "/t", "vm"]).is_ok());
        assert!(parse(&["vm"]).is_err(), "a server is required");
        assert!(
            parse(&["--tcp", "127.0.0.1:1", "vm"]).is_err(),
            "--tcp needs a token"
        );
        assert!(parse(&[
            "--sock",
            "/s",
            "--tcp",
            "127.0.0.1:1",
            "--token-file",
            "/t",
            "vm"
        ])
        .is_err());
        assert!(
            parse(&["--sock", "/s", "mem", "--len", "4"]).is_err(),
            "an address is required"
        );
        assert!(parse(&["--sock", "/s", "mem", "--gpa", "0", "--gva", "0", "--len", "4"]).is_err());
    }

    #[test]
    fn an_absent_server_is_exit_3() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let args = parse(&["--sock", sock.to_str().unwrap(), "vm"]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_with(args, &mut out, &mut err), EXIT_CONNECT);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with("drvisor ctl: cannot connect to "), "{err}");
    }
}
