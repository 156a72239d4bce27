//! kallsyms tables built here in each layout, and the real Debian kernel of `ci/linux/cache`.

use super::*;

/// Where the address table goes, and how the name sequence is written.
#[derive(Clone, Copy)]
struct Layout {
    /// 6.4+: token tables after the markers, addresses after the token index.
    addresses_last: bool,
    /// Bytes per entry of `kallsyms_seqs_of_names` (0: none, before 6.2).
    seq_bytes: usize,
    /// `CONFIG_KALLSYMS_ABSOLUTE_PERCPU`.
    absolute_percpu: bool,
}

fn pad8(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
}

/// Token 1 is `_s`, 2 is `ys`, every other unused slot a filler `~N`; each character used is
/// its own token.
fn tokens() -> Vec<Vec<u8>> {
    (0..256u32)
        .map(|i| match i {
            1 => b"_s".to_vec(),
            2 => b"ys".to_vec(),
            c if (0x20..0x7f).contains(&c) => vec![c as u8],
            c => format!("~{c}").into_bytes(),
        })
        .collect()
}

fn encode(text: &str) -> Vec<u8> {
    text.replace("_s", "\x01")
        .replace("ys", "\x02")
        .into_bytes()
}

/// A blob with `junk` before and after the kallsyms of `syms` (address, type, name; sorted).
fn build(syms: &[(u64, char, &str)], layout: Layout, junk: &[u8]) -> Vec<u8> {
    let base = syms
        .iter()
        .find(|s| !(layout.absolute_percpu && s.1 == 'A'))
        .map_or(0, |s| s.0);
    let mut offsets = Vec::new();
    for &(addr, kind, _) in syms {
        let o: u32 = if !layout.absolute_percpu {
            (addr - base) as u32
        } else if kind == 'A' {
            addr as u32
        } else {
            (base as i64 - addr as i64 - 1) as i32 as u32
        };
        offsets.extend_from_slice(&o.to_le_bytes());
    }
    let mut names = Vec::new();
    let mut markers = Vec::new();
    for (i, &(_, kind, name)) in syms.iter().enumerate() {
        if i % 256 == 0 {
            markers.extend_from_slice(&(names.len() as u32).to_le_bytes());
        }
        let enc = encode(&format!("{kind}{name}"));
        if enc.len() > 0x7f {
            names.push((enc.len() as u8 & 0x7f) | 0x80);
            names.push((enc.len() >> 7) as u8);
        } else {
            names.push(enc.len() as u8);
        }
        names.extend_from_slice(&enc);
    }
    let mut table = Vec::new();
    let mut index = Vec::new();
    for t in tokens() {
        index.extend_from_slice(&(table.len() as u16).to_le_bytes());
        table.extend_from_slice(&t);
        table.push(0);
    }
    let seqs: Vec<u8> = (0..syms.len() as u32)
        .flat_map(|i| i.to_le_bytes()[..layout.seq_bytes].to_vec())
        .collect();

    let mut v = junk.to_vec();
    pad8(&mut v);
    let addresses = |v: &mut Vec<u8>| {
        pad8(v);
        v.extend_from_slice(&offsets);
        pad8(v);
        v.extend_from_slice(&base.to_le_bytes());
    };
    if !layout.addresses_last {
        addresses(&mut v);
    }
    pad8(&mut v);
    v.extend_from_slice(&(syms.len() as u32).to_le_bytes());
    pad8(&mut v);
    v.extend_from_slice(&names);
    pad8(&mut v);
    v.extend_from_slice(&markers);
    if !layout.addresses_last && layout.seq_bytes > 0 {
        pad8(&mut v);
        v.extend_from_slice(&seqs);
    }
    pad8(&mut v);
    v.extend_from_slice(&table);
    pad8(&mut v);
    v.extend_from_slice(&index);
    if layout.addresses_last {
        addresses(&mut v);
        pad8(&mut v);
        v.extend_from_slice(&seqs);
    }
    v.extend_from_slice(junk);
    v
}

/// `n` symbols: per-cpu ones first (type `A` at small values with absolute per-cpu), then
/// code and data at rising addresses, with names that use the tokens and a long one.
fn symbols(n: usize, absolute_percpu: bool) -> Vec<(u64, char, String)> {
    let mut out = Vec::new();
    if absolute_percpu {
        out.push((0, 'A', "fixed_percpu_data".to_owned()));
        out.push((0x1000, 'A', "cpu_number".to_owned()));
    }
    for i in 0..n {
        let kind = ['T', 't', 'D', 'b'][i % 4];
        out.push((
            0xffff_ffff_8100_0000 + 0x40 * i as u64,
            kind,
            format!("__x64_sys_call{i}"),
        ));
    }
    out.push((0xffff_ffff_8300_0000, 'T', "y".repeat(200)));
    out
}

fn check(n: usize, layout: Layout) {
    let syms = symbols(n, layout.absolute_percpu);
    let refs: Vec<(u64, char, &str)> = syms.iter().map(|(a, k, s)| (*a, *k, s.as_str())).collect();
    // Junk with digit runs in it, as `.rodata` has: "0\01\0..." outside a token table.
    let junk: Vec<u8> = DIGITS
        .iter()
        .chain(b"\x07\x00")
        .copied()
        .cycle()
        .take(3000)
        .collect();
    let blob = build(&refs, layout, &junk);
    let got = read(&blob).unwrap();
    let want: Vec<Entry> = syms
        .iter()
        .map(|(addr, kind, name)| Entry {
            addr: *addr,
            kind: *kind,
            name: name.clone(),
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[test]
fn layout_up_to_6_1_without_name_sequence() {
    for n in [3, 255, 256, 257, 1000] {
        check(
            n,
            Layout {
                addresses_last: false,
                seq_bytes: 0,
                absolute_percpu: true,
            },
        );
    }
}

#[test]
fn layout_6_2_and_6_3_with_name_sequence_before_the_tokens() {
    for seq_bytes in [3, 4] {
        for n in [10, 700] {
            check(
                n,
                Layout {
                    addresses_last: false,
                    seq_bytes,
                    absolute_percpu: true,
                },
            );
        }
    }
}

#[test]
fn layout_6_4_on_with_addresses_after_the_token_index() {
    for absolute_percpu in [true, false] {
        check(
            600,
            Layout {
                addresses_last: true,
                seq_bytes: 3,
                absolute_percpu,
            },
        );
    }
}

#[test]
fn plain_relative_offsets_without_absolute_percpu() {
    check(
        300,
        Layout {
            addresses_last: false,
            seq_bytes: 0,
            absolute_percpu: false,
        },
    );
}

#[test]
fn no_token_table_is_said_so() {
    assert_eq!(read(&[0u8; 4096]), Err(Error::NoTokenTable));
    assert_eq!(read(&DIGITS.repeat(50)), Err(Error::NoTokenTable));
}

#[test]
fn a_token_table_without_names_is_said_so() {
    let mut v = vec![0u8; 64];
    for t in tokens() {
        v.extend_from_slice(&t);
        v.push(0);
    }
    let mut off = 0u16;
    for t in tokens() {
        v.extend_from_slice(&off.to_le_bytes());
        off += t.len() as u16 + 1;
    }
    assert_eq!(read(&v), Err(Error::NoNames(64)));
}
