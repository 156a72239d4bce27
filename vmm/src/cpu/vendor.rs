//! The CPU vendor the guest is shown (`--cpu-vendor`, QEMU's `-cpu ...,vendor=`): the twelve
//! bytes of CPUID leaf 0 and leaf 0x80000000 in EBX, EDX, ECX.
//!
//! KVM emulates what differs between vendors where it must (SYSENTER in long mode, the SYSCALL
//! MSRs' widths), so kvm-unit-tests' `msr` runs as GenuineIntel on an AMD host to test that.

use kvm_bindings::CpuId;

/// A vendor string: exactly twelve printable ASCII characters, as CPUID returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuVendor([u8; 12]);

/// A vendor string that is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{given:?} is not a CPU vendor string: it takes exactly 12 printable ASCII characters, e.g. GenuineIntel or AuthenticAMD")]
pub struct VendorError {
    given: String,
}

impl std::str::FromStr for CpuVendor {
    type Err = VendorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <[u8; 12]>::try_from(s.as_bytes())
            .ok()
            .filter(|b| b.iter().all(|c| c.is_ascii_graphic()))
            .map(CpuVendor)
            .ok_or_else(|| VendorError {
                given: s.chars().take(40).collect(),
            })
    }
}

impl CpuVendor {
    /// `cpuid` showing this vendor in leaves 0 and 0x80000000.
    pub fn apply(self, cpuid: &CpuId) -> CpuId {
        let word =
            |i: usize| u32::from_le_bytes([self.0[i], self.0[i + 1], self.0[i + 2], self.0[i + 3]]);
        let mut out = cpuid.clone();
        for e in out.as_mut_slice() {
            if matches!(e.function, 0 | 0x8000_0000) {
                (e.ebx, e.edx, e.ecx) = (word(0), word(4), word(8));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::test_entries::entry;

    #[test]
    fn leaves_0_and_0x80000000_carry_it() {
        let amd = CpuId::from_entries(&[
            entry(0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry(1, 0, [1, 2, 3, 4]),
            entry(
                0x8000_0000,
                0,
                [0x8000_0021, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            ),
        ])
        .expect("a small CpuId");
        let intel: CpuVendor = "GenuineIntel".parse().expect("a vendor");
        let out = intel.apply(&amd);
        let regs: Vec<[u32; 4]> = out
            .as_slice()
            .iter()
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .collect();
        // "Genu" "ineI" "ntel" in EBX, EDX, ECX.
        assert_eq!(regs[0], [0x10, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]);
        assert_eq!(regs[1], [1, 2, 3, 4]);
        assert_eq!(
            regs[2],
            [0x8000_0021, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]
        );
    }

    #[test]
    fn only_twelve_printable_characters_are_a_vendor() {
        assert!("AuthenticAMD".parse::<CpuVendor>().is_ok());
        for bad in ["Intel", "GenuineIntel!", "Genuine Inte", "", "GenuineIntél"] {
            let e = bad.parse::<CpuVendor>().unwrap_err().to_string();
            assert!(e.contains("12 printable ASCII"), "{bad}: {e}");
        }
    }
}
