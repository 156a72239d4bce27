//! Devices: the port-I/O bus that routes guest `in`/`out`, the MMIO bus for devices outside
//! RAM, and the devices on them.

mod bus;
mod exit_port;
mod fw_cfg;
mod host_signal;
mod mmio;
mod pc_testdev;
mod serial;

pub use bus::{PioBus, PioDevice, PortAccess};
pub use exit_port::{ExitPort, ExitStatus, EXIT_PORT, EXIT_PORTS};
pub use fw_cfg::{FwCfg, FW_CFG_PORT, FW_CFG_PORTS};
pub use host_signal::{HostSignal, HostSignalPort, HOST_SIGNAL_PORT};
pub use mmio::{MmioBus, MmioDevice};
pub use pc_testdev::{
    TestDevIomem, TestDevPort, IOMEM_BASE, IOMEM_LEN, TESTDEV_PORT, TESTDEV_PORTS,
};
pub use serial::{SerialConsole, COM1_BASE, COM1_GSI};
