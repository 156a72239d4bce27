//! ACPI S3, suspend to RAM. The guest's write of `SLP_EN` with the `\_S3` type to `PM1_CNT`
//! ([`crate::devices::Pm1Registers`]) closes the vCPU gate on the writing vCPU's own exit, so
//! neither it nor any other vCPU runs another guest instruction (the others are kicked out of
//! `KVM_RUN` and park). Guest memory stays as it is. A wake event the guest enabled in
//! `PM1_EN` (the RTC alarm interrupt: [`crate::devices::spawn_rtc_timer`]) sets `WAK_STS` and
//! resets every vCPU as at power-on, each on its own thread: the boot vCPU to the FACS's
//! waking vector, the others to wait for INIT and SIPI. Only when all have been reset does the
//! gate open again. Nothing of this is on the vCPUs' hot path: they look at it only while
//! parked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::acpi::{
    waking_vector, WakingVector, FACS_OSPM_FLAGS, FACS_WAKING_VECTOR, FACS_X_WAKING_VECTOR,
};
use crate::devices::{Pm1Events, SleepState, Sleeper, WakeEvent};
use crate::gate::{OwnedHeld, VcpuGate};
use crate::outcome::Outcome;
use crate::run_control::RunControl;

/// Where a vCPU goes when the machine wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTarget {
    /// The boot vCPU: to the waking vector.
    Boot(WakingVector),
    /// An application processor: waiting for INIT and SIPI.
    WaitForSipi,
}

enum State {
    Awake,
    /// Asleep: the gate is held.
    Asleep(OwnedHeld),
    /// Waking: the gate is held until every vCPU has reset.
    Waking {
        _held: OwnedHeld,
        entry: WakingVector,
        left: usize,
    },
}

/// The machine's sleep state, shared by the PM1 registers, the RTC thread and the vCPUs. Its
/// lock is taken under the gate's (a parked vCPU's wake condition calls
/// [`SleepControl::reset_due`]), so nothing here takes the gate's lock while holding it.
pub struct SleepControl {
    state: Mutex<State>,
    /// vCPU `i` must reset before it enters again.
    reset_due: Vec<AtomicBool>,
    gate: Arc<VcpuGate>,
    control: Arc<RunControl>,
    events: Arc<Pm1Events>,
    mem: GuestMemoryMmap,
    facs: u64,
}

