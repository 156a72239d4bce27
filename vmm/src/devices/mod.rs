//! Devices: the port-I/O bus that routes guest `in`/`out`, the MMIO bus for devices outside
//! RAM, and the devices on them.

mod bus;
mod cmos_rtc;
mod exit_port;
mod fw_cfg;
mod host_signal;
mod mmio;
mod pc_testdev;
mod pm1;
mod pm_timer;
mod rtc_alarm;
mod rtc_timer;
mod serial;

pub use bus::{PioBus, PioDevice, PortAccess};
pub use cmos_rtc::{
    CmosRtc, DateTime, HostClock, RtcEvents, WallClock, CMOS_PORT, CMOS_PORTS, RTC_GSI,
};
pub use exit_port::{ExitPort, ExitStatus, UnknownExitStatus, EXIT_PORT, EXIT_PORTS};
pub use fw_cfg::{FwCfg, FW_CFG_PORT, FW_CFG_PORTS};
pub use host_signal::{HostSignal, HostSignalPort, HOST_SIGNAL_PORT};
pub use mmio::{MmioBus, MmioDevice};
pub use pc_testdev::{
    IrqLines, MprotectFlush, PageFlush, TestDevIomem, TestDevIrqLines, TestDevPort, IOMEM_BASE,
    IOMEM_LEN, IRQ_LINE_PORT, IRQ_LINE_PORTS, TESTDEV_PORT, TESTDEV_PORTS,
};
pub use pm1::{
    sleep_request, Pm1Events, Pm1Registers, SleepState, Sleeper, WakeEvent, PM1_CNT_LEN,
    PM1_CNT_PORT, PM1_EVT_LEN, PM1_EVT_PORT, PM1_PORTS, RTC_EN, RTC_STS, SLP_TYP_S3, WAK_STS,
};
pub use pm_timer::{
    ticks as pm_timer_ticks, Elapsed, PmTimer, SinceStart, PM_TIMER_HZ, PM_TIMER_PORT,
    PM_TIMER_PORTS,
};
pub use rtc_timer::{spawn as spawn_rtc_timer, AlarmSignal};
pub use serial::{SerialConsole, COM1_BASE, COM1_GSI};
