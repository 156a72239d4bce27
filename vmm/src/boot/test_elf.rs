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

/// Where a test symbol is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolPlace {
    /// In `.text` (the first segment).
    Text,
    /// `SHN_ABS`.
    Absolute,
}

/// A symbol-table entry. Locals must come before globals, as in any ELF; an `STT_FILE` entry
/// (`kind` 4) names the source file of the locals after it.
pub struct TestSymbol<'a> {
    /// Its name.
    pub name: &'a str,
    /// `st_value`.
    pub value: u64,
    /// `st_size`.
    pub size: u64,
    /// `STT_*`: 0 notype, 1 object, 2 func, 4 file.
    pub kind: u8,
    /// `STB_LOCAL` rather than `STB_GLOBAL`.
    pub local: bool,
    /// Its section.
    pub place: SymbolPlace,
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
    build_with_symbols(class, entry, segments, pvh, prefix, &[])
}

/// [`build_with`], plus a `.symtab` with `symbols` (none: no symbol table at all).
pub fn build_with_symbols(
    class: ElfClass,
    entry: u64,
    segments: &[LoadSegment<'_>],
    pvh: Option<(u32, NotePlace)>,
    prefix: &[u8],
    symbols: &[TestSymbol<'_>],
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
    // Sections: null, .text, .note.Xen (when asked), .symtab and .strtab (when asked), .shstrtab.
    let shstrtab: &[u8] = b"\0.note.Xen\0.shstrtab\0.text\0.symtab\0.strtab\0";
    let mut sections = vec![Section::default()];
    if let (Some(first), Some(&off)) = (segments.first(), seg_offs.first()) {
        sections.push(Section {
            name: 21,
            kind: 1,  // SHT_PROGBITS
            flags: 6, // SHF_ALLOC | SHF_EXECINSTR
            addr: first.paddr,
            offset: off as u64,
            size: first.bytes.len() as u64,
            align: 16,
            ..Default::default()
        });
    }
    let text_index = 1u16;
    let note_len = note.as_ref().map_or(0, Vec::len) as u64;
    if note_section {
        sections.push(Section {
            name: 1,
            kind: 7, // SHT_NOTE
            flags: 2,
            offset: note_off as u64,
            size: note_len,
            align: 4,
            ..Default::default()
        });
    }
    if !symbols.is_empty() {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; if wide { 24 } else { 16 }]; // the null symbol
        let mut first_global = symbols.len() + 1;
        for (i, sym) in symbols.iter().enumerate() {
            let name = strtab.len() as u32;
            strtab.extend_from_slice(sym.name.as_bytes());
            strtab.push(0);
            if !sym.local && first_global > symbols.len() {
                first_global = i + 1;
            }
            let info = (if sym.local { 0 } else { 1 << 4 }) | sym.kind;
            let shndx: u16 = match (sym.kind, sym.place) {
                (4, _) | (_, SymbolPlace::Absolute) => 0xfff1, // SHN_ABS
                (_, SymbolPlace::Text) => text_index,
            };
            if wide {
                symtab.extend_from_slice(&name.to_le_bytes());
                symtab.extend_from_slice(&[info, 0]);
                symtab.extend_from_slice(&shndx.to_le_bytes());
                symtab.extend_from_slice(&sym.value.to_le_bytes());
                symtab.extend_from_slice(&sym.size.to_le_bytes());
            } else {
                symtab.extend_from_slice(&name.to_le_bytes());
                symtab.extend_from_slice(&(sym.value as u32).to_le_bytes());
                symtab.extend_from_slice(&(sym.size as u32).to_le_bytes());
                symtab.extend_from_slice(&[info, 0]);
                symtab.extend_from_slice(&shndx.to_le_bytes());
            }
        }
        align(&mut out, 8);
        let symtab_off = out.len();
        out.extend_from_slice(&symtab);
        let strtab_off = out.len();
        out.extend_from_slice(&strtab);
        let strtab_index = sections.len() as u32 + 1;
        sections.push(Section {
            name: 27,
            kind: 2, // SHT_SYMTAB
            offset: symtab_off as u64,
            size: symtab.len() as u64,
            link: strtab_index,
            info: first_global.min(symbols.len() + 1) as u32,
            align: 8,
            entsize: if wide { 24 } else { 16 },
            ..Default::default()
        });
        sections.push(Section {
            name: 35,
            kind: 3, // SHT_STRTAB
            offset: strtab_off as u64,
            size: strtab.len() as u64,
            align: 1,
            ..Default::default()
        });
    }
    align(&mut out, 8);
    let shstr_off = out.len();
    out.extend_from_slice(shstrtab);
    sections.push(Section {
        name: 11,
        kind: 3,
        offset: shstr_off as u64,
        size: shstrtab.len() as u64,
        align: 1,
        ..Default::default()
    });
    align(&mut out, 8);
    let shoff = out.len();
    let shnum = sections.len() as u16;

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
    if note_segment {
        w.phdr(ph, 4, 4, note_off as u64, 0, note_len, note_len, 4);
    }
    for (i, sec) in sections.iter().enumerate() {
        w.shdr(shoff + i * shentsize, sec);
    }
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
    fn shdr(&mut self, off: usize, sec: &Section) {
        self.u32(off, sec.name);
        self.u32(off + 4, sec.kind);
        let mut p = off + 8;
        for v in [sec.flags, sec.addr, sec.offset, sec.size] {
            p = self.word(p, v);
        }
        self.u32(p, sec.link);
        self.u32(p + 4, sec.info);
        let p = self.word(p + 8, sec.align);
        self.word(p, sec.entsize);
    }
}

/// A section header's fields.
#[derive(Default)]
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    entsize: u64,
}

/// The multiboot v1 header magic.
pub const MULTIBOOT_MAGIC: u32 = 0x1bad_b002;
/// Multiboot flag 16: the header's own load addresses (the a.out kludge) follow.
pub const AOUT_KLUDGE: u32 = 1 << 16;

/// Two tiny kernels at 1 MiB that halt: a PVH ELF64 and a multiboot ELF32. The loaders write
/// different boot data for each (start info or boot information, strings, module list).
pub fn pvh_and_multiboot() -> [Vec<u8>; 2] {
    let code = [0xf4u8; 16];
    [
        build(ElfClass::Elf64, 0x10_0000, &code, Some(0x10_0000), &[]),
        build(
            ElfClass::Elf32,
            0x10_0000,
            &code,
            None,
            &multiboot_header(0, &[]),
        ),
    ]
}

/// A multiboot v1 header with `flags`, its checksum, and, for the a.out kludge, its five
/// address fields.
pub fn multiboot_header(flags: u32, addresses: &[u32]) -> Vec<u8> {
    let sum = 0u32.wrapping_sub(MULTIBOOT_MAGIC.wrapping_add(flags));
    [MULTIBOOT_MAGIC, flags, sum]
        .iter()
        .chain(addresses)
        .flat_map(|w| w.to_le_bytes())
        .collect()
}