impl SleepControl {
    /// The control of a VM whose vCPUs pass `gate`, with PM1 events `events` and its FACS at
    /// `facs` in `mem`.
    pub fn new(
        gate: Arc<VcpuGate>,
        control: Arc<RunControl>,
        events: Arc<Pm1Events>,
        mem: GuestMemoryMmap,
        facs: u64,
    ) -> Self {
        SleepControl {
            state: Mutex::new(State::Awake),
            reset_due: (0..gate.vcpus()).map(|_| AtomicBool::new(false)).collect(),
            gate,
            control,
            events,
            mem,
            facs,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the machine is asleep (not yet woken).
    pub fn is_asleep(&self) -> bool {
        matches!(*self.lock(), State::Asleep(_))
    }

    /// The FACS's waking vector fields, as the guest left them.
    fn read_vector(&self) -> Result<WakingVector, String> {
        let at = |off: u64| GuestAddress(self.facs + off);
        let read = || -> Result<_, vm_memory::GuestMemoryError> {
            Ok((
                self.mem.read_obj::<u32>(at(FACS_WAKING_VECTOR))?,
                self.mem.read_obj::<u64>(at(FACS_X_WAKING_VECTOR))?,
                self.mem.read_obj::<u32>(at(FACS_OSPM_FLAGS))?,
            ))
        };
        let (vector, x_vector, flags) =
            read().map_err(|e| format!("cannot read the FACS at {:#x}: {e}", self.facs))?;
        waking_vector(vector, x_vector, flags).map_err(|e| e.to_string())
    }

    /// A wake event: if the machine sleeps and the guest enabled `event`, it wakes. Whether it
    /// does.
    pub fn wake(&self, event: WakeEvent) -> bool {
        let mut state = self.lock();
        if !matches!(*state, State::Asleep(_)) || !self.events.wake_by(event) {
            return false;
        }
        let entry = match self.read_vector() {
            Ok(entry) => entry,
            Err(message) => {
                drop(state);
                self.control.finish(Outcome::VmmError {
                    vcpu: None,
                    message,
                });
                return false;
            }
        };
        tracing::info!("the guest wakes from S3 ({event:?}), resuming at {entry}");
        let State::Asleep(held) = std::mem::replace(&mut *state, State::Awake) else {
            return false;
        };
        for due in &self.reset_due {
            due.store(true, Ordering::SeqCst);
        }
        *state = State::Waking {
            _held: held,
            entry,
            left: self.reset_due.len(),
        };
        drop(state);
        self.gate.wake_parked();
        true
    }

    /// Where vCPU `index` resets to, if it must before it enters again. Cheap: one load.
    pub fn reset_due(&self, index: usize) -> Option<ResetTarget> {
        if !self.reset_due.get(index)?.load(Ordering::SeqCst) {
            return None;
        }
        match *self.lock() {
            State::Waking { entry, .. } if index == 0 => Some(ResetTarget::Boot(entry)),
            State::Waking { .. } => Some(ResetTarget::WaitForSipi),
            _ => None,
        }
    }

    /// vCPU `index` has reset; the last one opens the gate.
    pub fn reset_done(&self, index: usize) {
        let Some(due) = self.reset_due.get(index) else {
            return;
        };
        let mut state = self.lock();
        if !due.swap(false, Ordering::SeqCst) {
            return;
        }
        let State::Waking { left, .. } = &mut *state else {
            return;
        };
        *left -= 1;
        if *left == 0 {
            let woken = std::mem::replace(&mut *state, State::Awake);
            // The hold goes after the lock: dropping it takes the gate's lock, under which
            // parked vCPUs call `reset_due` (which takes this one).
            drop(state);
            drop(woken);
        }
    }
}

impl Sleeper for SleepControl {
    fn sleep(&self, sleep: SleepState) {
        let mut state = self.lock();
        if !matches!(*state, State::Awake) {
            return;
        }
        *state = State::Asleep(self.gate.hold_owned());
        drop(state);
        // The writing vCPU is out of the guest (this is its exit); the others come out now.
        self.control.kicker.kick_all();
        if self.events.any_wake_enabled() {
            tracing::info!("the guest entered {sleep:?}; waiting for an enabled wake event");
        } else {
            tracing::warn!(
                "the guest entered {sleep:?} with no wake event enabled in PM1_EN (RTC_EN is \
                 clear): it sleeps until the run's timeout or a stop"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{PioDevice, Pm1Registers, RTC_EN};

    fn setup(
        vcpus: usize,
    ) -> (
        Arc<SleepControl>,
        Arc<VcpuGate>,
        Pm1Registers,
        GuestMemoryMmap,
    ) {
        let control = Arc::new(RunControl::new().unwrap());
        let gate = Arc::new(VcpuGate::new(vcpus, control.clone()));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let events = Arc::new(Pm1Events::default());
        let sleep = Arc::new(SleepControl::new(
            gate.clone(),
            control,
            events.clone(),
            mem.clone(),
            0xe_0040,
        ));
        let pm1 = Pm1Registers::new(events, Some(sleep.clone()));
        (sleep, gate, pm1, mem)
    }

    #[test]
    fn s3_closes_the_gate_and_an_enabled_alarm_resets_every_vcpu_then_opens_it() {
        let (sleep, gate, mut pm1, mem) = setup(2);
        mem.write_obj(0x1000u32, GuestAddress(0xe_0040 + FACS_WAKING_VECTOR))
            .unwrap();
        assert!(!sleep.wake(WakeEvent::RtcAlarm), "awake: nothing to wake");
        pm1.write(2, &RTC_EN.to_le_bytes());
        pm1.write(4, &0x2400u16.to_le_bytes());
        assert!(sleep.is_asleep());
        assert!(!gate.try_enter(0) && !gate.try_enter(1), "no vCPU enters");
        assert_eq!(sleep.reset_due(0), None);
        assert!(sleep.wake(WakeEvent::RtcAlarm));
        let mut sts = [0u8; 2];
        pm1.read(0, &mut sts);
        assert_eq!(u16::from_le_bytes(sts), 0x8400, "WAK_STS | RTC_STS");
        let boot = WakingVector::RealMode { cs: 0x100, ip: 0 };
        assert_eq!(sleep.reset_due(0), Some(ResetTarget::Boot(boot)));
        assert_eq!(sleep.reset_due(1), Some(ResetTarget::WaitForSipi));
        sleep.reset_done(0);
        sleep.reset_done(0);
        assert!(!gate.try_enter(0), "closed until the last vCPU has reset");
        sleep.reset_done(1);
        assert!(gate.try_enter(0) && gate.try_enter(1), "open");
        assert_eq!(sleep.reset_due(1), None);
    }

    #[test]
    fn without_rtc_en_the_alarm_does_not_wake() {
        let (sleep, gate, mut pm1, _) = setup(1);
        pm1.write(4, &0x2400u16.to_le_bytes());
        assert!(!sleep.wake(WakeEvent::RtcAlarm));
        assert!(sleep.is_asleep() && !gate.try_enter(0));
        let mut sts = [0u8; 2];
        pm1.read(0, &mut sts);
        assert_eq!(sts, [0, 0]);
    }

    #[test]
    fn a_wake_without_a_waking_vector_ends_the_run_with_the_reason() {
        let control = Arc::new(RunControl::new().unwrap());
        let gate = Arc::new(VcpuGate::new(1, control.clone()));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let events = Arc::new(Pm1Events::default());
        let sleep = Arc::new(SleepControl::new(
            gate,
            control.clone(),
            events.clone(),
            mem,
            0xe_0040,
        ));
        let mut pm1 = Pm1Registers::new(events, Some(sleep.clone()));
        pm1.write(2, &RTC_EN.to_le_bytes());
        pm1.write(4, &0x2400u16.to_le_bytes());
        assert!(!sleep.wake(WakeEvent::RtcAlarm));
        let text = control.outcome().expect("finished").to_string();
        assert!(text.contains("without a waking vector"), "{text}");
    }
}
