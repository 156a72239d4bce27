//! `--api-sock`/`--api-tcp`: the REST control plane on threads of its own, serving the run's
//! session. Every mistake in these flags is found here, before the guest runs.

use std::sync::Arc;

use drvisor::control::Session;
use drvisor_api::server::{read_token_file, serve, ServerConfig, ServerHandle, ThreadHook};

use crate::cli::RunArgs;
use crate::Failure;

/// Starts the server if a flag asks for it. Dropping the handle stops serving and removes the
/// socket.
pub fn start(args: &RunArgs, session: Arc<Session>) -> Result<Option<ServerHandle>, Failure> {
    if args.api_sock.is_none() && args.api_tcp.is_none() {
        return Ok(None);
    }
    let token = match &args.api_token_file {
        Some(path) => Some(
            read_token_file(path).map_err(|e| Failure::usage(format!("--api-token-file: {e}")))?,
        ),
        None => None,
    };
    let config = ServerConfig {
        unix: args.api_sock.clone(),
        tcp: args.api_tcp,
        token,
        on_thread_start: Some(ThreadHook(Arc::new(|| {
            drvisor::seccomp::enter_or_exit(drvisor::seccomp::ThreadKind::Api)
        }))),
    };
    let flag = if args.api_sock.is_some() {
        "--api-sock"
    } else {
        "--api-tcp"
    };
    let server = serve(session, config).map_err(|e| Failure::usage(format!("{flag}: {e}")))?;
    // One line per listener, said once it is bound and listening (`serve` returns only then),
    // so a person or a script knows when `drvisor ctl` can connect. Said with `--quiet` too:
    // it is not part of the summary.
    if let Some(path) = server.unix_path() {
        crate::announce::say(format!("REST API listening on {}", path.display()));
    }
    if let Some(addr) = server.tcp_addr() {
        crate::announce::say(format!("REST API listening on http://{addr}"));
    }
    Ok(Some(server))
}
