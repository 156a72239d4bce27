//! A guest that cannot get past an instruction whose memory operand is on a trapped page.
//!
//! KVM's instruction emulator completes ordinary loads from a page the page engine traps: the
//! read exits, drvisor serves it, the guest goes on. A descriptor-table load (`lgdt`, `lidt`,
//! `lldt`, `ltr`) is different: KVM re-issues the same MMIO read for ever, and the vCPU spins
//! with no output (measured: 48,312 identical reads of `lgdt`'s operand in 2 s). A polling loop
//! on a watched variable also repeats one read, so repetition alone proves nothing; the
//! instruction decides.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// Identical consecutive reads after which the instruction is looked at.
const SUSPICIOUS: u32 = 10_000;

/// Counts identical consecutive MMIO reads (same RIP, address and length).
#[derive(Debug, Default)]
pub struct RepeatedReads {
    last: Option<(u64, u64, usize)>,
    count: u32,
}

impl RepeatedReads {
    /// Records this exit's read (`None` for any other exit). True when the same read has
    /// repeated [`SUSPICIOUS`] times: time to look at the instruction (once per streak).
    pub fn observe(&mut self, read: Option<(u64, u64, usize)>) -> bool {
        if read.is_some() && read == self.last {
            self.count = self.count.saturating_add(1);
        } else {
            self.last = read;
            self.count = 0;
        }
        self.count == SUSPICIOUS
    }
}

/// The mnemonic of the instruction in `bytes` (`bitness`-bit code, 16, 32 or 64, at `rip`), if
/// it is a descriptor-table load that KVM cannot complete from a trapped page.
pub fn descriptor_load(bytes: &[u8], bitness: u32, rip: u64) -> Option<&'static str> {
    let insn = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE).decode();
    match insn.mnemonic() {
        Mnemonic::Lgdt => Some("lgdt"),
        Mnemonic::Lidt => Some("lidt"),
        Mnemonic::Lldt => Some("lldt"),
        Mnemonic::Ltr => Some("ltr"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_reported_once_and_any_other_exit_ends_it() {
        let mut r = RepeatedReads::default();
        let read = Some((0x1000, 0x10f018, 4));
        let reported = (0..3 * SUSPICIOUS).filter(|_| r.observe(read)).count();
        assert_eq!(reported, 1);
        assert!(!r.observe(None));
        let fresh = (0..SUSPICIOUS).filter(|_| r.observe(read)).count();
        assert_eq!(fresh, 0, "the streak starts again after another exit");
        assert!(r.observe(read));
    }

    #[test]
    fn descriptor_table_loads_and_nothing_else() {
        let table: [(&[u8], Option<&str>); 4] = [
            (
                &[0x0f, 0x01, 0x14, 0x25, 0x18, 0xf0, 0x10, 0x00],
                Some("lgdt"),
            ), // lgdt [0x10f018]
            (&[0x0f, 0x01, 0x18], Some("lidt")), // lidt [rax]
            (&[0x0f, 0x00, 0xd8], Some("ltr")),  // ltr ax
            (&[0x8b, 0x00], None),               // mov eax, [rax]
        ];
        for (bytes, want) in table {
            assert_eq!(descriptor_load(bytes, 64, 0x1000), want, "{bytes:02x?}");
        }
    }

    #[test]
    fn the_code_size_decides_what_the_bytes_are() {
        // 64-bit: REX.W lgdt [rax]; 32-bit: dec eax, then the lgdt, which is not at RIP.
        let rex_lgdt = [0x48, 0x0f, 0x01, 0x10];
        assert_eq!(descriptor_load(&rex_lgdt, 64, 0x1000), Some("lgdt"));
        assert_eq!(descriptor_load(&rex_lgdt, 32, 0x1000), None);
        // Real mode: lgdt [0xf018], with a 16-bit displacement.
        assert_eq!(
            descriptor_load(&[0x0f, 0x01, 0x16, 0x18, 0xf0], 16, 0x10),
            Some("lgdt")
        );
    }
}
