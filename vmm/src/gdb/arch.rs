//! The register file gdb gets: gdbstub_arch's x86-64 core and SSE registers, and after them
//! the segment bases (`org.gnu.gdb.i386.segments`, which gdb knows as `$fs_base` and
//! `$gs_base`) and the system registers a kernel developer needs (the kernel GS base, CR0,
//! CR2, CR3, CR4, CR8, EFER), as QEMU's gdbstub gives them. The target description below says
//! so to gdb; the `g` packet carries the registers in its order.

use gdbstub::arch::{Arch, Registers};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use kvm_bindings::kvm_fpu;

/// x86-64 with SSE, the segment bases and the system registers.
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum X86_64_System {}

impl Arch for X86_64_System {
    type Usize = u64;
    type Registers = SystemRegs;
    // No single-register access (`p`/`P`): gdb reads and writes the whole file.
    type RegId = ();
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// The bytes gdbstub_arch's core and SSE registers take in a `g` packet.
const CORE_LEN: usize = 0x218;

/// The registers after the core and SSE ones, in `g` packet order.
pub const SYSTEM_NAMES: [&str; 9] = [
    "fs_base",
    "gs_base",
    "k_gs_base",
    "cr0",
    "cr2",
    "cr3",
    "cr4",
    "cr8",
    "efer",
];

/// Every register gdb sees.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SystemRegs {
    /// General, segment selector, x87 and SSE registers.
    pub core: X86_64CoreRegs,
    /// FS.base.
    pub fs_base: u64,
    /// GS.base.
    pub gs_base: u64,
    /// IA32_KERNEL_GS_BASE; `None` (shown unavailable) if KVM would not read it.
    pub k_gs_base: Option<u64>,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8.
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
}

impl SystemRegs {
    /// The registers after the core ones, in [`SYSTEM_NAMES`] order.
    pub fn system(&self) -> [Option<u64>; 9] {
        [
            Some(self.fs_base),
            Some(self.gs_base),
            self.k_gs_base,
            Some(self.cr0),
            Some(self.cr2),
            Some(self.cr3),
            Some(self.cr4),
            Some(self.cr8),
            Some(self.efer),
        ]
    }
}

impl Registers for SystemRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for reg in self.system() {
            match reg {
                Some(v) => v
                    .to_le_bytes()
                    .into_iter()
                    .for_each(|b| write_byte(Some(b))),
                None => (0..8).for_each(|_| write_byte(None)),
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != CORE_LEN + 8 * SYSTEM_NAMES.len() {
            return Err(());
        }
        self.core.gdb_deserialize(&bytes[..CORE_LEN])?;
        let mut rest = bytes[CORE_LEN..]
            .chunks_exact(8)
            .map(|c| c.try_into().map(u64::from_le_bytes).map_err(|_| ()));
        let mut next = || rest.next().ok_or(())?;
        self.fs_base = next()?;
        self.gs_base = next()?;
        self.k_gs_base = Some(next()?);
        self.cr0 = next()?;
        self.cr2 = next()?;
        self.cr3 = next()?;
        self.cr4 = next()?;
        self.cr8 = next()?;
        self.efer = next()?;
        Ok(())
    }
}

/// x87 tag values in the full tag word.
const TAG_VALID: u32 = 0;
const TAG_ZERO: u32 = 1;
const TAG_SPECIAL: u32 = 2;
const TAG_EMPTY: u32 = 3;

/// The full x87 tag word gdb shows, from KVM's abridged one (one bit per physical register,
/// as FXSAVE stores it): a register in use is classified by its value, as FSTENV would.
fn full_tag(f: &kvm_fpu) -> u32 {
    let top = usize::from((f.fsw >> 11) & 7);
    (0..8).fold(0, |tag, phys| {
        let t = if f.ftwx & (1 << phys) == 0 {
            TAG_EMPTY
        } else {
            // `fpr` is in stack order: ST(i) is physical register (TOP + i) mod 8.
            let r = &f.fpr[(phys + 8 - top) % 8];
            let exponent = u16::from_le_bytes([r[8], r[9]]) & 0x7fff;
            let mut m = [0u8; 8];
            m.copy_from_slice(&r[..8]);
            let mantissa = u64::from_le_bytes(m);
            match exponent {
                0x7fff => TAG_SPECIAL,
                0 if mantissa == 0 => TAG_ZERO,
                0 => TAG_SPECIAL,
                _ if mantissa >> 63 == 1 => TAG_VALID,
                _ => TAG_SPECIAL,
            }
        };
        tag | (t << (2 * phys))
    })
}

