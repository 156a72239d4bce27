//! A running VM as its clients drive it: the one door the command line, the REST plane and the
//! gdb stub call (the CI harness drives `drvisor run` processes). It arms and removes
//! breakpoints through the debug controller and the page-watch engine, pauses and resumes
//! through the vCPU gate, ends the run through run control, and keeps the book of who asked for
//! what. No method touches a vCPU's file descriptor; a change returns once every vCPU runs the
//! new plan.
//!
//! Commands pass the door one at a time, whichever client sent them, so they cannot interleave:
//! - a breakpoint's id is reserved and booked before anything is armed;
//! - its `added` event is published before its first hit (a hit that comes first waits for
//!   it, see [`super::announce`]), and `removed` after its last;
//! - the same id removed twice, even at once, is removed once: the second finds no such id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drvisor_api::rest::{
    Breakpoint, BreakpointKind, PlanChange, PlanEvent, StateEvent, VcpuPlacement, VmExit, VmState,
    WatchAccess,
};
use drvisor_api::ring::{EventKind, EventRing};
use drvisor_debug::HostBpId;
use drvisor_watch::Access;
use vm_memory::GuestMemoryMmap;

use super::announce::Announcement;
use super::hits::{reporter, StackNames};
use super::request::{arm, Error, Request, What};
use crate::debug::{DebugController, OnHit};
use crate::deferred::Deferred;
use crate::events::{Event, EventBus};
use crate::kernel::{LazyOrc, TaskLayout};
use crate::outcome::Outcome;
use crate::probe::ProbeReport;
use crate::run_control::RunControl;
use crate::stack_words::CodeIndex;
use crate::symbols::SymbolTable;
use crate::vcpu::parked::ParkedRegs;
use crate::vcpu::PauseListener;
use crate::watch::{Engine, MappingChange, PageWatchEngine, Place};
use crate::Vm;

/// How many events the stream's ring keeps for replay.
pub const RING_CAPACITY: usize = 64 * 1024;

/// Test-only: the ring's capacity, to make a reader fall behind with few hits. Read only in
/// builds with the `test-hooks` feature.
pub const RING_VAR: &str = "DRVISOR_STREAM_RING";

/// How long a pause waits for every vCPU to leave the guest.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the VM was built with, for `GET /vm`.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The kernel: a path, or `embedded test guest`.
    pub kernel: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// The slot policy's name.
    pub policy: String,
    /// Number of vCPUs.
    pub vcpus: u32,
}

/// One booked request and where it went.
struct Entry {
    request: Request,
    /// `None` while it is being armed: clients do not see it yet.
    engine: Option<Engine>,
    /// Whether its `added` event is out.
    announced: Arc<Announcement>,
}

/// A VM's control session.
pub struct Session {
    pub(super) debug: Arc<DebugController>,
    pub(super) watch: Arc<PageWatchEngine>,
    pub(super) control: Arc<RunControl>,
    pub(super) parked: Arc<ParkedRegs>,
    pub(super) mem: GuestMemoryMmap,
    /// The kernel image's symbols, task layout and ORC table, read while the VM starts.
    image: Arc<Deferred<ImageKnowledge>>,
    pub(super) probe: Option<ProbeReport>,
    pub(super) facts: Facts,
    pub(super) started: Instant,
    bus: Arc<EventBus<Event>>,
    pub(super) ring: Arc<EventRing>,
    host_signal: Arc<crate::devices::HostSignal>,
    feeder: Mutex<Option<JoinHandle<()>>>,
    book: Mutex<BTreeMap<u32, Entry>>,
    /// Held by every command for its whole length: one command at a time.
    door: Mutex<()>,
    /// Told of each real pause and resume after the bus (see [`Session::observe_pauses`]).
    pause_observer: Arc<OnceLock<PauseListener>>,
    /// The code symbols by address, to name a captured stack's words; made at the first
    /// breakpoint that captures.
    code_index: OnceLock<Arc<CodeIndex>>,
}

