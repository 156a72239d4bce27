//! The VM's debug state, shared by every vCPU thread and whoever changes breakpoints: the host
//! breakpoints, the guests' DR files as last seen, the current plan, and the protocol that gets
//! a new plan onto every vCPU before the change is reported done.
//!
//! A change bumps a generation and kicks every running vCPU out of `KVM_RUN` (the 2009
//! review's IPI). Each vCPU installs the plan of the current generation before it next enters
//! the guest and acknowledges it; the changing call returns when every running vCPU has.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use drvisor_debug::{
    check_registration, guests_compete, plan_for, ArbiterError, BreakSpec, DrKind, GuestCarriage,
    GuestDrFile, HostBpId, HostBreakpoint, Plan, Policy, Scope, Slot, VcpuPlan,
};

use super::action::OnHit;
use super::caps::DebugCaps;
use super::resume::{ResumeCounts, ResumeTally};
use crate::gate::VcpuGate;
use crate::run_control::RunControl;

/// Errors changing the host breakpoint set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The arbiter refused the registration (for example under `deny`).
    #[error(transparent)]
    Arbiter(#[from] ArbiterError),
    /// No breakpoint has this id.
    #[error("no host breakpoint has id {0}")]
    NoSuchBreakpoint(u32),
    /// A breakpoint has this id already (ids come from [`DebugController::allocate_id`]).
    #[error("host breakpoint id {0} is in use")]
    IdInUse(u32),
    /// This host cannot deliver the breakpoint's kind.
    #[error("{0}")]
    Unsupported(String),
    /// The VM runs without the debug hooks (`VmConfig::debug_attached = false`).
    #[error("this VM runs with debugging detached; breakpoints cannot be armed")]
    Detached,
}

/// A host breakpoint to add.
#[derive(Clone)]
pub struct HostRequest {
    /// What and where.
    pub spec: BreakSpec,
    /// The whole VM or one vCPU.
    pub scope: Scope,
    /// How the user named it.
    pub label: String,
    /// What a hit does.
    pub on_hit: OnHit,
}

/// What a hit of one host breakpoint needs. Every vCPU holds the set of them that goes with
/// the plan it runs ([`HitTargets`]), so a hit takes no lock: it counts on the breakpoint's own
/// atomic counter.
pub struct HitTarget {
    /// How the user named it.
    pub label: Arc<str>,
    /// Its spec.
    pub spec: BreakSpec,
    /// Its callback.
    pub on_hit: OnHit,
    hits: AtomicU64,
}

