//! Extractors whose rejections are [`ApiError`]s, so axum's plain-text rejections never
//! reach a client: a strict JSON body with a size limit, a strict query, a numeric path
//! segment.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::error::{bad_request, quoted};
use crate::rest::{ApiError, ErrorKind};

/// The largest request body the server reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body: `Content-Type: application/json`, at most [`BODY_LIMIT`] bytes,
/// deserialized with the target type's own strictness (`deny_unknown_fields`).
pub struct JsonBody<T>(pub T);

fn too_large() -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        "too-large",
        format!("the request body is over the limit of {BODY_LIMIT} bytes"),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(bad_request(
                "bad-json",
                "the body must be JSON: send `Content-Type: application/json`",
            ));
        }
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Err(too_large());
        }
        let bytes = read_limited(req.into_body()).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| bad_request("bad-json", format!("the body is not valid here: {e}")))
    }
}

async fn read_limited(body: Body) -> Result<bytes::Bytes, ApiError> {
    let deadline = super::connections::BODY_DEADLINE;
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, BODY_LIMIT))
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorKind::Timeout,
                "body-timeout",
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            )
        })?;
    read.map_err(|e| {
        let inner = e.into_inner();
        let over =
            std::iter::successors(Some(&*inner as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            bad_request(
                "bad-body",
                format!("could not read the request body: {inner}"),
            )
        }
    })
}

/// A query string deserialized strictly: unknown parameters and bad values are 400
/// `bad-query`.
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| StrictQuery(q))
            .map_err(|e| bad_request("bad-query", quoted(&e.body_text())))
    }
}

/// A numeric path parameter (a breakpoint id, a vCPU index): anything else is 400
/// `bad-path`.
pub struct Id(pub u32);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| bad_request("bad-path", quoted(&e.body_text())))?;
        text.parse().map(Id).map_err(|_| {
            bad_request(
                "bad-path",
                format!("`{}` is not a number from 0 to {}", quoted(&text), u32::MAX),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
