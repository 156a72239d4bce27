//! A vCPU's x87 and SSE state, read and written whole.
//!
//! `KVM_GET_FPU` leaves MXCSR out (it is zero there whatever the guest holds) and `KVM_SET_FPU`
//! ignores it; on a host that saves state with XSAVES, registers written there while the guest's
//! XSTATE_BV says "initial" are not even loaded. So MXCSR is read from, and everything written
//! through, the XSAVE area's legacy region (the FXSAVE layout, SDM Vol. 1 10.5.1), with the x87
//! and SSE bits of XSTATE_BV set. `KVM_GET_FPU`/`KVM_SET_FPU` remain where a KVM has no XSAVE.

use kvm_bindings::{kvm_fpu, kvm_xsave};
use kvm_ioctls::VcpuFd;

/// Bytes of the legacy region and the XSAVE header's XSTATE_BV that this module touches.
const LEGACY_AND_BV: usize = 520;
/// Where MXCSR is in the legacy region.
const MXCSR: usize = 24;
/// XSTATE_BV, the first field of the XSAVE header after the legacy region.
const XSTATE_BV: usize = 512;
/// XSTATE_BV's x87 and SSE bits.
const X87_SSE: u64 = 0b11;

/// The x87/SSE state of `fd`'s vCPU, with its real MXCSR (`None` if KVM gives none).
pub fn read(fd: &VcpuFd) -> Option<kvm_fpu> {
    let mut fpu = fd.get_fpu().ok()?;
    if let Ok(xsave) = fd.get_xsave() {
        fpu.mxcsr = mxcsr_of(&xsave);
    }
    Some(fpu)
}

/// Loads `fpu` into `fd`'s vCPU, MXCSR included.
pub fn write(fd: &VcpuFd, fpu: &kvm_fpu) -> Result<(), crate::debug::KvmError> {
    let Ok(mut xsave) = fd.get_xsave() else {
        return fd.set_fpu(fpu).map_err(|source| crate::debug::KvmError {
            op: "KVM_SET_FPU",
            source,
        });
    };
    merge(&mut xsave, fpu);
    // SAFETY: `xsave` is the kernel's own area for this vCPU, read just above with
    // KVM_GET_XSAVE into a whole `kvm_xsave`, and drvisor enables no dynamic XSTATE features
    // (no ARCH_REQ_XCOMP_GUEST_PERM), so the kernel reads no more than those 4096 bytes.
    unsafe { fd.set_xsave(&xsave) }.map_err(|source| crate::debug::KvmError {
        op: "KVM_SET_XSAVE",
        source,
    })
}

fn legacy_bytes(xsave: &kvm_xsave) -> Vec<u8> {
    xsave.region[..LEGACY_AND_BV / 4]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

fn mxcsr_of(xsave: &kvm_xsave) -> u32 {
    xsave.region[MXCSR / 4]
}

/// Writes `fpu` into the legacy region of `xsave` and marks x87 and SSE as in use.
fn merge(xsave: &mut kvm_xsave, fpu: &kvm_fpu) {
    let mut b = legacy_bytes(xsave);
    b[0..2].copy_from_slice(&fpu.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&fpu.fsw.to_le_bytes());
    b[4] = fpu.ftwx;
    b[6..8].copy_from_slice(&fpu.last_opcode.to_le_bytes());
    b[8..16].copy_from_slice(&fpu.last_ip.to_le_bytes());
    b[16..24].copy_from_slice(&fpu.last_dp.to_le_bytes());
    b[MXCSR..MXCSR + 4].copy_from_slice(&fpu.mxcsr.to_le_bytes());
    for (i, st) in fpu.fpr.iter().enumerate() {
        b[32 + 16 * i..48 + 16 * i].copy_from_slice(st);
    }
    for (i, xmm) in fpu.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(xmm);
    }
    let mut bv = [0u8; 8];
    bv.copy_from_slice(&b[XSTATE_BV..XSTATE_BV + 8]);
    let bv = u64::from_le_bytes(bv) | X87_SSE;
    b[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
    for (word, bytes) in xsave.region.iter_mut().zip(b.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> kvm_xsave {
        kvm_xsave {
            region: [0; 1024],
            extra: Default::default(),
        }
    }

    #[test]
    fn registers_land_where_fxsave_keeps_them_and_are_marked_in_use() {
        let mut xsave = blank();
        xsave.region[1000] = 0xdead_beef;
        xsave.region[XSTATE_BV / 4] = 0b100; // AVX in use: kept
        let mut fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        fpu.xmm[0][0] = 0x34;
        fpu.xmm[0][1] = 0x12;
        fpu.xmm[15][15] = 0xff;
        fpu.fpr[7][0] = 0x77;
        merge(&mut xsave, &fpu);
        let b = legacy_bytes(&xsave);
        assert_eq!(&b[0..2], &[0x7f, 0x03]);
        assert_eq!(mxcsr_of(&xsave), 0x1f80);
        assert_eq!(&b[160..162], &[0x34, 0x12], "xmm0 at 160");
        assert_eq!(b[160 + 16 * 15 + 15], 0xff, "xmm15 ends at 416");
        assert_eq!(b[32 + 16 * 7], 0x77, "st7 at 144");
        assert_eq!(
            xsave.region[XSTATE_BV / 4],
            0b111,
            "x87 and SSE in use, AVX kept"
        );
        assert_eq!(xsave.region[1000], 0xdead_beef, "the rest untouched");
    }
}