/// What drvisor knows of the guest's kernel from its image: a bzImage's payload must be
/// decompressed for it, so it is read while the VM starts ([`Deferred`]), and the first command
/// that needs it waits for it.
pub struct ImageKnowledge {
    /// The symbols: a given System.map, else the kernel's own.
    pub symbols: SymbolTable,
    /// Where a Linux guest keeps its current task (from the image's BTF), for conditions on
    /// `comm`, `pid` and `tgid`; `None` when the image does not say.
    pub task_layout: Option<TaskLayout>,
    /// The kernel's ORC unwind table (or why it has none), for a capturing hit's backtrace,
    /// decoded at the first.
    pub orc: Arc<LazyOrc>,
}

impl Session {
    /// A session on `vm`, before it runs. With `stream`, a thread feeds the hits on the bus
    /// into the ring `GET /events` serves; without, nobody pays for serializing them twice.
    pub fn new(
        vm: &Vm,
        facts: Facts,
        image: Arc<Deferred<ImageKnowledge>>,
        stream: bool,
    ) -> std::io::Result<Arc<Self>> {
        let capacity = match cfg!(feature = "test-hooks") {
            true => std::env::var(RING_VAR)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(RING_CAPACITY),
            false => RING_CAPACITY,
        };
        let ring = Arc::new(EventRing::new(capacity));
        let feeder = match stream {
            true => Some(super::feeder::spawn(vm.events(), ring.clone())?),
            false => None,
        };
        // Pauses and resumes reach the bus from the gate, in the order they happen there: a
        // `pause` hit that a racing resume overtook never shows as paused.
        let bus = vm.events().clone();
        let pause_observer: Arc<OnceLock<PauseListener>> = Arc::default();
        let observer = pause_observer.clone();
        vm.debug().listen_pauses(Box::new(move |paused, reason| {
            if let Some(observe) = observer.get() {
                observe(paused, reason);
            }
            bus.publish(Event::State(StateEvent {
                event: drvisor_api::EventName::State,
                state: if paused {
                    VmState::Paused
                } else {
                    VmState::Running
                },
                reason: reason.to_owned(),
                exit: None,
            }));
        }));
        let session = Arc::new(Session {
            debug: vm.debug().clone(),
            watch: vm.watch().clone(),
            control: vm.run_control().clone(),
            parked: vm.parked().clone(),
            mem: vm.memory().clone(),
            image,
            probe: vm.probe().cloned(),
            facts,
            started: Instant::now(),
            bus: vm.events().clone(),
            ring,
            host_signal: vm.host_signal().clone(),
            feeder: Mutex::new(feeder),
            book: Mutex::new(BTreeMap::new()),
            door: Mutex::new(()),
            pause_observer,
            code_index: OnceLock::new(),
        });
        // What the guest's page tables do to a guest-virtual watch (armed at last, moved,
        // left behind) reaches every client.
        let weak = Arc::downgrade(&session);
        vm.watch().on_mapping_change(Box::new(move |id, change| {
            let Some(session) = weak.upgrade() else {
                return;
            };
            // Never before its `added`: a watch can arm itself while its command is under way.
            if let Some(announced) = session.announcement(id.0) {
                announced.wait();
            }
            let change = match change {
                MappingChange::Armed => PlanChange::Armed,
                MappingChange::Remapped => PlanChange::Remapped,
                MappingChange::LeftBehind => PlanChange::LeftBehind,
            };
            if let Some(bp) = session.breakpoint(id.0) {
                session.publish_plan(change, bp);
            }
        }));
        Ok(session)
    }

