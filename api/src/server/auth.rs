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

/// Reads a token file: its contents, trimmed; an empty file is an error.
pub fn read_token_file(path: impl AsRef<Path>) -> Result<String, ServeError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Token {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
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

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  abc\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "abc");
        std::fs::write(&p, " \n").unwrap();
        assert!(read_token_file(&p)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(read_token_file(dir.path().join("none")).is_err());
    }
}
