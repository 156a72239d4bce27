//! The REST plane's questions answered by a [`Session`]: wire requests become engine requests
//! through the same location syntax and symbol table as the command line, and every refusal
//! becomes a status and a stable code.

use std::sync::Arc;
use std::time::Duration;

use drvisor_api::control::Control;
use drvisor_api::rest::{
    ApiError, Breakpoint, CapabilityRow, DebugRegs, DrFile, EngineChoice as WireEngine, ErrorKind,
    HostCapabilities, MemoryQuery, MemoryRead, NewBreakpoint, NewWatchpoint, Owner, SlotOwner,
    VcpuInfo, VcpuRegisters, VmInfo, VmState, WantedState, WatchAccess, MEMORY_READ_MAX,
};
use drvisor_api::ring::EventRing;
use drvisor_debug::{BreakSpec, Scope, VcpuId};
use drvisor_watch::Access;
use vm_memory::{Bytes, GuestAddress};

use super::location::{self, Target};
use super::request::{Error as ArmError, Request, What};
use super::session::Session;
use crate::condition::Condition;
use crate::watch::{ArmError as WatchError, EngineChoice, Place, RouteError};

/// How long a register read waits for a pausing vCPU to park.
const PARK_WAIT: Duration = Duration::from_secs(5);

fn unprocessable(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Unprocessable, code, message)
}

/// A request's `capture`: 1 to [`drvisor_api::MAX_CAPTURE`] bytes, or absent for none (as
/// `--capture` and `drvisor ctl` take it). Returns the bytes, 0 for none.
fn check_capture(capture: Option<u16>) -> Result<u16, ApiError> {
    let max = drvisor_api::MAX_CAPTURE;
    match capture {
        None => Ok(0),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(0) => Err(unprocessable(
            "bad-capture",
            format!("capture 0 captures nothing; give 1 to {max} bytes, or leave `capture` out"),
        )),
        Some(n) => Err(unprocessable(
            "bad-capture",
            format!(
                "capture {n} is more than the {max} bytes of stack a hit event may carry; give 1 to {max}, or leave `capture` out"
            ),
        )),
    }
}

/// A request's `condition`, parsed: a mistake in it is a 422 `bad-condition` with the column.
fn condition_of(text: Option<&str>) -> Result<Option<Arc<Condition>>, ApiError> {
    text.map(|t| {
        Condition::parse(t).map(Arc::new).map_err(|e| {
            unprocessable(
                "bad-condition",
                format!("condition `{}`: {e}", crate::quote::cut(t)),
            )
        })
    })
    .transpose()
}

fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, code, message)
}

fn stopped() -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        "vm-stopped",
        "the run has ended; nothing can be changed any more",
    )
}

impl Session {
    /// The target and address of `text`; `code`: for an execution breakpoint.
    fn parse_location(&self, text: &str, code: bool) -> Result<(Target, u64), ApiError> {
        // Valid JSON whose location does not parse is unprocessable, as an unknown symbol is.
        let target =
            location::parse(text).map_err(|e| unprocessable("bad-location", e.to_string()))?;
        let address = if code {
            location::code_address
        } else {
            location::address
        };
        let addr = address(&target, self.symbols()).map_err(|e| {
            let code = match e {
                crate::symbols::Error::Unknown { .. } => "unknown-symbol",
                crate::symbols::Error::NotCode { .. } => "not-code",
                _ => "bad-symbol",
            };
            unprocessable(code, format!("location `{}`: {e}", crate::quote::cut(text)))
        })?;
        Ok((target, addr))
    }

    fn scope_of(&self, vcpu: Option<u32>) -> Result<Scope, ApiError> {
        match vcpu {
            None => Ok(Scope::Vm),
            Some(v) if v < self.facts.vcpus => Ok(Scope::Vcpu(VcpuId(v))),
            Some(v) => Err(unprocessable(
                "no-such-vcpu",
                format!(
                    "vcpu {v} does not exist: this VM has vCPUs 0 to {}",
                    self.facts.vcpus - 1
                ),
            )),
        }
    }

