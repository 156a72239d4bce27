//! Minimal little-endian x86 ELF32/ELF64 kernels built in memory, for tests: `PT_LOAD` segments,
//! and the Xen PVH entry note in a `PT_NOTE` segment or only in a `.note` section.
//!
//! Public so that the end-to-end tests can boot kernels written for them; drvisor itself never
//! writes ELF files.

use super::elf::ElfClass;

/// Where the PVH note goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotePlace {
    /// A `PT_NOTE` program header (what linux-loader reads).
    Segment,
    /// A `SHT_NOTE` section only, with no `PT_NOTE` (QEMU reads this too).
    Section,
}

/// One loadable segment.
pub struct LoadSegment<'a> {
    /// Guest-physical (and virtual) address.
    pub paddr: u64,
    /// Its bytes in the file.
    pub bytes: &'a [u8],
    /// Size in memory (>= `bytes.len()`; the rest is zeroed).
    pub memsz: u64,
}

/// An ELF of `class` with `segments` (the first is executable, the others writable data), entry
/// `entry`, and the PVH note with `pvh` where asked. `prefix` is placed right after the headers
/// in the file, unloaded: a multiboot header goes there to sit within the first 8 KiB.
pub fn build_with(
    class: ElfClass,
    entry: u64,
    segments: &[LoadSegment<'_>],
    pvh: Option<(u32, NotePlace)>,
    prefix: &[u8],
) -> Vec<u8> {
    let wide = class == ElfClass::Elf64;
    let (ehsize, phentsize, shentsize) = if wide { (64, 56, 64) } else { (52, 32, 40) };
    let note = pvh.map(|(addr, _)| {
        let mut n = Vec::new();
        n.extend_from_slice(&4u32.to_le_bytes()); // namesz
        n.extend_from_slice(&4u32.to_le_bytes()); // descsz
        n.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        n.extend_from_slice(b"Xen\0");
        n.extend_from_slice(&addr.to_le_bytes());
        n
    });
    let note_segment = matches!(pvh, Some((_, NotePlace::Segment)));
    let note_section = matches!(pvh, Some((_, NotePlace::Section)));
    let phnum = segments.len() + usize::from(note_segment);

    let mut out = vec![0u8; ehsize + phnum * phentsize];
    out.extend_from_slice(prefix);
    let align = |out: &mut Vec<u8>, a: usize| out.resize(out.len().div_ceil(a) * a, 0);
    align(&mut out, 16);
    let note_off = out.len();
    if let Some(n) = &note {
        out.extend_from_slice(n);
    }
    let mut seg_offs = Vec::new();
    for s in segments {
        align(&mut out, 16);
        seg_offs.push(out.len());
        out.extend_from_slice(s.bytes);
    }
    // Sections: null, .note.Xen (when asked), .shstrtab.
    let shstrtab: &[u8] = b"\0.note.Xen\0.shstrtab\0";
    align(&mut out, 8);
    let shstr_off = out.len();
    out.extend_from_slice(shstrtab);
    align(&mut out, 8);
    let shoff = out.len();
    let shnum = if note_section { 3 } else { 2 };

    let mut w = Writer {
        out: &mut out,
        wide,
    };
    // ELF header.
    w.at(0, b"\x7fELF");
    w.at(4, &[if wide { 2 } else { 1 }, 1, 1]);
    w.u16(16, 2); // ET_EXEC
    w.u16(18, if wide { 62 } else { 3 }); // EM_X86_64 / EM_386
    w.u32(20, 1);
    let mut p = 24;
    p = w.word(p, entry);
    p = w.word(p, ehsize as u64); // e_phoff
    p = w.word(p, shoff as u64); // e_shoff
    w.u32(p, 0); // e_flags
    w.u16(p + 4, ehsize as u16);
    w.u16(p + 6, phentsize as u16);
    w.u16(p + 8, phnum as u16);
    w.u16(p + 10, shentsize as u16);
    w.u16(p + 12, shnum);
    w.u16(p + 14, shnum - 1); // e_shstrndx

    let mut ph = ehsize;
    for (i, s) in segments.iter().enumerate() {
        let flags = if i == 0 { 5 } else { 6 }; // R+X, R+W
        w.phdr(
            ph,
            1,
            flags,
            seg_offs[i] as u64,
            s.paddr,
            s.bytes.len() as u64,
            s.memsz,
            0x1000,
        );
        ph += phentsize;
    }
    let note_len = note.as_ref().map_or(0, Vec::len) as u64;
    if note_segment {
        w.phdr(ph, 4, 4, note_off as u64, 0, note_len, note_len, 4);
    }
    // Section headers (the null one stays zero).
    let mut sh = shoff + shentsize;
    if note_section {
        w.shdr(sh, 1, 7, note_off as u64, note_len, 4);
        sh += shentsize;
    }
    w.shdr(sh, 11, 3, shstr_off as u64, shstrtab.len() as u64, 1);
    let end = shoff + shnum as usize * shentsize;
    out.resize(end, 0);
    out
}

/// An ELF with one executable segment of `code` at `paddr` (also the entry), the PVH note in a
/// `PT_NOTE` segment when `pvh` is given, and `prefix` after the headers.
pub fn build(class: ElfClass, paddr: u64, code: &[u8], pvh: Option<u32>, prefix: &[u8]) -> Vec<u8> {
    build_with(
        class,
        paddr,
        &[LoadSegment {
            paddr,
            bytes: code,
            memsz: code.len() as u64,
        }],
        pvh.map(|a| (a, NotePlace::Segment)),
        prefix,
    )
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    wide: bool,
}

impl Writer<'_> {
    fn at(&mut self, off: usize, bytes: &[u8]) {
        if self.out.len() < off + bytes.len() {
            self.out.resize(off + bytes.len(), 0);
        }
        self.out[off..off + bytes.len()].copy_from_slice(bytes);
    }
    fn u16(&mut self, off: usize, v: u16) {
        self.at(off, &v.to_le_bytes());
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.at(off, &v.to_le_bytes());
    }
    /// An address-sized field; returns the offset after it.
    fn word(&mut self, off: usize, v: u64) -> usize {
        if self.wide {
            self.at(off, &v.to_le_bytes());
            off + 8
        } else {
            self.at(off, &(v as u32).to_le_bytes());
            off + 4
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn phdr(
        &mut self,
        off: usize,
        p_type: u32,
        flags: u32,
        offset: u64,
        addr: u64,
        filesz: u64,
        memsz: u64,
        align: u64,
    ) {
        self.u32(off, p_type);
        if self.wide {
            self.u32(off + 4, flags);
            let mut p = off + 8;
            for v in [offset, addr, addr, filesz, memsz, align] {
                p = self.word(p, v);
            }
        } else {
            let mut p = off + 4;
            for v in [offset, addr, addr, filesz, memsz] {
                p = self.word(p, v);
            }
            self.u32(p, flags);
            self.u32(p + 4, align as u32);
        }
    }
    fn shdr(&mut self, off: usize, name: u32, sh_type: u32, offset: u64, size: u64, align: u64) {
        self.u32(off, name);
        self.u32(off + 4, sh_type);
        let mut p = off + 8;
        for v in [0, 0, offset, size] {
            p = self.word(p, v); // flags, addr, offset, size
        }
        self.u32(p, 0); // link
        self.u32(p + 4, 0); // info
        let p = self.word(p + 8, align);
        self.word(p, 0); // entsize
    }
}
