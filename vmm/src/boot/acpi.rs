//! The ACPI tables a PC's firmware leaves for the OS, built with rust-vmm's `acpi_tables`:
//! - the RSDP (revision 2) at [`ACPI_START`], on a 16-byte boundary in 0xe0000-0xfffff where
//!   Linux and kvm-unit-tests scan for it; it points at
//! - the XSDT, which lists the FADT and the MADT;
//! - the FADT (revision 6.5, not hardware-reduced): the FACS and the DSDT, the SCI on IRQ 9, the
//!   PM1 event and control blocks and the 32-bit PM timer at their I/O ports
//!   ([`crate::devices::PM_TIMER_PORT`]), the CMOS century register, and boot flags for the
//!   legacy devices drvisor has (no 8042, no VGA);
//! - the FACS (64-byte aligned), where the OS leaves the waking vector for a resume from S3
//!   ([`waking_vector`]);
//! - a minimal DSDT: an empty `\_SB` scope and the `\_S3` sleep package ([`SLP_TYP_S3`]), in
//!   AML;
//! - the MADT: one enabled local APIC per vCPU (APIC ids 0..n-1, as the MP table says), the
//!   I/O APIC (GSIs 0-23), the SCI's override (IRQ 9, level, active high, as QEMU gives it),
//!   and LINT1 as NMI on every CPU. IRQ 0 has no override: KVM's default interrupt routing,
//!   which drvisor keeps, wires the PIT to I/O APIC pin 0, as the MP table also says.
//!
//! Everything lies in the legacy area that the e820 map reserves (EBDA to 1 MiB), below the MP
//! table, which stays (a kernel with ACPI prefers the MADT).

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::{aml, facs::FACS, rsdp::Rsdp, sdt::Sdt, xsdt::XSDT, Aml, AmlSink};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{Immutable, IntoBytes};

use super::mptable::{IOAPIC_ADDR, IOAPIC_ID, LAPIC_ADDR, MAX_CPUS};
use crate::devices::{
    PM1_CNT_LEN, PM1_CNT_PORT, PM1_EVT_LEN, PM1_EVT_PORT, PM_TIMER_PORT, SLP_TYP_S3,
};
use crate::layout::{ACPI_END, ACPI_START};

/// The OEM id in every table's header.
pub const OEM_ID: [u8; 6] = *b"DRVISR";
/// The OEM table id in every table's header.
pub const OEM_TABLE_ID: [u8; 8] = *b"DRVISOR ";
const OEM_REVISION: u32 = 1;

/// The SCI's ISA IRQ (and GSI), as on QEMU's machines.
pub const SCI_IRQ: u8 = 9;
/// The PM timer block's length in bytes.
pub const PM_TMR_LEN: u8 = 4;
/// The CMOS register that holds the century ([`crate::devices::CmosRtc`] keeps it).
const CMOS_CENTURY: u8 = 0x32;

// IA-PC boot architecture flags (FADT `IAPC_BOOT_ARCH`).
/// LPC/ISA devices the OS cannot enumerate are there (COM1, the CMOS clock, the PIT).
const BOOT_LEGACY_DEVICES: u16 = 1 << 0;
/// No VGA: the OS must not probe its ports and memory.
const BOOT_NO_VGA: u16 = 1 << 2;

// MADT interrupt flags (MPS INTI flags).
/// Active high.
const POLARITY_HIGH: u16 = 0b01;
/// Level-triggered.
const TRIGGER_LEVEL: u16 = 0b11 << 2;

/// Errors building the tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A vCPU count the MADT cannot describe with xAPIC entries.
    #[error("the ACPI MADT describes 1 to {MAX_CPUS} vCPUs, not {0}")]
    CpuCount(usize),
}

/// Where each table went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The RSDP.
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The FADT (signature `FACP`).
    pub fadt: u64,
    /// The FACS.
    pub facs: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// The MADT (signature `APIC`).
    pub madt: u64,
}

/// The tables for a VM, as one image to write at [`Tables::base`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    /// Guest-physical address of the first byte.
    pub base: u64,
    /// The bytes, the RSDP first.
    pub bytes: Vec<u8>,
    /// Where each table is.
    pub placed: Placed,
}

