//! The host's signal to the guest: port 0x520 reads how many times the host has signalled
//! (drvisor's `HostSignal`). Scenarios that must wait for the host read it, so tests tie their
//! steps to the guest's progress and not to this host's speed.

/// The port.
const PORT: u16 = 0x520;

/// Whether the host has signalled at least once.
pub fn raised() -> bool {
    // SAFETY: reading port 0x520 has no side effect (drvisor's HostSignal only reports a count).
    unsafe { crate::serial::inb(PORT) != 0 }
}
