//! The listeners: the Unix socket's mode, liveness check, stale replacement and removal;
//! TCP's loopback-only rule and its bearer token.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;

use common::{raw_exchange, serve_unix, Stub};
use drvisor_api::client::{Client, ClientError};
use drvisor_api::server::{serve, ServeError, ServerConfig};

#[test]
fn the_socket_is_0600_and_removed_at_shutdown() {
    let s = serve_unix(8);
    let md = std::fs::metadata(&s.sock).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(s.handle.unix_path(), Some(s.sock.as_path()));
    s.client.vm().unwrap();
    s.handle.shutdown();
    assert!(!s.sock.exists(), "the socket file outlived shutdown");
    assert!(matches!(s.client.vm(), Err(ClientError::Connect { .. })));
}

#[test]
fn dropping_the_handle_removes_the_socket() {
    let common::Served {
        dir: _dir,
        sock,
        handle,
        ..
    } = serve_unix(8);
    drop(handle);
    assert!(!sock.exists());
}

#[test]
fn a_live_socket_is_not_taken_over() {
    let s = serve_unix(8);
    let err = serve(
        Stub::new(8),
        ServerConfig {
            unix: Some(s.sock.clone()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, ServeError::AlreadyServing(_)), "{err}");
    assert!(err.to_string().contains("already answers"), "{err}");
    // The first server is unharmed.
    s.client.vm().unwrap();
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let h = serve(
        Stub::new(8),
        ServerConfig {
            unix: Some(sock.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    Client::unix(&sock).unwrap().vm().unwrap();
    h.shutdown();
    assert!(!sock.exists());
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes");
    std::fs::write(&path, "keep me").unwrap();
    let err = serve(
        Stub::new(8),
        ServerConfig {
            unix: Some(path.clone()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, ServeError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn tcp_needs_loopback_and_a_token() {
    let token = Some("t0ken".to_owned());
    for addr in ["0.0.0.0:0", "10.1.2.3:0", "[::]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = serve(
            Stub::new(8),
            ServerConfig {
                tcp: Some(addr),
                token: token.clone(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ServeError::NotLoopback(_)), "{addr}: {err}");
        assert!(err.to_string().contains("loopback"), "{err}");
    }
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for token in [None, Some(String::new()), Some("  ".into())] {
        let err = serve(
            Stub::new(8),
            ServerConfig {
                tcp: Some(local),
                token,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ServeError::TcpWithoutToken(_)), "{err}");
    }
    let err = serve(Stub::new(8), ServerConfig::default()).unwrap_err();
    assert!(matches!(err, ServeError::NothingToServe), "{err}");
}

#[test]
fn tcp_requests_carry_the_right_token() {
    let h = serve(
        Stub::new(8),
        ServerConfig {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("s3cret".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let addr = h.tcp_addr().unwrap();
    assert_ne!(addr.port(), 0);

    let get = |auth: &str| {
        let req = format!("GET /vm HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        raw_exchange(TcpStream::connect(addr).unwrap(), req.as_bytes())
    };
    let (status, reply) = get("");
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains(r#""code":"unauthorized""#), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{reply}"
    );
    assert_eq!(get("Authorization: Basic czNjcmV0\r\n").0, 401);
    assert_eq!(get("Authorization: Bearer s3cre\r\n").0, 401);
    assert_eq!(get("Authorization: Bearer s3cret\r\n").0, 200);
    // Unknown paths are behind the token too.
    let (status, _) = raw_exchange(
        TcpStream::connect(addr).unwrap(),
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);

    let wrong = Client::tcp(addr, "guess").unwrap().vm().unwrap_err();
    assert_eq!(
        (wrong.status(), wrong.code()),
        (Some(401), Some("unauthorized"))
    );
    let right = Client::tcp(addr, "s3cret").unwrap();
    right.vm().unwrap();
    let not_found = right.breakpoint(9).unwrap_err();
    assert_eq!(not_found.status(), Some(404));
    h.shutdown();
}

#[test]
fn unix_and_tcp_together() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("both.sock");
    let h = serve(
        Stub::new(8),
        ServerConfig {
            unix: Some(sock.clone()),
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("k".into()),
            on_thread_start: None,
        },
    )
    .unwrap();
    Client::unix(&sock).unwrap().pause().unwrap();
    let vm = Client::tcp(h.tcp_addr().unwrap(), "k")
        .unwrap()
        .vm()
        .unwrap();
    assert_eq!(vm.state, drvisor_api::rest::VmState::Paused);
}
