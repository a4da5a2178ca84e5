//! A small reader of the `.BTF` section of a BPF object: just enough to
//! find named structs with their size and members, and the key and value
//! types of each map, so that tests compare the Rust mirrors with what
//! clang actually laid out (never with hand-copied numbers).

use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    /// Offset in bytes.
    pub offset: usize,
}

#[derive(Debug, Clone)]
pub struct Type {
    pub kind: u32,
    pub name: String,
    /// Size for INT/STRUCT/UNION/ENUM/DATASEC; referenced type for PTR/TYPEDEF/VAR/CONST/...
    pub size_or_type: u32,
    pub members: Vec<Member>,
    /// ARRAY: (element type, count).
    pub array: Option<(u32, u32)>,
}

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const TYPEDEF: u32 = 8;
const VOLATILE: u32 = 9;
const CONST: u32 = 10;
const RESTRICT: u32 = 11;
const VAR: u32 = 14;
const DATASEC: u32 = 15;
const TYPE_TAG: u32 = 18;

pub struct Btf {
    /// Index = type id; 0 is void.
    pub types: Vec<Type>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn section<'a>(elf: &'a [u8], wanted: &str) -> &'a [u8] {
    // ELF64 little-endian, as clang -target bpf emits on x86_64.
    assert_eq!(&elf[..4], b"\x7fELF");
    let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap()) as usize;
    let shentsize = u16::from_le_bytes(elf[0x3a..0x3c].try_into().unwrap()) as usize;
    let shnum = u16::from_le_bytes(elf[0x3c..0x3e].try_into().unwrap()) as usize;
    let shstrndx = u16::from_le_bytes(elf[0x3e..0x40].try_into().unwrap()) as usize;
    let sh = |i: usize| {
        let h = &elf[shoff + i * shentsize..];
        let name = u32_at(h, 0) as usize;
        let off = u64::from_le_bytes(h[0x18..0x20].try_into().unwrap()) as usize;
        let size = u64::from_le_bytes(h[0x20..0x28].try_into().unwrap()) as usize;
        (name, off, size)
    };
    let (_, stroff, _) = sh(shstrndx);
    for i in 0..shnum {
        let (name, off, size) = sh(i);
        let n = &elf[stroff + name..];
        let n = &n[..n.iter().position(|&c| c == 0).unwrap()];
        if n == wanted.as_bytes() {
            return &elf[off..off + size];
        }
    }
    panic!("no section {wanted}");
}

impl Btf {
    pub fn from_object(elf: &[u8]) -> Btf {
        let btf = section(elf, ".BTF");
        assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
        let hdr_len = u32_at(btf, 4) as usize;
        let (type_off, type_len) = (u32_at(btf, 8) as usize, u32_at(btf, 12) as usize);
        let str_off = u32_at(btf, 16) as usize;
        let strings = &btf[hdr_len + str_off..];
        let name_at = |off: u32| {
            let s = &strings[off as usize..];
            String::from_utf8_lossy(&s[..s.iter().position(|&c| c == 0).unwrap()]).into_owned()
        };
        let data = &btf[hdr_len + type_off..hdr_len + type_off + type_len];
        let mut types = vec![Type { kind: 0, name: "void".into(), size_or_type: 0, members: vec![], array: None }];
        let mut p = 0;
        while p < data.len() {
            let (name_off, info, sot) = (u32_at(data, p), u32_at(data, p + 4), u32_at(data, p + 8));
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut t = Type { kind, name: name_at(name_off), size_or_type: sot, members: vec![], array: None };
            match kind {
                INT => p += 4,
                ARRAY => {
                    t.array = Some((u32_at(data, p), u32_at(data, p + 8)));
                    p += 12;
                }
                STRUCT | UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let bits = u32_at(data, m + 8);
                        let bit_offset = if kind_flag { bits & 0xff_ffff } else { bits };
                        t.members.push(Member {
                            name: name_at(u32_at(data, m)),
                            type_id: u32_at(data, m + 4),
                            offset: (bit_offset / 8) as usize,
                        });
                    }
                    p += vlen * 12;
                }
                6 => p += vlen * 8,           // ENUM
                13 => p += vlen * 8,          // FUNC_PROTO
                VAR => p += 4,
                DATASEC => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        t.members.push(Member { name: String::new(), type_id: u32_at(data, m), offset: u32_at(data, m + 4) as usize });
                    }
                    p += vlen * 12;
                }
                17 => p += 4,                 // DECL_TAG
                19 => p += vlen * 12,         // ENUM64
                _ => {}                       // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
            }
            types.push(t);
        }
        Btf { types }
    }

    /// Skips typedefs and qualifiers.
    pub fn resolve(&self, mut id: u32) -> u32 {
        while matches!(self.types[id as usize].kind, TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG) {
            id = self.types[id as usize].size_or_type;
        }
        id
    }

    pub fn size(&self, id: u32) -> usize {
        let t = &self.types[self.resolve(id) as usize];
        match t.kind {
            ARRAY => {
                let (elem, n) = t.array.unwrap();
                self.size(elem) * n as usize
            }
            PTR => 8,
            _ => t.size_or_type as usize,
        }
    }

    /// The name of a type after typedefs: a struct's tag, or the typedef
    /// name itself for `__u32` and friends.
    pub fn name(&self, id: u32) -> String {
        let t = &self.types[id as usize];
        if t.kind == TYPEDEF || t.kind == STRUCT {
            return t.name.clone();
        }
        self.name(self.resolve(id))
    }

    pub fn named_struct(&self, name: &str) -> Option<&Type> {
        self.types.iter().find(|t| t.kind == STRUCT && t.name == name)
    }

    /// Map name -> (key type id, value type id), from the `.maps` section's
    /// variables (`__type(key, ...)` becomes a pointer member `key`).
    pub fn map_types(&self) -> HashMap<String, (u32, u32)> {
        let mut out = HashMap::new();
        for sec in self.types.iter().filter(|t| t.kind == DATASEC && t.name == ".maps") {
            for var in &sec.members {
                let v = &self.types[var.type_id as usize];
                let def = &self.types[self.resolve(v.size_or_type) as usize];
                let field = |n: &str| {
                    let m = def.members.iter().find(|m| m.name == n)?;
                    let ptr = &self.types[self.resolve(m.type_id) as usize];
                    (ptr.kind == PTR).then_some(ptr.size_or_type)
                };
                if let (Some(k), Some(val)) = (field("key"), field("value")) {
                    out.insert(v.name.clone(), (k, val));
                }
            }
        }
        out
    }
}
