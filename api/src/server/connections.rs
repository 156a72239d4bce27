//! How the server takes connections: each listener has a budget of its own (so clients of the
//! TCP listener, with or without the token, can never use up what the Unix socket needs), a
//! connection beyond the budget gets a JSON 503 and is closed at once, and each connection has
//! a deadline for its request head that also ends idle keep-alive connections.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

use super::protocol_errors::{closing_json_response, head_timeout_response, JsonErrors};

/// How long a client has to send a whole request head, counted from when the connection is
/// ready for a request: from the accept, and again after each response. A client that sent
/// part of a head gets 408 `head-timeout` then, and is disconnected; one that sent nothing
/// (an idle keep-alive connection too) is disconnected.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// How long a client has to send a whole request body once its head arrived: 408 after it.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The most connections the Unix socket serves at once (event streams included). Only its
/// owner can connect (mode 0600).
pub const UNIX_MAX_CONNECTIONS: usize = 2048;

/// The most connections the TCP listener serves at once, counted before the token is checked,
/// and apart from the Unix socket's: TCP clients cannot starve it.
pub const TCP_MAX_CONNECTIONS: usize = 64;

/// The largest request head (request line and headers) the server reads: 431 beyond it.
pub const HEAD_LIMIT: usize = 16 * 1024;

/// How long the server tries to write its last words (a 408) and close a connection whose
/// client does not read.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

/// What a connection beyond the budget gets before it is closed.
fn busy_response(max: usize) -> Vec<u8> {
    closing_json_response(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        "busy",
        &format!("this listener already serves {max} connections; close some, or retry later"),
    )
}

/// A connection the server can refuse without waiting: one write that does not block.
pub(crate) trait Refusable: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Writes what the socket takes now.
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl Refusable for tokio::net::TcpStream {
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

impl Refusable for tokio::net::UnixStream {
    fn write_now(&self, bytes: &[u8]) -> io::Result<usize> {
        self.try_write(bytes)
    }
}

/// Serves `app` on `listener` until `stopped` turns true, with at most `max` connections at
/// once; then asks every connection to end after its response in flight and returns once
/// they all did.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    max: usize,
    mut stopped: watch::Receiver<bool>,
) where
    L: Listener,
    L::Io: Refusable,
{
    let budget = Arc::new(Semaphore::new(max));
    let busy: Arc<[u8]> = busy_response(max).into();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let io = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            (io, _) = listener.accept() => io,
            // Reap finished connections as they end (the set stays as large as what is open).
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok(permit) = budget.clone().try_acquire_owned() else {
            // Beyond the budget: told why at once, and closed; nothing waits for it.
            let _ = io.write_now(&busy);
            drop(io);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = stopped.clone();
        connections.spawn(async move {
            serve_one(io, service, stop).await;
            drop(permit);
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it ends (or, once `stopped` turns true, after its response in
/// flight), answers a stalled request head with a 408, and closes it.
async fn serve_one<I: Refusable>(
    io: I,
    service: TowerToHyperService<Router>,
    stop: watch::Receiver<bool>,
) {
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .max_headers(100)
        .max_header_size(HEAD_LIMIT)
        .serve_connection(TokioIo::new(JsonErrors::new(io)), service);
    // Without hyper's own shutdown: the connection is taken back at its end, so that a head
    // deadline can still be answered on it.
    let ended = tokio::select! {
        ended = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => ended,
        () = stopping(stop) => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await
        }
    };
    let parts = conn.into_parts();
    // Bytes hyper read and did not parse: a request head begun, not finished.
    let head_begun = !parts.read_buf.is_empty();
    let mut io = parts.io.into_inner();
    let _ = tokio::time::timeout(CLOSE_DEADLINE, async {
        if ended.is_err_and(|e| e.is_timeout()) && head_begun {
            let _ = io.write_all(&head_timeout_response()).await;
        }
        let _ = io.shutdown().await;
    })
    .await;
}

/// Resolves when `stopped` turns true (or its sender is gone).
async fn stopping(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_json_with_its_length() {
        let r = String::from_utf8(busy_response(7)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "busy");
        assert!(v["message"].as_str().unwrap().contains("7 connections"));
    }
}
