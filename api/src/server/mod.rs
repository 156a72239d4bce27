//! The REST control plane's HTTP server: axum on a tokio runtime on threads of its own,
//! serving a [`Control`] on a Unix socket (mode 0600) and, with a token, on loopback TCP.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn f(control: Arc<dyn drvisor_api::control::Control>) -> Result<(), drvisor_api::server::ServeError> {
//! use drvisor_api::server::{serve, ServerConfig};
//! let handle = serve(control, ServerConfig {
//!     unix: Some("/run/drvisor.sock".into()),
//!     tcp: None,
//!     token: None,
//!     on_thread_start: None,
//! })?;
//! // ... the VM runs ...
//! handle.shutdown();
//! # Ok(()) }
//! ```

mod auth;
mod connections;
mod error;
mod events;
mod extract;
mod openapi;
mod protocol_errors;
mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

pub use auth::{read_token_file, TOKEN_FILE_MAX};
pub use connections::{
    BODY_DEADLINE, HEAD_DEADLINE, HEAD_LIMIT, TCP_MAX_CONNECTIONS, UNIX_MAX_CONNECTIONS,
};
pub use error::ServeError;
pub use extract::BODY_LIMIT;
pub use openapi::openapi_json;

use crate::control::Control;
use routes::AppState;

/// How long shutdown waits for open connections (event streams drain a closed ring for up to
/// `events::DRAIN_GRACE`; a client that stopped reading does not hold shutdown up longer
/// than this).
const GRACE: Duration = Duration::from_secs(5);

/// Where to serve.
#[derive(Clone, Debug, Default)]
pub struct ServerConfig {
    /// A Unix socket path (HTTP/1.1, mode 0600, no token).
    pub unix: Option<PathBuf>,
    /// A loopback TCP address (port 0 picks one; see [`ServerHandle::tcp_addr`]). Needs
    /// `token`.
    pub tcp: Option<SocketAddr>,
    /// The bearer token every TCP request must carry (see [`read_token_file`]). Not asked of
    /// Unix-socket clients: the socket's mode guards it.
    pub token: Option<String>,
    /// Run first on each of the server's threads (drvisor's seccomp filter for them).
    pub on_thread_start: Option<ThreadHook>,
}

/// A function each server thread runs when it starts.
#[derive(Clone)]
pub struct ThreadHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ThreadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadHook")
    }
}

/// A running server. [`shutdown`](ServerHandle::shutdown) (or dropping it) stops serving,
/// waits for the server thread and removes the socket file.
#[derive(Debug)]
pub struct ServerHandle {
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    socket: Option<crate::unix_socket::SocketFile>,
    tcp: Option<SocketAddr>,
}

impl ServerHandle {
    /// The TCP address it listens on, if any (the real port when configured with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// The Unix socket path, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        self.socket.as_ref().map(|s| s.path())
    }

    /// Stops serving: ends event streams, lets requests in flight finish (up to 5 s), joins
    /// the server thread and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.socket = None;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn bind_tcp(addr: SocketAddr, token: Option<&str>) -> Result<std::net::TcpListener, ServeError> {
    if token.is_none_or(|t| t.trim().is_empty()) {
        return Err(ServeError::TcpWithoutToken(addr));
    }
    if !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    let what = format!("binding {addr}");
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(ServeError::io(what.clone()))?;
    sock.set_reuse_address(true)
        .map_err(ServeError::io(what.clone()))?;
    sock.bind(&addr.into()).map_err(ServeError::io(what))?;
    sock.listen(crate::unix_socket::LISTEN_BACKLOG)
        .map_err(ServeError::io(format!("listening on {addr}")))?;
    let l = std::net::TcpListener::from(sock);
    l.set_nonblocking(true)
        .map_err(ServeError::io("setting the TCP listener non-blocking"))?;
    Ok(l)
}

/// Starts serving `control`: binds what `config` asks for (every error is reported here,
/// before anything runs), then serves on a thread of its own with a 2-worker tokio runtime.
pub fn serve(control: Arc<dyn Control>, config: ServerConfig) -> Result<ServerHandle, ServeError> {
    if config.unix.is_none() && config.tcp.is_none() {
        return Err(ServeError::NothingToServe);
    }
    let tcp = match config.tcp {
        Some(addr) => Some(bind_tcp(addr, config.token.as_deref())?),
        None => None,
    };
    let tcp_addr = match &tcp {
        Some(l) => Some(
            l.local_addr()
                .map_err(ServeError::io("reading the TCP address"))?,
        ),
        None => None,
    };
    let (unix, socket) = match &config.unix {
        Some(path) => {
            let (l, f) = crate::unix_socket::bind(path)?;
            l.set_nonblocking(true)
                .map_err(ServeError::io("setting the Unix listener non-blocking"))?;
            (Some(l), Some(f))
        }
        None => (None, None),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(2)
        .thread_name("drvisor-api-worker")
        .enable_all();
    if let Some(hook) = config.on_thread_start.clone() {
        builder.on_thread_start(move || (hook.0)());
    }
    let runtime = builder
        .build()
        .map_err(ServeError::io("starting the server's tokio runtime"))?;
    let hook = config.on_thread_start.clone();
    let (stop, stopped) = watch::channel(false);
    let state = AppState {
        control,
        shutdown: stopped.clone(),
    };
    let token: Option<Arc<str>> = config.token.map(|t| t.trim().into());
    let thread = std::thread::Builder::new()
        .name("drvisor-api".into())
        .spawn(move || {
            if let Some(hook) = hook {
                (hook.0)();
            }
            runtime.block_on(run(state, unix, tcp.zip(token), stopped));
            runtime.shutdown_timeout(Duration::from_millis(500));
        })
        .map_err(ServeError::io("starting the server thread"))?;
    Ok(ServerHandle {
        stop: Some(stop),
        thread: Some(thread),
        socket,
        tcp: tcp_addr,
    })
}

async fn run(
    state: AppState,
    unix: Option<std::os::unix::net::UnixListener>,
    tcp: Option<(std::net::TcpListener, Arc<str>)>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut servers = tokio::task::JoinSet::new();
    if let Some(l) = unix {
        match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                let app = routes::router(state.clone());
                let stop = stopped.clone();
                servers.spawn(connections::serve(l, app, UNIX_MAX_CONNECTIONS, stop));
            }
            Err(e) => eprintln!("drvisor-api: cannot serve the Unix socket: {e}"),
        }
    }
    if let Some((l, token)) = tcp {
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => {
                let app = routes::router(state.clone()).layer(
                    axum::middleware::from_fn_with_state(token, auth::require_token),
                );
                let stop = stopped.clone();
                servers.spawn(connections::serve(l, app, TCP_MAX_CONNECTIONS, stop));
            }
            Err(e) => eprintln!("drvisor-api: cannot serve TCP: {e}"),
        }
    }
    // A listener that ends before the stop is never silent (a client would only see its
    // connections refused).
    let at_stop = stopped.clone();
    loop {
        tokio::select! {
            // Biased: at the stop, the listeners end too (gracefully), and that is no news.
            biased;
            _ = stopped.wait_for(|s| *s) => break,
            Some(ended) = servers.join_next(), if !servers.is_empty() => {
                if !*at_stop.borrow() {
                    eprintln!("drvisor-api: a listener stopped serving before the VM's end: {ended:?}");
                }
            }
        }
    }
    let _ = tokio::time::timeout(GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
}
