//! Every endpoint through the real client against a real server on a Unix socket, and every
//! client mistake answered as JSON with its status and code.

mod common;

use common::{raw_exchange, serve_unix};
use drvisor_api::client::ClientError;
use drvisor_api::client::Method;
use drvisor_api::rest::*;
use drvisor_api::server::openapi_json;
use drvisor_api::HitAction;

fn api_err(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, body } => (status, body.code),
        other => panic!("not an API error: {other}"),
    }
}

#[test]
fn every_endpoint_round_trips() {
    let s = serve_unix(64);
    let c = &s.client;
    assert_eq!(c.vm().unwrap().state, VmState::Running);
    assert_eq!(c.pause().unwrap().state, VmState::Paused);
    assert_eq!(c.registers(1).unwrap().vcpu, 1);
    assert_eq!(c.resume().unwrap().state, VmState::Running);
    assert_eq!(c.capabilities().unwrap().rows.len(), 1);
    assert_eq!(c.vcpus().unwrap().len(), 2);
    assert_eq!(c.debugregs(1).unwrap().slots.len(), 4);

    let bp = c
        .add_breakpoint(&NewBreakpoint {
            location: "0x1030e0".into(),
            vcpu: None,
            action: HitAction::Pause,
            capture: None,
            condition: None,
        })
        .unwrap();
    assert_eq!(
        (bp.addr, bp.action, bp.kind),
        (0x1030e0, HitAction::Pause, BreakpointKind::Exec)
    );
    let wp = c
        .add_watchpoint(&NewWatchpoint {
            location: "phys:0x2000".into(),
            access: WatchAccess::ReadWrite,
            len: Some(4),
            vcpu: Some(1),
            action: HitAction::Continue,
            engine: EngineChoice::Page,
            capture: None,
            condition: None,
        })
        .unwrap();
    assert_eq!(
        (wp.kind, wp.len, wp.engine),
        (BreakpointKind::Watch, 4, Engine::Page)
    );
    assert_eq!(c.breakpoints().unwrap(), vec![bp.clone(), wp.clone()]);
    assert_eq!(c.breakpoint(bp.id).unwrap(), bp);
    c.remove_breakpoint(bp.id).unwrap();
    assert_eq!(
        api_err(c.breakpoint(bp.id).unwrap_err()),
        (404, "not-found".into())
    );
    assert_eq!(
        api_err(c.remove_breakpoint(bp.id).unwrap_err()),
        (404, "not-found".into())
    );

    let m = c
        .memory(&MemoryQuery {
            gpa: Some("0x10".into()),
            gva: None,
            vcpu: None,
            len: 2,
        })
        .unwrap();
    assert_eq!((m.gpa, m.hex.as_str()), (0x10, "abab"));
    let m = c
        .memory(&MemoryQuery {
            gpa: None,
            gva: Some("0x20".into()),
            vcpu: None,
            len: 1,
        })
        .unwrap();
    assert_eq!(m.gva, Some(0x20));

    let doc = c.openapi().unwrap();
    assert_eq!(
        doc,
        serde_json::from_str::<serde_json::Value>(&openapi_json()).unwrap()
    );

    assert_eq!(c.stop().unwrap().state, VmState::Stopped);
    assert_eq!(api_err(c.stop().unwrap_err()), (409, "vm-stopped".into()));
}

#[test]
fn creation_is_201_and_removal_204() {
    let s = serve_unix(8);
    let r = s
        .client
        .raw(
            Method::POST,
            "/breakpoints",
            Some(br#"{"location":"start_kernel"}"#.to_vec()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let bp: Breakpoint = serde_json::from_slice(&r.body).unwrap();
    let r = s
        .client
        .raw(
            Method::POST,
            "/watchpoints",
            Some(br#"{"location":"jiffies","len":8}"#.to_vec()),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 201);
    let r = s
        .client
        .raw(
            Method::DELETE,
            &format!("/breakpoints/{}", bp.id),
            None,
            &[],
        )
        .unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
}

/// Sends `body` (or nothing) to `method path` and returns (status, code), checking that the
/// answer is JSON `ErrorBody`.
fn refused(
    s: &common::Served,
    method: Method,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let r = s
        .client
        .raw(method.clone(), path, body.map(<[u8]>::to_vec), headers)
        .unwrap();
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/json"),
        "{method} {path}: {r:?}"
    );
    let e: ErrorBody = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not an ErrorBody ({e}): {:?}",
            String::from_utf8_lossy(&r.body)
        )
    });
    (r.status, e.code, e.message)
}

