//! `drvisor ctl` against servers that are not drvisor or do not behave: a silent one, one whose
//! answer never ends, a foreign 404, a non-loopback address, a reader that closes stdout. Each
//! ends within a time bound with its own message and exit code.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use clap::Parser;
use common::serve_unix;
use drvisor_api::ctl::{run_with, CtlArgs, EXIT_OK, EXIT_REFUSED, EXIT_SERVER};
use drvisor_api::ring::EventKind;

fn ctl_to(args: &[&str], out: &mut dyn Write) -> (u8, String, Duration) {
    let args = CtlArgs::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).unwrap();
    let mut err = Vec::new();
    let start = Instant::now();
    let code = run_with(args, out, &mut err);
    (code, String::from_utf8(err).unwrap(), start.elapsed())
}

fn ctl(args: &[&str]) -> (u8, String, Duration) {
    ctl_to(args, &mut Vec::new())
}

/// A Unix socket where each connection's request is read and `answer` written.
fn answering(
    answer: impl Fn(&mut std::os::unix::net::UnixStream) + Send + 'static,
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let l = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            answer(&mut c);
        }
    });
    (dir, path.to_str().unwrap().to_owned())
}

#[test]
fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // Listening, never accepting: the connection succeeds and nothing ever comes.
    let _l = UnixListener::bind(&path).unwrap();
    let (code, err, took) = ctl(&["--sock", path.to_str().unwrap(), "--timeout", "1", "vm"]);
    assert_eq!(code, EXIT_SERVER, "{err}");
    assert!(err.contains("no answer within"), "{err}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn an_endless_answer_is_cut_at_the_cap() {
    let (_dir, sock) = answering(|c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n");
        let chunk = vec![b' '; 1 << 20];
        while c.write_all(&chunk).is_ok() {}
    });
    let (code, err, took) = ctl(&["--sock", &sock, "--timeout", "60", "vm"]);
    assert_eq!(code, EXIT_SERVER, "{err}");
    assert!(err.contains("64 MiB"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_foreign_404_says_what_came_and_that_this_may_not_be_drvisor() {
    let (_dir, sock) = answering(|c| {
        let _ = c
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    });
    let (code, err, _) = ctl(&["--sock", &sock, "vm"]);
    assert_eq!(code, EXIT_REFUSED, "{err}");
    assert!(err.contains("HTTP 404") && err.contains("drvisor"), "{err}");
}

#[test]
fn a_non_loopback_address_gets_no_token_without_insecure_remote() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    std::fs::write(&tok, "t").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tok = tok.to_str().unwrap();
    let (code, err, took) = ctl(&["--tcp", "192.0.2.1:80", "--token-file", tok, "vm"]);
    assert_eq!(code, EXIT_REFUSED, "{err}");
    assert!(
        err.contains("--insecure-remote") && err.contains("ssh"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(1),
        "refused before connecting: {took:?}"
    );
    // With the flag it tries (192.0.2.0/24 is TEST-NET-1: nothing answers), within the timeout.
    let (code, _, took) = ctl(&[
        "--tcp",
        "192.0.2.1:80",
        "--token-file",
        tok,
        "--insecure-remote",
        "--timeout",
        "1",
        "vm",
    ]);
    assert_ne!(code, EXIT_OK);
    assert!(took < Duration::from_secs(4), "{took:?}");
}

/// A stdout whose reader went away.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_stdout_ends_events_quietly() {
    let s = serve_unix(16);
    s.stub.ring.push(EventKind::Hit, "{}");
    let sock = s.sock.to_str().unwrap();
    let (code, err, _) = ctl_to(&["--sock", sock, "events"], &mut ClosedPipe);
    assert_eq!((code, err.as_str()), (EXIT_OK, ""));
    let (code, err, _) = ctl_to(&["--sock", sock, "vm"], &mut ClosedPipe);
    assert_eq!((code, err.as_str()), (EXIT_OK, ""));
}
