//! Just enough of a BTF reader to find struct member offsets in the running
//! kernel (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs get no CO-RE relocations, so the few kernel struct
//! fields the programs read are located here at start-up and handed to them
//! as globals. aya-obj keeps its type accessors private, hence this reader.

use std::{collections::HashMap, path::Path};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not BTF data: {0}")]
    Format(&'static str),
    #[error("no struct `{0}` in kernel BTF")]
    NoStruct(String),
    #[error("struct `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

enum Type {
    Composite {
        name_off: u32,
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: look through to `target`.
    Alias {
        target: u32,
    },
    Other,
}

/// The parsed type section of one BTF blob.
pub struct KernelBtf {
    /// Index 0 is the implicit `void`.
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let bytes = self
            .data
            .get(self.pos..self.pos + 4)
            .ok_or(BtfError::Format("type section truncated"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
    }
}

impl KernelBtf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order eastwatch runs on).
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let header = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Format("header truncated"))
        };
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(BtfError::Format("empty"))?;
        if magic != MAGIC {
            return Err(BtfError::Format("bad magic (or big-endian BTF)"));
        }
        let hdr_len = header(4)? as usize;
        let (type_off, type_len) = (header(8)? as usize, header(12)? as usize);
        let (str_off, str_len) = (header(16)? as usize, header(20)? as usize);
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Format("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Format("string section out of bounds"))?
            .to_vec();

        let mut types = vec![Type::Other];
        let mut cursor = Cursor {
            data: types_data,
            pos: 0,
        };
        while cursor.pos < types_data.len() {
            let name_off = cursor.u32()?;
            let info = cursor.u32()?;
            let size_or_type = cursor.u32()?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let name_off = cursor.u32()?;
                        let type_id = cursor.u32()?;
                        let offset = cursor.u32()?;
                        // With kind_flag the top byte is a bitfield size.
                        let bit_offset = if kind_flag {
                            offset & 0x00ff_ffff
                        } else {
                            offset
                        };
                        members.push(Member {
                            name_off,
                            type_id,
                            bit_offset,
                        });
                    }
                    Type::Composite { name_off, members }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias {
                        target: size_or_type,
                    }
                }
                other => {
                    cursor.skip(match other {
                        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                        KIND_ARRAY => 12,
                        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                        KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                        _ => 0,
                    });
                    Type::Other
                }
            };
            types.push(ty);
        }

        let mut btf = Self {
            types,
            strings,
            structs_by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for (id, ty) in btf.types.iter().enumerate() {
            if let Type::Composite { name_off, members } = ty
                && *name_off != 0
                && !members.is_empty()
            {
                // Keep the first complete definition of a name.
                by_name
                    .entry(btf.string(*name_off).to_owned())
                    .or_insert(id as u32);
            }
        }
        btf.structs_by_name = by_name;
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    fn resolve(&self, mut id: u32) -> Option<&Type> {
        // Alias chains are short; the bound guards against malformed loops.
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias { target } => id = *target,
                other => return Some(other),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct strukt`, looking inside anonymous
    /// structs and unions.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        self.path_offset(strukt, &[member])
    }

    /// Byte offset of a nested member: `path` names a member of `strukt`,
    /// then a member of that member's type, and so on (`a.b.c`), looking
    /// inside anonymous structs and unions at every step.
    pub fn path_offset(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let mut bits = 0;
        for member in path {
            let (offset, type_id) =
                self.find_member(id, member, 0)
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: strukt.to_owned(),
                        member: path.join("."),
                    })?;
            bits += offset;
            id = type_id;
        }
        Ok(bits / 8)
    }

    /// The bit offset and type of member `wanted`.
    fn find_member(&self, id: u32, wanted: &str, base_bits: u32) -> Option<(u32, u32)> {
        let Some(Type::Composite { members, .. }) = self.resolve(id) else {
            return None;
        };
        for member in members {
            let bits = base_bits + member.bit_offset;
            if member.name_off == 0 {
                if let Some(found) = self.find_member(member.type_id, wanted, bits) {
                    return Some(found);
                }
            } else if self.string(member.name_off) == wanted {
                return Some((bits, member.type_id));
            }
        }
        None
    }
}

/// The kernel struct offsets the cgroup tracepoint programs need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupOffsets {
    pub cgroup_kn: u32,
    pub cgroup_root: u32,
    pub kernfs_node_id: u32,
    pub cgroup_root_hierarchy_id: u32,
}

impl CgroupOffsets {
    pub fn resolve(btf: &KernelBtf) -> Result<Self, BtfError> {
        Ok(Self {
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            cgroup_root: btf.member_offset("cgroup", "root")?,
            kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
            cgroup_root_hierarchy_id: btf.member_offset("cgroup_root", "hierarchy_id")?,
        })
    }
}

/// The kernel struct offsets the flow programs need to name a socket's
/// network namespace by its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `struct sock` to its `struct net *`.
    pub sock_net: u32,
    /// `struct net` to the namespace's inode number.
    pub net_inum: u32,
}

impl NetnsOffsets {
    pub fn resolve(btf: &KernelBtf) -> Result<Self, BtfError> {
        Ok(Self {
            // possible_net_t is a typedef of an anonymous struct: reached
            // through the member, not by name.
            sock_net: btf.path_offset("sock", &["__sk_common", "skc_net", "net"])?,
            net_inum: btf.path_offset("net", &["ns", "inum"])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built blob: struct outer { int a; union { int b; int c; }; }
    /// and struct wrapper { int x; int pad; struct outer o; }.
    fn tiny_btf() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0wrapper\0x\0o\0".to_vec();
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| p as u32 + 1)
                .unwrap_or(0)
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (4 bytes)
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: anonymous union { int b; int c; }
        push(&[0, (KIND_UNION << 24) | 2, 4, s("b"), 1, 0, s("c"), 1, 0]);
        // 3: struct outer { int a; union at bit 32 }
        push(&[
            s("outer"),
            (KIND_STRUCT << 24) | 2,
            8,
            s("a"),
            1,
            0,
            0,
            2,
            32,
        ]);
        // 4: struct wrapper { int x; (4 bytes of padding) struct outer o; }
        push(&[
            s("wrapper"),
            (KIND_STRUCT << 24) | 2,
            16,
            s("x"),
            1,
            0,
            s("o"),
            3,
            64,
        ]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_members_inside_anonymous_unions() {
        let btf = KernelBtf::parse(&tiny_btf()).expect("parse");
        assert_eq!(btf.member_offset("outer", "a").expect("a"), 0);
        assert_eq!(btf.member_offset("outer", "c").expect("c"), 4);
        assert!(matches!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn follows_a_path_of_named_members() {
        let btf = KernelBtf::parse(&tiny_btf()).expect("parse");
        assert_eq!(btf.path_offset("wrapper", &["o", "c"]).expect("o.c"), 12);
        assert_eq!(btf.path_offset("wrapper", &["o"]).expect("o"), 8);
        assert!(matches!(
            btf.path_offset("wrapper", &["o", "x"]),
            Err(BtfError::NoMember { member, .. }) if member == "o.x"
        ));
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::parse(b"hello world, not btf at all").is_err());
        assert!(KernelBtf::parse(&[]).is_err());
    }

    #[test]
    fn running_kernel_has_the_cgroup_fields() {
        // Every machine eastwatch runs on exposes kernel BTF; so must CI's.
        let btf = KernelBtf::from_sys_fs().expect("/sys/kernel/btf/vmlinux");
        let offsets = CgroupOffsets::resolve(&btf).expect("cgroup offsets");
        assert_ne!(offsets.cgroup_kn, 0, "cgroup.kn follows the embedded css");
        assert_ne!(offsets.cgroup_root, offsets.cgroup_kn);
    }

    #[test]
    fn running_kernel_has_the_netns_fields() {
        let btf = KernelBtf::from_sys_fs().expect("/sys/kernel/btf/vmlinux");
        let offsets = NetnsOffsets::resolve(&btf).expect("netns offsets");
        // skc_net follows the addresses and ports in sock_common; inum
        // follows the namespace's own bookkeeping in ns_common.
        assert!(offsets.sock_net >= 8, "{offsets:?}");
        assert!(offsets.net_inum > 0, "{offsets:?}");
    }
}
