//! The server as `curl --unix-socket` sees it: statuses, JSON error bodies, SSE framing.
//! Where curl is not installed the tests are reported as *ignored*, with the reason printed
//! (libtest-mimic: `harness = false` in Cargo.toml), never as passed. CI installs curl.

mod common;

use std::process::Command;

use common::serve_unix;
use drvisor_api::ring::EventKind;
use libtest_mimic::{Arguments, Trial};

fn main() {
    let args = Arguments::from_args();
    let have_curl = matches!(
        Command::new("curl").arg("--version").output(),
        Ok(o) if o.status.success()
    );
    let tests: [(&str, fn()); 2] = [
        ("curl_sees_json_everywhere", curl_sees_json_everywhere),
        ("curl_reads_the_event_stream", curl_reads_the_event_stream),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            if !have_curl {
                println!("skipping {name}: curl is not installed");
            }
            Trial::test(name, move || {
                test();
                Ok(())
            })
            .with_ignored_flag(!have_curl)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// `curl --unix-socket SOCK -sS ARGS http://localhost/PATH`: (status, body).
fn curl(sock: &std::path::Path, args: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .arg("--unix-socket")
        .arg(sock)
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

fn code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code: {body}"))
        .to_owned()
}

const JSON: &[&str] = &["-H", "content-type: application/json"];

fn curl_sees_json_everywhere() {
    let s = serve_unix(8);
    let sock = s.sock.as_path();
    let (st, body) = curl(sock, &[], "/vm");
    assert_eq!(st, 200);
    assert!(body.contains(r#""state":"running""#), "{body}");

    let post = |data: &str| -> (u16, String) {
        let mut a = JSON.to_vec();
        a.extend(["-X", "POST", "--data-binary", data]);
        curl(sock, &a, "/breakpoints")
    };
    let (st, body) = post(r#"{"location":"start_kernel","action":"pause"}"#);
    assert_eq!(st, 201, "{body}");
    let (st, body) = post("{nope");
    assert_eq!((st, code(&body).as_str()), (400, "bad-json"));
    let (st, body) = post(r#"{"location":"x","extra":true}"#);
    assert_eq!((st, code(&body).as_str()), (400, "bad-json"));
    let (st, body) = post(r#"{"location":"nosuch"}"#);
    assert_eq!((st, code(&body).as_str()), (422, "unknown-symbol"));
    // curl's default form content type is refused.
    let (st, body) = curl(
        sock,
        &["-X", "POST", "-d", r#"{"location":"x"}"#],
        "/breakpoints",
    );
    assert_eq!((st, code(&body).as_str()), (400, "bad-json"));

    let big = std::env::temp_dir().join(format!("drvisor-big-{}.json", std::process::id()));
    std::fs::write(
        &big,
        format!(r#"{{"location":"{}"}}"#, "a".repeat(70 * 1024)),
    )
    .unwrap();
    let at = format!("@{}", big.display());
    let mut a = JSON.to_vec();
    a.extend(["-X", "POST", "--data-binary", &at]);
    let (st, body) = curl(sock, &a, "/breakpoints");
    let _ = std::fs::remove_file(&big);
    assert_eq!((st, code(&body).as_str()), (413, "too-large"));

    let (st, body) = curl(sock, &[], "/breakpoints/12345");
    assert_eq!((st, code(&body).as_str()), (404, "not-found"));
    let (st, body) = curl(sock, &[], "/breakpoints/twelve");
    assert_eq!((st, code(&body).as_str()), (400, "bad-path"));
    let (st, body) = curl(sock, &[], "/no/such/path");
    assert_eq!((st, code(&body).as_str()), (404, "not-found"));
    let (st, body) = curl(sock, &["-X", "PATCH"], "/vm");
    assert_eq!((st, code(&body).as_str()), (405, "method-not-allowed"));
    let (st, body) = curl(sock, &[], "/vcpus/0/registers");
    assert_eq!((st, code(&body).as_str()), (409, "vm-not-paused"));
    let (st, body) = curl(sock, &[], "/memory?gpa=0x1000&len=4&bogus=1");
    assert_eq!((st, code(&body).as_str()), (400, "bad-query"));
    let (st, body) = curl(sock, &[], "/memory?gpa=0x1000&len=4");
    assert_eq!(st, 200, "{body}");
    let (st, body) = curl(sock, &[], "/openapi.json");
    assert_eq!(st, 200);
    assert_eq!(body, drvisor_api::server::openapi_json());
    let (st, _) = curl(sock, &["-X", "DELETE"], "/breakpoints/1");
    assert_eq!(st, 204);
}

fn curl_reads_the_event_stream() {
    let s = serve_unix(8);
    s.stub
        .ring
        .push(EventKind::Hit, r#"{"event":"hit","id":1}"#);
    s.stub.ring.push(EventKind::State, r#"{"event":"state"}"#);
    let (st, body) = curl(&s.sock, &["-N"], "/events?since=0&follow=false");
    assert_eq!(st, 200);
    assert_eq!(
        body,
        "id: 1\nevent: hit\ndata: {\"event\":\"hit\",\"id\":1}\n\n\
         id: 2\nevent: state\ndata: {\"event\":\"state\"}\n\n"
    );
    let (_, body) = curl(
        &s.sock,
        &["-N", "-H", "Last-Event-ID: 1"],
        "/events?follow=false",
    );
    assert!(body.starts_with("id: 2\n"), "{body}");
}
