//! Port-I/O devices and the bus that routes guest `in`/`out` to them.

mod bus;
mod exit_port;
mod fw_cfg;
mod serial;

pub use bus::{PioBus, PioDevice, PortAccess};
pub use exit_port::{ExitPort, ExitStatus, EXIT_PORT, EXIT_PORTS};
pub use fw_cfg::{FwCfg, FW_CFG_PORT, FW_CFG_PORTS};
pub use serial::{SerialConsole, COM1_BASE, COM1_GSI};
