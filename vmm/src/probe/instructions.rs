//! Instructions a guest kernel takes from CPUID, run once each at CPL0 in a tiny VM.
//!
//! `KVM_GET_SUPPORTED_CPUID` says what the host CPU has, not what runs: where KVM emulates CPL0
//! code (the platform notes' `kvm_pvm`), its emulator has no `cmpxchg16b`, `popcnt`, XSAVE or
//! VEX. Each experiment runs the feature's instruction with the guest's CPUID set as KVM offers
//! it (KVM refuses CR4.OSXSAVE, and its emulator `movbe`, to a guest whose CPUID lacks them) and
//! an IDT that reports any exception. These rows are drvisor's own: `kvm-probe.c` has none.

use kvm_bindings::CpuId;
use kvm_ioctls::Kvm;
use serde::Serialize;

use super::tiny_vm::{Result, Stop, TinyVm, CODE};
use crate::cpu::CpuFeature;

/// One feature's row: whether KVM offers it, whether its instruction ran, what was seen.
#[derive(Clone, Debug, Serialize)]
pub struct InstructionRow {
    /// The feature.
    pub feature: CpuFeature,
    /// Whether `KVM_GET_SUPPORTED_CPUID` advertises it.
    pub offered: bool,
    /// Whether a guest kernel may use it here: offered, and its instruction ran at CPL0.
    pub works: bool,
    /// What the experiment observed.
    pub observed: String,
}

impl InstructionRow {
    /// The row's label in `drvisor probe`.
    pub fn label(&self) -> String {
        let (_, what) = experiment(self.feature);
        format!("instruction {} ({what}), CPL0", self.feature.name())
    }
}

const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;

/// `xor ecx,ecx; mov eax,7; xor edx,edx; xsetbv`: XCR0 = x87 | SSE | AVX, which VEX needs.
const ENABLE_AVX: [u8; 12] = [
    0x31, 0xc9, /* xor ecx,ecx */
    0xb8, 0x07, 0, 0, 0, /* mov eax,7 */
    0x31, 0xd2, /* xor edx,edx */
    0x0f, 0x01, 0xd1, /* xsetbv */
];

/// The code that tests `feature` (ending in `hlt`) and its description.
fn experiment(feature: CpuFeature) -> (Vec<u8>, &'static str) {
    let mut code = match feature {
        CpuFeature::Cx16 => vec![
            0xf0, 0x48, 0x0f, 0xc7, 0x0c, 0x25, 0, 0, 0x20, 0, /* lock cmpxchg16b [DATA] */
        ],
        CpuFeature::Popcnt => vec![0xf3, 0x48, 0x0f, 0xb8, 0xc3 /* popcnt rax,rbx */],
        CpuFeature::Movbe => vec![
            0x0f, 0x38, 0xf0, 0x04, 0x25, 0, 0, 0x20, 0, /* movbe eax,[DATA] */
        ],
        CpuFeature::Xsave => vec![
            0x31, 0xc9, /* xor ecx,ecx */
            0x0f, 0x01, 0xd0, /* xgetbv */
            0xb8, 0x03, 0, 0, 0, /* mov eax,3 */
            0x31, 0xd2, /* xor edx,edx */
            0x0f, 0xae, 0x24, 0x25, 0, 0, 0x20, 0, /* xsave [DATA] */
            0x0f, 0xae, 0x2c, 0x25, 0, 0, 0x20, 0, /* xrstor [DATA] */
        ],
        CpuFeature::Avx => [
            &ENABLE_AVX[..],
            &[0xc5, 0xfc, 0x57, 0xc0 /* vxorps ymm0,ymm0,ymm0 */],
        ]
        .concat(),
        CpuFeature::Avx2 => [
            &ENABLE_AVX[..],
            &[0xc5, 0xfd, 0xef, 0xc0 /* vpxor ymm0,ymm0,ymm0 */],
        ]
        .concat(),
    };
    code.push(0xf4); // hlt
    let what = match feature {
        CpuFeature::Cx16 => "lock cmpxchg16b",
        CpuFeature::Popcnt => "popcnt",
        CpuFeature::Movbe => "movbe",
        CpuFeature::Xsave => "xgetbv, xsave, xrstor",
        CpuFeature::Avx => "xsetbv, vxorps ymm",
        CpuFeature::Avx2 => "xsetbv, vpxor ymm",
    };
    (code, what)
}

/// Runs every feature's experiment.
pub fn run(kvm: &Kvm) -> Result<Vec<InstructionRow>> {
    let supported = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)?;
    CpuFeature::ALL
        .iter()
        .map(|&f| one(kvm, &supported, f))
        .collect()
}

fn one(kvm: &Kvm, supported: &CpuId, feature: CpuFeature) -> Result<InstructionRow> {
    // AVX's experiment enables its state with XSETBV, which needs XSAVE offered too.
    let needs_xsave = matches!(
        feature,
        CpuFeature::Xsave | CpuFeature::Avx | CpuFeature::Avx2
    );
    let offered =
        feature.offered_by(supported) && (!needs_xsave || CpuFeature::Xsave.offered_by(supported));
    if !offered {
        return Ok(InstructionRow {
            feature,
            offered,
            works: false,
            observed: "not offered by KVM_GET_SUPPORTED_CPUID (not run)".into(),
        });
    }
    let (code, _) = experiment(feature);
    let mut vm = TinyVm::new(kvm, 0, false, &code)?;
    vm.install_reporting_idt()?;
    vm.vcpu.set_cpuid2(supported)?;
    let mut sregs = vm.vcpu.get_sregs()?;
    sregs.cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT | if needs_xsave { CR4_OSXSAVE } else { 0 };
    vm.vcpu.set_sregs(&sregs)?;
    let (stop, rip) = vm.run()?;
    let end = CODE + code.len() as u64;
    let works = stop == Stop::Hlt && rip == end;
    let why = match stop {
        _ if works => " (ran to its hlt)".to_owned(),
        Stop::InternalError => " (emulation failure)".to_owned(),
        Stop::IoOut { port: 0x10, value } => format!(" ({})", exception_name(value)),
        _ => String::new(),
    };
    Ok(InstructionRow {
        feature,
        offered,
        works,
        observed: format!("exit={} rip={rip:#x}{why}", stop.exit_number()),
    })
}

fn exception_name(vector: u8) -> String {
    match vector {
        6 => "#UD".into(),
        7 => "#NM".into(),
        13 => "#GP".into(),
        14 => "#PF".into(),
        v => format!("exception {v}"),
    }
}
