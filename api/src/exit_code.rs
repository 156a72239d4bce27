//! Exit codes drvisor itself uses. Guest statuses 0-63 pass through unchanged (the test guest
//! uses 0-4); a status above 63 becomes [`GUEST_STATUS_OUT_OF_RANGE`], so that no
//! guest can pass for one of drvisor's own codes (2, 70-77, 84, 128+N; 78, 80, 82 under `--exit-status qemu`).
//!
//! They live here, with the wire types, because they are `drvisor run`'s interface too: the
//! CI harness (drvisor-ci) reads them from its child runs.

/// The highest guest status passed through as the exit code.
pub const GUEST_MAX: u8 = 63;
/// The user's mistake: bad flags, a missing kernel, no access to /dev/kvm.
pub const USAGE: u8 = 2;
/// The guest triple-faulted (`KVM_EXIT_SHUTDOWN`).
pub const TRIPLE_FAULT: u8 = 70;
/// KVM could not run a guest instruction (`KVM_EXIT_INTERNAL_ERROR`).
pub const INTERNAL_ERROR: u8 = 71;
/// The vCPU could not enter the guest (`KVM_EXIT_FAIL_ENTRY`).
pub const FAIL_ENTRY: u8 = 72;
/// The guest touched a port no device owns, under `--strict-ports`.
pub const UNKNOWN_PORT: u8 = 73;
/// A host breakpoint's action stopped the run.
pub const HOST_STOP: u8 = 74;
/// A KVM ioctl failed: a VMM or host problem, not the guest's.
pub const VMM_ERROR: u8 = 75;
/// A hit event could not be written (`--events` file or stderr): the run was stopped.
pub const EVENTS_UNWRITABLE: u8 = 76;
/// The guest wrote a status above [`GUEST_MAX`] to the exit port (the message has it).
pub const GUEST_STATUS_OUT_OF_RANGE: u8 = 77;
/// Under `--exit-status qemu` every odd code is some guest value's `(value << 1) | 1`
/// (kvm-unit-tests: 1 passed, 3 failed, 77 all skipped), so drvisor's own odd codes are
/// replaced by even ones, which no guest value can produce: 71 becomes this,
pub const QEMU_INTERNAL_ERROR: u8 = 78;
/// 73 this,
pub const QEMU_UNKNOWN_PORT: u8 = 80;
/// and 75 this. (77 needs none: under `qemu` every guest value is the guest's.)
pub const QEMU_VMM_ERROR: u8 = 82;

/// drvisor's own exit `code` as `--exit-status qemu` reports it: even, so that it cannot
/// pass for a guest's result. Codes that are even already are kept.
pub fn own_code_under_qemu(code: u8) -> u8 {
    match code {
        INTERNAL_ERROR => QEMU_INTERNAL_ERROR,
        UNKNOWN_PORT => QEMU_UNKNOWN_PORT,
        VMM_ERROR => QEMU_VMM_ERROR,
        c => c,
    }
}

/// A drvisor thread made a system call its seccomp filter forbids (see
/// drvisor's `seccomp` module): the run was ended at once. Even, as under `--exit-status qemu`.
pub const SECCOMP_VIOLATION: u8 = 84;

/// A signal stopped the run: 128 + its number, as shells report a process it killed
/// (SIGHUP 129, SIGINT 130, SIGTERM 143).
pub const SIGNAL_BASE: u8 = 128;
