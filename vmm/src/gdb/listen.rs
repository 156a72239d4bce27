//! `--gdb tcp:127.0.0.1:PORT` or `--gdb unix:PATH`: where the stub listens, and its accept
//! loop. One gdb at a time; when it detaches or disconnects, the guest runs on and the stub
//! waits for the next.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gdbstub::conn::ConnectionExt;
use gdbstub::stub::{DisconnectReason, GdbStub};

use super::buffered_conn::BufferedConn;
use super::event_loop::StubLoop;
use super::target::GdbTarget;
use crate::control::Session;

/// Where the stub listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// `tcp:127.0.0.1:PORT` or `unix:PATH`. A TCP address outside loopback is refused: the stub
/// has no authentication, and it can read and write all guest memory.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    if let Some(addr) = text.strip_prefix("tcp:") {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an address; write tcp:127.0.0.1:PORT"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; the gdb stub has no authentication, so it \
                 listens on 127.0.0.1 or ::1 only (use an SSH tunnel to reach it from elsewhere)"
            ));
        }
        return Ok(Listen::Tcp(addr));
    }
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("give a socket path after unix:".into());
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    Err(format!("`{text}`: write tcp:127.0.0.1:PORT or unix:PATH"))
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

type Conn = Box<dyn ConnectionExt<Error = std::io::Error>>;

/// Removes a stale socket at `path` (one nobody answers on). A live one, or anything that is
/// not a socket, is left alone and refused: a mistyped path must not delete a file.
fn clear_stale(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            "a file that is not a socket is there; give a free path",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::new(
            ErrorKind::AddrInUse,
            "a live server already answers on this socket",
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

impl Listener {
    fn bind(at: &Listen) -> std::io::Result<Listener> {
        Ok(match at {
            Listen::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr)?),
            Listen::Unix(path) => {
                clear_stale(path)?;
                Listener::Unix(UnixListener::bind(path)?, path.clone())
            }
        })
    }

    /// The next connection, or `None` once the run has ended.
    fn accept(&self, session: &Session) -> std::io::Result<Option<Conn>> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix(l, _) => l.set_nonblocking(true)?,
        }
        loop {
            if session.is_finished() {
                return Ok(None);
            }
            let got: std::io::Result<Conn> = match self {
                Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    s.set_nodelay(true)?;
                    Ok(Box::new(BufferedConn::new(s)) as Conn)
                }),
                Listener::Unix(l, _) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    Ok(Box::new(BufferedConn::new(s)) as Conn)
                }),
            };
            match got {
                Ok(conn) => return Ok(Some(conn)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                // A connection that went away before it was accepted, a signal, or no file
                // descriptor left for a moment: keep listening.
                Err(e) => {
                    tracing::warn!("gdb stub: accept failed: {e}; still listening");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The stub's thread.
pub struct Served {
    done: std::sync::mpsc::Receiver<()>,
    _thread: JoinHandle<()>,
}

impl Served {
    /// Waits, up to `timeout`, until the stub has told gdb that the run ended.
    pub fn finish(self, timeout: Duration) {
        let _ = self.done.recv_timeout(timeout);
    }
}

/// Binds `at` (errors are the user's: a port in use, a bad path) and serves gdb on a thread
/// of its own until the run ends.
pub fn serve(session: Arc<Session>, at: &Listen) -> std::io::Result<Served> {
    let listener = Listener::bind(at)?;
    let (tx, done) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("drvisor-gdb".into())
        .spawn(move || {
            let _done = Done(tx);
            while let Ok(Some(conn)) = listener.accept(&session) {
                // All-stop from the first packet: gdb expects a stopped target when it attaches.
                session.pause("gdb attached");
                let mut target = GdbTarget::new(session.clone());
                let ended = GdbStub::new(conn).run_blocking::<StubLoop>(&mut target);
                target.forget_all();
                match ended {
                    Ok(DisconnectReason::Kill) => {
                        session.stop();
                        return;
                    }
                    Ok(reason) => tracing::info!("gdb detached ({reason:?}); the guest runs on"),
                    Err(e) => tracing::warn!("gdb connection ended: {e}; the guest runs on"),
                }
                if !session.is_finished() {
                    session.resume("gdb detached");
                }
            }
        })?;
    Ok(Served {
        done,
        _thread: thread,
    })
}

/// Says "done" when the stub's thread ends, however it ends.
struct Done(std::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}