    fn armed(&self, req: Request) -> Result<Breakpoint, ApiError> {
        if self.control.is_finished() {
            return Err(stopped());
        }
        let label = req.label.clone();
        let (id, added) = self.arm_view(req).map_err(|e| arm_error(&label, &e))?;
        added.ok_or_else(|| {
            ApiError::new(
                ErrorKind::Internal,
                "lost-breakpoint",
                format!("breakpoint #{} was armed but is gone", id.0),
            )
        })
    }

    fn cpu_view(&self, vcpu: u32) -> Result<usize, ApiError> {
        if vcpu < self.facts.vcpus {
            Ok(vcpu as usize)
        } else {
            Err(ApiError::new(
                ErrorKind::NotFound,
                "no-such-vcpu",
                format!(
                    "vCPU {vcpu} does not exist: this VM has vCPUs 0 to {}",
                    self.facts.vcpus - 1
                ),
            ))
        }
    }
}

/// A refusal of the engine as a status and code.
fn arm_error(label: &str, e: &ArmError) -> ApiError {
    use crate::debug::Error as Hw;
    let message = format!("{}: {e}", crate::quote::cut(label));
    let code = match e {
        ArmError::Break(Hw::Arbiter(_)) | ArmError::Watch(WatchError::Hw(Hw::Arbiter(_))) => {
            "no-free-slot"
        }
        ArmError::Break(Hw::Unsupported(_))
        | ArmError::Watch(WatchError::Hw(Hw::Unsupported(_)))
        | ArmError::Watch(WatchError::Route(RouteError::HwUnavailable(_))) => "unsupported-by-host",
        ArmError::Watch(WatchError::Route(RouteError::NoFreeSlot)) => "no-free-slot",
        ArmError::Watch(WatchError::Route(RouteError::HwShape) | WatchError::NoSlotShape) => {
            "bad-range"
        }
        ArmError::Watch(WatchError::PageWatchOnOneVcpu { .. }) => "page-watch-on-one-vcpu",
        ArmError::NoTaskLayout { .. } => "condition-needs-task-layout",
        ArmError::Watch(WatchError::Page(crate::watch::Error::Memslots(_))) => {
            return ApiError::new(ErrorKind::Internal, "kvm", message)
        }
        ArmError::Watch(WatchError::Page(crate::watch::Error::Translate(
            crate::watch::translate::Error::Kvm(_),
        ))) => return ApiError::new(ErrorKind::Internal, "kvm", message),
        ArmError::Watch(WatchError::Page(crate::watch::Error::Translate(_))) => "not-mapped",
        ArmError::Watch(WatchError::Page(_)) => "bad-range",
        ArmError::Break(Hw::Detached) | ArmError::Watch(WatchError::Hw(Hw::Detached)) => {
            "debug-detached"
        }
        ArmError::Break(Hw::NoSuchBreakpoint(_))
        | ArmError::Watch(WatchError::Hw(Hw::NoSuchBreakpoint(_))) => "not-found",
        // The session reserves every id itself: a clash is drvisor's bug, not the client's.
        ArmError::Break(Hw::IdInUse(_)) | ArmError::Watch(WatchError::Hw(Hw::IdInUse(_))) => {
            return ApiError::new(ErrorKind::Internal, "id-in-use", message)
        }
    };
    unprocessable(code, message)
}