/// An x86 MADT entry that `acpi_tables` has no type for: its raw bytes.
#[derive(Clone, Copy, IntoBytes, Immutable)]
#[repr(C)]
struct RawEntry<const N: usize>([u8; N]);

impl<const N: usize> Aml for RawEntry<N> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// MADT type 2, Interrupt Source Override: ISA `irq` is `gsi`, with `flags`.
fn interrupt_source_override(irq: u8, gsi: u32, flags: u16) -> RawEntry<10> {
    let g = gsi.to_le_bytes();
    let f = flags.to_le_bytes();
    RawEntry([2, 10, 0, irq, g[0], g[1], g[2], g[3], f[0], f[1]])
}

/// MADT type 4, Local APIC NMI: LINT `lint` of every processor (UID 0xff) is the NMI.
fn local_apic_nmi_all(lint: u8) -> RawEntry<6> {
    RawEntry([4, 6, 0xff, 0, 0, lint])
}

/// The bytes of an `acpi_tables` table.
fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    table.to_aml_bytes(&mut out);
    out
}

/// Sets the little-endian u32 at `at` in the table `bytes` and fixes its checksum (byte 9).
fn patch_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes[9] = 0;
    bytes[9] = bytes
        .iter()
        .fold(0u8, |sum, &b| sum.wrapping_add(b))
        .wrapping_neg();
}

/// MADT flags: `PCAT_COMPAT`, the machine also has the two 8259s (KVM's PIC).
const MADT_PCAT_COMPAT: u32 = 1;
/// Offset of the MADT's flags.
const MADT_FLAGS_AT: usize = 40;

/// The MADT for `cpus` vCPUs.
pub fn madt(cpus: usize) -> Result<Vec<u8>, Error> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::CpuCount(cpus));
    }
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..cpus {
        // At most MAX_CPUS (254 is the last id): fits a byte.
        let id = id as u8;
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(IOAPIC_ID, IOAPIC_ADDR, 0));
    madt.add_structure(interrupt_source_override(
        SCI_IRQ,
        u32::from(SCI_IRQ),
        POLARITY_HIGH | TRIGGER_LEVEL,
    ));
    madt.add_structure(local_apic_nmi_all(1));
    let mut bytes = bytes_of(&madt);
    // acpi_tables leaves the flags 0 and has no setter.
    patch_u32(&mut bytes, MADT_FLAGS_AT, MADT_PCAT_COMPAT);
    Ok(bytes)
}

/// The DSDT: its header, an empty `\_SB` scope (the namespace's system bus), and `\_S3`:
/// the `SLP_TYP` values for PM1a and PM1b control that put the machine in S3 (the only sleep
/// state drvisor has, so the only `\_Sx` object).
pub fn dsdt() -> Vec<u8> {
    // Revision 2: integers are 64 bits wide.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut body = Vec::new();
    aml::Scope::new("\\_SB_".into(), vec![]).to_aml_bytes(&mut body);
    let s3 = aml::Package::new(vec![&SLP_TYP_S3, &SLP_TYP_S3, &0u8, &0u8]);
    aml::Name::new("\\_S3_".into(), &s3).to_aml_bytes(&mut body);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// The FADT, pointing at the FACS and the DSDT.
pub fn fadt(facs: u32, dsdt: u32) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        // kvm-unit-tests reads the 32-bit FIRMWARE_CTRL; the 64-bit one stays 0.
        .firmware_ctrl_32(facs)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // No fixed-feature power or sleep button (the RTC's wake status is in PM1_STS).
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        // The PM timer counts 32 bits.
        .flag(Flags::TmrValExt);
    // Both DSDT fields, equal (as QEMU fills them): a reader of either finds it.
    f.dsdt = dsdt.into();
    f.x_dsdt = u64::from(dsdt).into();
    f.sci_int = u16::from(SCI_IRQ).into();
    // No SMI_CMD: the machine starts, and stays, in ACPI mode (PM1_CNT.SCI_EN reads 1).
    f.pm1a_evt_blk = u32::from(PM1_EVT_PORT).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1a_cnt_blk = u32::from(PM1_CNT_PORT).into();
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.pm_tmr_blk = u32::from(PM_TIMER_PORT).into();
    f.pm_tmr_len = PM_TMR_LEN;
    // The 64-bit X_ blocks stay 0: the OS takes the 32-bit port fields (ACPI 6.5, 5.2.9).
    f.century = CMOS_CENTURY;
    f.iapc_boot_arch = (BOOT_LEGACY_DEVICES | BOOT_NO_VGA).into();
    bytes_of(&f.finalize())
}

