//! `--gdb tcp:127.0.0.1:PORT` or `--gdb unix:PATH`: where the stub listens, and its accept
//! loop. One gdb at a time (another is told so and closed); when it detaches or disconnects,
//! the guest runs on and the stub waits for the next.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use gdbstub::conn::ConnectionExt;
use gdbstub::stub::{DisconnectReason, GdbStub};

use super::buffered_conn::BufferedConn;
use super::event_loop::StubLoop;
use super::evictions::Evictions;
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

/// Why a listen address was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The text after `tcp:` is no socket address.
    #[error("`{text}` is not an address; write tcp:127.0.0.1:PORT")]
    BadTcpAddress {
        /// The text after `tcp:`.
        text: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A TCP address outside loopback.
    #[error(
        "{0} is not a loopback address; the gdb stub has no authentication, so it \
         listens on 127.0.0.1 or ::1 only (use an SSH tunnel to reach it from elsewhere)"
    )]
    NotLoopback(SocketAddr),
    /// `unix:` with nothing after it.
    #[error("give a socket path after unix:")]
    NoUnixPath,
    /// Neither `tcp:` nor `unix:`.
    #[error("`{0}`: write tcp:127.0.0.1:PORT or unix:PATH")]
    UnknownKind(String),
}

/// `tcp:127.0.0.1:PORT` or `unix:PATH`. A TCP address outside loopback is refused: the stub
/// has no authentication, and it can read and write all guest memory.
pub fn parse_listen(text: &str) -> Result<Listen, ListenError> {
    if let Some(addr) = text.strip_prefix("tcp:") {
        let addr: SocketAddr = addr.parse().map_err(|source| ListenError::BadTcpAddress {
            text: crate::quote::cut(addr).into_owned(),
            source,
        })?;
        if !addr.ip().is_loopback() {
            return Err(ListenError::NotLoopback(addr));
        }
        return Ok(Listen::Tcp(addr));
    }
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(ListenError::NoUnixPath);
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    Err(ListenError::UnknownKind(
        crate::quote::cut(text).into_owned(),
    ))
}

enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        // The socket file goes when the listener does, if it is still ours.
        _file: drvisor_api::unix_socket::SocketFile,
    },
}

type Conn = Box<dyn ConnectionExt<Error = std::io::Error>>;

/// An accepted connection, in blocking mode.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(t)),
            Stream::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => Read::read(s, buf),
            Stream::Unix(s) => Read::read(s, buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => Write::write_all(s, buf),
            Stream::Unix(s) => Write::write_all(s, buf),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Whether the client sends something before it goes (or the run ends): a connection
    /// that closes without a byte is another drvisor probing whether this socket is live, not
    /// a gdb, and must neither pause nor resume the VM.
    fn speaks(&self, session: &Session) -> bool {
        if self.set_read_timeout(Duration::from_millis(100)).is_err() {
            return false;
        }
        let mut byte = 0u8;
        let speaks = loop {
            // SAFETY: recv(2) with MSG_PEEK writes at most one byte into `byte`, a live local,
            // from this connection's own open socket, and consumes nothing.
            let n = unsafe { libc::recv(self.raw_fd(), (&raw mut byte).cast(), 1, libc::MSG_PEEK) };
            match n {
                1 => break true,
                0 => break false,
                _ => {
                    let e = std::io::Error::last_os_error();
                    let waiting = matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    );
                    if !waiting || session.is_finished() {
                        break false;
                    }
                }
            }
        };
        let cleared = match self {
            Stream::Tcp(s) => s.set_read_timeout(None),
            Stream::Unix(s) => s.set_read_timeout(None),
        };
        speaks && cleared.is_ok()
    }

    fn into_conn(self) -> Conn {
        match self {
            Stream::Tcp(s) => Box::new(BufferedConn::new(s)),
            Stream::Unix(s) => Box::new(BufferedConn::new(s)),
        }
    }
}

