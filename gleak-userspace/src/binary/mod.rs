//! Reading a Go executable: ELF symbols and segments, the Go version, code bytes.
//!
//! Everything here works on the file alone; nothing touches the running process.

pub mod buildinfo;
pub mod disasm;
pub mod dwarf;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

pub use buildinfo::GoVersion;

use crate::error::{Error, Result};

/// Oldest Go release whose runtime layout gleak knows.
pub const MIN_GO: (u32, u32) = (1, 19);

/// A function or data symbol of the binary (virtual address as linked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
}

/// A `PT_LOAD` segment: where file bytes land in memory.
#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
}

/// A parsed Go executable. Holds the file's bytes; cheap to query.
pub struct GoBinary {
    pub path: PathBuf,
    data: Vec<u8>,
    pub go_version: GoVersion,
    /// Position-independent: runtime addresses = link addresses + load bias.
    pub is_pie: bool,
    symbols: HashMap<String, Symbol>,
    segments: Vec<Segment>,
}

impl GoBinary {
    /// Reads and checks `path`. `display` is the name used in messages (e.g. the
    /// target's executable path when `path` is `/proc/PID/exe`).
    pub fn open(path: &Path, display: &Path) -> Result<Self> {
        let data =
            std::fs::read(path).map_err(|source| Error::Binary { path: display.to_path_buf(), cause: source })?;
        Self::from_bytes(data, display)
    }

    pub fn from_bytes(data: Vec<u8>, display: &Path) -> Result<Self> {
        let path = display.to_path_buf();
        let file =
            object::File::parse(&*data).map_err(|e| Error::NotElf { path: path.clone(), reason: e.to_string() })?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(Error::NotElf { path, reason: format!("{:?} format", file.format()) });
        }
        if file.architecture() != object::Architecture::X86_64 {
            return Err(Error::UnsupportedArch { path, arch: format!("{:?}", file.architecture()) });
        }
        let mut symbols = HashMap::new();
        for sym in file.symbols() {
            if let Ok(name) = sym.name() {
                if name.starts_with("runtime.") {
                    symbols.insert(name.to_string(), Symbol { addr: sym.address(), size: sym.size() });
                }
            }
        }
        let raw_version = file
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok())
            .and_then(buildinfo::version_from_buildinfo);
        let go_version = match raw_version {
            Some(v) => {
                GoVersion::parse(&v).ok_or_else(|| Error::UnsupportedGoVersion { path: path.clone(), version: v })?
            }
            None => return Err(Error::NotGo { path }),
        };
        if !go_version.at_least(MIN_GO.0, MIN_GO.1) {
            return Err(Error::UnsupportedGoVersion { path, version: go_version.raw });
        }
        if symbols.is_empty() {
            return Err(Error::Stripped { path });
        }
        let segments = file
            .segments()
            .map(|s| {
                let (file_offset, file_size) = s.file_range();
                Segment { vaddr: s.address(), file_offset, file_size }
            })
            .collect();
        let is_pie = matches!(file.kind(), object::ObjectKind::Dynamic);
        drop(file);
        Ok(Self { path, data, go_version, is_pie, symbols, segments })
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// A `runtime.*` symbol.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols.get(name).copied()
    }

    pub fn require_symbol(&self, name: &str) -> Result<Symbol> {
        self.symbol(name).ok_or_else(|| Error::MissingSymbol { path: self.path.clone(), symbol: name.to_string() })
    }

    /// File offset of a link-time virtual address (what uprobes attach to).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.file_size)
            .map(|s| vaddr - s.vaddr + s.file_offset)
    }

    /// Link address of the segment mapped at file offset 0 (for the load bias).
    pub fn first_segment_vaddr(&self) -> u64 {
        self.segments.iter().find(|s| s.file_offset == 0).map(|s| s.vaddr).unwrap_or(0)
    }

    /// `len` bytes of the file image at link address `vaddr`.
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let off = self.file_offset(vaddr)? as usize;
        self.data.get(off..off + len as usize)
    }

    /// The bytes of a function symbol's code.
    pub fn function_code(&self, name: &str) -> Result<(Symbol, &[u8])> {
        let sym = self.require_symbol(name)?;
        let code = self
            .bytes_at(sym.addr, sym.size)
            .ok_or_else(|| Error::MissingSymbol { path: self.path.clone(), symbol: format!("{name} (code)") })?;
        Ok((sym, code))
    }

    /// `runtime.waitReasonStrings`: the names Go itself prints (`chan send`, `select`…),
    /// indexed by `waitReason` value, read from the binary's own data.
    pub fn wait_reason_strings(&self) -> Option<Vec<String>> {
        let sym = self.symbol("runtime.waitReasonStrings")?;
        let table = self.bytes_at(sym.addr, sym.size)?;
        let names = table
            .chunks_exact(16)
            .map(|entry| {
                let ptr = u64::from_le_bytes(entry[0..8].try_into().unwrap());
                let len = u64::from_le_bytes(entry[8..16].try_into().unwrap());
                self.bytes_at(ptr, len).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()
            })
            .collect();
        Some(names)
    }
}