impl HitTarget {
    /// Counts one hit; returns the count including it.
    pub fn count_hit(&self) -> u64 {
        self.hits.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The host breakpoints of one plan generation, for the vCPUs that run it.
pub type HitTargets = Arc<BTreeMap<HostBpId, Arc<HitTarget>>>;

struct Registered {
    bp: HostBreakpoint,
    target: Arc<HitTarget>,
}

#[derive(Clone, Copy, Default)]
struct VcpuSync {
    running: bool,
    applied: u64,
}

struct State {
    policy: Policy,
    next_id: u32,
    hosts: BTreeMap<HostBpId, Registered>,
    guests: Vec<GuestDrFile>,
    plan: Plan,
    /// Rebuilt at every change of `hosts`.
    targets: HitTargets,
    vcpus: Vec<VcpuSync>,
}

/// Called with the new plan and the breakpoints' labels whenever the plan changes
/// (`--show-plan`). It runs under the controller's lock: it must not call back into it.
pub type PlanObserver = Arc<dyn Fn(&Plan, &BTreeMap<HostBpId, String>) + Send + Sync>;

/// The VM's debug controller.
pub struct DebugController {
    caps: DebugCaps,
    carriage: GuestCarriage,
    control: Arc<RunControl>,
    state: Mutex<State>,
    changed: Condvar,
    /// Mirrors the plan generation, so vCPUs check for news without the lock.
    generation: AtomicU64,
    gate: Arc<VcpuGate>,
    detached: AtomicBool,
    on_plan: Mutex<Option<PlanObserver>>,
    /// Called after every plan change, outside the controller's lock (engine migration).
    listeners: Mutex<Vec<PlanListener>>,
    /// Guest slots placed only at the exit after the guest armed them (see
    /// [`DebugController::report_late_guest_slot`]).
    late_guest_slots: AtomicU64,
    /// Whether any host breakpoint is registered, mirrored for vCPUs to read without the lock.
    hosts_registered: AtomicBool,
    /// How the vCPUs that finished resumed past exec breakpoints.
    resumes: ResumeTally,
    /// Single steps a client (gdb) asked for, per vCPU, not yet taken up.
    step_requests: Vec<AtomicBool>,
    /// Per vCPU: it runs a plan in which the guest's DR writes are invisible until its next exit
    /// (host debugging on, guest slots carried physically, no MOV DR trap: SVM).
    blind: Vec<AtomicBool>,
    /// Per vCPU: when drvisor last read its guest DR file, in nanoseconds since `epoch`.
    synced_at: Vec<AtomicU64>,
    epoch: Instant,
    /// Told of every guest slot found armed late (the VM publishes it as an event).
    late_listener: Mutex<Option<LateListener>>,
}

/// A guest debug-register slot drvisor found armed late (see
/// [`DebugController::report_late_guest_slot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateGuestSlot {
    /// The vCPU.
    pub vcpu: usize,
    /// The guest's own slot.
    pub slot: Slot,
    /// Its address.
    pub addr: u64,
    /// Its kind.
    pub kind: DrKind,
    /// Its length in bytes.
    pub len: u8,
    /// How long drvisor had not read this vCPU's guest DR file.
    pub unseen: Duration,
}

/// Called with every late guest slot, on the vCPU thread that found it; it must not block.
pub type LateListener = Arc<dyn Fn(&LateGuestSlot) + Send + Sync>;

/// The default period of the guest DR re-sync on hosts that cannot trap MOV DR: a vCPU running
/// a plan that carries guest slots physically, with no exit for this long, is kicked out of
/// `KVM_RUN` so its guest DR file is read and re-planned.
pub const GUEST_DR_RESYNC: Duration = Duration::from_millis(1);

/// Called with the new plan after it changed, outside the controller's lock, on the thread
/// that changed it (possibly a vCPU thread, never inside `KVM_RUN`).
pub type PlanListener = Arc<dyn Fn(&Plan) + Send + Sync>;

/// How long a waiter sleeps before re-checking that the run has not ended.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// How many times a vCPU that installed a change yields its core to vCPUs still behind.
const YIELDS_FOR_OTHERS: usize = 16;

impl DebugController {
    /// A controller with its own run control and gate, for driving vCPUs by hand (tests,
    /// benchmarks, tiny VMs).
    pub fn standalone(caps: DebugCaps, policy: Policy, vcpus: usize) -> std::io::Result<Self> {
        let control = Arc::new(RunControl::new()?);
        let gate = Arc::new(VcpuGate::new(vcpus, control.clone()));
        Ok(Self::new(caps, policy, vcpus, control, gate))
    }

    /// A controller for `vcpus` vCPUs on a host with `caps`, ending runs through `control` and
    /// pausing them through `gate`.
    pub fn new(
        caps: DebugCaps,
        policy: Policy,
        vcpus: usize,
        control: Arc<RunControl>,
        gate: Arc<VcpuGate>,
    ) -> Self {
        let carriage = if caps.guest_breakpoints_native {
            GuestCarriage::Native
        } else {
            GuestCarriage::Physical
        };
        let guests = vec![GuestDrFile::default(); vcpus];
        let plan = plan_for(carriage, policy, &[], &guests);
        DebugController {
            caps,
            carriage,
            control,
            state: Mutex::new(State {
                policy,
                next_id: 1,
                hosts: BTreeMap::new(),
                guests,
                plan,
                targets: HitTargets::default(),
                vcpus: vec![VcpuSync::default(); vcpus],
            }),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
            gate,
            detached: AtomicBool::new(false),
            on_plan: Mutex::new(None),
            listeners: Mutex::new(Vec::new()),
            late_guest_slots: AtomicU64::new(0),
            hosts_registered: AtomicBool::new(false),
            resumes: ResumeTally::default(),
            step_requests: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            blind: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            synced_at: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            late_listener: Mutex::new(None),
        }
    }

