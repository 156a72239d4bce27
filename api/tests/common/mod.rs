//! A stub VM for the server tests: in-memory breakpoints, a running/paused/stopped state
//! machine, and an event ring the tests push to.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drvisor_api::client::Client;
use drvisor_api::control::Control;
use drvisor_api::rest::*;
use drvisor_api::ring::{EventKind, EventRing};
use drvisor_api::server::{serve, ServerConfig, ServerHandle};
use drvisor_api::HitAction;

struct Inner {
    state: VmState,
    bps: BTreeMap<u32, Breakpoint>,
    next_id: u32,
}

/// The stub: 2 vCPUs; symbol `nosuch` is unknown (422); memory at gpa `boom` fails (500).
pub struct Stub {
    inner: Mutex<Inner>,
    pub ring: EventRing,
}

pub const VCPUS: u32 = 2;

impl Stub {
    pub fn new(ring_capacity: usize) -> Arc<Stub> {
        Arc::new(Stub {
            inner: Mutex::new(Inner {
                state: VmState::Running,
                bps: BTreeMap::new(),
                next_id: 1,
            }),
            ring: EventRing::new(ring_capacity),
        })
    }

    fn info(s: &Inner) -> VmInfo {
        VmInfo {
            state: s.state,
            exit: (s.state == VmState::Stopped).then(|| VmExit {
                status: 0,
                reason: "stop requested".into(),
            }),
            vcpus: VCPUS,
            memory_mib: 64,
            kernel: "embedded test guest".into(),
            policy: "host-first".into(),
            uptime_ms: 1,
        }
    }

    fn vcpu(n: u32) -> Result<(), ApiError> {
        if n < VCPUS {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::NotFound,
                "no-such-vcpu",
                format!("no vCPU {n}"),
            ))
        }
    }

    fn running(s: &Inner) -> Result<(), ApiError> {
        if s.state == VmState::Stopped {
            Err(ApiError::new(
                ErrorKind::Conflict,
                "vm-stopped",
                "the run has ended",
            ))
        } else {
            Ok(())
        }
    }

    fn insert(&self, bp: Breakpoint) -> Breakpoint {
        let mut s = self.inner.lock().unwrap();
        let mut bp = bp;
        bp.id = s.next_id;
        s.next_id += 1;
        s.bps.insert(bp.id, bp.clone());
        self.ring.push(
            EventKind::Plan,
            format!(r#"{{"event":"plan","added":{}}}"#, bp.id),
        );
        bp
    }
}

fn resolve(location: &str) -> Result<u64, ApiError> {
    if location == "nosuch" {
        return Err(ApiError::new(
            ErrorKind::Unprocessable,
            "unknown-symbol",
            "no symbol `nosuch` in the guest kernel",
        ));
    }
    let l = location.strip_prefix("phys:").unwrap_or(location);
    Ok(match l.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap_or(0x1000),
        None => l.parse().unwrap_or(0x1000),
    })
}

fn breakpoint(location: String, addr: u64, vcpu: Option<u32>, action: HitAction) -> Breakpoint {
    Breakpoint {
        id: 0,
        kind: BreakpointKind::Exec,
        location,
        addr,
        len: 1,
        access: None,
        vcpu,
        action,
        engine: Engine::Hw,
        owner: Owner::Api,
        state: "armed".into(),
        vcpus: vec![VcpuPlacement {
            vcpu: 0,
            state: "armed".into(),
            slot: Some(0),
            reason: None,
        }],
        pages: vec![],
        hits: 0,
        condition: None,
        matched: None,
        condition_faults: None,
    }
}

impl Control for Stub {
    fn vm(&self) -> VmInfo {
        Self::info(&self.inner.lock().unwrap())
    }

