//! JSON bodies for the errors hyper answers by itself. A request head that is not HTTP, or is
//! over the size limit, never reaches the router: hyper answers 400 or 431 (or 414, 505) with an
//! empty body and closes the connection. [`JsonErrors`] wraps a connection and, when hyper
//! writes such an answer, gives it the JSON `{code, message}` body every other error has.
//!
//! Such an answer is recognised whole: one write that is a complete response head, status 4xx
//! or 5xx, with `connection: close` and `content-length: 0`. The router never answers that way
//! (its errors all have a JSON body), so nothing else is touched.
//!
//! hyper does not answer a request head that misses its deadline at all; the connection loop
//! writes [`head_timeout_response`] for it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connections::{HEAD_DEADLINE, HEAD_LIMIT};

/// A whole response that ends the connection: `status` (as `"503 Service Unavailable"`),
/// `extra_headers` (each ending in CRLF), and the JSON `{code, message}` body.
pub(crate) fn closing_json_response(
    status: &str,
    extra_headers: &str,
    code: &str,
    message: &str,
) -> Vec<u8> {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a client that began a request head and did not finish it within [`HEAD_DEADLINE`]
/// gets before the close. (hyper only closes such a connection.)
pub(crate) fn head_timeout_response() -> Vec<u8> {
    closing_json_response(
        "408 Request Timeout",
        "",
        "head-timeout",
        &format!(
            "the request head (request line and headers) did not arrive within {} s",
            HEAD_DEADLINE.as_secs()
        ),
    )
}

/// The code and message for a status hyper answers by itself.
fn explain(status: u16) -> (&'static str, String) {
    match status {
        400 => (
            "bad-http",
            "the request is not valid HTTP/1.1 (request line or headers)".into(),
        ),
        414 => ("uri-too-long", "the request's URI is too long".into()),
        431 => (
            "head-too-large",
            format!("the request head is over the limit of {HEAD_LIMIT} bytes or 100 headers"),
        ),
        505 => (
            "http-version",
            "only HTTP/1.0 and HTTP/1.1 are served".into(),
        ),
        _ => ("http-error", format!("HTTP error {status}")),
    }
}

/// `head` with a JSON body, if it is an answer hyper made by itself (see the module docs).
pub(crate) fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    if !text.ends_with("\r\n\r\n") || text[..text.len() - 4].contains("\r\n\r\n") {
        return None;
    }
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..600).contains(&status) {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let empty = "\r\ncontent-length: 0\r\n";
    if !lower.contains("\r\nconnection: close\r\n") || !lower.contains(empty) {
        return None;
    }
    let (code, message) = explain(status);
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let at = lower.find(empty)?;
    let mut out = String::with_capacity(text.len() + body.len() + 64);
    out.push_str(&text[..at]);
    out.push_str(&format!(
        "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    ));
    out.push_str(&text[at + empty.len()..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

/// A connection whose hyper-made error answers get a JSON body.
pub(crate) struct JsonErrors<I> {
    io: I,
    /// A rewritten answer not yet all written.
    pending: Vec<u8>,
}

impl<I> JsonErrors<I> {
    pub(crate) fn new(io: I) -> Self {
        JsonErrors {
            io,
            pending: Vec::new(),
        }
    }
}

impl<I: AsyncWrite + Unpin> JsonErrors<I> {
    /// Writes what is pending.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonErrors<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonErrors<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(rewritten) = with_json_body(buf) {
            self.pending = rewritten;
            // Taken whole; what the socket does not take now goes out at the next write,
            // flush or shutdown.
            let _ = self.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a response head as one buffer, which is what
    // `with_json_body` recognises.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_made_errors_get_a_json_body_with_its_length() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                     content-length: 0\r\ndate: Sat, 05 Dec 2026 12:28:24 GMT\r\n\r\n";
        let out = String::from_utf8(with_json_body(head).unwrap()).unwrap();
        let (h, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(h.starts_with("HTTP/1.1 431 "));
        assert!(h.contains("content-type: application/json"));
        assert!(h.contains(&format!("content-length: {}", body.len())));
        assert!(!h.contains("content-length: 0\r\n"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "head-too-large");
    }

    #[test]
    fn the_head_timeout_answer_is_json_with_its_length() {
        let r = String::from_utf8(head_timeout_response()).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "head-timeout");
        assert!(v["message"].as_str().unwrap().contains("5 s"), "{v}");
        // Not mistaken for a hyper-made answer and rewritten once more.
        assert_eq!(with_json_body(head_timeout_response().as_slice()), None);
    }

    #[test]
    fn other_writes_are_left_alone() {
        // A success, an error with a body, a head with more after it, a body chunk.
        for w in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\nmore\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"data: {}\n\n",
        ] {
            assert_eq!(with_json_body(w), None, "{}", String::from_utf8_lossy(w));
        }
    }
}
