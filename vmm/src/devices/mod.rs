//! Port-I/O devices and the bus that routes guest `in`/`out` to them.

mod bus;
mod exit_port;
mod host_signal;
mod serial;

pub use bus::{PioBus, PioDevice, PortAccess};
pub use exit_port::{ExitPort, EXIT_PORT};
pub use host_signal::{HostSignal, HostSignalPort, HOST_SIGNAL_PORT};
pub use serial::{SerialConsole, COM1_BASE, COM1_GSI};
