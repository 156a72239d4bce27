//! The kernel inside a bzImage: the setup header's `payload_offset` and `payload_length`
//! (boot protocol 2.08+) locate the compressed vmlinux, which is decompressed here. The result
//! is the kernel's ELF as the build linked it, sections kept and symbol table stripped, with
//! its kallsyms and BTF inside.
//!
//! The compressor is told by its magic (gzip, xz, zstd, LZ4, legacy lzma; bzip2 is named and
//! refused). Every kernel build appends the decompressed size as a 32-bit little-endian number
//! (for gzip it is the trailer's own ISIZE), so exactly that many bytes are read: the
//! decoders never parse that trailer, and a bound is known before decoding starts.

use std::io::Read;

/// The largest decompressed kernel accepted (a distribution vmlinux is 30 to 70 MiB).
pub const MAX_DECOMPRESSED: u64 = 512 << 20;

/// The setup header's `setup_sects` (0 means 4), in 512-byte sectors after the boot sector.
const SETUP_SECTS: usize = 0x1f1;
const HEADER_MAGIC: usize = 0x202;
const VERSION: usize = 0x206;
const PAYLOAD_OFFSET: usize = 0x248;
const PAYLOAD_LENGTH: usize = 0x24c;
/// `payload_offset` and `payload_length` exist from protocol 2.08 (Linux 2.6.26) on.
const PAYLOAD_PROTOCOL: u16 = 0x0208;

/// Why the kernel inside a bzImage could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No setup header: not a bzImage.
    #[error("not a bzImage with a payload: no `HdrS` setup header at 0x202")]
    NoSetupHeader,
    /// A bzImage older than boot protocol 2.08, whose header does not say where its payload is.
    #[error("not a bzImage with a payload: boot protocol {major}.{minor:02} has no payload_offset (2.08 and later do)")]
    OldProtocol {
        /// The protocol's major version.
        major: u16,
        /// Its minor version.
        minor: u16,
    },
    /// The file ends inside the setup header.
    #[error("not a bzImage with a payload: the setup header is cut short")]
    HeaderCut,
    /// The payload the header names lies (partly) past the file's end.
    #[error("not a bzImage with a payload: payload_offset {offset:#x} + payload_length {length:#x} run past the file's {file_len} bytes")]
    PayloadPastEnd {
        /// The header's `payload_offset`.
        offset: u32,
        /// Its `payload_length`.
        length: u32,
        /// The file's size.
        file_len: usize,
    },
    /// The compression is not one this reader knows (its first bytes shown).
    #[error("the bzImage's payload is in an unknown format (it starts {0}); known are gzip, xz, zstd, LZ4 and lzma")]
    UnknownFormat(String),
    /// A format known but not decoded here.
    #[error("the bzImage's payload is {0}-compressed, which drvisor does not decompress; give a System.map")]
    Unsupported(&'static str),
    /// The size the build recorded is beyond [`MAX_DECOMPRESSED`].
    #[error("the bzImage's payload says it decompresses to {size} bytes, more than the {max} MiB drvisor reads")]
    TooLarge {
        /// The recorded size.
        size: u64,
        /// The cap, in MiB.
        max: u64,
    },
    /// The decoder failed.
    #[error("decompressing the bzImage's {format} payload failed after {done} of {size} bytes")]
    Corrupt {
        /// The compressor.
        format: &'static str,
        /// How many bytes came out before the failure.
        done: usize,
        /// How many should have.
        size: usize,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// What came out is not an ELF.
    #[error("the bzImage's payload decompresses to something that is not an ELF (it starts {0})")]
    NotElf(String),
}

/// The compressors Linux can build an x86 bzImage with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `CONFIG_KERNEL_GZIP`.
    Gzip,
    /// `CONFIG_KERNEL_XZ` (with the x86 BCJ filter).
    Xz,
    /// `CONFIG_KERNEL_ZSTD`.
    Zstd,
    /// `CONFIG_KERNEL_LZ4` (the legacy LZ4 frame).
    Lz4,
    /// `CONFIG_KERNEL_LZMA` (the legacy `.lzma` format).
    Lzma,
    /// `CONFIG_KERNEL_BZIP2`.
    Bzip2,
    /// `CONFIG_KERNEL_LZO`.
    Lzo,
}

impl Compression {
    /// The compressor whose magic `data` starts with.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        let starts = |m: &[u8]| data.starts_with(m);
        Some(if starts(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if starts(b"\xfd7zXZ\0") {
            Compression::Xz
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if starts(&LZ4_LEGACY_MAGIC.to_le_bytes()) {
            Compression::Lz4
        } else if starts(b"BZh") {
            Compression::Bzip2
        } else if starts(&[0x89, b'L', b'Z', b'O']) {
            Compression::Lzo
        } else if starts(&[0x5d, 0, 0]) {
            // lzma's properties byte (lc=3 lp=0 pb=2) and a little-endian dictionary size.
            Compression::Lzma
        } else {
            return None;
        })
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "LZ4",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lzo => "LZO",
        }
    }
}

