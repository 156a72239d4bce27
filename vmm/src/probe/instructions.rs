//! Instructions a guest kernel takes from CPUID, run once each at CPL0 in a tiny VM.
//!
//! `KVM_GET_SUPPORTED_CPUID` says what the host CPU has, not what runs: where KVM emulates CPL0
//! code (the platform notes' `kvm_pvm`), its emulator has no `cmpxchg16b`, `popcnt`, XSAVE or
//! VEX. Each experiment runs the feature's instruction with the guest's CPUID set as KVM offers
//! it (KVM refuses CR4.OSXSAVE, and its emulator `movbe`, to a guest whose CPUID lacks them) and
//! an IDT that reports any exception. These rows are drvisor's own: `kvm-probe.c` has none.
//!
//! What the guest sees is read from the guest, not from the list: `kvm_pvm` shows a guest the
//! host CPU's bit wherever `KVM_GET_SUPPORTED_CPUID` has none (POPCNT, MOVBE, XSAVE, AVX there),
//! and `KVM_SET_CPUID2` decides only the bits of that list. A feature the guest sees is tested
//! whether KVM lists it or not; one that fails and is not in the list cannot be hidden.

use kvm_bindings::CpuId;
use kvm_ioctls::Kvm;
use serde::{Deserialize, Serialize};

use vm_memory::{Bytes, GuestAddress};

use super::tiny_vm::{Result, Stop, TinyVm, CODE, DATA};
use crate::cpu::CpuFeature;

/// One feature's row: whether KVM offers it, whether its instruction ran, what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionRow {
    /// The feature.
    pub feature: CpuFeature,
    /// Whether a guest given `KVM_GET_SUPPORTED_CPUID` sees it in its CPUID.
    pub offered: bool,
    /// Whether `KVM_GET_SUPPORTED_CPUID` lists it, so that leaving it out of `KVM_SET_CPUID2`
    /// hides it (a bit KVM does not list may still show, see the module notes).
    pub hideable: bool,
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
        // VEX-encoded, but on general registers: no XCR0 or CR4.OSXSAVE needed.
        CpuFeature::Bmi1 => vec![0xc4, 0xe2, 0xe0, 0xf2, 0xc1 /* andn rax,rbx,rcx */],
        CpuFeature::Bmi2 => vec![0xc4, 0xe2, 0xf0, 0xf5, 0xc3 /* bzhi rax,rbx,rcx */],
    };
    code.push(0xf4); // hlt
    let what = match feature {
        CpuFeature::Cx16 => "lock cmpxchg16b",
        CpuFeature::Popcnt => "popcnt",
        CpuFeature::Movbe => "movbe",
        CpuFeature::Xsave => "xgetbv, xsave, xrstor",
        CpuFeature::Avx => "xsetbv, vxorps ymm",
        CpuFeature::Avx2 => "xsetbv, vpxor ymm",
        CpuFeature::Bmi1 => "andn",
        CpuFeature::Bmi2 => "bzhi",
    };
    (code, what)
}

/// Runs every feature's experiment.
pub fn run(kvm: &Kvm) -> Result<Vec<InstructionRow>> {
    let supported = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)?;
    let seen = guest_view(kvm, &supported)?;
    // A feature whose experiment cannot even be set up (KVM refuses CR4.OSXSAVE, say) counts as
    // not working, with the error: it must hide that feature, not fail every VM.
    Ok(CpuFeature::ALL
        .iter()
        .map(|&f| {
            one(kvm, &supported, &seen, f).unwrap_or_else(|e| InstructionRow {
                feature: f,
                offered: f.offered_by(&seen),
                hideable: f.offered_by(&supported),
                works: false,
                observed: format!("the experiment could not run: {e}"),
            })
        })
        .collect())
}

