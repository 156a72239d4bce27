//! The stub's fatal errors: what ends a gdb session (gdbstub carries them out of its loop, and
//! the stub logs them as the reason the connection ended).

use gdbstub::common::Signal;

use crate::control::StepError;

/// Why the stub cannot do what gdb asked, ending the session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// gdb asked to continue with a signal: a vCPU has no signals.
    #[error("cannot deliver {0:?} to a vCPU; continue without a signal (`signal 0`)")]
    SignalOnContinue(Signal),
    /// gdb asked to step with a signal.
    #[error("cannot deliver {0:?} to a vCPU; step without a signal")]
    SignalOnStep(Signal),
    /// The session could not single-step the vCPU.
    #[error("single-step: {0}")]
    Step(#[from] StepError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do_instead() {
        let e = Error::SignalOnContinue(Signal::SIGINT);
        assert!(e.to_string().contains("`signal 0`"), "{e}");
        let e = Error::from(StepError::NotDelivered);
        assert!(e.to_string().contains("probe row"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
