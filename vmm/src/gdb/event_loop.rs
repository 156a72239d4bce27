//! Waiting while the guest runs: for a gdb breakpoint's hit, for the run's end, or for a byte
//! from gdb (a Ctrl-C), whichever comes first.

use std::time::Duration;

use drvisor_api::rest::VmState;
use gdbstub::common::Signal;
use gdbstub::conn::{Connection, ConnectionExt};
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::breakpoints::WatchKind;

use super::evictions::console_packet;
use super::target::{tid, GdbTarget, Kind, Point, Stop};

/// How long a stop waits for every vCPU to leave the guest before it is reported.
const PARK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the loop looks at the connection while the guest runs.
const POLL: Duration = Duration::from_millis(5);

/// The stub's event loop.
pub enum StubLoop {}

fn reason(stop: Stop) -> MultiThreadStopReason<u64> {
    let t = tid(stop.vcpu);
    match stop.point {
        None => MultiThreadStopReason::SignalWithThread {
            tid: t,
            signal: Signal::SIGTRAP,
        },
        Some(Point::Soft(_)) => MultiThreadStopReason::SwBreak(t),
        Some(Point::Hard(_)) => MultiThreadStopReason::HwBreak(t),
        Some(Point::Watch(addr, _, k)) => MultiThreadStopReason::Watch {
            tid: t,
            kind: match k {
                Kind::Write => WatchKind::Write,
                Kind::Read => WatchKind::Read,
                Kind::Access => WatchKind::ReadWrite,
            },
            addr,
        },
    }
}

/// Sends gdb the eviction notes gathered since the last call, as console output.
fn send_notes(
    target: &GdbTarget,
    conn: &mut Box<dyn ConnectionExt<Error = std::io::Error>>,
) -> std::io::Result<()> {
    for note in target.evictions.take_notes() {
        tracing::warn!("gdb: {}", note.trim_end());
        conn.write_all(&console_packet(&note))?;
        conn.flush()?;
    }
    Ok(())
}

impl BlockingEventLoop for StubLoop {
    type Target = GdbTarget;
    type Connection = Box<dyn ConnectionExt<Error = std::io::Error>>;
    type StopReason = MultiThreadStopReason<u64>;

    fn wait_for_stop_reason(
        target: &mut GdbTarget,
        conn: &mut Self::Connection,
    ) -> Result<
        Event<Self::StopReason>,
        WaitForStopReasonError<super::Error, <Self::Connection as Connection>::Error>,
    > {
        loop {
            send_notes(target, conn).map_err(WaitForStopReasonError::Connection)?;
            let stop = match target.queued.pop_front() {
                Some(stop) => Some(stop),
                None => target.stops.recv_timeout(POLL).ok(),
            };
            if let Some(stop) = stop {
                // All-stop: the hit paused every vCPU, unless another client resumed them
                // since; pause again (it changes nothing if paused), and report once every
                // vCPU is out.
                if target.session.state().0 == VmState::Running {
                    target.session.pause("gdb stop");
                }
                target.session.wait_parked(PARK_TIMEOUT);
                // A plan change just before the stop (a slot given back, then the hit) is told
                // before the stop, not lost behind it.
                send_notes(target, conn).map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::TargetStopped(reason(stop)));
            }
            if target.session.is_finished() {
                send_notes(target, conn).map_err(WaitForStopReasonError::Connection)?;
                let code = target.session.exit_code().unwrap_or(0);
                return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(code)));
            }
            if conn
                .peek()
                .map_err(WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(target: &mut GdbTarget) -> Result<Option<Self::StopReason>, super::Error> {
        target.session.pause("gdb interrupt");
        target.session.wait_parked(PARK_TIMEOUT);
        Ok(Some(MultiThreadStopReason::SignalWithThread {
            tid: tid(0),
            signal: Signal::SIGINT,
        }))
    }
}
