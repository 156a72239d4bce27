//! How failures leave the server: every one is JSON [`ErrorBody`] with the status of its
//! [`ErrorKind`], and what can go wrong while starting one ([`ServeError`]).

use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::rest::{ApiError, ErrorKind};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A body that did not arrive in time is left unread: the connection ends with this
        // answer, and says so.
        let closing = self.kind == ErrorKind::Timeout;
        let mut response = (status, Json(self.body)).into_response();
        if closing {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// 400 with `code`.
pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, code, message)
}

/// The most characters of a client's text an error message quotes.
pub(crate) const MAX_QUOTED: usize = 80;

/// `text` as a message may quote it: on one line, cut after [`MAX_QUOTED`] characters with a
/// note of how much was left out (a 5000-digit id is not echoed back whole).
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::new();
    let mut used = 0usize;
    for c in text.chars().take(MAX_QUOTED) {
        match c.is_control() {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
        used += c.len_utf8();
    }
    if used < text.len() {
        out.push_str(&format!("... ({} more bytes)", text.len() - used));
    }
    out
}

/// Why [`serve`](super::serve) refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Neither a Unix socket nor a TCP address was configured.
    #[error("nothing to serve: give a Unix socket path, a TCP address, or both")]
    NothingToServe,
    /// TCP asked for without a token.
    #[error("refusing to serve TCP on {0} without a token: every TCP request must carry `Authorization: Bearer <token>`")]
    TcpWithoutToken(std::net::SocketAddr),
    /// TCP asked for on an address other hosts can reach.
    #[error(
        "refusing to serve TCP on {0}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
    )]
    NotLoopback(std::net::SocketAddr),
    /// A server already answers on the socket path.
    #[error("another server already answers on {}; stop it or choose another path", .0.display())]
    AlreadyServing(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// A token file is unusable.
    #[error("token file {}: {why}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::unix_socket::BindError> for ServeError {
    fn from(e: crate::unix_socket::BindError) -> Self {
        use crate::unix_socket::BindError;
        match e {
            BindError::Live(p) => ServeError::AlreadyServing(p),
            BindError::NotASocket(p) => ServeError::NotASocket(p),
            BindError::Io { what, source } => ServeError::Io { what, source },
        }
    }
}

impl ServeError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
        let what = what.into();
        move |source| ServeError::Io { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_control_text_is_cut_and_escaped() {
        assert_eq!(quoted("abc"), "abc");
        assert_eq!(quoted("a\nb"), "a\\nb");
        let long = "9".repeat(5000);
        let q = quoted(&long);
        assert!(q.starts_with(&"9".repeat(MAX_QUOTED)));
        assert!(q.ends_with("... (4920 more bytes)"), "{q}");
    }
}