/// KVM's abridged tag (a bit set for each register in use) from the full tag word.
fn abridged_tag(tag: u32) -> u8 {
    (0..8)
        .filter(|phys| (tag >> (2 * phys)) & 3 != TAG_EMPTY)
        .fold(0, |a, phys| a | (1 << phys))
}

/// Fills the x87 and SSE registers of `core` from KVM's `fpu`.
pub fn fpu_to_gdb(f: &kvm_fpu, core: &mut X86_64CoreRegs) {
    for (st, fpr) in core.st.iter_mut().zip(&f.fpr) {
        st.copy_from_slice(&fpr[..10]);
    }
    let x = &mut core.fpu;
    x.fctrl = u32::from(f.fcw);
    x.fstat = u32::from(f.fsw);
    x.ftag = full_tag(f);
    // In 64-bit mode the "segment" halves are the high halves of the 64-bit pointers, as gdb
    // reads an FXSAVE area.
    x.fiseg = (f.last_ip >> 32) as u32;
    x.fioff = f.last_ip as u32;
    x.foseg = (f.last_dp >> 32) as u32;
    x.fooff = f.last_dp as u32;
    x.fop = u32::from(f.last_opcode & 0x7ff);
    for (xmm, k) in core.xmm.iter_mut().zip(&f.xmm) {
        *xmm = u128::from_le_bytes(*k);
    }
    core.mxcsr = f.mxcsr;
}

/// KVM's `fpu` with the x87 and SSE registers of `core` (what gdb wrote) in it.
pub fn fpu_from_gdb(core: &X86_64CoreRegs, base: &kvm_fpu) -> kvm_fpu {
    let mut f = *base;
    for (fpr, st) in f.fpr.iter_mut().zip(&core.st) {
        fpr[..10].copy_from_slice(st);
    }
    let x = &core.fpu;
    f.fcw = x.fctrl as u16;
    f.fsw = x.fstat as u16;
    f.ftwx = abridged_tag(x.ftag);
    f.last_ip = (u64::from(x.fiseg) << 32) | u64::from(x.fioff);
    f.last_dp = (u64::from(x.foseg) << 32) | u64::from(x.fooff);
    f.last_opcode = (x.fop & 0x7ff) as u16;
    for (k, xmm) in f.xmm.iter_mut().zip(&core.xmm) {
        *k = xmm.to_le_bytes();
    }
    f.mxcsr = core.mxcsr;
    f
}

