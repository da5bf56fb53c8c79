//! Tests only: tiny x86-64 ELF executables with chosen sections and symbols, to
//! reproduce the shapes of hostile binaries the readers must survive.

use std::path::Path;

use super::GoBinary;

pub const SHT_PROGBITS: u32 = 1;
pub const SHF_WRITE: u64 = 1;
pub const SHF_ALLOC: u64 = 2;
pub const SHF_EXECINSTR: u64 = 4;
pub const SHF_COMPRESSED: u64 = 0x800;
/// Link address of file offset 0: one `PT_LOAD` maps the whole file there.
pub const BASE: u64 = 0x40_0000;

/// A section header's fields: (name offset, type, flags, addr, offset, size, link,
/// info, entsize).
type SectionHeader = (u32, u32, u64, u64, u64, u64, u32, u32, u64);
/// An abbreviation: (code, tag, has children, (attribute, form) pairs).
type Abbrev = (u8, u8, bool, &'static [(u8, u8)]);

struct TestSection {
    name: String,
    flags: u64,
    data: Vec<u8>,
    /// The header's address, when not where the data is mapped.
    addr: Option<u64>,
}

/// An ELF under construction. Sections with `SHF_ALLOC` live at `BASE + offset`.
#[derive(Default)]
pub struct TestElf {
    sections: Vec<TestSection>,
    symbols: Vec<(String, u64, u64)>,
    /// Extra copies of the `PT_LOAD` header (a hostile file may list thousands).
    extra_segments: usize,
    /// Extra copies of the last section's header.
    extra_section_copies: usize,
}

/// A `.go.buildinfo` section body announcing `version`.
pub fn buildinfo(version: &str) -> Vec<u8> {
    let mut b = b"\xff Go buildinf:".to_vec();
    b.extend([8, 2]);
    b.resize(32, 0);
    b.push(version.len() as u8);
    b.extend(version.as_bytes());
    b.resize(b.len().next_multiple_of(16) + 16, 0);
    b
}

/// `data` as an `SHF_COMPRESSED` section body claiming `claimed` bytes inflated.
pub fn zlib_section(data: &[u8], claimed: u64) -> Vec<u8> {
    use std::io::Write;
    let mut out = 1u32.to_le_bytes().to_vec(); // ELFCOMPRESS_ZLIB
    out.extend(0u32.to_le_bytes());
    out.extend(claimed.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    let mut z = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

impl TestElf {
    /// A Go binary of `version` with one runtime symbol (so it needs no pclntab).
    pub fn go(version: &str) -> Self {
        let mut elf = Self::default();
        elf.section(".go.buildinfo", SHF_ALLOC | SHF_WRITE, buildinfo(version));
        elf.symbol("runtime.main", BASE, 1);
        elf
    }

    pub fn section(&mut self, name: &str, flags: u64, data: Vec<u8>) -> &mut Self {
        self.sections.push(TestSection { name: name.into(), flags, data, addr: None });
        self
    }

    /// A section whose header claims link address `addr`.
    pub fn section_at(&mut self, name: &str, flags: u64, addr: u64, data: Vec<u8>) -> &mut Self {
        self.sections.push(TestSection { name: name.into(), flags, data, addr: Some(addr) });
        self
    }

    pub fn symbol(&mut self, name: &str, addr: u64, size: u64) -> &mut Self {
        self.symbols.push((name.into(), addr, size));
        self
    }

    pub fn extra_segments(&mut self, n: usize) -> &mut Self {
        self.extra_segments = n;
        self
    }

    pub fn extra_section_copies(&mut self, n: usize) -> &mut Self {
        self.extra_section_copies = n;
        self
    }

    /// Link address of section `name`'s first byte (alloc sections only), once built.
    pub fn addr_of(&self, name: &str) -> u64 {
        let mut off = self.data_start();
        for s in &self.sections {
            off = off.next_multiple_of(16);
            if s.name == name {
                return BASE + off as u64;
            }
            off += s.data.len();
        }
        panic!("no section {name}")
    }

    fn data_start(&self) -> usize {
        64 + 56 * (1 + self.extra_segments)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.data_start()];
        let mut headers: Vec<SectionHeader> = vec![(0, 0, 0, 0, 0, 0, 0, 0, 0)];
        let mut shstrtab = vec![0u8];
        let mut name = |n: &str| {
            let off = shstrtab.len() as u32;
            shstrtab.extend(n.as_bytes());
            shstrtab.push(0);
            off
        };
        for s in &self.sections {
            out.resize(out.len().next_multiple_of(16), 0);
            let off = out.len() as u64;
            let addr = s.addr.unwrap_or(if s.flags & SHF_ALLOC != 0 { BASE + off } else { 0 });
            headers.push((name(&s.name), SHT_PROGBITS, s.flags, addr, off, s.data.len() as u64, 0, 0, 0));
            out.extend(&s.data);
        }
        if let Some(&last) = headers.last().filter(|_| headers.len() > 1) {
            headers.extend(std::iter::repeat_n(last, self.extra_section_copies));
        }
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (n, addr, size) in &self.symbols {
            symtab.extend((strtab.len() as u32).to_le_bytes());
            symtab.extend([0x12, 0]); // STB_GLOBAL, STT_FUNC
            symtab.extend(1u16.to_le_bytes());
            symtab.extend(addr.to_le_bytes());
            symtab.extend(size.to_le_bytes());
            strtab.extend(n.as_bytes());
            strtab.push(0);
        }
        let strtab_index = headers.len() as u32 + 1;
        for (n, ty, body, link, info, entsize) in
            [(".symtab", 2, symtab, strtab_index, 1, 24), (".strtab", 3, strtab, 0, 0, 0)]
        {
            out.resize(out.len().next_multiple_of(8), 0);
            let off = out.len() as u64;
            headers.push((name(n), ty, 0, 0, off, body.len() as u64, link, info, entsize));
            out.extend(body);
        }
        let shstrtab_name = name(".shstrtab");
        let off = out.len() as u64;
        headers.push((shstrtab_name, 3, 0, 0, off, shstrtab.len() as u64, 0, 0, 0));
        out.extend(&shstrtab);
        out.resize(out.len().next_multiple_of(8), 0);
        let shoff = out.len() as u64;
        for (n, ty, flags, addr, off, size, link, info, entsize) in &headers {
            out.extend(n.to_le_bytes());
            out.extend(ty.to_le_bytes());
            out.extend(flags.to_le_bytes());
            out.extend(addr.to_le_bytes());
            out.extend(off.to_le_bytes());
            out.extend(size.to_le_bytes());
            out.extend(link.to_le_bytes());
            out.extend(info.to_le_bytes());
            out.extend(1u64.to_le_bytes());
            out.extend(entsize.to_le_bytes());
        }
        let file_len = out.len() as u64;
        // ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4..8].copy_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&BASE.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[40..48].copy_from_slice(&shoff.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(1 + self.extra_segments as u16).to_le_bytes());
        out[58..60].copy_from_slice(&64u16.to_le_bytes());
        out[60..62].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[62..64].copy_from_slice(&(headers.len() as u16 - 1).to_le_bytes());
        // PT_LOAD of the whole file, read-write-execute, and its copies.
        for i in 0..1 + self.extra_segments {
            let ph = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
            ph[..4].copy_from_slice(&1u32.to_le_bytes());
            ph[4..8].copy_from_slice(&7u32.to_le_bytes());
            ph[16..24].copy_from_slice(&BASE.to_le_bytes());
            ph[24..32].copy_from_slice(&BASE.to_le_bytes());
            ph[32..40].copy_from_slice(&file_len.to_le_bytes());
            ph[40..48].copy_from_slice(&file_len.to_le_bytes());
            ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        out
    }

    pub fn binary(&self) -> crate::error::Result<GoBinary> {
        GoBinary::from_bytes(self.build(), Path::new("test.elf"))
    }
}

/// Writes a DWARF 4 `.debug_info` unit entry by entry (no recursion, so chains
/// of any depth), with a fixed `.debug_abbrev`.
pub struct DieWriter {
    info: Vec<u8>,
}

/// Abbreviation codes of [`DieWriter`]'s entries.
const AB_CU: u8 = 1;
const AB_STRUCT: u8 = 2;
const AB_MEMBER: u8 = 3;
const AB_CONST: u8 = 4;
const AB_SUBPROGRAM: u8 = 5;
const AB_INLINED: u8 = 6;

impl Default for DieWriter {
    fn default() -> Self {
        // unit_length (patched), version 4, abbrev offset 0, address size 8.
        let mut info = vec![0; 4];
        info.extend(4u16.to_le_bytes());
        info.extend(0u32.to_le_bytes());
        info.push(8);
        Self { info }
    }
}

impl DieWriter {
    fn string(&mut self, s: &str) {
        self.info.extend(s.as_bytes());
        self.info.push(0);
    }

    fn uleb(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.info.push(byte);
                return;
            }
            self.info.push(byte | 0x80);
        }
    }

    /// A compile unit covering `[low, low + len)`; its children follow, then [`Self::end`].
    pub fn unit(&mut self, name: &str, low: u64, len: u64) -> &mut Self {
        self.info.push(AB_CU);
        self.string(name);
        self.info.extend(low.to_le_bytes());
        self.info.extend(len.to_le_bytes());
        self
    }

    /// A struct; its members follow, then [`Self::end`].
    pub fn structure(&mut self, name: &str, size: u64) -> &mut Self {
        self.info.push(AB_STRUCT);
        self.string(name);
        self.uleb(size);
        self
    }

    pub fn member(&mut self, name: &str, offset: u64) -> &mut Self {
        self.info.push(AB_MEMBER);
        self.string(name);
        self.uleb(offset);
        self
    }

    pub fn constant(&mut self, name: &str, value: u64) -> &mut Self {
        self.info.push(AB_CONST);
        self.string(name);
        self.uleb(value);
        self
    }

    /// A function at `[low, low + len)`; its children follow, then [`Self::end`].
    pub fn subprogram(&mut self, name: &str, low: u64, len: u64) -> &mut Self {
        self.info.push(AB_SUBPROGRAM);
        self.string(name);
        self.info.extend(low.to_le_bytes());
        self.info.extend(len.to_le_bytes());
        self
    }

    /// An inlined call at `[low, low + len)`; its children follow, then [`Self::end`].
    pub fn inlined(&mut self, low: u64, len: u64) -> &mut Self {
        self.info.push(AB_INLINED);
        self.info.extend(low.to_le_bytes());
        self.info.extend(len.to_le_bytes());
        self
    }

    /// Ends the children of the innermost open entry.
    pub fn end(&mut self) -> &mut Self {
        self.info.push(0);
        self
    }

    /// (`.debug_abbrev`, `.debug_info`).
    pub fn finish(&mut self) -> (Vec<u8>, Vec<u8>) {
        let len = (self.info.len() - 4) as u32;
        self.info[..4].copy_from_slice(&len.to_le_bytes());
        const NAME: u8 = 0x03;
        const STRING: u8 = 0x08;
        const ADDR: u8 = 0x01;
        const DATA8: u8 = 0x07;
        const UDATA: u8 = 0x0f;
        const LOW_PC: u8 = 0x11;
        const HIGH_PC: u8 = 0x12;
        let abbrevs: [Abbrev; 6] = [
            (AB_CU, 0x11, true, &[(NAME, STRING), (LOW_PC, ADDR), (HIGH_PC, DATA8)]),
            (AB_STRUCT, 0x13, true, &[(NAME, STRING), (0x0b, UDATA)]),
            (AB_MEMBER, 0x0d, false, &[(NAME, STRING), (0x38, UDATA)]),
            (AB_CONST, 0x27, false, &[(NAME, STRING), (0x1c, UDATA)]),
            (AB_SUBPROGRAM, 0x2e, true, &[(NAME, STRING), (LOW_PC, ADDR), (HIGH_PC, DATA8)]),
            (AB_INLINED, 0x1d, true, &[(LOW_PC, ADDR), (HIGH_PC, DATA8)]),
        ];
        let mut abbrev = Vec::new();
        for (code, tag, children, attrs) in abbrevs {
            abbrev.extend([code, tag, u8::from(children)]);
            for &(at, form) in attrs {
                abbrev.extend([at, form]);
            }
            abbrev.extend([0, 0]);
        }
        abbrev.push(0);
        (abbrev, std::mem::take(&mut self.info))
    }
}

impl TestElf {
    /// Adds `.debug_abbrev` and `.debug_info` (uncompressed).
    pub fn dwarf(&mut self, dies: &mut DieWriter) -> &mut Self {
        let (abbrev, info) = dies.finish();
        self.section(".debug_abbrev", 0, abbrev);
        self.section(".debug_info", 0, info)
    }
}

/// A sanity check of the builder itself.
#[test]
fn builds_a_loadable_go_binary() {
    let mut elf = TestElf::go("go1.22.4");
    elf.section(".data", SHF_ALLOC | SHF_WRITE, vec![7; 64]);
    let data_addr = elf.addr_of(".data");
    let bin = elf.binary().unwrap();
    assert_eq!((bin.go_version.minor, bin.go_version.patch), (22, 4));
    assert_eq!(bin.function("runtime.main").map(|s| s.addr), Some(BASE));
    assert_eq!(bin.u64_at(data_addr), Some(0x0707_0707_0707_0707));
    assert!(!bin.has_dwarf);
}
