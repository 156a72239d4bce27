//! Arming what the command line asked for, through the session every client shares; the
//! library's refusals get the flags the user can change.

use drvisor::control::{Error, Request, Session};
use drvisor::debug::OnHit;
use drvisor::watch::{ArmError, Engine};
use drvisor_debug::HostBpId;

/// Arms `req` with `on_hit`; the error is a one-line message for the user.
pub fn arm(session: &Session, req: &Request, on_hit: OnHit) -> Result<(HostBpId, Engine), String> {
    session.arm_with(req.clone(), on_hit).map_err(|e| {
        let why = match &e {
            Error::Watch(w) => flag_context(w),
            Error::Break(_) | Error::NoTaskLayout { .. } => e.to_string(),
        };
        format!("{}: {why}", drvisor::quote::cut(&req.label))
    })
}

/// The library's reason, with the flags the user can change.
fn flag_context(e: &ArmError) -> String {
    match e {
        ArmError::Route(_) | ArmError::NoSlotShape => format!("--engine hw: {e}"),
        ArmError::PageWatchOnOneVcpu { vcpu } => format!(
            "--vcpu {vcpu}: {e}; drop --vcpu, or use --engine hw where this host delivers it"
        ),
        ArmError::Hw(_) | ArmError::Page(_) => e.to_string(),
    }
}