    fn set_state(&self, want: WantedState) -> Result<VmInfo, ApiError> {
        let mut s = self.inner.lock().unwrap();
        Self::running(&s)?;
        s.state = match want {
            WantedState::Running => VmState::Running,
            WantedState::Paused => VmState::Paused,
        };
        self.ring.push(
            EventKind::State,
            format!(r#"{{"event":"state","state":"{:?}"}}"#, s.state),
        );
        Ok(Self::info(&s))
    }

    fn stop(&self) -> Result<VmInfo, ApiError> {
        let mut s = self.inner.lock().unwrap();
        Self::running(&s)?;
        s.state = VmState::Stopped;
        self.ring
            .push(EventKind::State, r#"{"event":"state","state":"stopped"}"#);
        self.ring.close();
        Ok(Self::info(&s))
    }

    fn capabilities(&self) -> HostCapabilities {
        HostCapabilities {
            rows: vec![CapabilityRow {
                mechanism: "host-exec-breakpoint".into(),
                cpl: 0,
                works: true,
                observed: "#DB exit".into(),
            }],
        }
    }

    fn add_breakpoint(&self, req: NewBreakpoint) -> Result<Breakpoint, ApiError> {
        Self::running(&self.inner.lock().unwrap())?;
        if let Some(v) = req.vcpu {
            Self::vcpu(v)?;
        }
        let addr = resolve(&req.location)?;
        Ok(self.insert(breakpoint(req.location, addr, req.vcpu, req.action)))
    }

    fn add_watchpoint(&self, req: NewWatchpoint) -> Result<Breakpoint, ApiError> {
        Self::running(&self.inner.lock().unwrap())?;
        if let Some(v) = req.vcpu {
            Self::vcpu(v)?;
        }
        let addr = resolve(&req.location)?;
        let len = req.len.unwrap_or(8);
        if ![1, 2, 4, 8].contains(&len) {
            return Err(ApiError::new(
                ErrorKind::Unprocessable,
                "bad-length",
                "len must be 1, 2, 4 or 8",
            ));
        }
        let mut bp = breakpoint(req.location, addr, req.vcpu, req.action);
        bp.kind = BreakpointKind::Watch;
        bp.len = len;
        bp.access = Some(req.access);
        bp.engine = if req.engine == EngineChoice::Page {
            Engine::Page
        } else {
            Engine::Hw
        };
        Ok(self.insert(bp))
    }

    fn breakpoints(&self) -> Vec<Breakpoint> {
        self.inner.lock().unwrap().bps.values().cloned().collect()
    }

    fn breakpoint(&self, id: u32) -> Result<Breakpoint, ApiError> {
        self.inner
            .lock()
            .unwrap()
            .bps
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    fn remove_breakpoint(&self, id: u32) -> Result<(), ApiError> {
        self.inner
            .lock()
            .unwrap()
            .bps
            .remove(&id)
            .ok_or_else(|| not_found(id))?;
        self.ring.push(
            EventKind::Plan,
            format!(r#"{{"event":"plan","removed":{id}}}"#),
        );
        Ok(())
    }

    fn vcpus(&self) -> Vec<VcpuInfo> {
        (0..VCPUS).map(|vcpu| VcpuInfo { vcpu }).collect()
    }

    fn debugregs(&self, vcpu: u32) -> Result<DebugRegs, ApiError> {
        Self::vcpu(vcpu)?;
        Ok(DebugRegs {
            vcpu,
            guest: DrFile::default(),
            loaded: DrFile::default(),
            host_debug: true,
            slots: (0..4)
                .map(|slot| SlotOwner {
                    slot,
                    owner: "free".into(),
                })
                .collect(),
            guest_slots: vec!["idle".into(); 4],
        })
    }

    fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, ApiError> {
        Self::vcpu(vcpu)?;
        if self.inner.lock().unwrap().state != VmState::Paused {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "vm-not-paused",
                "pause the VM first",
            ));
        }
        Ok(VcpuRegisters {
            vcpu,
            ..Default::default()
        })
    }

    fn memory(&self, query: &MemoryQuery) -> Result<MemoryRead, ApiError> {
        if query.gpa.as_deref() == Some("boom") {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "kvm-failed",
                "KVM_TRANSLATE failed: EIO",
            ));
        }
        let gva = query.gva.as_deref().map(resolve).transpose()?;
        let gpa = match &query.gpa {
            Some(a) => resolve(a)?,
            None => gva.unwrap_or(0),
        };
        Ok(MemoryRead {
            gpa,
            gva,
            hex: "ab".repeat(query.len as usize),
        })
    }

    fn events(&self) -> &EventRing {
        &self.ring
    }
}

fn not_found(id: u32) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "not-found",
        format!("no breakpoint {id}"),
    )
}

/// A stub served on a Unix socket in a temporary directory.
pub struct Served {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub stub: Arc<Stub>,
    pub handle: ServerHandle,
    pub client: Client,
}

pub fn serve_unix(ring_capacity: usize) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let stub = Stub::new(ring_capacity);
    let handle = serve(
        stub.clone(),
        ServerConfig {
            unix: Some(sock.clone()),
            tcp: None,
            token: None,
            on_thread_start: None,
        },
    )
    .unwrap();
    let client = Client::unix(&sock).unwrap();
    Served {
        dir,
        sock,
        stub,
        handle,
        client,
    }
}

/// Writes `request` as it is on a new connection and reads the reply to EOF: for what the
/// client never sends (no `Authorization`, chunked bodies).
pub fn raw_exchange(mut stream: impl Read + Write, request: &[u8]) -> (u16, String) {
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"));
    (status, reply)
}
