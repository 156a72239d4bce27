//! A listening Unix socket for the REST server and the gdb stub alike: a live socket at the
//! path, or anything that is not a socket, is refused; a stale socket is replaced; the socket
//! is bound at a temporary name, set to mode 0600 and made to listen before it appears at its
//! path, so nobody else can connect at any moment and the path never names a socket that does
//! not listen yet; and it is removed at the end only if the path still names the inode bound
//! here.
//!
//! Always built (it takes `socket2`, not the server's dependencies), so the engine library can
//! use it for the gdb stub.

use std::fmt;
use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// The listen backlog of every listening socket drvisor makes (the kernel caps it at
/// `net.core.somaxconn`): a burst of connections waits to be accepted instead of being
/// refused.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Why [`bind`] refused or failed.
#[derive(Debug)]
pub enum BindError {
    /// Something answers on the socket already.
    Live(PathBuf),
    /// Something that is not a socket is at the path.
    NotASocket(PathBuf),
    /// A system call failed.
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Live(p) => write!(
                f,
                "another server already answers on {}; stop it or choose another path",
                p.display()
            ),
            BindError::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; refusing to replace it",
                p.display()
            ),
            BindError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<BindError> for std::io::Error {
    fn from(e: BindError) -> Self {
        let kind = match &e {
            BindError::Live(_) => IoKind::AddrInUse,
            BindError::NotASocket(_) => IoKind::AlreadyExists,
            BindError::Io { source, .. } => source.kind(),
        };
        std::io::Error::new(kind, e.to_string())
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> BindError {
    let what = format!("{what} {}", path.display());
    move |source| BindError::Io { what, source }
}

/// The socket file bound here; removed when dropped, unless the path names another inode by
/// then (a socket someone else bound there later is left alone).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(md) = fs::symlink_metadata(&self.path) {
            if md.dev() == self.dev && md.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Clears the way for a socket at `path`: nothing there is fine, a stale socket is removed,
/// a live one or a non-socket is refused (a mistyped path must not delete a file).
fn clear_stale(path: &Path) -> Result<(), BindError> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
        Err(e) => return Err(io("inspecting", path)(e)),
    };
    if !md.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(BindError::Live(path.to_owned())),
        Err(e) if e.kind() == IoKind::ConnectionRefused => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(io("removing stale socket", path)(e)),
        },
        Err(e) => Err(io("probing", path)(e)),
    }
}

/// A name beside `path` for binding before the socket is ready: `.NAME.PID`.
fn beside(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy();
    Some(path.with_file_name(format!(".{name}.{}", std::process::id())))
}

/// Binds a listening socket at `path` with mode 0600, in blocking mode. It is bound at a
/// temporary name beside `path`, set to 0600, made to listen, and only then linked to `path`:
/// the path never names a socket that refuses connections (a client that waits for the file
/// connects at once, and another drvisor's stale check does not take it for a dead one). Where
/// no temporary name fits a socket address, it is bound at `path` itself (bind, chmod, listen).
/// The [`SocketFile`] removes it when dropped.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), BindError> {
    clear_stale(path)?;
    let sock =
        Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io("creating a socket for", path))?;
    let temp = beside(path).and_then(|t| SockAddr::unix(&t).ok().map(|a| (t, a)));
    let at = match &temp {
        Some((t, addr)) => {
            sock.bind(addr).map_err(io("binding", t))?;
            t.as_path()
        }
        None => {
            let addr = SockAddr::unix(path).map_err(io("socket path", path))?;
            sock.bind(&addr).map_err(io("binding", path))?;
            path
        }
    };
    let ready = fs::set_permissions(at, fs::Permissions::from_mode(0o600))
        .map_err(io("chmod 0600", at))
        .and_then(|()| sock.listen(LISTEN_BACKLOG).map_err(io("listening on", at)))
        .and_then(|()| match at == path {
            true => Ok(()),
            // A hard link does not replace: a socket that appeared at the path meanwhile is
            // another server's.
            false => fs::hard_link(at, path).map_err(|e| match e.kind() {
                IoKind::AlreadyExists => BindError::Live(path.to_owned()),
                _ => io("linking the socket to", path)(e),
            }),
        });
    if at != path {
        let _ = fs::remove_file(at);
    }
    ready?;
    let md = fs::symlink_metadata(path).map_err(io("inspecting", path))?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: md.dev(),
        ino: md.ino(),
    };
    Ok((UnixListener::from(std::os::fd::OwnedFd::from(sock)), file))
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn umask(mask: u32) -> u32;
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn mode_is_0600_even_under_umask_0_and_it_is_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        // SAFETY: umask(2) only sets this process's file mode creation mask.
        let old = unsafe { umask(0) };
        let bound = bind(&p);
        // SAFETY: as above, putting the old mask back.
        unsafe { umask(old) };
        let (l, f) = bound.unwrap();
        assert_eq!(mode(&p), 0o600);
        assert!(UnixStream::connect(&p).is_ok(), "it listens");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["s.sock"], "no temporary name left behind");
        drop(l);
        drop(f);
        assert!(fs::symlink_metadata(&p).is_err(), "removed");
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        drop(UnixListener::bind(&p).unwrap()); // stale: the file stays, nobody listens
        assert!(fs::symlink_metadata(&p).is_ok());
        let (_l, _f) = bind(&p).expect("a stale socket is replaced");
        match bind(&p) {
            Err(BindError::Live(_)) => {}
            other => panic!("a live socket must be refused, got {other:?}"),
        }
        assert!(UnixStream::connect(&p).is_ok(), "the live one still serves");
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        fs::write(&p, "keep me").unwrap();
        match bind(&p) {
            Err(BindError::NotASocket(_)) => {}
            other => panic!("a regular file must be refused, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(&p).unwrap(), "keep me");
    }

    #[test]
    fn only_its_own_inode_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        // `_l` lives on to the end, holding its inode: the other socket gets another one.
        let (_l, f) = bind(&p).unwrap();
        fs::remove_file(&p).unwrap();
        let other = UnixListener::bind(&p).unwrap(); // someone else's socket, same path
        drop(f);
        assert!(
            fs::symlink_metadata(&p).is_ok(),
            "another inode at the path is left alone"
        );
        assert!(UnixStream::connect(&p).is_ok());
        drop(other);
    }
}
