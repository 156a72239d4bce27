//! Clients that try to wedge the server: half a request head, nothing at all, half a body, an
//! idle keep-alive connection, more TCP connections than the budget. Each is answered (a JSON
//! 408 or 503) or, having begun no request, cut off within a time bound, and none keeps the
//! Unix socket from serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{serve_unix, Stub};
use drvisor_api::client::Client;
use drvisor_api::server::{serve, ServerConfig, BODY_DEADLINE, HEAD_DEADLINE, TCP_MAX_CONNECTIONS};

/// Slack over a deadline for a loaded host.
const SLACK: Duration = Duration::from_secs(5);

/// Reads until EOF (or an error) and returns what came and how long it took.
fn read_until_closed(mut s: impl Read, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

fn unix(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(HEAD_DEADLINE + BODY_DEADLINE + SLACK * 2))
        .unwrap();
    s
}

/// Asserts `got` is a JSON 408 `code` answer, one only, and the connection's last words.
fn assert_json_408(got: &str, code: &str) {
    assert!(
        got.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{got:?}"
    );
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// Sends `partial` on `c` and asserts a JSON 408 `head-timeout` and a close at the head
/// deadline (not before it, and within the slack after it).
fn half_a_head_gets_a_json_408(mut c: impl Read + Write, partial: &[u8]) {
    c.write_all(partial).unwrap();
    let (got, took) = read_until_closed(&mut c, HEAD_DEADLINE + SLACK * 2);
    assert!(took < HEAD_DEADLINE + SLACK, "closed after {took:?}");
    assert!(
        took >= HEAD_DEADLINE - Duration::from_millis(500),
        "{took:?}"
    );
    assert_json_408(&got, "head-timeout");
}

#[test]
fn half_a_request_head_gets_a_json_408_at_the_head_deadline() {
    let s = serve_unix(8);
    half_a_head_gets_a_json_408(unix(&s.sock), b"GET /vm HTTP/1.1\r\nHost: x\r\n");
}

#[test]
fn half_a_request_line_gets_a_json_408_at_the_head_deadline() {
    let s = serve_unix(8);
    half_a_head_gets_a_json_408(unix(&s.sock), b"GE");
}

/// On TCP too, and before the token is looked at (the head never arrived).
#[test]
fn half_a_request_head_over_tcp_gets_a_json_408_at_the_head_deadline() {
    let h = serve(
        Stub::new(8),
        ServerConfig {
            unix: None,
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("s3cret".into()),
            on_thread_start: None,
        },
    )
    .unwrap();
    let c = TcpStream::connect(h.tcp_addr().unwrap()).unwrap();
    c.set_read_timeout(Some(HEAD_DEADLINE + SLACK * 2)).unwrap();
    half_a_head_gets_a_json_408(c, b"POST /vm/pause HTTP/1.1\r\nHost: x\r\nAuthoriz");
}

/// A second request begun on a kept-alive connection and left half done: the 408 comes after
/// the first answer, at the head deadline counted from that answer.
#[test]
fn half_a_second_request_head_gets_a_json_408() {
    let s = serve_unix(8);
    let mut c = unix(&s.sock);
    c.write_all(b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    c.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // The rest of the first answer, then the second request's first half.
    std::thread::sleep(Duration::from_millis(200));
    c.write_all(b"GET /vm HTTP/1.1\r\n").unwrap();
    let (got, took) = read_until_closed(&mut c, HEAD_DEADLINE + SLACK * 2);
    assert!(took < HEAD_DEADLINE + SLACK, "closed after {took:?}");
    let at = got
        .find("HTTP/1.1 408")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_json_408(&got[at..], "head-timeout");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_head_deadline() {
    let s = serve_unix(8);
    let c = unix(&s.sock);
    let (got, took) = read_until_closed(c, HEAD_DEADLINE + SLACK * 2);
    assert!(took < HEAD_DEADLINE + SLACK, "closed after {took:?}");
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let s = serve_unix(8);
    let mut c = unix(&s.sock);
    c.write_all(b"GET /vm HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (got, took) = read_until_closed(&mut c, HEAD_DEADLINE + SLACK * 2);
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    // No request was begun after the answer: nothing more is said, no 408.
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got:?}");
    assert!(took < HEAD_DEADLINE + SLACK, "idle for {took:?}");
}

#[test]
fn half_a_body_gets_a_json_408_at_the_body_deadline() {
    let s = serve_unix(8);
    let mut c = unix(&s.sock);
    c.write_all(
        b"POST /breakpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"addr",
    )
    .unwrap();
    let (got, took) = read_until_closed(&mut c, BODY_DEADLINE + SLACK * 2);
    assert!(
        took < BODY_DEADLINE + SLACK,
        "answered and closed after {took:?}"
    );
    assert!(
        took >= BODY_DEADLINE - Duration::from_millis(500),
        "{took:?}"
    );
    assert_json_408(&got, "body-timeout");
}

#[test]
fn tcp_connections_beyond_the_budget_get_a_json_503_and_the_unix_socket_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let h = serve(
        Stub::new(8),
        ServerConfig {
            unix: Some(sock.clone()),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("s3cret".into()),
            on_thread_start: None,
        },
    )
    .unwrap();
    let addr = h.tcp_addr().unwrap();
    // The budget, held by connections without the token that send nothing.
    let mut held = Vec::new();
    for _ in 0..TCP_MAX_CONNECTIONS {
        held.push(TcpStream::connect(addr).unwrap());
    }
    // Let the server accept them all (they are accepted in order).
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (got, _) = read_until_closed(&mut extra, Duration::from_secs(10));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(got.starts_with("HTTP/1.1 503"), "{got:?}");
    let body = got.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], "busy", "{v}");
    // The Unix socket has a budget of its own.
    Client::unix(&sock).unwrap().vm().unwrap();
    drop(held);
}

/// The errors hyper answers by itself (a head that is not HTTP, one over the size limit) have
/// the JSON body too.
#[test]
fn protocol_level_errors_have_the_json_body() {
    let s = serve_unix(8);
    let big = format!(
        "GET /vm HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(drvisor_api::server::HEAD_LIMIT + 1)
    );
    for (request, status, code) in [
        (b"GARBAGE\r\n\r\n".to_vec(), 400, "bad-http"),
        (big.into_bytes(), 431, "head-too-large"),
    ] {
        let mut c = unix(&s.sock);
        c.write_all(&request).unwrap();
        let (got, _) = read_until_closed(&mut c, Duration::from_secs(10));
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{got:?}");
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], code, "{v}");
    }
}
