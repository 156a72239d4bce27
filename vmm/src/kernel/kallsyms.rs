//! The kernel's own symbol table, `kallsyms`, read from a vmlinux whose ELF symbol table was
//! stripped (the kernel inside every bzImage), the way `/proc/kallsyms` is built: no
//! System.map and no debug package needed.
//!
//! `scripts/kallsyms` emits these tables into `.rodata` (all little-endian on x86):
//!
//! - `kallsyms_token_table`: 256 NUL-terminated strings; `kallsyms_token_index`: 256 `u16`
//!   offsets of them, right after it.
//! - `kallsyms_num_syms` (`u32`, 8-aligned), then `kallsyms_names`: per symbol a length
//!   (ULEB128, one or two bytes) and that many token numbers, whose expansion is the type
//!   letter and the name; then `kallsyms_markers`: a `u32` offset into the names per 256 symbols.
//! - The addresses, sorted: `kallsyms_offsets` (`u32` each) and `kallsyms_relative_base`
//!   (`u64`), or absolute `kallsyms_addresses` (`u64` each). With
//!   `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` a non-negative offset is an absolute value (per-cpu
//!   symbols, type `A`) and a negative one means `relative_base - 1 - offset`.
//! - Since 6.2, `kallsyms_seqs_of_names` (3 bytes, at first 4, per symbol).
//!
//! Their order changed: up to 6.3 the addresses come first and the token tables last (with
//! the name sequence between markers and token table from 6.2); from 6.4 the token tables
//! follow the markers and the addresses follow the token index. So each table is found by its
//! shape, as `vmlinux-to-elf` does, independent of order: the token table by its run of digit
//! tokens (a character the names use is its own token), checked against the token index that
//! must follow; the markers before it; the names by a count in front of them that decodes
//! exactly to the markers; the addresses where either layout puts them, checked sorted.

use std::ops::Range;

/// One symbol: its address, its `nm` type letter and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The address (link-time; what a kernel booted with `nokaslr` uses), or for an absolute
    /// symbol its value.
    pub addr: u64,
    /// `T`/`t` code, `D`/`d`/`B`/`b`/`R`/`r` data, `A` absolute (also per-cpu with
    /// `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`), `W`/`V` weak and so on.
    pub kind: char,
    /// The name.
    pub name: String,
}

/// The symbol table that these entries make (see `SymbolTable::from_kallsyms`).
pub fn symbol_table(entries: &[Entry]) -> crate::symbols::SymbolTable {
    let rows: Vec<(&str, char, u64)> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.addr))
        .collect();
    crate::symbols::SymbolTable::from_kallsyms(&rows)
}

/// Why no kallsyms were found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No token table: a kernel built without `CONFIG_KALLSYMS`, or not a kernel.
    #[error("no kallsyms token table in the kernel image (was it built without CONFIG_KALLSYMS?)")]
    NoTokenTable,
    /// A token table, but no names and markers that fit it.
    #[error(
        "kallsyms token table at byte {0:#x}, but no symbol names and markers that decode with it"
    )]
    NoNames(usize),
    /// Names, but no sorted addresses in either layout.
    #[error("kallsyms names found ({0} symbols), but no sorted address table in any known layout")]
    NoAddresses(usize),
}

/// Two bytes of the digit tokens `"0"` .. `"9"` in a row, as the token table holds them.
const DIGITS: &[u8] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
/// At most this many symbols (a distribution kernel has about 150 000 to 250 000).
const MAX_SYMS: u32 = 4 << 20;
/// The markers are searched for this far before the token table (the name sequence of 6.2 and
/// 6.3 lies between them: 3 or 4 bytes per symbol).
const MARKER_WINDOW: usize = 4 * MAX_SYMS as usize + 64;
/// A name is at most this many tokens (the two-byte ULEB128 length's limit).
const MAX_NAME_TOKENS: usize = 0x3fff;

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn align_up(n: usize, a: usize) -> usize {
    n.div_ceil(a) * a
}

/// The token table: where it lies, where the index after it ends, and each token.
struct Tokens {
    table: Range<usize>,
    index_end: usize,
    tokens: Vec<Vec<u8>>,
}