/// The target description: gdb's own x86-64 core, SSE and segments features, and a feature
/// of drvisor's with the system registers (gdb shows registers of a feature it does not know
/// by their names). Its registers come in the order [`SystemRegs`] serializes them.
const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
<architecture>i386:x86-64</architecture>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
<field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
<field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
<field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
<field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
<field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
<field name="ID" start="21" end="21"/>
</flags>
<reg name="rax" bitsize="64" type="int64"/>
<reg name="rbx" bitsize="64" type="int64"/>
<reg name="rcx" bitsize="64" type="int64"/>
<reg name="rdx" bitsize="64" type="int64"/>
<reg name="rsi" bitsize="64" type="int64"/>
<reg name="rdi" bitsize="64" type="int64"/>
<reg name="rbp" bitsize="64" type="data_ptr"/>
<reg name="rsp" bitsize="64" type="data_ptr"/>
<reg name="r8" bitsize="64" type="int64"/>
<reg name="r9" bitsize="64" type="int64"/>
<reg name="r10" bitsize="64" type="int64"/>
<reg name="r11" bitsize="64" type="int64"/>
<reg name="r12" bitsize="64" type="int64"/>
<reg name="r13" bitsize="64" type="int64"/>
<reg name="r14" bitsize="64" type="int64"/>
<reg name="r15" bitsize="64" type="int64"/>
<reg name="rip" bitsize="64" type="code_ptr"/>
<reg name="eflags" bitsize="32" type="i386_eflags"/>
<reg name="cs" bitsize="32" type="int32"/>
<reg name="ss" bitsize="32" type="int32"/>
<reg name="ds" bitsize="32" type="int32"/>
<reg name="es" bitsize="32" type="int32"/>
<reg name="fs" bitsize="32" type="int32"/>
<reg name="gs" bitsize="32" type="int32"/>
<reg name="st0" bitsize="80" type="i387_ext"/>
<reg name="st1" bitsize="80" type="i387_ext"/>
<reg name="st2" bitsize="80" type="i387_ext"/>
<reg name="st3" bitsize="80" type="i387_ext"/>
<reg name="st4" bitsize="80" type="i387_ext"/>
<reg name="st5" bitsize="80" type="i387_ext"/>
<reg name="st6" bitsize="80" type="i387_ext"/>
<reg name="st7" bitsize="80" type="i387_ext"/>
<reg name="fctrl" bitsize="32" type="int" group="float"/>
<reg name="fstat" bitsize="32" type="int" group="float"/>
<reg name="ftag" bitsize="32" type="int" group="float"/>
<reg name="fiseg" bitsize="32" type="int" group="float"/>
<reg name="fioff" bitsize="32" type="int" group="float"/>
<reg name="foseg" bitsize="32" type="int" group="float"/>
<reg name="fooff" bitsize="32" type="int" group="float"/>
<reg name="fop" bitsize="32" type="int" group="float"/>
</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v4f" type="ieee_single" count="4"/>
<vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/>
<vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/>
<vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v4_float" type="v4f"/>
<field name="v2_double" type="v2d"/>
<field name="v16_int8" type="v16i8"/>
<field name="v8_int16" type="v8i16"/>
<field name="v4_int32" type="v4i32"/>
<field name="v2_int64" type="v2i64"/>
<field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
<field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
<field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
<field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
<field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
<reg name="xmm0" bitsize="128" type="vec128"/>
<reg name="xmm1" bitsize="128" type="vec128"/>
<reg name="xmm2" bitsize="128" type="vec128"/>
<reg name="xmm3" bitsize="128" type="vec128"/>
<reg name="xmm4" bitsize="128" type="vec128"/>
<reg name="xmm5" bitsize="128" type="vec128"/>
<reg name="xmm6" bitsize="128" type="vec128"/>
<reg name="xmm7" bitsize="128" type="vec128"/>
<reg name="xmm8" bitsize="128" type="vec128"/>
<reg name="xmm9" bitsize="128" type="vec128"/>
<reg name="xmm10" bitsize="128" type="vec128"/>
<reg name="xmm11" bitsize="128" type="vec128"/>
<reg name="xmm12" bitsize="128" type="vec128"/>
<reg name="xmm13" bitsize="128" type="vec128"/>
<reg name="xmm14" bitsize="128" type="vec128"/>
<reg name="xmm15" bitsize="128" type="vec128"/>
<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
</feature>
<feature name="org.gnu.gdb.i386.segments">
<reg name="fs_base" bitsize="64" type="int"/>
<reg name="gs_base" bitsize="64" type="int"/>
</feature>
<feature name="org.drvisor.i386.sys">
<flags id="drvisor_cr0" size="8">
<field name="PE" start="0" end="0"/><field name="MP" start="1" end="1"/>
<field name="EM" start="2" end="2"/><field name="TS" start="3" end="3"/>
<field name="ET" start="4" end="4"/><field name="NE" start="5" end="5"/>
<field name="WP" start="16" end="16"/><field name="AM" start="18" end="18"/>
<field name="NW" start="29" end="29"/><field name="CD" start="30" end="30"/>
<field name="PG" start="31" end="31"/>
</flags>
<flags id="drvisor_cr4" size="8">
<field name="VME" start="0" end="0"/><field name="PVI" start="1" end="1"/>
<field name="TSD" start="2" end="2"/><field name="DE" start="3" end="3"/>
<field name="PSE" start="4" end="4"/><field name="PAE" start="5" end="5"/>
<field name="MCE" start="6" end="6"/><field name="PGE" start="7" end="7"/>
<field name="PCE" start="8" end="8"/><field name="OSFXSR" start="9" end="9"/>
<field name="OSXMMEXCPT" start="10" end="10"/><field name="UMIP" start="11" end="11"/>
<field name="LA57" start="12" end="12"/><field name="VMXE" start="13" end="13"/>
<field name="SMXE" start="14" end="14"/><field name="FSGSBASE" start="16" end="16"/>
<field name="PCIDE" start="17" end="17"/><field name="OSXSAVE" start="18" end="18"/>
<field name="SMEP" start="20" end="20"/><field name="SMAP" start="21" end="21"/>
<field name="PKE" start="22" end="22"/><field name="CET" start="23" end="23"/>
<field name="PKS" start="24" end="24"/>
</flags>
<flags id="drvisor_efer" size="8">
<field name="SCE" start="0" end="0"/><field name="LME" start="8" end="8"/>
<field name="LMA" start="10" end="10"/><field name="NXE" start="11" end="11"/>
<field name="SVME" start="12" end="12"/><field name="LMSLE" start="13" end="13"/>
<field name="FFXSR" start="14" end="14"/><field name="TCE" start="15" end="15"/>
</flags>
<reg name="k_gs_base" bitsize="64" type="int" group="system"/>
<reg name="cr0" bitsize="64" type="drvisor_cr0" group="system"/>
<reg name="cr2" bitsize="64" type="int" group="system"/>
<reg name="cr3" bitsize="64" type="int" group="system"/>
<reg name="cr4" bitsize="64" type="drvisor_cr4" group="system"/>
<reg name="cr8" bitsize="64" type="int" group="system"/>
<reg name="efer" bitsize="64" type="drvisor_efer" group="system"/>
</feature>
</target>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized(r: &SystemRegs) -> Vec<Option<u8>> {
        let mut out = vec![];
        r.gdb_serialize(|b| out.push(b));
        out
    }

    #[test]
    fn the_description_lists_every_register_in_packet_order() {
        // The registers after the core+SSE ones, in the order serialized.
        let names: Vec<&str> = TARGET_XML
            .split("<reg name=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert_eq!(names.len(), 24 + 16 + 17 + SYSTEM_NAMES.len());
        assert_eq!(&names[names.len() - 9..], &SYSTEM_NAMES[..]);
        assert_eq!(names[40], "xmm0");
        // Every register's bits add up to the packet's bytes.
        let bits: usize = TARGET_XML
            .split("bitsize=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next()?.parse::<usize>().ok())
            .sum();
        assert_eq!(bits / 8, serialized(&SystemRegs::default()).len());
    }

    #[test]
    fn system_registers_follow_the_core_and_round_trip() {
        let r = SystemRegs {
            fs_base: 0x1111,
            gs_base: 0xffff_8880_0000_0000,
            k_gs_base: Some(0x3333),
            cr0: 0x8005_0033,
            cr2: 0x22,
            cr3: 0x1000,
            cr4: 0x20,
            cr8: 0xf,
            efer: 0x500,
            ..Default::default()
        };
        let bytes: Vec<u8> = serialized(&r).into_iter().map(Option::unwrap).collect();
        let cr3_at = CORE_LEN + 8 * 5;
        assert_eq!(bytes[cr3_at..cr3_at + 8], 0x1000u64.to_le_bytes());
        let mut back = SystemRegs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        assert!(back.gdb_deserialize(&bytes[..CORE_LEN]).is_err());
    }

    #[test]
    fn an_unread_kernel_gs_base_is_unavailable() {
        let r = SystemRegs::default();
        let out = serialized(&r);
        let at = CORE_LEN + 16;
        assert!(out[at..at + 8].iter().all(Option::is_none));
        assert!(out[at + 8..].iter().all(Option::is_some));
    }

    #[test]
    fn fpu_state_round_trips_through_gdbs_view() {
        let mut f = kvm_fpu {
            fcw: 0x37f,
            // TOP = 7 after one push: ST(0) is physical register 7.
            fsw: 7 << 11,
            ftwx: 1 << 7,
            last_opcode: 0x5d9,
            last_ip: 0x1_0000_2345,
            last_dp: 0x6789,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        // 1.0: exponent 0x3fff, integer bit set.
        f.fpr[0][7] = 0x80;
        f.fpr[0][8] = 0xff;
        f.fpr[0][9] = 0x3f;
        f.xmm[3][0] = 0x34;
        f.xmm[3][1] = 0x12;
        let mut core = X86_64CoreRegs::default();
        fpu_to_gdb(&f, &mut core);
        assert_eq!(core.fpu.ftag, 0x3fff, "physical 7 valid, the rest empty");
        assert_eq!(core.fpu.fiseg, 1);
        assert_eq!(core.fpu.fioff, 0x2345);
        assert_eq!(core.xmm[3], 0x1234);
        assert_eq!(core.mxcsr, 0x1f80);
        assert_eq!(fpu_from_gdb(&core, &f), f);
        core.xmm[0] = 0x1234;
        let written = fpu_from_gdb(&core, &f);
        assert_eq!(written.xmm[0][..2], [0x34, 0x12]);
    }

    #[test]
    fn tags_classify_zero_and_special_values() {
        let mut f = kvm_fpu {
            ftwx: 0b11,
            ..Default::default()
        };
        // TOP = 0: ST(0) is physical 0 (zero), ST(1) physical 1 (a NaN).
        f.fpr[1][8] = 0xff;
        f.fpr[1][9] = 0x7f;
        assert_eq!(full_tag(&f), 0xfff0 | (TAG_SPECIAL << 2) | TAG_ZERO);
        assert_eq!(abridged_tag(full_tag(&f)), 0b11);
    }
}