    /// Calls `listener` with every guest slot found armed late.
    pub fn on_late_guest_slot(&self, listener: LateListener) {
        *self.late_listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// vCPU `index` runs (or stops running) a plan under which it cannot see the guest's DR
    /// writes until its next exit.
    pub(crate) fn set_blind(&self, index: usize, blind: bool) {
        if let Some(b) = self.blind.get(index) {
            b.store(blind, Ordering::Release);
        }
    }

    /// vCPU `index` read its guest DR file now; returns how long ago it did before.
    pub(crate) fn synced(&self, index: usize) -> Duration {
        let now = self.now_ns();
        let before = self
            .synced_at
            .get(index)
            .map_or(now, |t| t.swap(now, Ordering::AcqRel));
        Duration::from_nanos(now.saturating_sub(before))
    }

    /// Kicks every blind vCPU whose guest DR file was last read `period` ago or longer, so it
    /// is read at once (the kick is an exit). Returns how many were kicked.
    pub fn kick_blind_vcpus(&self, period: Duration) -> usize {
        if self.gate.is_paused() {
            return 0;
        }
        let now = self.now_ns();
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let mut kicked = 0;
        for (index, (blind, at)) in self.blind.iter().zip(&self.synced_at).enumerate() {
            if blind.load(Ordering::Acquire) && resync_due(at.load(Ordering::Acquire), now, period)
            {
                self.control.kicker.kick(index);
                kicked += 1;
            }
        }
        kicked
    }

    /// Starts the thread that keeps blind vCPUs' guest DR files at most about `period` old
    /// (see [`Self::kick_blind_vcpus`]), until the run ends. It sleeps longer while no vCPU is
    /// blind.
    pub fn spawn_resync_timer(
        self: &Arc<Self>,
        period: Duration,
    ) -> std::io::Result<JoinHandle<()>> {
        let ctl = Arc::downgrade(self);
        let control = self.control.clone();
        std::thread::Builder::new()
            .name("drvisor-dr-resync".into())
            .spawn(move || {
                crate::seccomp::enter_or_exit(crate::seccomp::ThreadKind::Helper);
                loop {
                    let any_blind = match ctl.upgrade() {
                        Some(ctl) => {
                            ctl.kick_blind_vcpus(period);
                            ctl.blind.iter().any(|b| b.load(Ordering::Acquire))
                        }
                        None => return,
                    };
                    if control.is_finished() {
                        return;
                    }
                    if control.sleep_unless_finished(if any_blind { period } else { WAIT_SLICE }) {
                        return;
                    }
                }
            })
    }

    /// Refuses every future breakpoint: the vCPUs will not run the debug hooks.
    pub(crate) fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    /// A fresh breakpoint id, from the one sequence shared by every engine.
    pub fn allocate_id(&self) -> HostBpId {
        let mut state = self.lock();
        let id = HostBpId(state.next_id);
        state.next_id += 1;
        id
    }

    /// The host's capabilities.
    pub fn caps(&self) -> DebugCaps {
        self.caps
    }

    /// How exec breakpoints were resumed past (RF, emulation, step-over), summed over the
    /// vCPUs whose debug state has gone away (all of them once a run is over).
    pub fn resumes(&self) -> ResumeCounts {
        self.resumes.get()
    }

    pub(super) fn tally_resumes(&self, counts: ResumeCounts) {
        self.resumes.add(counts);
    }

    /// Calls `observer` with every new plan, starting with the current one.
    pub fn observe_plan(&self, observer: PlanObserver) {
        let state = self.lock();
        observer(&state.plan, &Self::labels(&state));
        *self.on_plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(observer);
    }

    /// Calls `listener` after every plan change.
    pub fn on_change(&self, listener: PlanListener) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// While the listeners catch up with a plan change, no vCPU may start running the new
    /// plan: a watch the plan evicts must have its page shadow before any vCPU runs without it.
    fn hold_for_listeners(&self) -> Option<crate::gate::Held<'_>> {
        let any = !self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        any.then(|| self.gate.hold())
    }