impl Control for Session {
    fn vm(&self) -> VmInfo {
        let (state, exit) = self.state();
        VmInfo {
            state,
            exit,
            vcpus: self.facts.vcpus,
            memory_mib: self.facts.memory_mib,
            kernel: self.facts.kernel.clone(),
            policy: self.facts.policy.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    fn set_state(&self, want: WantedState) -> Result<VmInfo, ApiError> {
        if self.control.is_finished() {
            return Err(stopped());
        }
        match want {
            WantedState::Paused => {
                if !self.pause("api") {
                    return Err(ApiError::new(
                        ErrorKind::Internal,
                        "pause-timeout",
                        "the VM is paused, but a vCPU has not left the guest yet",
                    ));
                }
            }
            WantedState::Running => {
                self.resume("api");
            }
        }
        Ok(self.vm())
    }

    fn stop(&self) -> Result<VmInfo, ApiError> {
        if self.control.is_finished() {
            return Err(stopped());
        }
        Session::stop(self);
        Ok(self.vm())
    }

    fn capabilities(&self) -> HostCapabilities {
        HostCapabilities {
            rows: self
                .probe
                .iter()
                .flat_map(|p| &p.rows)
                .map(|r| CapabilityRow {
                    mechanism: serde_json::to_value(r.mechanism)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    cpl: r.cpl,
                    works: r.works,
                    observed: r.observed.clone(),
                })
                .collect(),
        }
    }

    fn add_breakpoint(&self, req: NewBreakpoint) -> Result<Breakpoint, ApiError> {
        let capture = check_capture(req.capture)?;
        let condition = condition_of(req.condition.as_deref())?;
        let (_, addr) = self.parse_location(&req.location, true)?;
        let spec = BreakSpec::exec(addr).map_err(|e| {
            unprocessable(
                "bad-address",
                format!("location `{}`: {e}", crate::quote::cut(&req.location)),
            )
        })?;
        let scope = self.scope_of(req.vcpu)?;
        self.armed(Request {
            label: req.location,
            what: What::Break(spec),
            scope,
            action: req.action,
            capture,
            owner: Owner::Api,
            condition,
        })
    }

    fn add_watchpoint(&self, req: NewWatchpoint) -> Result<Breakpoint, ApiError> {
        let capture = check_capture(req.capture)?;
        let condition = condition_of(req.condition.as_deref())?;
        let (physical, text) = match req.location.strip_prefix("phys:") {
            Some(rest) => (true, rest),
            None => (false, req.location.as_str()),
        };
        let (target, addr) = self.parse_location(text, false)?;
        let len = match req.len.or_else(|| location::size(&target, self.symbols())) {
            Some(0) => return Err(unprocessable("bad-length", "len must be at least 1 byte")),
            Some(len) => len,
            None => {
                return Err(unprocessable(
                    "bad-length",
                    format!(
                        "give a len: the size of `{}` is not known",
                        crate::quote::cut(text)
                    ),
                ))
            }
        };
        location::check_range(addr, len).map_err(|e| unprocessable("bad-range", e.to_string()))?;
        let scope = self.scope_of(req.vcpu)?;
        self.armed(Request {
            label: req.location.clone(),
            what: What::Watch {
                place: if physical {
                    Place::Physical(addr)
                } else {
                    Place::Virtual(addr)
                },
                access: match req.access {
                    WatchAccess::Write => Access::Write,
                    WatchAccess::Read => Access::Read,
                    WatchAccess::ReadWrite => Access::ReadWrite,
                },
                len,
                engine: match req.engine {
                    WireEngine::Auto => EngineChoice::Auto,
                    WireEngine::Hw => EngineChoice::Hw,
                    WireEngine::Page => EngineChoice::Page,
                },
            },
            scope,
            action: req.action,
            capture,
            owner: Owner::Api,
            condition,
        })
    }

    fn breakpoints(&self) -> Vec<Breakpoint> {
        Session::breakpoints(self)
    }

    fn breakpoint(&self, id: u32) -> Result<Breakpoint, ApiError> {
        Session::breakpoint(self, id).ok_or_else(|| not_found(id))
    }

    fn remove_breakpoint(&self, id: u32) -> Result<(), ApiError> {
        match self.remove(id) {
            Ok(true) => Ok(()),
            Ok(false) => Err(not_found(id)),
            Err(e) => Err(arm_error(&format!("#{id}"), &e)),
        }
    }

    fn vcpus(&self) -> Vec<VcpuInfo> {
        (0..self.facts.vcpus)
            .map(|vcpu| VcpuInfo { vcpu })
            .collect()
    }

    fn debugregs(&self, vcpu: u32) -> Result<DebugRegs, ApiError> {
        let index = self.cpu_view(vcpu)?;
        let (guest, plan, host_debug) = self.debug.vcpu_view(index).ok_or_else(|| {
            ApiError::new(ErrorKind::NotFound, "no-such-vcpu", format!("vCPU {vcpu}"))
        })?;
        let guest_states = self.debug.plan().guest_states.get(index).copied();
        Ok(DebugRegs {
            vcpu,
            guest: dr_file(guest.dr, guest.dr6.bits(), guest.dr7.bits()),
            // DR6 is the guest's: the host's plan has none of its own.
            loaded: dr_file(plan.dr, guest.dr6.bits(), plan.dr7.bits()),
            host_debug,
            slots: plan
                .slots
                .iter()
                .enumerate()
                .map(|(n, s)| SlotOwner {
                    slot: n as u8,
                    owner: crate::debug::plan_view::slot_owner(s),
                })
                .collect(),
            guest_slots: guest_states
                .map(|g| g.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        })
    }

    fn registers(&self, vcpu: u32) -> Result<VcpuRegisters, ApiError> {
        let index = self.cpu_view(vcpu)?;
        if self.state().0 != VmState::Paused {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "vm-not-paused",
                "registers can be read only while the VM is paused; PUT /vm/state {\"state\":\"paused\"} first",
            ));
        }
        self.parked.wait(index, PARK_WAIT).ok_or_else(|| {
            ApiError::new(
                ErrorKind::Conflict,
                "vcpu-not-parked",
                format!("vCPU {vcpu} has not left the guest yet; try again"),
            )
        })
    }

    fn memory(&self, query: &MemoryQuery) -> Result<MemoryRead, ApiError> {
        let address = |what: &str, text: &str| {
            location::number(text).ok_or_else(|| {
                bad_request(
                    "bad-address",
                    format!(
                        "{what}={}: write an address in 0x hex or decimal",
                        crate::quote::cut(text)
                    ),
                )
            })
        };
        if query.len == 0 || query.len > MEMORY_READ_MAX {
            return Err(unprocessable(
                "bad-length",
                format!("len={}: read 1 to {MEMORY_READ_MAX} bytes", query.len),
            ));
        }
        let mut bytes = vec![0u8; query.len as usize];
        let (gpa, gva) = match (&query.gpa, &query.gva) {
            (Some(gpa), None) => {
                let gpa = address("gpa", gpa)?;
                self.mem
                    .read_slice(&mut bytes, GuestAddress(gpa))
                    .map_err(|_| {
                        unprocessable(
                            "not-ram",
                            format!(
                                "{gpa:#x} + {} bytes is not all guest RAM ({} MiB from 0)",
                                query.len, self.facts.memory_mib
                            ),
                        )
                    })?;
                (gpa, None)
            }
            (None, Some(gva)) => {
                // A symbol or an address, as everywhere a location is written; read page by
                // page through the page tables of the vCPU asked for, by default vCPU 0 (the
                // kernel's mappings are every vCPU's).
                let gva = self.parse_location(gva, false)?.1;
                let vcpu = match self.scope_of(query.vcpu)? {
                    Scope::Vcpu(VcpuId(v)) => v as usize,
                    Scope::Vm => 0,
                };
                let gpa = self
                    .read_virtual(vcpu, gva, &mut bytes)
                    .map_err(|e| unprocessable("not-mapped", e.to_string()))?;
                (gpa, Some(gva))
            }
            _ => {
                return Err(bad_request(
                    "bad-query",
                    "give exactly one of gpa= and gva=, and len=",
                ))
            }
        };
        Ok(MemoryRead {
            gpa,
            gva,
            hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    fn events(&self) -> &EventRing {
        &self.ring
    }
}

fn dr_file(dr: [u64; 4], dr6: u64, dr7: u64) -> DrFile {
    let [dr0, dr1, dr2, dr3] = dr;
    DrFile {
        dr0,
        dr1,
        dr2,
        dr3,
        dr6,
        dr7,
    }
}

fn not_found(id: u32) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "not-found",
        format!("no breakpoint or watch has id {id}; GET /breakpoints lists them"),
    )
}