/// `supported` with leaf 1 ECX and leaf 7 EBX as a CPL0 guest given `supported` reads them.
fn guest_view(kvm: &Kvm, supported: &CpuId) -> Result<CpuId> {
    let code = [
        0xb8, 1, 0, 0, 0, /* mov eax,1 */
        0x31, 0xc9, /* xor ecx,ecx */
        0x0f, 0xa2, /* cpuid */
        0x89, 0x0c, 0x25, 0, 0, 0x20, 0, /* mov [DATA],ecx */
        0xb8, 7, 0, 0, 0, /* mov eax,7 */
        0x31, 0xc9, /* xor ecx,ecx */
        0x0f, 0xa2, /* cpuid */
        0x89, 0x1c, 0x25, 4, 0, 0x20, 0,    /* mov [DATA+4],ebx */
        0xf4, /* hlt */
    ];
    let mut vm = TinyVm::new(kvm, 0, false, &code)?;
    vm.vcpu.set_cpuid2(supported)?;
    let (stop, _) = vm.run()?;
    let mut seen = supported.clone();
    if stop != Stop::Hlt {
        return Ok(seen);
    }
    let read = |at: u64| vm.mem().read_obj::<u32>(GuestAddress(at)).unwrap_or(0);
    let (ecx1, ebx7) = (read(DATA), read(DATA + 4));
    for e in seen.as_mut_slice() {
        match (e.function, e.index) {
            (1, 0) => e.ecx = ecx1,
            (7, 0) => e.ebx = ebx7,
            _ => {}
        }
    }
    Ok(seen)
}

fn one(kvm: &Kvm, supported: &CpuId, seen: &CpuId, feature: CpuFeature) -> Result<InstructionRow> {
    // AVX's experiment enables its state with XSETBV, which needs XSAVE offered too.
    let needs_xsave = matches!(
        feature,
        CpuFeature::Xsave | CpuFeature::Avx | CpuFeature::Avx2
    );
    let offered = feature.offered_by(seen) && (!needs_xsave || CpuFeature::Xsave.offered_by(seen));
    let hideable = feature.offered_by(supported);
    if !offered {
        return Ok(InstructionRow {
            feature,
            offered,
            hideable,
            works: false,
            observed: "the guest's CPUID does not show it (not run)".into(),
        });
    }
    let (code, _) = experiment(feature);
    let mut vm = TinyVm::new(kvm, 0, false, &code)?;
    vm.install_reporting_idt()?;
    // The bits the guest sees, so that KVM allows CR4.OSXSAVE where the guest sees XSAVE.
    vm.vcpu.set_cpuid2(seen)?;
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
    let unhideable = if works || hideable {
        ""
    } else {
        "; not in KVM's list, so it cannot be hidden"
    };
    Ok(InstructionRow {
        feature,
        offered,
        hideable,
        works,
        observed: format!("exit={} rip={rip:#x}{why}{unhideable}", stop.exit_number()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_experiment_ends_in_hlt_and_its_label_fits_the_column() {
        for f in CpuFeature::ALL {
            let (code, what) = experiment(f);
            assert_eq!(code.last(), Some(&0xf4), "{f:?}");
            assert!(!what.is_empty());
            let row = InstructionRow {
                feature: f,
                offered: true,
                hideable: true,
                works: true,
                observed: String::new(),
            };
            assert!(row.label().len() <= 48, "{}", row.label());
        }
    }

    #[test]
    fn bmi1_and_bmi2_run_one_vex_instruction_on_general_registers() {
        // andn rax,rbx,rcx and bzhi rax,rbx,rcx (objdump), then hlt; nothing enables XSAVE state.
        assert_eq!(
            experiment(CpuFeature::Bmi1).0,
            [0xc4, 0xe2, 0xe0, 0xf2, 0xc1, 0xf4]
        );
        assert_eq!(
            experiment(CpuFeature::Bmi2).0,
            [0xc4, 0xe2, 0xf0, 0xf5, 0xc3, 0xf4]
        );
        assert_eq!(experiment(CpuFeature::Bmi1).1, "andn");
        assert_eq!(experiment(CpuFeature::Bmi2).1, "bzhi");
    }
}