/// Offset of the FACS's 32-bit `Firmware_Waking_Vector`.
pub const FACS_WAKING_VECTOR: u64 = 12;
/// Offset of the FACS's 64-bit `X_Firmware_Waking_Vector`.
pub const FACS_X_WAKING_VECTOR: u64 = 24;
/// Offset of the FACS's `OSPM Flags`.
pub const FACS_OSPM_FLAGS: u64 = 36;
/// `OSPM Flags.64BIT_WAKE_F`: the OS asks to be resumed in 64-bit mode.
const OSPM_64BIT_WAKE: u32 = 1;

/// Where a resume from S3 starts the boot vCPU, from the FACS (ACPI 6.5, 5.2.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakingVector {
    /// `Firmware_Waking_Vector`: real mode, CS = vector >> 4, IP = vector & 0xf.
    RealMode {
        /// The CS selector (its base is selector << 4).
        cs: u16,
        /// IP.
        ip: u16,
    },
    /// `X_Firmware_Waking_Vector`: 32-bit protected mode, paging off, flat 4 GiB segments, at
    /// this physical address.
    Protected32(u32),
}

impl std::fmt::Display for WakingVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WakingVector::RealMode { cs, ip } => write!(f, "{cs:04x}:{ip:04x} in real mode"),
            WakingVector::Protected32(eip) => {
                write!(f, "{eip:#x} in 32-bit protected mode, paging off")
            }
        }
    }
}

/// Why the FACS gives no place to resume.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WakingVectorError {
    /// Both vectors are 0.
    #[error("the guest went to S3 without a waking vector in the FACS (both Firmware_Waking_Vector and X_Firmware_Waking_Vector are 0); drvisor has no firmware to boot instead")]
    None,
    /// The OS asked for a 64-bit resume, which the FACS does not offer.
    #[error("the FACS's OSPM flags ask for a 64-bit resume (64BIT_WAKE_F), which drvisor does not offer (its FACS flags leave 64BIT_WAKE_SUPPORTED_F clear)")]
    SixtyFourBit,
    /// The 32-bit vector lies above the first MiB, out of reach of real mode.
    #[error("the FACS's Firmware_Waking_Vector {0:#x} lies above 0xfffff, out of reach of the real mode it is entered in")]
    AboveRealMode(u32),
    /// The X vector lies above 4 GiB, where 32-bit protected mode cannot reach.
    #[error("the FACS's X_Firmware_Waking_Vector {0:#x} lies above 4 GiB, out of reach of the 32-bit protected mode it is entered in")]
    Above4G(u64),
}

/// The waking vector the FACS fields give: `X_Firmware_Waking_Vector` when it is not 0 (the
/// specification's rule for firmware that sees both), else `Firmware_Waking_Vector`.
pub fn waking_vector(
    vector: u32,
    x_vector: u64,
    ospm_flags: u32,
) -> Result<WakingVector, WakingVectorError> {
    if x_vector != 0 {
        if ospm_flags & OSPM_64BIT_WAKE != 0 {
            return Err(WakingVectorError::SixtyFourBit);
        }
        return u32::try_from(x_vector)
            .map(WakingVector::Protected32)
            .map_err(|_| WakingVectorError::Above4G(x_vector));
    }
    if vector == 0 {
        return Err(WakingVectorError::None);
    }
    if vector > 0xf_ffff {
        return Err(WakingVectorError::AboveRealMode(vector));
    }
    Ok(WakingVector::RealMode {
        cs: (vector >> 4) as u16,
        ip: (vector & 0xf) as u16,
    })
}