#[test]
fn client_mistakes_are_json_4xx() {
    let s = serve_unix(8);
    let (st, code, msg) = refused(
        &s,
        Method::POST,
        "/breakpoints",
        Some(b"{\"location\":"),
        &[],
    );
    assert_eq!((st, code.as_str()), (400, "bad-json"));
    assert!(msg.contains("EOF"), "{msg}");
    let (st, code, msg) = refused(
        &s,
        Method::POST,
        "/breakpoints",
        Some(br#"{"location":"x","colour":1}"#),
        &[],
    );
    assert_eq!((st, code.as_str()), (400, "bad-json"));
    assert!(msg.contains("unknown field `colour`"), "{msg}");
    let (st, code, _) = refused(
        &s,
        Method::PUT,
        "/vm/state",
        Some(br#"{"state":"sideways"}"#),
        &[],
    );
    assert_eq!((st, code.as_str()), (400, "bad-json"));
    // The wrong content type: the client sends application/json, so override it.
    let (st, code, msg) = refused(
        &s,
        Method::PUT,
        "/vm/state",
        Some(br#"{"state":"paused"}"#),
        &[("content-type", "text/plain")],
    );
    assert_eq!((st, code.as_str()), (400, "bad-json"), "{msg}");
    let big = format!(r#"{{"location":"{}"}}"#, "a".repeat(100 * 1024));
    let (st, code, _) = refused(&s, Method::POST, "/breakpoints", Some(big.as_bytes()), &[]);
    assert_eq!((st, code.as_str()), (413, "too-large"));
    let (st, code, _) = refused(&s, Method::GET, "/nowhere", None, &[]);
    assert_eq!((st, code.as_str()), (404, "not-found"));
    let (st, code, _) = refused(&s, Method::DELETE, "/vm", None, &[]);
    assert_eq!((st, code.as_str()), (405, "method-not-allowed"));
    let (st, code, _) = refused(&s, Method::GET, "/breakpoints/abc", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-path"));
    let (st, code, _) = refused(&s, Method::GET, "/vcpus/-1/registers", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-path"));
    let (st, code, _) = refused(&s, Method::GET, "/breakpoints/99", None, &[]);
    assert_eq!((st, code.as_str()), (404, "not-found"));
    let (st, code, _) = refused(&s, Method::GET, "/vcpus/7/debugregs", None, &[]);
    assert_eq!((st, code.as_str()), (404, "no-such-vcpu"));
    let (st, code, msg) = refused(&s, Method::GET, "/memory?gpa=0&len=4&colour=1", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-query"));
    assert!(msg.contains("colour"), "{msg}");
    let (st, code, _) = refused(&s, Method::GET, "/memory?gpa=0&gva=0&len=4", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-query"));
    let (st, code, _) = refused(&s, Method::GET, "/memory?len=4", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-query"));
    let (st, code, msg) = refused(&s, Method::GET, "/memory?gpa=0&vcpu=1&len=4", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-query"));
    assert!(msg.contains("`vcpu` goes with `gva`"), "{msg}");
    let (st, code, _) = refused(&s, Method::GET, "/memory?gpa=0&len=lots", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-query"));
    let (st, code, _) = refused(&s, Method::GET, "/memory?gpa=0&len=0", None, &[]);
    assert_eq!((st, code.as_str()), (422, "bad-length"));
    let (st, code, _) = refused(&s, Method::GET, "/memory?gpa=0&len=4097", None, &[]);
    assert_eq!((st, code.as_str()), (422, "bad-length"));
    let (st, code, _) = refused(&s, Method::GET, "/events?colour=1", None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-query"));
    let (st, code, _) = refused(
        &s,
        Method::GET,
        "/events",
        None,
        &[("last-event-id", "soon")],
    );
    assert_eq!((st, code.as_str()), (400, "bad-header"));
}

#[test]
fn the_stubs_refusals_keep_their_status() {
    let s = serve_unix(8);
    let (st, code, _) = refused(&s, Method::GET, "/vcpus/0/registers", None, &[]);
    assert_eq!((st, code.as_str()), (409, "vm-not-paused"));
    let (st, code, _) = refused(
        &s,
        Method::POST,
        "/breakpoints",
        Some(br#"{"location":"nosuch"}"#),
        &[],
    );
    assert_eq!((st, code.as_str()), (422, "unknown-symbol"));
    let (st, code, _) = refused(
        &s,
        Method::POST,
        "/watchpoints",
        Some(br#"{"location":"x","len":3}"#),
        &[],
    );
    assert_eq!((st, code.as_str()), (422, "bad-length"));
    let (st, code, _) = refused(&s, Method::GET, "/memory?gpa=boom&len=1", None, &[]);
    assert_eq!((st, code.as_str()), (500, "kvm-failed"));
}

#[test]
fn a_chunked_body_over_the_limit_is_413() {
    let s = serve_unix(8);
    let mut req = b"POST /breakpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..6 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, reply) = raw_exchange(
        std::os::unix::net::UnixStream::connect(&s.sock).unwrap(),
        &req,
    );
    assert_eq!(status, 413, "{reply}");
    assert!(reply.contains(r#""code":"too-large""#), "{reply}");
}

#[test]
fn a_huge_id_is_refused_without_being_echoed_whole() {
    let s = serve_unix(8);
    let id = "9".repeat(5000);
    let (st, code, msg) = refused(&s, Method::GET, &format!("/breakpoints/{id}"), None, &[]);
    assert_eq!((st, code.as_str()), (400, "bad-path"), "{msg}");
    assert!(msg.len() < 300, "{} bytes: {msg}", msg.len());
    assert!(msg.contains("more bytes"), "{msg}");
}