    fn notify_listeners(&self) {
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if listeners.is_empty() {
            return;
        }
        let plan = self.plan();
        for l in listeners {
            l(&plan);
        }
    }

    fn labels(state: &State) -> BTreeMap<HostBpId, String> {
        state
            .hosts
            .iter()
            .map(|(id, r)| (*id, r.target.label.to_string()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current plan.
    pub fn plan(&self) -> Plan {
        self.lock().plan.clone()
    }

    /// Hits so far of breakpoint `id`.
    pub fn hits(&self, id: HostBpId) -> Option<u64> {
        self.lock().hosts.get(&id).map(|r| r.target.hits())
    }

    /// Host breakpoint `id`'s hit target: its counter, label and callback.
    pub fn hit_target(&self, id: HostBpId) -> Option<Arc<HitTarget>> {
        self.lock().hosts.get(&id).map(|r| r.target.clone())
    }

    fn rebuild_targets(state: &mut State) {
        state.targets = Arc::new(
            state
                .hosts
                .iter()
                .map(|(id, r)| (*id, r.target.clone()))
                .collect(),
        );
    }

    /// Adds a host breakpoint. Returns once every running vCPU runs a plan that includes it
    /// (armed or, with its reason, pending).
    pub fn add(&self, req: HostRequest) -> Result<HostBpId, Error> {
        self.add_as(self.allocate_id(), req)
    }

    /// [`Self::add`] under `id`, reserved beforehand with [`Self::allocate_id`] (the session
    /// books an id before anything is armed).
    pub fn add_as(&self, id: HostBpId, req: HostRequest) -> Result<HostBpId, Error> {
        if self.detached.load(Ordering::Acquire) {
            return Err(Error::Detached);
        }
        if let Some(why) = self.caps.refuses(req.spec.kind()) {
            return Err(Error::Unsupported(why.into()));
        }
        let (generation, id, hold) = {
            let mut state = self.lock();
            if state.hosts.contains_key(&id) {
                return Err(Error::IdInUse(id.0));
            }
            let bp = HostBreakpoint {
                id,
                spec: req.spec,
                scope: req.scope,
            };
            let hosts: Vec<HostBreakpoint> = state.hosts.values().map(|r| r.bp).collect();
            let competing = self.competing_guests(&state);
            check_registration(state.policy, &hosts, &bp, &competing)?;
            state.hosts.insert(
                id,
                Registered {
                    bp,
                    target: Arc::new(HitTarget {
                        label: req.label.into(),
                        spec: req.spec,
                        on_hit: req.on_hit,
                        hits: AtomicU64::new(0),
                    }),
                },
            );
            Self::rebuild_targets(&mut state);
            self.replan(&mut state);
            (self.generation(), id, self.hold_for_listeners())
        };
        self.notify_listeners();
        drop(hold);
        self.publish(generation);
        Ok(id)
    }

    /// Whether `spec` in `scope` would be armed on every vCPU of its scope right now, under the
    /// policy: the "slot is free" test of engine routing.
    pub fn would_arm(&self, spec: BreakSpec, scope: Scope) -> bool {
        let state = self.lock();
        let trial = HostBreakpoint {
            id: HostBpId(u32::MAX),
            spec,
            scope,
        };
        let mut hosts: Vec<HostBreakpoint> = state.hosts.values().map(|r| r.bp).collect();
        let competing = self.competing_guests(&state);
        if check_registration(state.policy, &hosts, &trial, &competing).is_err() {
            return false;
        }
        hosts.push(trial);
        let plan = plan_for(self.carriage, state.policy, &hosts, &state.guests);
        plan.host_state(trial.id)
            .is_some_and(|s| s.pending.is_empty() && !s.armed.is_empty())
    }

    /// Removes host breakpoint `id`; returns once no running vCPU has it armed.
    pub fn remove(&self, id: HostBpId) -> Result<(), Error> {
        let (generation, hold) = {
            let mut state = self.lock();
            if state.hosts.remove(&id).is_none() {
                return Err(Error::NoSuchBreakpoint(id.0));
            }
            Self::rebuild_targets(&mut state);
            self.replan(&mut state);
            (self.generation(), self.hold_for_listeners())
        };
        self.notify_listeners();
        drop(hold);
        self.publish(generation);
        Ok(())
    }

    /// The guest DR files a registration competes with: the real ones where guest slots take
    /// physical slots, idle ones where the host checks the guest's DR7 apart (native carriage).
    fn competing_guests(&self, state: &State) -> Vec<GuestDrFile> {
        if guests_compete(self.carriage) {
            state.guests.clone()
        } else {
            vec![GuestDrFile::default(); state.guests.len()]
        }
    }

    /// Recomputes the plan; bumps the generation if any vCPU's physical plan changed.
    fn replan(&self, state: &mut State) -> bool {
        let hosts: Vec<HostBreakpoint> = state.hosts.values().map(|r| r.bp).collect();
        let plan = plan_for(self.carriage, state.policy, &hosts, &state.guests);
        self.hosts_registered
            .store(!hosts.is_empty(), Ordering::Release);
        let physical_changed = plan.vcpus != state.plan.vcpus;
        let visible_changed = plan != state.plan;
        state.plan = plan;
        if physical_changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if visible_changed {
            if let Some(observer) = self
                .on_plan
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                observer(&state.plan, &Self::labels(state));
            }
        }
        physical_changed
    }

    /// Kicks every vCPU and waits until every running one (other than the caller's own) has
    /// installed `generation`, or the run has ended.
    fn publish(&self, generation: u64) {
        self.control.kicker.kick_all();
        let me = super::current_vcpu();
        let mut state = self.lock();
        loop {
            let behind = state
                .vcpus
                .iter()
                .enumerate()
                .any(|(i, v)| v.running && v.applied < generation && Some(i) != me);
            if !behind || self.control.is_finished() {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, WAIT_SLICE)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            // A kick can land while a vCPU is between KVM_RUN calls; repeat it until acknowledged.
            self.control.kicker.kick_all();
        }
    }

    /// Whether every running vCPU runs the current plan.
    pub fn all_applied(&self) -> bool {
        let generation = self.generation();
        self.lock()
            .vcpus
            .iter()
            .all(|v| !v.running || v.applied == generation)
    }

    /// The current generation, lock-free.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// vCPU `index`'s plan, the host breakpoints that go with it, and the generation they
    /// belong to.
    pub(crate) fn vcpu_plan(&self, index: usize) -> (u64, VcpuPlan, HitTargets) {
        let state = self.lock();
        let plan = state
            .plan
            .vcpus
            .get(index)
            .cloned()
            .unwrap_or_else(|| VcpuPlan::empty(drvisor_debug::VcpuId(index as u32)));
        (self.generation(), plan, state.targets.clone())
    }

    /// vCPU `index` now runs `generation`.
    pub(crate) fn ack(&self, index: usize, generation: u64) {
        let mut state = self.lock();
        if let Some(v) = state.vcpus.get_mut(index) {
            v.applied = generation;
        }
        drop(state);
        self.changed.notify_all();
        // With more vCPU threads than cores, a kicked vCPU may be runnable but waiting for a
        // core: its kick is only handled once it runs, which the scheduler would grant at the
        // end of this thread's slice (milliseconds). Hand the core over while any is behind,
        // a few times at most.
        for _ in 0..YIELDS_FOR_OTHERS {
            let behind = self
                .lock()
                .vcpus
                .iter()
                .enumerate()
                .any(|(i, v)| i != index && v.running && v.applied < generation);
            if !behind {
                break;
            }
            std::thread::yield_now();
        }
    }

    /// vCPU `index` starts or stops running.
    pub(crate) fn set_running(&self, index: usize, running: bool) {
        if !running {
            self.set_blind(index, false);
        }
        let mut state = self.lock();
        if let Some(v) = state.vcpus.get_mut(index) {
            v.running = running;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// vCPU `index` saw the guest's DR file change to `file`. Re-plans; if physical plans
    /// changed, the other vCPUs are kicked (this one installs before it re-enters).
    pub(crate) fn guest_changed(&self, index: usize, file: GuestDrFile) {
        let mut state = self.lock();
        match state.guests.get_mut(index) {
            Some(g) if *g != file => *g = file,
            _ => return,
        }
        let physical = self.replan(&mut state);
        let hold = self.hold_for_listeners();
        drop(state);
        self.notify_listeners();
        drop(hold);
        if physical {
            self.control.kicker.kick_all();
        }
    }

    /// vCPU `index` found, at an exit, that the guest had armed its virtual slot `virt` (`kind`
    /// at `addr`) since the previous exit, while host debugging was on. On hosts that carry
    /// guest slots physically and cannot trap MOV DR (SVM: KVM emulates the guest's MOV DR in
    /// the kernel and tells no one), the slot was not in hardware until now, so any hit in
    /// between was lost. Each one is counted, and the first few are described.
    /// Never silent: it is published (the VM's `guest-dr-late` event) and counted for the
    /// end-of-run summary.
    pub(crate) fn report_late_guest_slot(&self, late: LateGuestSlot) {
        self.late_guest_slots.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            "vcpu{}: the guest armed its {} ({:?} at {:#x}) up to {} us before drvisor saw it, \
             while host breakpoints were loaded; this host cannot trap MOV DR, so drvisor placed \
             it only now",
            late.vcpu,
            late.slot,
            late.kind,
            late.addr,
            late.unseen.as_micros()
        );
        let listener = self
            .late_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener(&late);
        }
    }

    /// Whether the guest's DR file can change the physical plan: it carries guest slots
    /// physically and some host breakpoint exists, placed or waiting for a slot. A vCPU running
    /// with guest debug off must then still read the guest's DRs at its exits, or a host
    /// breakpoint evicted by the guest would never get its slot back.
    pub(crate) fn guest_file_matters(&self) -> bool {
        guests_compete(self.carriage) && self.hosts_registered.load(Ordering::Acquire)
    }

    /// How many guest slots were placed late (see [`Self::report_late_guest_slot`]).
    pub fn late_guest_slots(&self) -> u64 {
        self.late_guest_slots.load(Ordering::Relaxed)
    }

    /// Pauses every vCPU (all-stop) for `reason`: each parks before it next enters the guest.
    pub fn pause_all(&self, reason: &str) {
        self.gate.pause(reason);
    }

    /// Resumes every vCPU, for `reason`; whether the VM was paused (see [`VcpuGate::resume`]).
    pub fn resume(&self, reason: &str) -> bool {
        self.gate.resume(reason)
    }

    /// Sets the one listener of pauses and resumes (see [`VcpuGate::listen`]).
    pub fn listen_pauses(&self, listener: crate::gate::PauseListener) -> bool {
        self.gate.listen(listener)
    }

    /// vCPU `index`'s debug registers as the guest wrote them, the plan it runs, and whether
    /// host debugging is on for it (off, the guest's own registers are loaded as they are).
    pub fn vcpu_view(&self, index: usize) -> Option<(GuestDrFile, VcpuPlan, bool)> {
        let state = self.lock();
        let guest = *state.guests.get(index)?;
        let plan = *state.plan.vcpus.get(index)?;
        let host_debug = !plan.is_empty();
        Some((guest, plan, host_debug))
    }

    /// Single-steps vCPU `index` by one instruction while the others stay paused (a debugger's
    /// `stepi`; the VM must be paused). The vCPU takes the request before its next entry, runs
    /// with `KVM_GUESTDBG_SINGLESTEP` until the step exit, and parks again.
    pub fn step_one(&self, index: usize) {
        if let Some(r) = self.step_requests.get(index) {
            r.store(true, Ordering::SeqCst);
            self.gate.pass(index);
        }
    }

    /// vCPU `index` finished a client's single-step: it parks with the others again.
    pub(crate) fn end_step(&self, index: usize) {
        self.gate.end_pass(index);
    }

    /// Withdraws a single-step that did not finish in time: the vCPU parks with the others.
    pub fn cancel_step(&self, index: usize) {
        if let Some(r) = self.step_requests.get(index) {
            r.store(false, Ordering::SeqCst);
        }
        self.gate.end_pass(index);
        self.control.kicker.kick_all();
    }

    /// Takes vCPU `index`'s pending step request.
    pub(crate) fn take_step_request(&self, index: usize) -> bool {
        self.step_requests
            .get(index)
            .is_some_and(|r| r.load(Ordering::Relaxed) && r.swap(false, Ordering::SeqCst))
    }

    /// See [`VcpuGate::resume_mark`].
    pub fn resume_mark(&self) -> u64 {
        self.gate.resume_mark()
    }

    /// See [`VcpuGate::pause_unless_resumed_since`].
    pub fn pause_unless_resumed_since(&self, mark: u64, reason: &str) -> bool {
        self.gate.pause_unless_resumed_since(mark, reason)
    }

    /// Whether the VM is paused.
    pub fn is_paused(&self) -> bool {
        self.gate.is_paused()
    }
}

/// Whether a guest DR file last read at `synced_ns` is due for a re-read at `now_ns`, with
/// re-reads every `period_ns`.
pub(crate) fn resync_due(synced_ns: u64, now_ns: u64, period_ns: u64) -> bool {
    now_ns.saturating_sub(synced_ns) >= period_ns
}

#[cfg(test)]
mod resync_tests {
    use super::*;

    #[test]
    fn a_file_is_due_once_a_period_has_passed() {
        assert!(!resync_due(1_000, 1_500, 1_000));
        assert!(resync_due(1_000, 2_000, 1_000));
        assert!(resync_due(0, 5_000, 1_000));
        // A read after `now` (another thread's clock read raced this one) is not due.
        assert!(!resync_due(3_000, 2_000, 1_000));
    }

    fn ctl(caps: DebugCaps, vcpus: usize) -> Arc<DebugController> {
        Arc::new(DebugController::standalone(caps, Policy::default(), vcpus).unwrap())
    }

    #[test]
    fn only_blind_vcpus_that_were_not_read_for_a_period_are_kicked() {
        let c = ctl(DebugCaps::vmx_like(), 3);
        assert_eq!(c.kick_blind_vcpus(Duration::ZERO), 0, "nobody is blind");
        c.set_blind(1, true);
        c.set_blind(2, true);
        // No thread is registered with the kicker: kicking is a no-op, the count is what matters.
        assert_eq!(c.kick_blind_vcpus(Duration::ZERO), 2);
        std::thread::sleep(Duration::from_millis(20));
        c.synced(1);
        assert_eq!(
            c.kick_blind_vcpus(Duration::from_millis(10)),
            1,
            "vCPU 1 was just read, vCPU 2 never"
        );
        c.set_running(2, false);
        assert_eq!(c.kick_blind_vcpus(Duration::ZERO), 1, "vCPU 2 stopped");
    }

    #[test]
    fn synced_returns_the_time_since_the_previous_read() {
        let c = ctl(DebugCaps::vmx_like(), 1);
        c.synced(0);
        std::thread::sleep(Duration::from_millis(5));
        let unseen = c.synced(0);
        assert!(unseen >= Duration::from_millis(5), "{unseen:?}");
        assert!(c.synced(0) < unseen);
    }

    #[test]
    fn late_slots_reach_the_listener_and_the_count() {
        let c = ctl(DebugCaps::vmx_like(), 1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        c.on_late_guest_slot(Arc::new(move |l| s2.lock().unwrap().push(*l)));
        let late = LateGuestSlot {
            vcpu: 0,
            slot: Slot::DR1,
            addr: 0x1234,
            kind: DrKind::Write,
            len: 4,
            unseen: Duration::from_micros(700),
        };
        c.report_late_guest_slot(late);
        assert_eq!(*seen.lock().unwrap(), vec![late]);
        assert_eq!(c.late_guest_slots(), 1);
    }
}