/// The legacy LZ4 frame's magic (`lz4 -l`), which also starts each 8 MiB group of chunks.
const LZ4_LEGACY_MAGIC: u32 = 0x184c_2102;
/// The legacy frame's chunks decompress to at most 8 MiB each.
const LZ4_LEGACY_CHUNK: usize = 8 << 20;

fn hex_start(data: &[u8]) -> String {
    let shown: Vec<String> = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
    if shown.is_empty() {
        "empty".into()
    } else {
        shown.join(" ")
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The compressed payload of a bzImage.
pub fn payload(bzimage: &[u8]) -> Result<&[u8], Error> {
    if bzimage.get(HEADER_MAGIC..HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err(Error::NoSetupHeader);
    }
    let version = le16(bzimage, VERSION).unwrap_or(0);
    if version < PAYLOAD_PROTOCOL {
        return Err(Error::OldProtocol {
            major: version >> 8,
            minor: version & 0xff,
        });
    }
    let sects = match bzimage[SETUP_SECTS] {
        0 => 4,
        n => n as usize,
    };
    let start = (sects + 1) * 512;
    let (Some(offset), Some(length)) =
        (le32(bzimage, PAYLOAD_OFFSET), le32(bzimage, PAYLOAD_LENGTH))
    else {
        return Err(Error::HeaderCut);
    };
    start
        .checked_add(offset as usize)
        .and_then(|from| Some(from..from.checked_add(length as usize)?))
        .and_then(|range| bzimage.get(range))
        .ok_or(Error::PayloadPastEnd {
            offset,
            length,
            file_len: bzimage.len(),
        })
}

/// The kernel ELF inside a bzImage, decompressed.
pub fn vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, Error> {
    let elf = decompress(payload(bzimage)?)?;
    if !elf.starts_with(b"\x7fELF") {
        return Err(Error::NotElf(hex_start(&elf)));
    }
    Ok(elf)
}

/// Decompresses a kernel payload: its format by its magic, its size from its last 4 bytes.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, Error> {
    let format = Compression::detect(data).ok_or_else(|| Error::UnknownFormat(hex_start(data)))?;
    let size = data
        .len()
        .checked_sub(4)
        .and_then(|at| le32(data, at))
        .ok_or_else(|| Error::UnknownFormat(hex_start(data)))? as u64;
    if size > MAX_DECOMPRESSED {
        return Err(Error::TooLarge {
            size,
            max: MAX_DECOMPRESSED >> 20,
        });
    }
    let size = size as usize;
    let mut out = vec![0u8; size];
    let corrupt = |done: usize, source: std::io::Error| Error::Corrupt {
        format: format.name(),
        done,
        size,
        source,
    };
    match format {
        Compression::Gzip => fill(flate2::read::GzDecoder::new(data), &mut out),
        Compression::Xz => fill(lzma_rust2::XzReader::new(data, true), &mut out),
        Compression::Lzma => match lzma_rust2::LzmaReader::new_mem_limit(data, u32::MAX, None) {
            Ok(reader) => fill(reader, &mut out),
            Err(e) => Err((0, e)),
        },
        Compression::Zstd => match ruzstd::decoding::StreamingDecoder::new(data) {
            Ok(reader) => fill(reader, &mut out),
            Err(e) => Err((0, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
        },
        Compression::Lz4 => lz4_legacy(data, &mut out),
        Compression::Bzip2 | Compression::Lzo => return Err(Error::Unsupported(format.name())),
    }
    .map_err(|(done, e)| corrupt(done, e))?;
    Ok(out)
}

/// Reads exactly `out.len()` bytes; on failure, how many came and why.
fn fill(mut reader: impl Read, out: &mut [u8]) -> Result<(), (usize, std::io::Error)> {
    let mut done = 0;
    while done < out.len() {
        match reader.read(&mut out[done..]) {
            Ok(0) => {
                return Err((
                    done,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the compressed stream ended early",
                    ),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

/// The legacy LZ4 frame (`lz4 -l`, as `lib/decompress_unlz4.c` reads it): the magic, then
/// chunks of a 32-bit little-endian compressed length and an LZ4 block of at most 8 MiB; the
/// magic may repeat between chunks. Decoding stops once `out` is full (the kernel's size
/// trailer follows the last chunk).
fn lz4_legacy(data: &[u8], out: &mut [u8]) -> Result<(), (usize, std::io::Error)> {
    let bad = |done: usize, what: String| {
        Err((
            done,
            std::io::Error::new(std::io::ErrorKind::InvalidData, what),
        ))
    };
    let mut at = 4;
    let mut done = 0;
    while done < out.len() {
        let Some(len) = le32(data, at) else {
            return bad(
                done,
                format!("the LZ4 stream ends at byte {at} before its data"),
            );
        };
        at += 4;
        if len == LZ4_LEGACY_MAGIC {
            continue;
        }
        let Some(block) = data.get(at..at + len as usize) else {
            return bad(
                done,
                format!("an LZ4 chunk of {len} bytes at byte {at} runs past the end"),
            );
        };
        let room = (out.len() - done).min(LZ4_LEGACY_CHUNK);
        match lz4_flex::block::decompress_into(block, &mut out[done..done + room]) {
            Ok(n) => done += n,
            Err(e) => return bad(done, format!("an LZ4 chunk at byte {at}: {e}")),
        }
        at += len as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A bzImage-shaped file: a setup header at protocol 2.15 and `payload` after 4 sectors.
    fn bzimage_with(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512 + 0x100];
        img[SETUP_SECTS] = 4;
        img[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        img[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&0x100u32.to_le_bytes());
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img
    }

    fn elf_like(n: usize) -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend((0..n).map(|i| (i * 7 % 251) as u8));
        v
    }

    #[test]
    fn gzip_payload_decompresses() {
        let plain = elf_like(100_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let img = bzimage_with(&gz.finish().unwrap());
        assert_eq!(vmlinux(&img).unwrap(), plain);
    }

    #[test]
    fn lz4_legacy_payload_with_size_trailer_decompresses() {
        let plain = elf_like(100_000);
        let block = lz4_flex::block::compress(&plain);
        let mut data = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        data.extend_from_slice(&(block.len() as u32).to_le_bytes());
        data.extend_from_slice(&block);
        data.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        assert_eq!(vmlinux(&bzimage_with(&data)).unwrap(), plain);
        // A chunk that claims more than there is.
        let mut cut = data.clone();
        cut[4..8].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        let e = vmlinux(&bzimage_with(&cut)).unwrap_err();
        assert!(
            e.to_string().contains("LZ4 payload failed after 0 of"),
            "{e}"
        );
    }

    #[test]
    fn formats_by_magic_and_refusals() {
        assert_eq!(Compression::detect(b"\xfd7zXZ\0..."), Some(Compression::Xz));
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::detect(b"BZh91AY"), Some(Compression::Bzip2));
        let e = decompress(b"BZh91AY&SY\x01\x02\x03\x04").unwrap_err();
        assert!(matches!(e, Error::Unsupported("bzip2")), "{e}");
        let e = decompress(b"nonsense").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the bzImage's payload is in an unknown format (it starts 6e 6f 6e 73 65 6e 73 65); known are gzip, xz, zstd, LZ4 and lzma"
        );
        // A size trailer of 4 GiB - 1 is refused before anything is allocated.
        let mut huge = vec![0x1f, 0x8b, 8, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decompress(&huge), Err(Error::TooLarge { .. })));
        let e = payload(&[0u8; 1024]).unwrap_err();
        assert!(matches!(e, Error::NoSetupHeader), "{e}");
        assert!(e.to_string().contains("no `HdrS`"), "{e}");
        let mut short = bzimage_with(b"xx");
        short[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let e = payload(&short).unwrap_err();
        assert!(
            matches!(
                e,
                Error::PayloadPastEnd {
                    offset: 0x100,
                    length: 0x10_0000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("run past"), "{e}");
    }

    /// Each way a header fails to locate its payload is its own error, with the version or the
    /// sizes it saw.
    #[test]
    fn headers_without_a_payload() {
        let mut old = bzimage_with(b"xx");
        old[VERSION..VERSION + 2].copy_from_slice(&0x0207u16.to_le_bytes());
        let e = payload(&old).unwrap_err();
        assert!(
            matches!(e, Error::OldProtocol { major: 2, minor: 7 }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "not a bzImage with a payload: boot protocol 2.07 has no payload_offset (2.08 and \
             later do)"
        );
        let cut = &bzimage_with(b"")[..PAYLOAD_OFFSET + 2];
        let e = payload(cut).unwrap_err();
        assert!(matches!(e, Error::HeaderCut), "{e}");
        assert!(
            e.to_string().ends_with("the setup header is cut short"),
            "{e}"
        );
    }

    #[test]
    fn gzip_of_something_else_is_not_elf() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"MZ not an elf").unwrap();
        let e = vmlinux(&bzimage_with(&gz.finish().unwrap())).unwrap_err();
        assert!(matches!(e, Error::NotElf(_)), "{e}");
    }
}