impl Listener {
    fn bind(at: &Listen) -> std::io::Result<Listener> {
        Ok(match at {
            Listen::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr)?),
            // Mode 0600 before it listens, a stale socket replaced, a live one or a
            // non-socket refused: the same helper as the REST socket's.
            Listen::Unix(path) => {
                let (listener, file) = drvisor_api::unix_socket::bind(path)?;
                Listener::Unix {
                    listener,
                    _file: file,
                }
            }
        })
    }

    /// The next connection, or `None` once the run has ended.
    fn accept(&self, session: &Session) -> std::io::Result<Option<Stream>> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix { listener, .. } => listener.set_nonblocking(true)?,
        }
        loop {
            if session.is_finished() {
                return Ok(None);
            }
            let got = match self {
                Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    s.set_nodelay(true)?;
                    Ok(Stream::Tcp(s))
                }),
                Listener::Unix { listener, .. } => listener.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    Ok(Stream::Unix(s))
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

/// What a second gdb is told, as the reply to its first packet, before it is closed. gdb
/// shows an `E.` reply's text.
pub const BUSY_REPLY: &str = "E.drvisor: another gdb is attached";

/// How long a connection that finds the stub busy waits for it to be free (a gdb that has
/// just detached, with the next one already connecting) before it is refused.
const BUSY_GRACE: Duration = Duration::from_secs(2);

/// How long a refused client is answered before it is closed.
const REFUSE_FOR: Duration = Duration::from_secs(10);

/// Answers every packet on `stream` with [`BUSY_REPLY`] until the client goes away (or
/// [`REFUSE_FOR`] has passed): gdb acks the reply to its `qSupported` and goes on with a few
/// more packets before it gives up, and closing at once would leave it with a broken pipe
/// instead of the message.
fn refuse(mut stream: Stream) {
    let until = std::time::Instant::now() + REFUSE_FOR;
    let mut reply = vec![b'+'];
    reply.extend(super::buffered_conn::reply(BUSY_REPLY.as_bytes()));
    let mut byte = [0u8; 1];
    // Where in a packet: `None` outside, else how many checksum digits are still to come.
    let mut inside: Option<Option<u8>> = None;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(left).is_err() {
            return;
        }
        match stream.read(&mut byte) {
            Ok(1) => {}
            _ => return,
        }
        inside = match (inside, byte[0]) {
            (None, b'$') => Some(None),
            (None, _) => None,
            (Some(None), b'#') => Some(Some(2)),
            (Some(None), _) => Some(None),
            (Some(Some(n)), _) if n > 1 => Some(Some(n - 1)),
            (Some(Some(_)), _) => {
                if stream.write_all(&reply).is_err() {
                    return;
                }
                None
            }
        };
    }
}

/// The stub's thread.
pub struct Served {
    done: std::sync::mpsc::Receiver<()>,
    _thread: JoinHandle<()>,
}

impl Served {
    /// Waits, up to `timeout`, until the stub has told gdb that the run ended.
    /// Also until the listener is gone (its socket file with it).
    pub fn finish(self, timeout: Duration) {
        let until = std::time::Instant::now() + timeout;
        for _ in 0..2 {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let _ = self.done.recv_timeout(left);
        }
    }
}