/// The symbols in `image` (a vmlinux, or any bytes holding one's `.rodata`), in the kernel's
/// order (sorted by address).
pub fn read(image: &[u8]) -> Result<Vec<Entry>, Error> {
    let mut last = Error::NoTokenTable;
    for tokens in token_tables(image) {
        match read_with(image, &tokens) {
            Ok(entries) => return Ok(entries),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn read_with(image: &[u8], tokens: &Tokens) -> Result<Vec<Entry>, Error> {
    let names = find_names(image, tokens).ok_or(Error::NoNames(tokens.table.start))?;
    let addrs =
        find_addresses(image, tokens, &names).ok_or(Error::NoAddresses(names.decoded.len()))?;
    Ok(names
        .decoded
        .into_iter()
        .zip(addrs)
        .map(|((kind, name), addr)| Entry { addr, kind, name })
        .collect())
}

/// Every place that has the shape of a token table followed by its index.
fn token_tables(image: &[u8]) -> impl Iterator<Item = Tokens> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(hit) = find(&image[from..], DIGITS) {
            let at = from + hit;
            from = at + 1;
            if let Some(t) = token_table_at(image, at) {
                from = t.index_end;
                return Some(t);
            }
        }
        None
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut at = 0;
    while at + needle.len() <= hay.len() {
        let i = hay[at..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        at += i;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The token table whose token `'0'` (number 0x30) starts at `zero`, if its index follows it.
fn token_table_at(image: &[u8], zero: usize) -> Option<Tokens> {
    // Back over tokens 0x2f .. 0: each is non-empty and ends with the NUL before the next.
    let mut start = zero;
    for _ in 0..b'0' {
        let end = start.checked_sub(1)?;
        if image[end] != 0 || end == 0 || image[end - 1] == 0 {
            return None;
        }
        start = image[..end]
            .iter()
            .rposition(|&b| b == 0)
            .map_or(0, |p| p + 1);
    }
    let mut offsets = Vec::with_capacity(256);
    let mut tokens = Vec::with_capacity(256);
    let mut at = start;
    for _ in 0..256 {
        let len = image.get(at..)?.iter().position(|&b| b == 0)?;
        if len == 0 {
            return None;
        }
        offsets.push(u16::try_from(at - start).ok()?);
        tokens.push(image[at..at + len].to_vec());
        at += len + 1;
    }
    // The index is 2-, 4- or 8-aligned after the table, depending on the kernel's `ALGN`.
    (at..at + 8).step_by(1).find_map(|index| {
        let matches = offsets
            .iter()
            .enumerate()
            .all(|(i, &o)| le16(image, index + 2 * i) == Some(o));
        matches.then(|| Tokens {
            table: start..at,
            index_end: index + 512,
            tokens: tokens.clone(),
        })
    })
}

/// The names, decoded, and where their count and markers lie.
struct Names {
    /// Where `kallsyms_num_syms` is.
    num_syms_at: usize,
    /// Each symbol's type letter and name.
    decoded: Vec<(char, String)>,
}

/// The markers nearest before the token table whose names and count decode to them.
fn find_names(image: &[u8], tokens: &Tokens) -> Option<Names> {
    let end = tokens.table.start & !3;
    let lowest = end.saturating_sub(MARKER_WINDOW);
    let mut s = end;
    while s >= lowest + 4 {
        s -= 4;
        if le32(image, s) != Some(0) {
            continue;
        }
        let run = markers_at(image, s, end);
        // The run may have taken in a few `u32`s of the name sequence after the markers:
        // the markers end at the token table, or where a name sequence for their count begins.
        for k in (1..=run.len()).rev() {
            let gap = end - (s + 4 * k);
            let syms = (256 * (k - 1) + 1)..=256 * k;
            let fits = gap < 8 || (3 * syms.start()..=4 * syms.end() + 8).contains(&gap);
            if fits {
                if let Some(names) = names_before(image, tokens, s, &run[..k]) {
                    return Some(names);
                }
            }
        }
    }
    None
}

/// The `u32`s from `s` on that can be markers: 0, then strictly increasing by what 256 names
/// take (at least 2 bytes each), up to `end`.
fn markers_at(image: &[u8], s: usize, end: usize) -> Vec<u32> {
    let mut markers = vec![0u32];
    let mut at = s + 4;
    while at + 4 <= end {
        let Some(m) = le32(image, at) else { break };
        let prev = *markers.last().unwrap_or(&0);
        if m < prev.saturating_add(512) || m - prev > (256 * (MAX_NAME_TOKENS as u32 + 2)) {
            break;
        }
        markers.push(m);
        at += 4;
    }
    markers
}

/// The names ending at the markers at `s`: a count `n` that fits the markers 8 bytes before
/// them, and `n` names that decode from there to the markers.
fn names_before(image: &[u8], tokens: &Tokens, s: usize, markers: &[u32]) -> Option<Names> {
    let m = markers.len() as u32;
    let want = (m - 1) * 256 + 1..=m * 256;
    let last = *markers.last()? as usize;
    // The last 256 (or fewer) names take 2 to MAX_NAME_TOKENS + 2 bytes each.
    let highest = s.checked_sub(last + 2)?;
    let lowest = s.saturating_sub(last + 256 * (MAX_NAME_TOKENS + 2)).max(8);
    let mut p = highest & !7;
    while p >= lowest {
        let Some(n) = le32(image, p - 8) else { break };
        if want.contains(&n) && n <= MAX_SYMS {
            if let Some(decoded) = decode_names(image, tokens, p, s, n, markers) {
                return Some(Names {
                    num_syms_at: p - 8,
                    decoded,
                });
            }
        }
        p -= 8;
    }
    None
}

/// Decodes `n` names from `start`, checking each 256th against its marker and that they end
/// within the alignment padding before the markers at `s`.
fn decode_names(
    image: &[u8],
    tokens: &Tokens,
    start: usize,
    s: usize,
    n: u32,
    markers: &[u32],
) -> Option<Vec<(char, String)>> {
    let mut at = start;
    let mut out = Vec::with_capacity(n as usize);
    let mut expanded = Vec::new();
    for i in 0..n as usize {
        if i % 256 == 0 && markers.get(i / 256).map(|&m| start + m as usize) != Some(at) {
            return None;
        }
        let b0 = *image.get(at)? as usize;
        let (len, head) = if b0 & 0x80 != 0 {
            ((b0 & 0x7f) | ((*image.get(at + 1)? as usize) << 7), 2)
        } else {
            (b0, 1)
        };
        if len == 0 || at + head + len > s {
            return None;
        }
        expanded.clear();
        for &t in &image[at + head..at + head + len] {
            expanded.extend_from_slice(&tokens.tokens[t as usize]);
        }
        let (&kind, name) = expanded.split_first()?;
        if !kind.is_ascii_alphabetic() || name.is_empty() {
            return None;
        }
        out.push((kind as char, String::from_utf8_lossy(name).into_owned()));
        at += head + len;
    }
    (s - at < 8).then_some(out)
}

/// The addresses of the `names.decoded.len()` symbols, in either layout, sorted as the kernel
/// keeps them.
fn find_addresses(image: &[u8], tokens: &Tokens, names: &Names) -> Option<Vec<u64>> {
    let n = names.decoded.len();
    let offsets_len = align_up(4 * n, 8);
    // Up to 6.3: offsets, relative base, then the count; or absolute addresses, then the count.
    let before = names.num_syms_at.checked_sub(8).and_then(|base_at| {
        let offsets_at = base_at.checked_sub(offsets_len)?;
        relative(image, offsets_at, base_at, n)
    });
    let absolute = || {
        let at = names.num_syms_at.checked_sub(8 * n)?;
        let addrs: Option<Vec<u64>> = (0..n).map(|i| le64(image, at + 8 * i)).collect();
        addrs.filter(|a| sorted(a) && a.last().is_some_and(|&x| x != 0))
    };
    // From 6.4: offsets after the token index, then the relative base.
    let after = || {
        let offsets_at = align_up(tokens.index_end, 8);
        relative(image, offsets_at, offsets_at + offsets_len, n)
    };
    before.or_else(absolute).or_else(after)
}

/// Addresses from `n` offsets at `offsets_at` and a relative base at `base_at`, if sorted.
fn relative(image: &[u8], offsets_at: usize, base_at: usize, n: usize) -> Option<Vec<u64>> {
    let base = le64(image, base_at)?;
    if base == 0 {
        return None;
    }
    let offsets: Vec<u32> = (0..n)
        .map(|i| le32(image, offsets_at + 4 * i))
        .collect::<Option<_>>()?;
    // Negative offsets exist only with CONFIG_KALLSYMS_ABSOLUTE_PERCPU (no kernel spans 2 GiB).
    let absolute_percpu = offsets.iter().any(|&o| (o as i32) < 0);
    let addrs: Vec<u64> = offsets
        .iter()
        .map(|&o| {
            if !absolute_percpu {
                base.wrapping_add(u64::from(o))
            } else if (o as i32) >= 0 {
                u64::from(o)
            } else {
                base.wrapping_sub(1)
                    .wrapping_sub(i64::from(o as i32) as u64)
            }
        })
        .collect();
    sorted(&addrs).then_some(addrs)
}

fn sorted(addrs: &[u64]) -> bool {
    addrs.windows(2).all(|w| w[0] <= w[1])
}

#[cfg(test)]
#[path = "kallsyms_tests.rs"]
mod tests;
