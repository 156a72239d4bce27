//! A small reader of BTF, the kernel's own type information (`.BTF` of a vmlinux built with
//! `CONFIG_DEBUG_INFO_BTF`; `Documentation/bpf/btf.rst`): the header, the string section and
//! each type's name, kind, size and members, which is all drvisor asks of it (field offsets).

/// Why BTF could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not BTF (its magic is 0xeb9f).
    #[error("not BTF: {0}")]
    NotBtf(String),
    /// A type record that runs past the type section, or is of an unknown kind.
    #[error("BTF type {id} at byte {at:#x} of the type section: {what}")]
    BadType {
        /// The type's id.
        id: u32,
        /// Where it starts.
        at: usize,
        /// What is wrong.
        what: String,
    },
}

const MAGIC: u16 = 0xeb9f;

/// The kinds a struct lookup needs told apart; the others are skipped by their size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `BTF_KIND_STRUCT`.
    Struct,
    /// `BTF_KIND_UNION`.
    Union,
    /// `BTF_KIND_ARRAY`.
    Array,
    /// Any other.
    Other(u8),
}

/// One struct or union member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name; empty for an anonymous struct or union.
    pub name: String,
    /// Its type's id.
    pub type_id: u32,
    /// Its offset in bits from the start of the struct.
    pub bit_offset: u32,
}

/// One type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// Its name; empty if anonymous.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The size in bytes (struct, union, int, ...), or the referred type (pointer, typedef...).
    pub size_or_type: u32,
    /// A struct's or union's members.
    pub members: Vec<Member>,
}

/// The types of a BTF blob, by id (id 0 is `void`, not stored: `types[id - 1]`).
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
}

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

impl Btf {
    /// Parses a `.BTF` section (little-endian, as on x86).
    pub fn parse(data: &[u8]) -> Result<Btf, Error> {
        let not = |what: &str| Error::NotBtf(what.to_owned());
        if le16(data, 0) != Some(MAGIC) {
            return Err(not("no 0xeb9f magic (or a big-endian BTF)"));
        }
        let field = |at| le32(data, at).ok_or_else(|| not("the header is cut short"));
        let hdr_len = field(4)? as usize;
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|s| data.get(s..s.checked_add(len)?))
                .ok_or_else(|| not(&format!("its {what} section runs past the data")))
        };
        let types = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;
        let name = |off: u32| -> String {
            strings
                .get(off as usize..)
                .and_then(|s| s.split(|&b| b == 0).next())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let id = out.len() as u32 + 1;
            let bad = |what: String| Error::BadType { id, at, what };
            let (Some(name_off), Some(info), Some(size_or_type)) =
                (le32(types, at), le32(types, at + 4), le32(types, at + 8))
            else {
                return Err(bad("cut short".into()));
            };
            let vlen = (info & 0xffff) as usize;
            let kind_number = ((info >> 24) & 0x1f) as u8;
            let kind_flag = info >> 31 == 1;
            let body = at + 12;
            let trailing = match kind_number {
                1 | 14 | 17 => 4,          // INT, VAR, DECL_TAG
                3 => 12,                   // ARRAY
                4 | 5 => 12 * vlen,        // STRUCT, UNION
                6 | 13 => 8 * vlen,        // ENUM, FUNC_PROTO
                15 | 19 => 12 * vlen,      // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
                k => return Err(bad(format!("unknown kind {k}"))),
            };
            if body + trailing > types.len() {
                return Err(bad("its members run past the type section".into()));
            }
            let kind = match kind_number {
                4 => Kind::Struct,
                5 => Kind::Union,
                3 => Kind::Array,
                k => Kind::Other(k),
            };
            let members = if matches!(kind, Kind::Struct | Kind::Union) {
                (0..vlen)
                    .map(|i| {
                        let m = body + 12 * i;
                        let offset = le32(types, m + 8).unwrap_or(0);
                        Member {
                            name: name(le32(types, m).unwrap_or(0)),
                            type_id: le32(types, m + 4).unwrap_or(0),
                            // With kind_flag the top 8 bits are a bitfield's size.
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            out.push(Type {
                name: name(name_off),
                kind,
                size_or_type,
                members,
            });
            at = body + trailing;
        }
        Ok(Btf { types: out })
    }

    /// The type of `id` (None for 0, `void`, or an id past the end).
    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// The struct called `name` with members (not a forward declaration's empty one).
    pub fn struct_named(&self, name: &str) -> Option<&Type> {
        self.types
            .iter()
            .find(|t| t.kind == Kind::Struct && t.name == name && !t.members.is_empty())
    }

    /// The byte offset of member `name` in `ty`, looking into anonymous structs and unions.
    pub fn member_offset(&self, ty: &Type, name: &str) -> Option<u64> {
        self.member_bits(ty, name, 0).map(|bits| bits / 8)
    }

    fn member_bits(&self, ty: &Type, name: &str, depth: u32) -> Option<u64> {
        if depth > 8 {
            return None;
        }
        for m in &ty.members {
            if m.name == name {
                return Some(u64::from(m.bit_offset));
            }
            if m.name.is_empty() {
                let found = self
                    .get(m.type_id)
                    .and_then(|inner| self.member_bits(inner, name, depth + 1));
                if let Some(bits) = found {
                    return Some(u64::from(m.bit_offset) + bits);
                }
            }
        }
        None
    }
}
