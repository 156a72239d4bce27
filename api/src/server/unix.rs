//! The Unix socket: refuse a live one, replace a stale one, bind with mode 0600 before
//! anyone can connect, and remove it at shutdown (only if it is still ours).

use std::fs;
use std::io::ErrorKind as IoKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::error::ServeError;

/// The socket file this server created; removed when dropped, unless something else has
/// replaced it since.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub(crate) fn path(&self) -> &Path {
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
/// a live one or a non-socket is refused.
fn clear_stale(path: &Path) -> Result<(), ServeError> {
    let md = match fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(()),
        Err(e) => return Err(ServeError::io(format!("inspecting {}", path.display()))(e)),
    };
    if !md.file_type().is_socket() {
        return Err(ServeError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServeError::AlreadyServing(path.to_owned())),
        Err(e) if e.kind() == IoKind::ConnectionRefused => match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == IoKind::NotFound => Ok(()),
            Err(e) => Err(ServeError::io(format!(
                "removing stale socket {}",
                path.display()
            ))(e)),
        },
        Err(e) => Err(ServeError::io(format!("probing {}", path.display()))(e)),
    }
}

/// Binds a listening socket at `path` with mode 0600: bind, chmod, then listen, so no
/// connection is accepted before the mode is set (connecting to a socket that does not
/// listen yet is refused).
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, SocketFile), ServeError> {
    clear_stale(path)?;
    let at = |what: &str| ServeError::io(format!("{what} {}", path.display()));
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(at("creating socket for"))?;
    let addr = SockAddr::unix(path).map_err(at("socket path"))?;
    sock.bind(&addr).map_err(at("binding"))?;
    let md = fs::symlink_metadata(path).map_err(at("inspecting"))?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: md.dev(),
        ino: md.ino(),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(at("chmod 0600"))?;
    sock.listen(128).map_err(at("listening on"))?;
    sock.set_nonblocking(true)
        .map_err(at("setting non-blocking"))?;
    Ok((sock.into(), file))
}
