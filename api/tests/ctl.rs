//! `drvisor ctl` against a served stub: output, the one-line errors and the exit codes.

mod common;

use clap::Parser;
use common::{serve_unix, Stub};
use drvisor_api::ctl::{run_with, CtlArgs, EXIT_CONNECT, EXIT_OK, EXIT_REFUSED, EXIT_SERVER};
use drvisor_api::ring::EventKind;
use drvisor_api::server::{serve, ServerConfig};

fn ctl(args: &[&str]) -> (u8, String, String) {
    let args = CtlArgs::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(args, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn ctl_drives_the_vm() {
    let s = serve_unix(16);
    let sock = s.sock.to_str().unwrap();
    let (code, out, _) = ctl(&["--sock", sock, "vm"]);
    assert_eq!(code, EXIT_OK);
    let vm: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(vm["state"], "running");
    assert!(out.contains("\n  \"state\""), "pretty JSON: {out}");

    let (code, out, err) = ctl(&[
        "--sock",
        sock,
        "break",
        "add",
        "start_kernel",
        "--vcpu",
        "1",
        "--action",
        "pause",
    ]);
    assert_eq!(code, EXIT_OK, "{err}");
    let bp: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (bp["vcpu"].as_u64(), bp["action"].as_str()),
        (Some(1), Some("pause"))
    );
    let (code, out, _) = ctl(&[
        "--sock",
        sock,
        "watch",
        "add",
        "phys:0x2000",
        "--access",
        "rw",
        "--len",
        "4",
        "--engine",
        "page",
    ]);
    assert_eq!(code, EXIT_OK);
    let wp: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (wp["access"].as_str(), wp["engine"].as_str()),
        (Some("rw"), Some("page"))
    );
    let (_, out, _) = ctl(&["--sock", sock, "break", "list"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(ctl(&["--sock", sock, "break", "rm", "1"]).0, EXIT_OK);

    assert_eq!(ctl(&["--sock", sock, "pause"]).0, EXIT_OK);
    let (code, out, _) = ctl(&["--sock", sock, "regs", "0"]);
    assert_eq!(code, EXIT_OK);
    assert!(out.contains("\"rip\""));
    assert_eq!(ctl(&["--sock", sock, "debugregs", "1"]).0, EXIT_OK);
    assert_eq!(ctl(&["--sock", sock, "resume"]).0, EXIT_OK);
    assert_eq!(ctl(&["--sock", sock, "caps"]).0, EXIT_OK);
    let (code, out, _) = ctl(&["--sock", sock, "mem", "--gva", "0x10", "--len", "2"]);
    assert_eq!(code, EXIT_OK);
    assert!(out.contains("\"hex\": \"abab\""), "{out}");

    let (code, out, _) = ctl(&["--sock", sock, "events"]);
    assert_eq!(code, EXIT_OK);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with("1 plan {"), "{out}");
    assert!(lines[3].starts_with("4 state {"), "{out}");
    let (_, out, _) = ctl(&["--sock", sock, "events", "--since", "4"]);
    assert_eq!(out.lines().count(), 1, "{out}");

    assert_eq!(ctl(&["--sock", sock, "stop"]).0, EXIT_OK);
}

#[test]
fn ctl_follows_events_until_the_vm_stops() {
    let s = serve_unix(16);
    let sock = s.sock.to_str().unwrap().to_owned();
    s.stub.ring.push(EventKind::Hit, r#"{"old":1}"#);
    let follower =
        std::thread::spawn(move || ctl(&["--sock", &sock, "events", "--follow", "--since", "0"]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    s.stub.ring.push(EventKind::Hit, r#"{"new":2}"#);
    s.client.stop().unwrap();
    let (code, out, _) = follower.join().unwrap();
    assert_eq!(code, EXIT_OK);
    assert_eq!(out, "1 hit {\"old\":1}\n2 hit {\"new\":2}\n3 state {\"event\":\"state\",\"state\":\"stopped\"}\n");
}

#[test]
fn ctl_errors_are_one_line_with_distinct_exit_codes() {
    let s = serve_unix(16);
    let sock = s.sock.to_str().unwrap();
    let (code, out, err) = ctl(&["--sock", sock, "break", "rm", "42"]);
    assert_eq!((code, out.as_str()), (EXIT_REFUSED, ""));
    assert_eq!(err, "drvisor ctl: no breakpoint 42 (not-found, HTTP 404)\n");
    let (code, _, err) = ctl(&["--sock", sock, "regs", "0"]);
    assert_eq!(code, EXIT_REFUSED);
    assert!(err.ends_with("(vm-not-paused, HTTP 409)\n"), "{err}");
    let (code, _, err) = ctl(&["--sock", sock, "mem", "--gpa", "boom", "--len", "1"]);
    assert_eq!(code, EXIT_SERVER);
    assert_eq!(
        err,
        "drvisor ctl: KVM_TRANSLATE failed: EIO (kvm-failed, HTTP 500)\n"
    );
    let missing = s.dir.path().join("missing.sock");
    let (code, _, err) = ctl(&["--sock", missing.to_str().unwrap(), "vm"]);
    assert_eq!(code, EXIT_CONNECT);
    assert!(err.starts_with("drvisor ctl: cannot connect to "), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn ctl_over_tcp_with_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let h = serve(
        Stub::new(8),
        ServerConfig {
            tcp: Some("127.0.0.1:0".parse().unwrap()),
            token: Some("tok".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let addr = h.tcp_addr().unwrap().to_string();
    let good = dir.path().join("good");
    std::fs::write(&good, "tok\n").unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "nope").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for f in [&good, &bad, &empty] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert_eq!(
        ctl(&["--tcp", &addr, "--token-file", good.to_str().unwrap(), "vm"]).0,
        EXIT_OK
    );
    let (code, _, err) = ctl(&["--tcp", &addr, "--token-file", bad.to_str().unwrap(), "vm"]);
    assert_eq!(code, EXIT_REFUSED);
    assert!(err.ends_with("(unauthorized, HTTP 401)\n"), "{err}");
    let (code, _, err) = ctl(&[
        "--tcp",
        &addr,
        "--token-file",
        empty.to_str().unwrap(),
        "vm",
    ]);
    assert_eq!(code, EXIT_REFUSED);
    assert!(err.contains("empty"), "{err}");
}
