//! The TCP listener's bearer token: read from a file, compared in constant time.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ServeError;
use crate::rest::{ApiError, ErrorKind};

/// The largest token file read: a token is a line, not a stream.
pub const TOKEN_FILE_MAX: u64 = 4096;

/// Reads a token file: its contents, trimmed. Refused, as ssh refuses a private key: a file
/// that is not a regular file (a FIFO or a device is refused at once, without reading), one
/// over [`TOKEN_FILE_MAX`] bytes, one that its group or others may read or write, and an
/// empty one.
pub fn read_token_file(path: impl AsRef<Path>) -> Result<String, ServeError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = path.as_ref();
    let refuse = |why: String| ServeError::Token {
        path: path.to_owned(),
        why,
    };
    // Non-blocking: opening a FIFO with no writer must not wait.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    let md = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !md.file_type().is_file() {
        return Err(refuse(
            "it is not a regular file; put the token in a file of its own".into(),
        ));
    }
    if md.len() > TOKEN_FILE_MAX {
        return Err(refuse(format!(
            "it has {} bytes, more than the {TOKEN_FILE_MAX} a token file may have",
            md.len()
        )));
    }
    if md.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode {:04o} lets others read or change the token; run `chmod 600 {}`",
            md.mode() & 0o7777,
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    file.take(TOKEN_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() as u64 > TOKEN_FILE_MAX {
        return Err(refuse(format!(
            "it grew past the {TOKEN_FILE_MAX} bytes a token file may have"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| refuse("it is not UTF-8 text".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ServeError::Token {
            path: path.to_owned(),
            why: "it is empty".into(),
        });
    }
    Ok(token.to_owned())
}

/// Whether `given` is `token`, in time that does not depend on where they differ.
pub(crate) fn token_matches(given: &[u8], token: &[u8]) -> bool {
    given.ct_eq(token).into()
}

/// Middleware: lets a request through only with `Authorization: Bearer <token>`, else 401.
pub(crate) async fn require_token(
    State(token): State<Arc<str>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if token_matches(given.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("the bearer token is wrong"),
        None => unauthorized("this listener needs `Authorization: Bearer <token>`"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(ErrorKind::Unauthorized, "unauthorized", message).into_response();
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret2", b"secret"));
        assert!(!token_matches(b"", b"secret"));
    }

    fn private(p: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        private(&p, "  abc\n");
        assert_eq!(read_token_file(&p).unwrap(), "abc");
        private(&p, " \n");
        assert!(read_token_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(read_token_file(dir.path().join("none")).is_err());
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        private(&p, "abc");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token_file(&p).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn devices_fifos_and_big_files_are_refused_at_once() {
        let start = std::time::Instant::now();
        let e = read_token_file("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_token_file(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big");
        private(&big, &"a".repeat(TOKEN_FILE_MAX as usize + 1));
        let e = read_token_file(&big).unwrap_err().to_string();
        assert!(e.contains("4096"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
