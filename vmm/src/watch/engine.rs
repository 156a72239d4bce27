//! The page-protection watch engine: watches of any length and number, carried by read-only
//! memslots (write watches) and memslot holes (read and access watches).
//!
//! Every guest access to a trapped page exits as `KVM_EXIT_MMIO`. The engine performs it on
//! guest RAM itself (a write is stored, a read is served), then matches it byte by byte against
//! the watches. An access that touched a trapped page but no watch is a *false trap*: counted,
//! never dropped.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use drvisor_debug::HostBpId;
use drvisor_watch::{
    diff, plan_layout, Access, Layout, LayoutError, PageMode, RamRegion, SlotOp, Watch, WatchId,
};
use kvm_ioctls::VmFd;
use serde::Serialize;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

mod remap;
mod waiting;

use super::memslots;
use super::translate::{self, Translator};
use crate::debug::{DebugController, OnHit};
use crate::gate::VcpuGate;
pub use waiting::RetryBy;

/// Errors arming or removing a page watch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The planner refused the layout (outside RAM, too many memslots...).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The guest-virtual range does not translate.
    #[error(transparent)]
    Translate(#[from] translate::Error),
    /// A read or access watch on a page the guest executes from.
    #[error("a {access} watch on {gpa:#x} would unmap a page the guest executes from (kernel image {range:#x?}); instruction fetch from an unmapped page is impossible, so use a write watch there")]
    ExecutablePage {
        /// The access kind.
        access: Access,
        /// The watched address.
        gpa: u64,
        /// The executable range it hits.
        range: Range<u64>,
    },
    /// A guest-virtual range whose end wraps past 2^64.
    #[error("a watch at guest-virtual {gva:#x} with length {len:#x} runs past the end of the 64-bit address space; shorten it so that address + length <= 2^64 - 1")]
    VirtualOverflow {
        /// Its first byte.
        gva: u64,
        /// The requested length.
        len: u64,
    },
    /// A watch of zero bytes.
    #[error("a watch needs at least one byte")]
    Empty,
    /// Guest-physical bytes that are not RAM.
    #[error("{gpa:#x}..{end:#x} is not all guest RAM: {missing:#x} is not RAM; page protection works only on RAM (a device's MMIO already exits to the VMM), so watch a range of RAM", end = gpa.saturating_add(*len))]
    NotRam {
        /// Its first byte.
        gpa: u64,
        /// Its length.
        len: u64,
        /// The lowest of its bytes that is not RAM.
        missing: u64,
    },
    /// A range longer than guest RAM.
    #[error("a watch of {len} bytes is longer than guest RAM; watch a range of RAM")]
    TooLong {
        /// The length asked for.
        len: u64,
    },
    /// No page watch has this id.
    #[error("no page watch has id {0}")]
    NoSuchWatch(u32),
    /// Installing the memslots failed.
    #[error("installing the memslot layout failed: {0}")]
    Memslots(#[from] memslots::Error),
    /// A RAM region of the VM cannot be planned around (a region of zero bytes...).
    #[error("the VM's RAM cannot take page watches: {0}")]
    Ram(#[from] drvisor_watch::RamError),
    /// A watch's range was refused by the planner's own checks.
    #[error(transparent)]
    Watch(#[from] drvisor_watch::WatchError),
}

/// Which bytes a watch covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchRange {
    /// Guest-physical bytes.
    Physical {
        /// First byte.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// Guest-virtual bytes, translated through vCPU 0's page tables when armed (waiting until
    /// the guest maps them), and followed when the guest maps them elsewhere (see
    /// [`remap`]).
    Virtual {
        /// First byte.
        gva: u64,
        /// Length.
        len: u64,
    },
}

/// A page watch to arm.
#[derive(Clone)]
pub struct PageWatchRequest {
    /// Which bytes.
    pub range: WatchRange,
    /// Which accesses.
    pub access: Access,
    /// How the user named it.
    pub label: String,
    /// What a hit does.
    pub on_hit: OnHit,
}

/// What the guest's page tables did to a guest-virtual watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingChange {
    /// It waited for the guest to map its bytes, and is armed now.
    Armed,
    /// The guest maps its bytes elsewhere now, and the watch moved there.
    Remapped,
    /// The guest maps its bytes elsewhere now, where the watch cannot follow; it stays, and
    /// its state says why.
    LeftBehind,
}

/// Told of each [`MappingChange`], with the watch's id.
pub type MappingListener = Box<dyn Fn(HostBpId, MappingChange) + Send + Sync>;

/// Where a watch's bytes are now.
enum Resolved {
    /// In RAM, as these guest-physical pieces.
    Ranges(Vec<(u64, u64)>),
    /// Not yet: the guest does not map them to RAM (why).
    NotYet(String),
}

/// One hit found while handling an MMIO exit, before the vCPU's registers are read.
#[derive(Clone)]
pub struct PendingPageHit {
    /// The watch.
    pub id: HostBpId,
    /// Its label.
    pub label: Arc<str>,
    /// Its first guest-physical byte.
    pub addr: u64,
    /// Its access kind.
    pub access: Access,
    /// Its callback.
    pub on_hit: OnHit,
    /// Its hit count including this hit.
    pub count: u64,
    /// The access: guest-physical address.
    pub gpa: u64,
    /// The access: length in bytes (at most 8).
    pub len: u8,
    /// The access: a write (true) or a read.
    pub write: bool,
    /// For a write, the bytes before it (little-endian).
    pub old: Option<u64>,
    /// The bytes written, or read.
    pub value: u64,
    /// Counted until the hit has been dispatched (dropped).
    pub in_flight: InFlight,
}

/// A hit of a watch on its way to its callback, counted on the watch: its removal waits until
/// none is left, so its `removed` event comes after its last hit.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl InFlight {
    fn new(count: &Arc<AtomicU32>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(count.clone())
    }
}

impl Clone for InFlight {
    fn clone(&self) -> Self {
        InFlight::new(&self.0)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a removal waits for a watch's hits in flight (each is a callback that publishes an
/// event) before it returns anyway.
const LANDING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until no hit of a removed watch is on its way to its callback.
fn wait_for_landing(in_flight: &AtomicU32) {
    let start = std::time::Instant::now();
    while in_flight.load(Ordering::Acquire) > 0 {
        if start.elapsed() > LANDING_WAIT {
            tracing::warn!(
                "a removed page watch's hits were still in flight after {LANDING_WAIT:?}"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Equal when they describe the same hit (the callback is not compared).
impl PartialEq for PendingPageHit {
    fn eq(&self, other: &Self) -> bool {
        (
            self.id, self.gpa, self.len, self.write, self.old, self.value, self.count,
        ) == (
            other.id,
            other.gpa,
            other.len,
            other.write,
            other.old,
            other.value,
            other.count,
        )
    }
}

impl std::fmt::Debug for PendingPageHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "page hit #{} of {} ({}): {} {}@{:#x} value={:#x}",
            self.count,
            self.id.0,
            self.label,
            if self.write { "write" } else { "read" },
            self.len,
            self.gpa,
            self.value
        )
    }
}

/// A page watch as the user sees it.
#[derive(Clone, Debug, Serialize)]
pub struct PageWatchState {
    /// Its id.
    pub id: u32,
    /// How the user named it.
    pub label: String,
    /// Its access kind.
    pub access: Access,
    /// The guest-physical ranges it covers.
    pub ranges: Vec<(u64, u64)>,
    /// The pages it traps and how.
    pub pages: Vec<(u64, PageMode)>,
    /// Hits so far.
    pub hits: u64,
    /// Why it stays where it is although the guest maps its bytes elsewhere now, if so.
    pub unfollowed: Option<String>,
}

/// A guest access the vCPU could not perform against a memslot.
pub enum MmioAccess<'a> {
    /// A read into `data`.
    Read(&'a mut [u8]),
    /// A write of `data`.
    Write(&'a [u8]),
}

struct Registered {
    label: Arc<str>,
    access: Access,
    ranges: Vec<(u64, u64)>,
    parts: Vec<WatchId>,
    on_hit: OnHit,
    hits: AtomicU64,
    /// Its hits found and not yet dispatched.
    in_flight: Arc<AtomicU32>,
    /// For a guest-virtual watch, what following the guest's mapping needs.
    virt: Option<remap::Followed>,
}

struct State {
    layout: Layout,
    watches: BTreeMap<HostBpId, Registered>,
    owner: BTreeMap<WatchId, HostBpId>,
    next_part: u32,
}

/// The engine.
pub struct PageWatchEngine {
    vm_fd: Arc<VmFd>,
    mem: GuestMemoryMmap,
    gate: Arc<VcpuGate>,
    ids: Arc<DebugController>,
    translator: Mutex<Option<Translator>>,
    /// Each vCPU's paging registers at its last exit: guest-virtual addresses are translated
    /// with them, by a page walk in the VMM.
    paging: super::paging::Paging,
    max_slots: usize,
    executable: Vec<Range<u64>>,
    state: RwLock<State>,
    traps: AtomicU64,
    false_traps: AtomicU64,
    /// Serialise the read of the old value and the store, so that two vCPUs writing the same
    /// bytes each report the value the other left: one lock per stripe of pages, so vCPUs
    /// trapping on different pages do not wait for each other.
    perform: [Mutex<()>; PERFORM_STRIPES],
    /// Hardware watches that move here when the guest evicts them.
    pub migrations: super::Migrations,
    /// Whether the locked read-modify-write warning was given (once a run, not per watch: a
    /// client that adds and removes watches in a loop would flood the log).
    warned_rmw: AtomicBool,
    /// Guest-virtual watches waiting for the guest to map their bytes.
    waiting: waiting::Waiting,
    /// Armed guest-virtual watches, followed when the guest maps them elsewhere.
    remaps: remap::Remaps,
    /// Told when the guest's page tables arm, move or strand a guest-virtual watch.
    listener: OnceLock<MappingListener>,
}

impl PageWatchEngine {
    /// Plans guest RAM with no watches and installs it (the VM's initial memslots).
    /// `executable` lists the guest-physical ranges the kernel image executes from.
    pub fn install(
        vm_fd: Arc<VmFd>,
        mem: GuestMemoryMmap,
        gate: Arc<VcpuGate>,
        ids: Arc<DebugController>,
        max_slots: usize,
        executable: Vec<Range<u64>>,
    ) -> Result<Self, Error> {
        let ram: Vec<RamRegion> = mem
            .iter()
            .map(|r| RamRegion::new(r.start_addr().0, r.len()))
            .collect::<Result<_, _>>()?;
        let layout = plan_layout(&ram, &[], max_slots)?;
        let creates: Vec<SlotOp> = layout.slots().iter().copied().map(SlotOp::Create).collect();
        memslots::apply(&vm_fd, &mem, &creates)?;
        let paging = super::paging::Paging::new(gate.vcpus());
        Ok(PageWatchEngine {
            vm_fd,
            mem,
            gate,
            ids,
            translator: Mutex::new(None),
            paging,
            max_slots,
            executable,
            state: RwLock::new(State {
                layout,
                watches: BTreeMap::new(),
                owner: BTreeMap::new(),
                next_part: 0,
            }),
            traps: AtomicU64::new(0),
            false_traps: AtomicU64::new(0),
            perform: std::array::from_fn(|_| Mutex::new(())),
            migrations: super::Migrations::default(),
            warned_rmw: AtomicBool::new(false),
            waiting: Default::default(),
            remaps: Default::default(),
            listener: OnceLock::new(),
        })
    }

    /// Lets hardware watch `id` move here as `request` when the guest evicts it, and moves it
    /// at once if the current plan already evicts it.
    pub fn track_migration(&self, id: HostBpId, request: PageWatchRequest) {
        self.migrations.track(id, request, self.ids.clone());
        self.migrations.follow(&self.ids.plan(), self);
    }

    /// Sets the one listener told when the guest's page tables arm, move or strand a
    /// guest-virtual watch; `false` if one is set. It is called with no engine lock held.
    pub fn on_mapping_change(&self, listener: MappingListener) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// Tells the listener.
    fn tell(&self, id: HostBpId, change: MappingChange) {
        if let Some(listener) = self.listener.get() {
            listener(id, change);
        }
    }

    /// Lets the engine translate guest-virtual watches through `translator`.
    pub fn set_translator(&self, translator: Translator) {
        *self.translator.lock().unwrap_or_else(|e| e.into_inner()) = Some(translator);
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a page watch. Returns once the new memslots are installed; no vCPU is inside the
    /// guest while they change, so no access is lost. A guest-virtual watch whose bytes the
    /// guest does not map yet waits for it (see [`waiting`]) and is armed the moment
    /// they translate; its id is returned at once.
    pub fn add(&self, req: PageWatchRequest) -> Result<HostBpId, Error> {
        self.add_as(self.ids.allocate_id(), req)
    }

    /// [`Self::add`] under `id`, reserved beforehand from the shared id sequence.
    pub fn add_as(&self, id: HostBpId, req: PageWatchRequest) -> Result<HostBpId, Error> {
        let ranges = match self.resolve(req.range)? {
            Resolved::Ranges(ranges) => ranges,
            Resolved::NotYet(reason) => return Ok(self.wait_for_mapping(id, req, reason)),
        };
        self.install_watch(Some(id), req, ranges)
    }

    /// Plans and installs a watch on `ranges`, as `id` (one that waited) or a new id.
    fn install_watch(
        &self,
        id: Option<HostBpId>,
        req: PageWatchRequest,
        ranges: Vec<(u64, u64)>,
    ) -> Result<HostBpId, Error> {
        if self.gate.vcpus() > 1 && !self.warned_rmw.swap(true, Ordering::Relaxed) {
            // KVM emulates a locked read-modify-write on a trapped page as an in-kernel read
            // followed by a write exit, which is not atomic against the other vCPUs.
            tracing::warn!(
                "{}: a locked read-modify-write (lock cmpxchg, xadd, inc...) by several vCPUs on a page this watch traps is not atomic; keep locks and shared counters off watched pages",
                crate::quote::cut(&req.label)
            );
        }
        if req.access != Access::Write {
            self.refuse_executable(&ranges, req.access)?;
        }
        let mut state = self.write();
        let parts = self.relayout(&mut state, &[], &ranges, req.access)?;
        let id = id.unwrap_or_else(|| self.ids.allocate_id());
        for part in &parts {
            state.owner.insert(*part, id);
        }
        let virt = match req.range {
            WatchRange::Virtual { gva, len } => Some(remap::Followed::new(gva, len)),
            WatchRange::Physical { .. } => None,
        };
        state.watches.insert(
            id,
            Registered {
                label: req.label.into(),
                access: req.access,
                ranges,
                parts,
                on_hit: req.on_hit,
                hits: AtomicU64::new(0),
                in_flight: Arc::default(),
                virt,
            },
        );
        self.remaps.count(&state);
        Ok(id)
    }

    /// Disarms page watch `id`; neighbouring memslots merge back.
    pub fn remove(&self, id: HostBpId) -> Result<(), Error> {
        if self.stop_waiting(id) {
            return Ok(());
        }
        let mut state = self.write();
        let Some(gone) = state.watches.get(&id) else {
            return Err(Error::NoSuchWatch(id.0));
        };
        let parts = gone.parts.clone();
        let access = gone.access;
        let in_flight = gone.in_flight.clone();
        self.relayout(&mut state, &parts, &[], access)?;
        state.watches.remove(&id);
        for part in parts {
            state.owner.remove(&part);
        }
        self.remaps.count(&state);
        drop(state);
        // A vCPU may have found a hit just before the write lock was taken, and be about to
        // report it: the watch is gone once that report is out.
        wait_for_landing(&in_flight);
        Ok(())
    }

    /// Moves watch `id` onto `ranges` (guest-physical, checked to be RAM and, for a read or
    /// access watch, not executable), keeping its id, label and hits; `false` if it is there
    /// already.
    fn move_watch(&self, id: HostBpId, ranges: Vec<(u64, u64)>) -> Result<bool, Error> {
        if let Some((gpa, len, missing)) = ranges
            .iter()
            .find_map(|&(gpa, len)| Some((gpa, len, self.first_not_ram(gpa, len)?)))
        {
            return Err(Error::NotRam { gpa, len, missing });
        }
        let mut state = self.write();
        let Some(watch) = state.watches.get(&id) else {
            return Err(Error::NoSuchWatch(id.0));
        };
        if watch.ranges == ranges {
            return Ok(false);
        }
        let (old, access) = (watch.parts.clone(), watch.access);
        if access != Access::Write {
            self.refuse_executable(&ranges, access)?;
        }
        let parts = self.relayout(&mut state, &old, &ranges, access)?;
        for part in &old {
            state.owner.remove(part);
        }
        for part in &parts {
            state.owner.insert(*part, id);
        }
        if let Some(watch) = state.watches.get_mut(&id) {
            watch.ranges = ranges;
            watch.parts = parts;
        }
        Ok(true)
    }

    /// Plans and installs the layout without the parts `drop` and with new parts on `add`
    /// (`access` watches); returns the new parts' ids.
    fn relayout(
        &self,
        state: &mut State,
        drop: &[WatchId],
        add: &[(u64, u64)],
        access: Access,
    ) -> Result<Vec<WatchId>, Error> {
        let mut all: Vec<Watch> = state
            .layout
            .watches()
            .filter(|w| !drop.contains(&w.id()))
            .cloned()
            .collect();
        let mut parts = Vec::new();
        for &(gpa, len) in add {
            let id = WatchId(state.next_part + parts.len() as u32);
            all.push(Watch::new(id, gpa, len, access)?);
            parts.push(id);
        }
        let layout = state.layout.replan(&all, self.max_slots)?;
        self.install_layout(state, layout)?;
        state.next_part += parts.len() as u32;
        Ok(parts)
    }

    /// Installs `layout` with the vCPUs quiesced.
    fn install_layout(&self, state: &mut State, layout: Layout) -> Result<(), Error> {
        let ops = diff(&state.layout, &layout);
        if !ops.is_empty() {
            let _quiet = self.gate.quiesce();
            memslots::apply_all(&self.vm_fd, &self.mem, state.layout.slots(), &ops)?;
        }
        state.layout = layout;
        Ok(())
    }

    /// The guest-physical pieces of `range`, translating a virtual one through the guest's
    /// page tables (with the vCPUs briefly out of the guest).
    pub fn physical_ranges(&self, range: WatchRange) -> Result<Vec<(u64, u64)>, Error> {
        self.physical_ranges_on(range, crate::debug::current_vcpu().unwrap_or(0))
    }

    /// vCPU `index` exited with `regs` (its synced system registers): translations through it
    /// use them from now on.
    pub fn note_paging(&self, index: usize, regs: &crate::guest_paging::SystemRegisters) {
        self.paging.note(index, regs);
    }

    /// [`Self::physical_ranges`] through vCPU `vcpu`'s page tables: walked in the VMM with its
    /// registers from its last exit (its boot state before that), with no ioctl and no vCPU
    /// taken out of the guest. Only where that cannot be done (KVM does not sync the system
    /// registers, or the guest pages in 32-bit or PAE mode) through `KVM_TRANSLATE` on vCPU 0,
    /// with the vCPUs out of the guest.
    pub fn physical_ranges_on(
        &self,
        range: WatchRange,
        vcpu: usize,
    ) -> Result<Vec<(u64, u64)>, Error> {
        match range {
            WatchRange::Physical { len: 0, .. } | WatchRange::Virtual { len: 0, .. } => {
                Err(Error::Empty)
            }
            // Longer than guest RAM cannot be RAM; refusing here also bounds the translation.
            WatchRange::Physical { len, .. } | WatchRange::Virtual { len, .. }
                if len > self.mem.iter().map(|r| r.len()).sum::<u64>() =>
            {
                Err(Error::TooLong { len })
            }
            // The physical form is refused by the planner's `Watch::new`; a virtual range that
            // wraps would translate to nothing and never fire.
            WatchRange::Virtual { gva, len } if gva.checked_add(len).is_none() => {
                Err(Error::VirtualOverflow { gva, len })
            }
            WatchRange::Physical { gpa, len } => Ok(vec![(gpa, len)]),
            WatchRange::Virtual { gva, len } => {
                use crate::guest_paging::bits::{CR0_PG, EFER_LMA};
                let walkable = |r: &crate::guest_paging::SystemRegisters| {
                    r.cr0 & CR0_PG == 0 || r.efer & EFER_LMA != 0
                };
                if let Some(regs) = self.paging.of(vcpu).filter(walkable) {
                    return Ok(translate::physical_runs(gva, len, |at| {
                        crate::guest_paging::cpu_structures::physical(&self.mem, &regs, at)
                            .ok_or(translate::Error::NotMapped(at))
                    })?);
                }
                let translator = self.translator.lock().unwrap_or_else(|e| e.into_inner());
                let Some(t) = translator.as_ref() else {
                    // No vCPU to translate through: the address is taken as physical, which
                    // is exact for an identity-mapped guest before it enables paging.
                    return Ok(vec![(gva, len)]);
                };
                let _quiet = self.gate.quiesce();
                Ok(t.translate_range(gva, len)?)
            }
        }
    }

    /// `range`'s guest-physical pieces, all in RAM; or, for a guest-virtual range the guest
    /// does not map to RAM yet, why it must wait.
    fn resolve(&self, range: WatchRange) -> Result<Resolved, Error> {
        let ranges = match self.physical_ranges(range) {
            Ok(ranges) => ranges,
            Err(Error::Translate(translate::Error::NotMapped(at))) => {
                return Ok(Resolved::NotYet(format!(
                    "guest-virtual {at:#x} is not mapped by the guest's page tables yet"
                )));
            }
            Err(e) => return Err(e),
        };
        let Some(missing) = ranges
            .iter()
            .find_map(|&(gpa, len)| self.first_not_ram(gpa, len))
        else {
            return Ok(Resolved::Ranges(ranges));
        };
        match range {
            // With paging off an address translates to itself: a kernel's high addresses are
            // not RAM until it sets up its page tables.
            WatchRange::Virtual { gva, len } if ranges == [(gva, len)] => Ok(Resolved::NotYet(
                format!("the guest's paging is off, and {missing:#x} is not guest RAM as a physical address"),
            )),
            _ => {
                let (gpa, len) = ranges[0];
                Err(Error::NotRam { gpa, len, missing })
            }
        }
    }

    /// The first byte of `[gpa, gpa + len)` that is not guest RAM.
    fn first_not_ram(&self, gpa: u64, len: u64) -> Option<u64> {
        let end = gpa.saturating_add(len);
        let mut at = gpa;
        while at < end {
            let region = self
                .mem
                .iter()
                .find(|r| r.start_addr().0 <= at && at - r.start_addr().0 < r.len());
            match region {
                Some(r) => at = r.start_addr().0 + r.len(),
                None => return Some(at),
            }
        }
        None
    }

    fn refuse_executable(&self, ranges: &[(u64, u64)], access: Access) -> Result<(), Error> {
        let page = |a: u64| a & !(drvisor_watch::PAGE_SIZE - 1);
        for &(gpa, len) in ranges {
            let (first, last) = (page(gpa), page(gpa + len - 1) + drvisor_watch::PAGE_SIZE);
            if let Some(range) = self.executable.iter().find(|r| {
                first < page(r.end - 1) + drvisor_watch::PAGE_SIZE && page(r.start) < last
            }) {
                return Err(Error::ExecutablePage {
                    access,
                    gpa,
                    range: range.clone(),
                });
            }
        }
        Ok(())
    }

    /// Takes back the count of a hit that turned out to be the second piece of an access
    /// already reported (see [`crate::vcpu`]'s split-access rule).
    pub fn retract(&self, id: HostBpId) {
        if let Some(r) = self.read().watches.get(&id) {
            r.hits.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Accesses that trapped so far, and how many of them hit no watch.
    pub fn trap_counts(&self) -> (u64, u64) {
        (
            self.traps.load(Ordering::Relaxed),
            self.false_traps.load(Ordering::Relaxed),
        )
    }

    /// The memslot layout in force.
    pub fn layout(&self) -> Layout {
        self.read().layout.clone()
    }

    /// Every page watch's state.
    pub fn states(&self) -> Vec<PageWatchState> {
        let state = self.read();
        state
            .watches
            .iter()
            .map(|(id, r)| PageWatchState {
                id: id.0,
                label: r.label.to_string(),
                access: r.access,
                ranges: r.ranges.clone(),
                pages: state
                    .layout
                    .traps()
                    .iter()
                    .filter(|(_, t)| t.watches.iter().any(|w| r.parts.contains(w)))
                    .map(|(page, t)| (*page, t.mode))
                    .collect(),
                hits: r.hits.load(Ordering::Relaxed),
                unfollowed: r.virt.as_ref().and_then(|v| v.unfollowed()),
            })
            .collect()
    }

    /// Whether accesses to the page holding `gpa` exit to this engine (read-only or no memslot).
    pub fn traps(&self, gpa: u64) -> bool {
        self.read().layout.is_trapped(gpa).is_some()
    }

    /// Whether the page holding `gpa` has no memslot because of a watch.
    pub fn is_hole(&self, gpa: u64) -> bool {
        self.read().layout.is_trapped(gpa) == Some(PageMode::Absent)
    }

    /// Handles an MMIO exit at `gpa`. `None` if the address is not guest RAM (a device's, or
    /// no one's). Otherwise the access is performed on guest RAM, whatever the layout says now
    /// (a trap removed while the exit was in flight must not lose the access), and the hits
    /// are returned.
    pub fn on_mmio(&self, gpa: u64, access: MmioAccess<'_>) -> Option<Vec<PendingPageHit>> {
        let (len, write) = match &access {
            MmioAccess::Read(d) => (d.len(), false),
            MmioAccess::Write(d) => (d.len(), true),
        };
        let addr = GuestAddress(gpa);
        if len == 0 || len > 8 || !self.mem.address_in_range(addr) {
            return None;
        }
        let state = self.read();
        let mut before = [0u8; 8];
        // An access is at most 8 bytes and may cross into the next page: both pages' stripes, in
        // order, so two accesses that share a page always share a lock.
        let (first, last) = (stripe(gpa), stripe(gpa + len as u64 - 1));
        let performing = self.perform[first.min(last)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let performing_too = (first != last).then(|| {
            self.perform[first.max(last)]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        });
        let value = match access {
            MmioAccess::Write(data) => {
                self.mem.read_slice(&mut before[..len], addr).ok()?;
                self.mem.write_slice(data, addr).ok()?;
                le(data)
            }
            MmioAccess::Read(data) => {
                self.mem.read_slice(data, addr).ok()?;
                le(data)
            }
        };
        drop(performing_too);
        drop(performing);
        self.traps.fetch_add(1, Ordering::Relaxed);
        let found = state.layout.match_access(gpa, len as u64, write);
        if found.hits.is_empty() {
            self.false_traps.fetch_add(1, Ordering::Relaxed);
            return Some(Vec::new());
        }
        let mut owners: Vec<HostBpId> = found
            .hits
            .iter()
            .filter_map(|part| state.owner.get(part).copied())
            .collect();
        owners.dedup();
        Some(
            owners
                .into_iter()
                .filter_map(|id| {
                    let r = state.watches.get(&id)?;
                    Some(PendingPageHit {
                        id,
                        label: r.label.clone(),
                        addr: r.ranges.first().map(|r| r.0).unwrap_or(gpa),
                        access: r.access,
                        on_hit: r.on_hit.clone(),
                        count: r.hits.fetch_add(1, Ordering::Relaxed) + 1,
                        gpa,
                        len: len as u8,
                        write,
                        old: write.then(|| le(&before[..len])),
                        value,
                        in_flight: InFlight::new(&r.in_flight),
                    })
                })
                .collect(),
        )
    }
}

/// How many locks the pages' accesses are spread over.
const PERFORM_STRIPES: usize = 64;

/// The lock of the page holding `gpa`.
fn stripe(gpa: u64) -> usize {
    (gpa >> 12) as usize % PERFORM_STRIPES
}

/// Up to eight bytes as a little-endian number.
fn le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    u64::from_le_bytes(b)
}

/// Accesses to a trapped page exit to this engine (a read-only page or one without a memslot).
impl crate::debug::TrappedPages for PageWatchEngine {
    fn traps(&self, gpa: u64) -> bool {
        PageWatchEngine::traps(self, gpa)
    }
}