    /// Sets the one observer told of each pause and resume that really happens (`true`:
    /// paused), with its reason (a `pause` hit's is [`crate::debug::HitContext::pause_reason`]),
    /// before its `state` event is published; `false` if one is set. A `pause` hit that a
    /// racing resume overtook is never told. It runs under the vCPU gate's lock: it must be
    /// quick and must not pause or resume.
    pub fn observe_pauses(&self, observer: PauseListener) -> bool {
        self.pause_observer.set(observer).is_ok()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Entry>> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Passes the door: held until the command is done.
    pub(super) fn door(&self) -> std::sync::MutexGuard<'_, ()> {
        self.door.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn announcement(&self, id: u32) -> Option<Arc<Announcement>> {
        self.book().get(&id).map(|e| e.announced.clone())
    }

    /// The address of a location as every client writes it: a symbol, or an address in `0x`
    /// hex or decimal; the error says what is wrong with it.
    pub fn resolve_location(&self, text: &str) -> Result<u64, super::location::ResolveError> {
        super::location::resolve(text, self.symbols())
    }

    /// The guest's symbols (waiting, the first time, until the image is read).
    pub fn symbols(&self) -> &SymbolTable {
        &self.image.get().symbols
    }

    /// The guest's task layout, if its image gives one.
    pub fn task_layout(&self) -> Option<TaskLayout> {
        self.image.get().task_layout
    }

    /// The callback a breakpoint with `req`'s action reports its hits through (only those at
    /// which its condition holds).
    pub fn on_hit(&self, req: &Request) -> OnHit {
        reporter(
            self.bus.clone(),
            req.action,
            req.capture,
            self.mem.clone(),
            req.condition.clone(),
            self.task_layout(),
            (req.capture > 0)
                .then(|| {
                    self.code_index
                        .get_or_init(|| Arc::new(CodeIndex::new(self.symbols())))
                        .clone()
                })
                .filter(|index| !index.is_empty())
                .map(|code| StackNames {
                    code,
                    orc: Some(self.image.get().orc.clone()),
                }),
        )
    }

    /// Refuses a condition this guest cannot evaluate: one on the current task without its
    /// layout.
    fn check_condition(&self, req: &Request) -> Result<(), Error> {
        match &req.condition {
            Some(c) if c.uses_task() && self.task_layout().is_none() => Err(Error::NoTaskLayout {
                condition: c.text().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Arms `req` with the standard hit reporting; returns its id and engine once every vCPU
    /// runs the new plan.
    pub fn arm(&self, req: Request) -> Result<(HostBpId, Engine), Error> {
        let on_hit = self.on_hit(&req);
        self.arm_with(req, on_hit)
    }

    /// [`Session::arm`] with a hit callback of the caller's.
    pub fn arm_with(&self, req: Request, on_hit: OnHit) -> Result<(HostBpId, Engine), Error> {
        self.arm_announced(req, on_hit)
            .map(|(id, engine, _)| (id, engine))
    }

    /// [`Session::arm`], returning the breakpoint as its `added` event showed it (another
    /// client may remove it the moment the door opens again).
    pub fn arm_view(&self, req: Request) -> Result<(HostBpId, Option<Breakpoint>), Error> {
        let on_hit = self.on_hit(&req);
        self.arm_announced(req, on_hit).map(|(id, _, bp)| (id, bp))
    }

    fn arm_announced(
        &self,
        req: Request,
        on_hit: OnHit,
    ) -> Result<(HostBpId, Engine, Option<Breakpoint>), Error> {
        self.check_condition(&req)?;
        let _door = self.door();
        let id = self.debug.allocate_id();
        let announced = Announcement::new();
        self.book().insert(
            id.0,
            Entry {
                request: req.clone(),
                engine: None,
                announced: announced.clone(),
            },
        );
        let engine = match arm(id, &req, announced.gate(on_hit), &self.debug, &self.watch) {
            Ok(engine) => engine,
            Err(e) => {
                self.book().remove(&id.0);
                announced.open();
                return Err(e);
            }
        };
        if let Some(entry) = self.book().get_mut(&id.0) {
            entry.engine = Some(engine);
        }
        let added = self.breakpoint(id.0);
        if let Some(bp) = &added {
            self.publish_plan(PlanChange::Added, bp.clone());
        }
        announced.open();
        Ok((id, engine, added))
    }

    /// Removes breakpoint `id`; `false` if there is none. Returns once no vCPU reports it.
    pub fn remove(&self, id: u32) -> Result<bool, Error> {
        let _door = self.door();
        let Some(before) = self.breakpoint(id) else {
            return Ok(false);
        };
        let engine = self.book().get(&id).and_then(|e| e.engine);
        match engine {
            Some(Engine::Page) => self
                .watch
                .remove(HostBpId(id))
                .map_err(|e| Error::Watch(e.into()))?,
            _ => self.debug.remove(HostBpId(id))?,
        }
        self.book().remove(&id);
        self.publish_plan(PlanChange::Removed, before);
        Ok(true)
    }

    /// Every breakpoint and watch, by id.
    pub fn breakpoints(&self) -> Vec<Breakpoint> {
        let ids: Vec<u32> = self.book().keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.breakpoint(id))
            .collect()
    }

    /// Breakpoint `id` as clients see it; `None` also while its command is still arming it.
    pub fn breakpoint(&self, id: u32) -> Option<Breakpoint> {
        let book = self.book();
        let entry = book.get(&id)?;
        let engine = entry.engine?;
        let req = &entry.request;
        let (kind, addr, len, access) = match &req.what {
            What::Break(spec) => (BreakpointKind::Exec, spec.addr(), 1, None),
            What::Watch {
                place, access, len, ..
            } => {
                let addr = match place {
                    Place::Virtual(a) | Place::Physical(a) => *a,
                };
                let access = match access {
                    Access::Write => WatchAccess::Write,
                    Access::Read => WatchAccess::Read,
                    Access::ReadWrite => WatchAccess::ReadWrite,
                };
                (BreakpointKind::Watch, addr, *len, Some(access))
            }
        };
        let mut bp = Breakpoint {
            id,
            kind,
            location: req.label.clone(),
            addr,
            len,
            access,
            vcpu: match req.scope {
                drvisor_debug::Scope::Vm => None,
                drvisor_debug::Scope::Vcpu(v) => Some(v.0),
            },
            action: req.action,
            engine: engine.into(),
            owner: req.owner,
            state: String::new(),
            vcpus: Vec::new(),
            pages: Vec::new(),
            hits: 0,
            condition: req.condition.as_ref().map(|c| c.text().to_owned()),
            matched: req.condition.as_ref().map(|c| c.matched()),
            condition_faults: req.condition.as_ref().map(|c| c.faults()),
        };
        drop(book);
        self.place(&mut bp);
        Some(bp)
    }

    /// Fills in where `bp` lives now: its slots or pages, its state and its hits.
    fn place(&self, bp: &mut Breakpoint) {
        let id = HostBpId(bp.id);
        let plan = self.debug.plan();
        if let Some(state) = plan.host_states.get(&id) {
            bp.engine = drvisor_api::rest::Engine::Hw;
            bp.vcpus = state
                .armed
                .iter()
                .map(|(v, slot)| VcpuPlacement {
                    vcpu: v.0,
                    state: "armed".into(),
                    slot: Some(slot.number()),
                    reason: None,
                })
                .chain(state.pending.iter().map(|(v, why)| VcpuPlacement {
                    vcpu: v.0,
                    state: "pending".into(),
                    slot: None,
                    reason: Some(why.to_string()),
                }))
                .collect();
            bp.vcpus.sort_by_key(|p| p.vcpu);
            let word = crate::debug::plan_view::summary_word(state.summary());
            bp.state = match self.debug.caps().exec_note() {
                Some(note) if bp.kind == BreakpointKind::Exec && word != "pending" => {
                    format!("{word} ({note})")
                }
                _ => word.to_owned(),
            };
            bp.hits = self.debug.hits(id).unwrap_or(0);
        } else if let Some(watch) = self.watch.states().into_iter().find(|w| w.id == bp.id) {
            bp.engine = drvisor_api::rest::Engine::Page;
            bp.state = match &watch.unfollowed {
                None => "armed".into(),
                Some(why) => format!("armed, left behind ({why})"),
            };
            bp.pages = watch.pages.iter().map(|(gpa, _)| *gpa).collect();
            bp.hits = watch.hits;
        } else if let Some((why, tried)) = self.watch.waiting_reason(id) {
            bp.engine = drvisor_api::rest::Engine::Page;
            bp.state = match tried {
                true => format!("pending ({why}; it arms itself once the guest maps it)"),
                false => format!("refused ({why})"),
            };
        } else {
            bp.state = "pending (carried by neither engine)".into();
        }
    }

    fn publish_plan(&self, change: PlanChange, breakpoint: Breakpoint) {
        self.bus.publish(Event::Plan(PlanEvent {
            event: drvisor_api::EventName::Plan,
            change,
            breakpoint,
        }));
    }

    /// Pauses every vCPU and waits until each has left the guest. `false` if one did not in
    /// [`PAUSE_TIMEOUT`].
    pub fn pause(&self, reason: &str) -> bool {
        let _door = self.door();
        self.debug.pause_all(reason);
        self.control.is_finished() || self.parked.wait_all(PAUSE_TIMEOUT)
    }

    /// Closes the vCPU gate before the VM first runs (`--paused`, `--gdb-wait`): no vCPU enters
    /// the guest until a client resumes.
    pub fn pause_before_run(&self, reason: &str) {
        let _door = self.door();
        self.debug.pause_all(reason);
    }

    /// Calls `observer` with every new plan and the breakpoints' labels, starting with the
    /// current one (`--show-plan`).
    pub fn observe_plan(&self, observer: crate::debug::PlanObserver) {
        self.debug.observe_plan(observer);
    }

    /// Calls `listener` after every plan change, before any vCPU runs the new plan (so it
    /// must be quick): the gdb stub's eviction notes.
    pub fn on_plan_change(&self, listener: crate::debug::PlanListener) {
        self.debug.on_change(listener);
    }

    /// The slot plan now.
    pub fn plan(&self) -> drvisor_debug::Plan {
        self.debug.plan()
    }

    /// What this host's debug hardware delivers.
    pub fn caps(&self) -> crate::debug::DebugCaps {
        self.debug.caps()
    }

    /// Why page watch `id` waits for the guest to map it, if it does, and whether it is still
    /// tried.
    pub fn waiting_reason(&self, id: u32) -> Option<(String, bool)> {
        self.watch.waiting_reason(HostBpId(id))
    }

    /// Every armed page watch, as `--show-plan` describes them.
    pub fn page_watch_states(&self) -> Vec<crate::watch::PageWatchState> {
        self.watch.states()
    }

    /// Page traps so far, and how many of them hit no watch (`None` without page watches).
    pub fn page_traps(&self) -> Option<(u64, u64)> {
        (!self.watch.states().is_empty()).then(|| self.watch.trap_counts())
    }

    /// How many times a guest slot was placed only at the exit after the guest armed it.
    pub fn late_guest_slots(&self) -> u64 {
        self.debug.late_guest_slots()
    }

    /// How exec breakpoints were resumed past, over the vCPUs that have finished.
    pub fn resumes(&self) -> crate::debug::ResumeCounts {
        self.debug.resumes()
    }

    /// Resumes every vCPU; whether the VM was paused. A resume that finds it running still
    /// cancels a `pause` hit announced and not yet taken.
    pub fn resume(&self, reason: &str) -> bool {
        let _door = self.door();
        self.debug.resume(reason)
    }

    /// Signals the guest once more on port 0x520 (for guests that wait for the host). Not a
    /// change to the engine, so it does not wait at the door: busy clients cannot hold it off.
    pub fn signal_guest(&self) {
        self.host_signal.raise();
    }

    /// Ends the run (`Outcome::Requested`).
    pub fn stop(&self) {
        let _door = self.door();
        self.control.finish(Outcome::Requested);
    }

    /// The VM's state now.
    pub fn state(&self) -> (VmState, Option<VmExit>) {
        match self.control.outcome() {
            Some(outcome) => (VmState::Stopped, Some(exit_of(&outcome))),
            None if self.debug.is_paused() => (VmState::Paused, None),
            None => (VmState::Running, None),
        }
    }

    /// The run ended with `outcome` and its event bus was closed: once the bus has drained
    /// into the stream, tell the stream's readers and end the stream.
    pub fn finished(&self, outcome: &Outcome) {
        let feeder = self.feeder.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }
        // The stream's last event, after the bus closed and drained: it carries the final
        // outcome, which the `--events` writer's last flush could still change, so it cannot
        // travel on the bus.
        let exit = exit_of(outcome);
        let stopped = StateEvent {
            event: drvisor_api::EventName::State,
            state: VmState::Stopped,
            reason: exit.reason.clone(),
            exit: Some(exit),
        };
        if let Ok(json) = serde_json::to_string(&stopped) {
            self.ring.push(EventKind::State, json);
        }
        self.ring.close();
    }
}

fn exit_of(outcome: &Outcome) -> VmExit {
    VmExit {
        status: outcome.exit_code(),
        reason: outcome.to_string(),
    }
}