/// Lays tables out from a base address: each at the next boundary of its alignment.
struct Layout {
    base: u64,
    bytes: Vec<u8>,
}

impl Layout {
    /// Reserves `len` bytes aligned to `align`; returns their address.
    fn reserve(&mut self, len: usize, align: usize) -> u64 {
        let at = self.bytes.len().next_multiple_of(align);
        self.bytes.resize(at + len, 0);
        self.base + at as u64
    }

    /// Places `table` aligned to `align`; returns its address.
    fn place(&mut self, table: &[u8], align: usize) -> u64 {
        let addr = self.reserve(table.len(), align);
        self.fill(addr, table);
        addr
    }

    /// Writes `bytes` at `addr`, which [`Layout::reserve`] gave.
    fn fill(&mut self, addr: u64, bytes: &[u8]) {
        let at = (addr - self.base) as usize;
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// The tables for `cpus` vCPUs, laid out from `base` (64-byte aligned, below 4 GiB).
pub fn build(cpus: usize, base: u64) -> Result<Tables, Error> {
    debug_assert_eq!(base % 64, 0);
    debug_assert!(base < 1 << 32);
    let mut layout = Layout {
        base,
        bytes: Vec::new(),
    };
    // The RSDP first, on a 16-byte boundary, filled last (it points at the XSDT).
    let rsdp = layout.reserve(Rsdp::len(), 16);
    let facs = layout.place(bytes_of(&FACS::new()).as_slice(), 64);
    let dsdt = layout.place(&dsdt(), 16);
    let madt = layout.place(&madt(cpus)?, 16);
    // Below 4 GiB (debug-asserted above; the room is below 1 MiB), so the 32-bit fields hold.
    let fadt = layout.place(&fadt(facs as u32, dsdt as u32), 16);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt);
    xsdt.add_entry(madt);
    let xsdt = layout.place(&bytes_of(&xsdt), 16);
    layout.fill(rsdp, &bytes_of(&Rsdp::new(OEM_ID, xsdt)));
    Ok(Tables {
        base,
        bytes: layout.bytes,
        placed: Placed {
            rsdp,
            xsdt,
            fadt,
            facs,
            dsdt,
            madt,
        },
    })
}

/// Writes the tables for `cpus` vCPUs at [`ACPI_START`]; returns where each went.
pub fn write(mem: &GuestMemoryMmap, cpus: usize) -> Result<Placed, super::Error> {
    let tables = build(cpus, ACPI_START).map_err(|source| super::Error::Acpi { source })?;
    // Fits: at most a few KiB (tests).
    debug_assert!(ACPI_START + tables.bytes.len() as u64 <= ACPI_END);
    mem.write_slice(&tables.bytes, GuestAddress(ACPI_START))
        .map_err(super::Error::guest_write("the ACPI tables"))?;
    Ok(tables.placed)
}

/// Hands the RSDP's address to the kernel where its boot protocol has a field for it: the zero
/// page's `acpi_rsdp_addr` (a bzImage, boot protocol 2.14 on) or `hvm_start_info.rsdp_paddr`
/// (PVH). Multiboot has none: such a kernel scans for the RSDP, and finds it.
pub fn hand_over(
    mem: &GuestMemoryMmap,
    entry: &super::Entry,
    rsdp: u64,
) -> Result<(), super::Error> {
    use linux_loader::loader::bootparam::boot_params;
    use linux_loader::loader::elf::start_info::hvm_start_info;
    let field = match *entry {
        super::Entry::Linux64 { zero_page, .. } => {
            zero_page + std::mem::offset_of!(boot_params, acpi_rsdp_addr) as u64
        }
        super::Entry::Pvh { start_info, .. } => {
            start_info + std::mem::offset_of!(hvm_start_info, rsdp_paddr) as u64
        }
        super::Entry::Multiboot { .. } => return Ok(()),
    };
    mem.write_obj(rsdp, GuestAddress(field))
        .map_err(super::Error::guest_write("the RSDP's address"))
}

#[cfg(test)]
#[path = "acpi_tests.rs"]
mod tests;