/// Binds `at` (errors are the user's: a port in use, a bad path) and serves gdb on a thread
/// of its own until the run ends. One gdb at a time: another that connects meanwhile is told
/// so ([`BUSY_REPLY`]) and closed, and the first goes on.
pub fn serve(session: Arc<Session>, at: &Listen) -> std::io::Result<Served> {
    let listener = Listener::bind(at)?;
    let (tx, done) = std::sync::mpsc::channel();
    let (conns, next) = std::sync::mpsc::channel::<Stream>();
    // Whether a gdb is being served (or handed over to be).
    let busy = Arc::new(AtomicBool::new(false));
    let claim = |busy: &AtomicBool| {
        busy.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    };
    let evictions = Evictions::install(&session);
    let serving = {
        let session = session.clone();
        let busy = busy.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("drvisor-gdb".into())
            .spawn(move || {
                crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Gdb);
                let _done = Done(tx);
                loop {
                    let stream = match next.recv_timeout(Duration::from_millis(50)) {
                        Ok(s) => s,
                        Err(RecvTimeoutError::Timeout) if !session.is_finished() => continue,
                        Err(_) => return,
                    };
                    if !stream.speaks(&session) {
                        busy.store(false, Ordering::Release);
                        continue;
                    }
                    let conn = stream.into_conn();
                    // All-stop from the first packet: gdb expects a stopped target when it
                    // attaches.
                    session.pause("gdb attached");
                    let mut target = GdbTarget::new(session.clone(), evictions.clone());
                    let ended = GdbStub::new(conn).run_blocking::<StubLoop>(&mut target);
                    target.forget_all();
                    match ended {
                        Ok(DisconnectReason::Kill) => {
                            session.stop();
                            return;
                        }
                        Ok(reason) => {
                            tracing::info!("gdb detached ({reason:?}); the guest runs on")
                        }
                        Err(e) => tracing::warn!("gdb connection ended: {e}; the guest runs on"),
                    }
                    if !session.is_finished() {
                        session.resume("gdb detached");
                    }
                    busy.store(false, Ordering::Release);
                }
            })?
    };
    std::thread::Builder::new()
        .name("drvisor-gdb-accept".into())
        .spawn(move || {
            crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Gdb);
            let _done = Done(tx);
            let listener = listener;
            let waiting = Arc::new(AtomicUsize::new(0));
            while let Ok(Some(stream)) = listener.accept(&session) {
                if claim(&busy) {
                    let _ = conns.send(stream);
                    continue;
                }
                // A client that connects over and over must not pile up threads: past a few
                // waiting ones, a new connection is closed at once.
                if waiting.load(Ordering::Acquire) >= MAX_WAITING {
                    tracing::info!(
                        "gdb stub: closed a connection (one gdb attached, others waiting)"
                    );
                    continue;
                }
                // Busy: wait a little on a thread of its own (the gdb being served may be
                // just leaving), then hand it over or refuse it.
                let (busy, conns) = (busy.clone(), conns.clone());
                let count = Waiting::new(&waiting);
                let _ = std::thread::Builder::new()
                    .name("drvisor-gdb-busy".into())
                    .spawn(move || {
                        crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Gdb);
                        let _count = count;
                        let until = std::time::Instant::now() + BUSY_GRACE;
                        while std::time::Instant::now() < until {
                            if claim(&busy) {
                                let _ = conns.send(stream);
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        tracing::info!("gdb stub: refused a second gdb (one is attached)");
                        refuse(stream);
                    });
            }
            // The socket file goes before the "done".
            drop(listener);
        })?;
    Ok(Served {
        done,
        _thread: serving,
    })
}

/// The most connections waiting or being refused at once while a gdb is attached.
const MAX_WAITING: usize = 4;

/// One waiting connection, counted for as long as it lives.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Says "done" when the stub's thread ends, however it ends.
struct Done(std::sync::mpsc::Sender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_address_has_its_own_reason() {
        assert_eq!(
            parse_listen("tcp:127.0.0.1:1234").unwrap(),
            Listen::Tcp("127.0.0.1:1234".parse().unwrap())
        );
        assert_eq!(
            parse_listen("unix:/tmp/g").unwrap(),
            Listen::Unix("/tmp/g".into())
        );
        assert!(matches!(
            parse_listen("tcp:localhost"),
            Err(ListenError::BadTcpAddress { .. })
        ));
        let far = parse_listen("tcp:10.0.0.1:1234").unwrap_err();
        assert!(matches!(far, ListenError::NotLoopback(_)), "{far}");
        assert!(far.to_string().contains("SSH tunnel"), "{far}");
        assert!(matches!(
            parse_listen("unix:"),
            Err(ListenError::NoUnixPath)
        ));
        assert!(matches!(
            parse_listen("udp:1"),
            Err(ListenError::UnknownKind(t)) if t == "udp:1"
        ));
    }
}
