//! Fuzzing the readers of untrusted input: ELF, `.go.buildinfo`, `.gopclntab`, the
//! module data, DWARF and the machine-code decoding of runtime functions.
//!
//! gleak runs as root and reads binaries an attacker may control. This harness
//! (stable Rust, no cargo-fuzz) takes real Go binaries as seeds (`chan_send` built
//! as every [`Variant`] by the oldest and the newest toolchain, plus copies with
//! their DWARF decompressed, so that mutations reach the DWARF parser instead of
//! zlib, and copies in the old `.zdebug_*` form), mutates them where the structure
//! is (ELF, program and section headers, symbol entries, the pclntab header,
//! functab and `_func` records, buildinfo, module data, DWARF section and
//! compression headers, relocations, runtime functions' code) and drives every
//! entry point gleak feeds a binary to. Each input must
//!
//! - not panic (caught per input),
//! - finish within [`input_timeout`] (it runs in a worker thread; a hang fails),
//! - keep its peak live heap under [`memory_limit`] (a counting global allocator;
//!   single allocations above [`HARD_CAP`] are refused outright).
//!
//! A failure prints the seed and iteration, and the input is saved under
//! `$GLEAK_CACHE/fuzz-failures/` with a note of its mutations. Input `i` depends
//! only on the seed and `i` (and on the seed binaries, i.e. the toolchains
//! installed), so `GLEAK_FUZZ_SEED=S GLEAK_FUZZ_ONLY=i` replays one, and
//! `GLEAK_FUZZ_REPLAY=FILE` runs a saved input.
//!
//! Budget: `GLEAK_FUZZ_SECONDS` (default 30) and `GLEAK_FUZZ_ITERATIONS` (default
//! [`DEFAULT_ITERATIONS`]), whichever ends first. `cargo xtask fuzz` runs it longer.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::HashMap,
    fmt::Write as _,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use gleak::{
    binary::symbolize::Symbolizer,
    binary::{
        buildinfo::{main_path_from_buildinfo, version_from_buildinfo},
        dwarf::DwarfInfo,
        globals, GoBinary,
    },
    runtime::debuginfo::RuntimeInfo,
    AttachOptions,
};
use gleak_tests::{build_fixture_variant, gleak_cache, go_toolchains, is_strict, Variant};

// ---------------------------------------------------------------------------
// Memory accounting
// ---------------------------------------------------------------------------

/// Live heap bytes of the whole test process.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Highest `LIVE` since the last reset (one input runs at a time).
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Largest single request refused since the last reset (0: none).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// The input running, for the message printed when an allocation is refused.
static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);
static CURRENT_ITER: AtomicU64 = AtomicU64::new(u64::MAX);

/// No single allocation gets more than this: far above any limit an input may
/// reach, so a refusal is always a failure, and low enough that a size read from
/// a corrupt file cannot make the machine swap. Code that allocates fallibly
/// (`try_reserve`) then reports a clean error and the input fails on the refusal;
/// code that does not aborts the process, after the message below names the input.
const HARD_CAP: usize = 1 << 30;

struct Counting;

impl Counting {
    fn grew(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    fn refuse(size: usize) {
        REFUSED.fetch_max(size, Ordering::Relaxed);
        // No allocation here: format into a stack buffer, write(2) it.
        let mut buf = [0u8; 160];
        let mut w = RawWriter { buf: &mut buf, len: 0 };
        let _ = writeln!(
            w,
            "fuzz: refused an allocation of {size} bytes (seed {:#x}, iteration {})",
            CURRENT_SEED.load(Ordering::Relaxed),
            CURRENT_ITER.load(Ordering::Relaxed) as i64
        );
        let len = w.len;
        let _ = nix::unistd::write(std::io::stderr(), &buf[..len]);
    }
}

struct RawWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl std::fmt::Write for RawWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

// SAFETY: forwards to the system allocator; the counters never affect the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            Self::refuse(layout.size());
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            Self::refuse(layout.size());
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HARD_CAP {
            Self::refuse(new_size);
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most heap one input may hold at once, beyond what was live before it.
///
/// The real seeds peak at about 2–3× their size (DWARF decompressed is roughly
/// the file again, addr2line's parsed units and the pclntab's name index add
/// less): see the `seed peaks` line the run prints. gleak caps decompressed DWARF
/// at 16× the file in total, yet a mutated compression header reaches that cap
/// only with a crafted high-ratio stream (a claimed size the stream does not
/// fill is rejected, but its buffer is reserved first and counted here):
/// 64 MiB + 24× the input leaves that room and still fails anything that
/// allocates by an unchecked count.
fn memory_limit(input_len: usize) -> usize {
    (64 << 20) + 24 * input_len
}

/// Per-input deadline. The real seeds take tens of milliseconds in a release
/// build; a debug build or a machine busy compiling is slower.
fn input_timeout() -> Duration {
    let secs = env_f64("GLEAK_FUZZ_INPUT_SECONDS").unwrap_or(if cfg!(debug_assertions) { 60.0 } else { 10.0 });
    Duration::from_secs_f64(secs)
}

const DEFAULT_SEED: u64 = 0x6c65_616b_5eed_0001;
const DEFAULT_SECONDS: f64 = 30.0;
/// What a release build on an idle 2-core machine runs in about 25 s (~110 inputs/s):
/// it finishes by count, so the CI run is the same inputs every time, unless the
/// machine is slow enough for the 30 s to end it first.
const DEFAULT_ITERATIONS: u64 = 2500;

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

// ---------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------

/// xorshift64*, seeded through splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

// ---------------------------------------------------------------------------
// Seeds and their structure
// ---------------------------------------------------------------------------

/// A section header of a (trusted) seed.
#[derive(Clone, Debug)]
struct Shdr {
    name: String,
    /// File offset of the header itself.
    at: usize,
    sh_type: u32,
    flags: u64,
    offset: usize,
    size: usize,
    link: u32,
}

const SHT_NOBITS: u32 = 8;
const SHF_COMPRESSED: u64 = 0x800;

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(d[at..at + 2].try_into().unwrap())
}
fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

/// The section headers of a well-formed ELF64 little-endian file.
fn section_headers(d: &[u8]) -> Vec<Shdr> {
    let shoff = u64_at(d, 0x28) as usize;
    let shnum = u16_at(d, 0x3c) as usize;
    let shstrndx = u16_at(d, 0x3e) as usize;
    let raw = |i: usize| {
        let at = shoff + i * 64;
        (
            at,
            u32_at(d, at),
            u32_at(d, at + 4),
            u64_at(d, at + 8),
            u64_at(d, at + 16),
            u64_at(d, at + 24) as usize,
            u64_at(d, at + 32) as usize,
            u32_at(d, at + 40),
        )
    };
    let strtab = raw(shstrndx).5;
    (0..shnum)
        .map(|i| {
            let (at, name, sh_type, flags, _addr, offset, size, link) = raw(i);
            let start = strtab + name as usize;
            let end = start + d[start..].iter().position(|&b| b == 0).unwrap();
            let name = String::from_utf8_lossy(&d[start..end]).into_owned();
            Shdr { name, at, sh_type, flags, offset, size, link }
        })
        .collect()
}

/// A part of a seed that mutations aim at.
#[derive(Clone, Debug)]
struct Region {
    what: String,
    start: usize,
    len: usize,
    /// Relative chance of being picked.
    weight: u32,
}

struct Seed {
    name: String,
    data: Vec<u8>,
    regions: Vec<Region>,
    total_weight: u32,
    /// PCs to symbolize: function entries and points inside them, plus strays.
    pcs: Vec<u64>,
    /// `.go.buildinfo`'s file range, for the direct buildinfo reader.
    buildinfo: Option<(usize, usize)>,
    /// File offsets of section names in `.shstrtab` that select a reader's path.
    names: Vec<(String, usize)>,
}

/// Sections whose absence sends a reader down another path (a header scan, a
/// segment scan, the tables instead of DWARF): renaming them is a mutation.
const SELECTING_NAMES: &[&str] =
    &[".gopclntab", ".go.buildinfo", ".go.module", ".symtab", ".debug_info", ".text", ".data", ".noptrdata"];

/// Version strings for `.go.buildinfo`: odd, old, huge, multi-byte.
const VERSIONS: &[&str] = &[
    "go1.é7",
    "go1.22.é3",
    "go1.",
    "go1.99999999999",
    "go1.22.4294967296",
    "go1.4294967296",
    "go1.17",
    "go1.18.10",
    "go1.99.0",
    "go2.0",
    "devel go1.24-3f2a1b Tue",
    "go1.-1",
    "go1.2x2",
    "\u{feff}go1.22",
    "",
];

/// Runtime functions whose code gleak decodes or whose addresses it needs.
const RUNTIME_FUNCS: &[&str] = &[
    "runtime.allgadd",
    "runtime.newproc1",
    "runtime.newproc.func1",
    "runtime.newcoro",
    "runtime.runqput",
    "runtime.gdestroy",
    "runtime.goexit0",
    "runtime.goexit1",
    "runtime.casgstatus",
    "runtime.gopark",
    "runtime.mcall",
    "runtime.exit.abi0",
    "runtime.racefini",
];

/// Symbols whose `.symtab` entries mutations aim at.
const INTERESTING_SYMBOLS: &[&str] = &[
    "runtime.allgs",
    "runtime.allglen",
    "runtime.firstmoduledata",
    "runtime.waitReasonStrings",
    "runtime.text",
    "go:func.*",
    "go.func.*",
];

impl Seed {
    fn new(name: String, data: Vec<u8>) -> Seed {
        let mut regions = Vec::new();
        let mut add = |what: &str, start: usize, len: usize, weight: u32| {
            let len = len.min(data.len().saturating_sub(start));
            if len > 0 {
                regions.push(Region { what: what.to_string(), start, len, weight });
            }
        };
        add("ELF header", 0, 64, 3);
        let (phoff, phnum) = (u64_at(&data, 0x20) as usize, u16_at(&data, 0x38) as usize);
        add("program headers", phoff, phnum * 56, 3);
        let shdrs = section_headers(&data);
        let (shoff, shnum) = (u64_at(&data, 0x28) as usize, u16_at(&data, 0x3c) as usize);
        add("section headers", shoff, shnum * 64, 4);
        let mut buildinfo = None;
        for s in &shdrs {
            if s.sh_type == SHT_NOBITS {
                continue;
            }
            let (off, size) = (s.offset, s.size);
            match s.name.as_str() {
                ".shstrtab" => add(".shstrtab", off, size, 1),
                ".go.buildinfo" => {
                    buildinfo = Some((off, size));
                    add(".go.buildinfo", off, size.min(512), 3);
                }
                ".rela.dyn" | ".rela.plt" => add(&s.name, off, size, 1),
                ".dynamic" => add(".dynamic", off, size, 1),
                ".go.module" => add(".go.module", off, size.min(0x300), 2),
                ".gopclntab" | ".data.rel.ro.gopclntab" => {
                    add("pclntab header", off, 128, 4);
                    add("pclntab", off, size, 2);
                    pclntab_regions(&data, off, size, &mut add);
                }
                n if n.starts_with(".debug_") || n.starts_with(".zdebug_") => {
                    // Compression header (Elf64_Chdr or "ZLIB" + size) and zlib
                    // header, or the first unit's header when uncompressed.
                    add(&format!("{n} header"), off, 64, 2);
                    if s.flags & SHF_COMPRESSED == 0 && !n.starts_with(".zdebug_") {
                        let weight = if matches!(n, ".debug_info" | ".debug_abbrev" | ".debug_line") { 3 } else { 1 };
                        add(n, off, size, weight);
                    }
                }
                _ => {}
            }
        }
        if let Some(symtab) = shdrs.iter().find(|s| s.name == ".symtab") {
            let strtab = &shdrs[symtab.link as usize];
            for i in 0..symtab.size / 24 {
                let at = symtab.offset + i * 24;
                let name_at = strtab.offset + u32_at(&data, at) as usize;
                let name = &data[name_at..name_at + data[name_at..].iter().position(|&b| b == 0).unwrap()];
                let name = std::str::from_utf8(name).unwrap_or("");
                if INTERESTING_SYMBOLS.contains(&name) || RUNTIME_FUNCS.contains(&name) {
                    add(&format!("symtab entry {name}"), at, 24, 1);
                }
            }
        }
        // Through gleak itself (the pristine seed parses): code, module data, tables.
        let mut pcs = Vec::new();
        let bin = GoBinary::from_bytes(data.clone(), Path::new(&name))
            .unwrap_or_else(|e| panic!("seed {name} does not load: {e}"));
        let file_range = |vaddr: u64, len: u64| Some((bin.file_offset(vaddr)? as usize, len as usize));
        for f in RUNTIME_FUNCS {
            if let Some((off, len)) = bin.function(f).and_then(|s| file_range(s.addr, s.size)) {
                add(&format!("code of {f}"), off, len, 1);
            }
        }
        if let Some(md) = bin.moduledata {
            if let Some((off, len)) = file_range(md, 0x300) {
                add("moduledata", off, len, 3);
            }
            // A .gopclntab found by its header (no section of that name).
            if !shdrs.iter().any(|s| s.name.ends_with(".gopclntab")) {
                if let Some(off) = bin.pointer_at(md).and_then(|p| bin.file_offset(p)) {
                    let off = off as usize;
                    add("pclntab header", off, 128, 4);
                    pclntab_regions(&data, off, data.len() - off, &mut add);
                }
            }
        }
        if let Some((off, len)) = bin.data_symbol("runtime.waitReasonStrings").and_then(|s| file_range(s.addr, s.size))
        {
            add("runtime.waitReasonStrings", off, len, 1);
        }
        add("anywhere", 0, data.len(), 1);
        if let Some(t) = bin.pclntab() {
            let funcs: Vec<_> = t.functions().map(|(_, r)| r).collect();
            let step = (funcs.len() / 40).max(1);
            for r in funcs.iter().step_by(step) {
                pcs.push(r.entry);
                pcs.push(r.entry + (r.end - r.entry) / 2);
            }
            for f in RUNTIME_FUNCS {
                if let Some(s) = t.function(f) {
                    pcs.push(s.entry + 1);
                }
            }
        }
        pcs.extend([0, 1, u64::MAX, 0x40_0000, 0x40_1000, 1 << 47]);
        drop(bin);
        let total_weight = regions.iter().map(|r| r.weight).sum();
        let shstrtab = shdrs[u16_at(&data, 0x3e) as usize].offset;
        let names = shdrs
            .iter()
            .filter(|s| SELECTING_NAMES.contains(&s.name.as_str()))
            .map(|s| (s.name.clone(), shstrtab + u32_at(&data, s.at) as usize))
            .collect();
        Seed { name, data, regions, total_weight, pcs, buildinfo, names }
    }

    fn pick_region(&self, rng: &mut Rng) -> &Region {
        let mut n = rng.below(self.total_weight as usize) as u32;
        for r in &self.regions {
            if n < r.weight {
                return r;
            }
            n -= r.weight;
        }
        self.regions.last().unwrap()
    }
}

/// The functab and a few `_func` records of the pclntab at `off`.
fn pclntab_regions(d: &[u8], off: usize, size: usize, add: &mut impl FnMut(&str, usize, usize, u32)) {
    if size < 72 {
        return;
    }
    let nfunc = u64_at(d, off + 8) as usize;
    let pcln = u64_at(d, off + 8 + 7 * 8) as usize;
    let functab = off + pcln;
    add("functab", functab, (nfunc + 1) * 8, 3);
    // Records of the first functions, of the runtime's middle, and of the last.
    for i in [0, 1, 2, nfunc / 3, nfunc / 2, nfunc.saturating_sub(1)] {
        if i < nfunc && functab + i * 8 + 8 <= d.len() {
            let funcoff = u32_at(d, functab + i * 8 + 4) as usize;
            add("_func record", functab + funcoff, 64, 1);
        }
    }
}

/// A copy of `d` with every SHF_COMPRESSED section inflated in place of the
/// compressed bytes (appended at the end, header updated): mutations then reach
/// the DWARF parser rather than zlib.
fn decompressed(d: &[u8]) -> Option<Vec<u8>> {
    let mut out = d.to_vec();
    let mut any = false;
    for s in section_headers(d) {
        if s.flags & SHF_COMPRESSED == 0 || u32_at(d, s.offset) != 1 {
            continue;
        }
        let size = u64_at(d, s.offset + 8) as usize;
        let body = inflate(&d[s.offset + 24..s.offset + s.size], size)?;
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let at = out.len();
        out.extend(&body);
        out[s.at + 8..s.at + 16].copy_from_slice(&(s.flags & !SHF_COMPRESSED).to_le_bytes());
        out[s.at + 24..s.at + 32].copy_from_slice(&(at as u64).to_le_bytes());
        out[s.at + 32..s.at + 40].copy_from_slice(&(body.len() as u64).to_le_bytes());
        any = true;
    }
    any.then_some(out)
}

/// A copy of `d` with its SHF_COMPRESSED `.debug_*` sections in the GNU
/// `.zdebug_*` form ("ZLIB", big-endian size, zlib stream), under new names
/// appended to a copy of the section name table.
fn zdebug(d: &[u8]) -> Option<Vec<u8>> {
    let shdrs = section_headers(d);
    let shstrndx = u16_at(d, 0x3e) as usize;
    let mut out = d.to_vec();
    let mut names = d[shdrs[shstrndx].offset..shdrs[shstrndx].offset + shdrs[shstrndx].size].to_vec();
    let mut any = false;
    for s in &shdrs {
        let Some(rest) = s.name.strip_prefix(".debug_") else { continue };
        if s.flags & SHF_COMPRESSED == 0 || u32_at(d, s.offset) != 1 {
            continue;
        }
        let name_off = names.len() as u32;
        names.extend(format!(".zdebug_{rest}\0").as_bytes());
        let at = out.len();
        out.extend(b"ZLIB");
        out.extend(&u64_at(d, s.offset + 8).to_be_bytes());
        out.extend(&d[s.offset + 24..s.offset + s.size]);
        let h = s.at;
        out[h..h + 4].copy_from_slice(&name_off.to_le_bytes());
        out[h + 8..h + 16].copy_from_slice(&(s.flags & !SHF_COMPRESSED).to_le_bytes());
        out[h + 24..h + 32].copy_from_slice(&(at as u64).to_le_bytes());
        let size = (out.len() - at) as u64;
        out[h + 32..h + 40].copy_from_slice(&size.to_le_bytes());
        any = true;
    }
    let at = out.len();
    out.extend(&names);
    let h = shdrs[shstrndx].at;
    out[h + 24..h + 32].copy_from_slice(&(at as u64).to_le_bytes());
    out[h + 32..h + 40].copy_from_slice(&(names.len() as u64).to_le_bytes());
    any.then_some(out)
}

fn inflate(data: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(size);
    flate2::Decompress::new(true).decompress_vec(data, &mut out, flate2::FlushDecompress::Finish).ok()?;
    (out.len() == size).then_some(out)
}

/// The seeds: `chan_send` as every variant, by the oldest and the newest Go, and
/// DWARF-decompressed and `.zdebug` copies of those with compressed DWARF.
fn seeds() -> Vec<Seed> {
    let tcs = go_toolchains();
    let mut picked = Vec::new();
    picked.extend(tcs.first().cloned());
    picked.extend(tcs.last().cloned().filter(|t| Some(t) != tcs.first()));
    let mut seeds = Vec::new();
    for tc in &picked {
        for v in Variant::ALL {
            let path = build_fixture_variant(tc, "chan_send", v);
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let name = format!("go{} chan_send{}", tc.version, v.suffix());
            if let Some(d) = decompressed(&data) {
                seeds.push(Seed::new(format!("{name} (DWARF decompressed)"), d));
            }
            if v == Variant::Plain {
                if let Some(d) = zdebug(&data) {
                    seeds.push(Seed::new(format!("{name} (.zdebug)"), d));
                }
            }
            seeds.push(Seed::new(name, data));
        }
    }
    seeds
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

fn interesting_u32(rng: &mut Rng, old: u32, file_len: usize, region_len: usize) -> u32 {
    match rng.below(14) {
        0 => 0,
        1 => 1,
        2 => 0x7fff_ffff,
        3 => 0x8000_0000,
        4 => u32::MAX,
        5 => u32::MAX - 1,
        6 => file_len as u32,
        7 => (file_len as u32).wrapping_add(1),
        8 => region_len as u32,
        9 => rng.next() as u32 & 0xff,
        10 => old.wrapping_add(1 + rng.below(16) as u32),
        11 => old.wrapping_sub(1 + rng.below(16) as u32),
        12 => old.wrapping_shl(1 + rng.below(12) as u32),
        _ => rng.next() as u32,
    }
}

fn interesting_u64(rng: &mut Rng, old: u64, file_len: usize, region_len: usize) -> u64 {
    match rng.below(15) {
        0 => 0,
        1 => u64::MAX,
        2 => 1 << 32,
        3 => 1 << 40,
        4 => 1 << 63,
        5 => i64::MAX as u64,
        6 => file_len as u64,
        7 => file_len as u64 * (2 + rng.below(64) as u64),
        8 => region_len as u64,
        9 => old.wrapping_add(1 + rng.below(4096) as u64),
        10 => old.wrapping_sub(1 + rng.below(4096) as u64),
        11 => old.wrapping_mul(2 + rng.below(1000) as u64),
        12 => old ^ (1 << rng.below(64)),
        13 => u64::from(interesting_u32(rng, old as u32, file_len, region_len)),
        _ => rng.next(),
    }
}

/// Applies 1–8 mutations to `data`; returns what was done, in words.
fn mutate(data: &mut Vec<u8>, seed: &Seed, seeds: &[Seed], rng: &mut Rng) -> Vec<String> {
    let mut done = Vec::new();
    let mut count = 1;
    while count < 8 && rng.chance(2) {
        count += 1;
    }
    let file_len = data.len();
    for _ in 0..count {
        let r = seed.pick_region(rng);
        if r.start >= data.len() {
            continue;
        }
        let len = r.len.min(data.len() - r.start);
        // Offsets aligned within the region: structure fields are.
        let pos = |rng: &mut Rng, align: usize, width: usize| -> Option<usize> {
            if len < width {
                return None;
            }
            let slots = (len - width) / align + 1;
            Some(r.start + rng.below(slots) * align)
        };
        let what = &r.what;
        if rng.chance(12) {
            done.push(structural(data, seed, rng));
            continue;
        }
        match rng.below(16) {
            0..=2 => {
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    let at = r.start + rng.below(len);
                    data[at] ^= 1 << rng.below(8);
                }
                done.push(format!("flip {n} bits in {what}"));
            }
            3 | 4 => {
                let at = r.start + rng.below(len);
                let v = [0, 0xff, 0x7f, 0x80, 1, rng.next() as u8][rng.below(6)];
                data[at] = v;
                done.push(format!("byte {at:#x} ({what}) = {v:#x}"));
            }
            5..=7 => {
                let align = if rng.chance(4) { 1 } else { 4 };
                if let Some(at) = pos(rng, align, 4) {
                    let old = u32_at(data, at);
                    let v = interesting_u32(rng, old, file_len, len);
                    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    done.push(format!("u32 {at:#x} ({what}) {old:#x} -> {v:#x}"));
                }
            }
            8..=10 => {
                let align = if rng.chance(4) { 4 } else { 8 };
                if let Some(at) = pos(rng, align, 8) {
                    let old = u64_at(data, at);
                    let v = interesting_u64(rng, old, file_len, len);
                    data[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    done.push(format!("u64 {at:#x} ({what}) {old:#x} -> {v:#x}"));
                }
            }
            11 => {
                // Fill a run with one byte.
                let at = r.start + rng.below(len);
                let n = (1 + rng.below(64)).min(data.len() - at);
                let v = [0u8, 0xff, rng.next() as u8][rng.below(3)];
                data[at..at + n].fill(v);
                done.push(format!("fill {n} bytes at {at:#x} ({what}) with {v:#x}"));
            }
            12 => {
                // The same region from another seed (another toolchain or variant).
                let other = &seeds[rng.below(seeds.len())];
                if let Some(o) = other.regions.iter().find(|o| o.what == r.what) {
                    let n = o.len.min(len).min(512);
                    let from = o.start + rng.below(o.len - n + 1);
                    data[r.start..r.start + n].copy_from_slice(&other.data[from..from + n]);
                    done.push(format!("splice {n} bytes of {what} from {}", other.name));
                }
            }
            13 => {
                // Shift a chunk of the region by a few words (duplicates fields).
                let n = (1 + rng.below(256)).min(len);
                let from = r.start + rng.below(len - n + 1);
                let shift = 8 * (1 + rng.below(4));
                let to = if rng.chance(2) { from + shift } else { from.saturating_sub(shift) };
                if to + n <= data.len() {
                    data.copy_within(from..from + n, to);
                    done.push(format!("move {n} bytes of {what} from {from:#x} to {to:#x}"));
                }
            }
            _ => {
                // Truncate: inside the region or, rarely, anywhere.
                let at = if rng.chance(4) { rng.below(data.len()) } else { r.start + rng.below(len) };
                data.truncate(at);
                done.push(format!("truncate at {at:#x} ({what})"));
            }
        }
    }
    done
}

/// Whole-structure mutations: header tables repeated thousands of times (work
/// proportional to sections × bytes), renamed sections (fallback paths), odd
/// version strings.
fn structural(data: &mut Vec<u8>, seed: &Seed, rng: &mut Rng) -> String {
    if data.len() < 64 {
        return "nothing (too short)".into();
    }
    let copies = 1usize << rng.below(13); // 1 .. 4096
    match rng.below(4) {
        0 => {
            // The section header table again at the end, one header repeated.
            let (shoff, shnum) = (u64_at(data, 0x28) as usize, u16_at(data, 0x3c) as usize);
            // A mutated header may put the table anywhere, even past the address space.
            let Some(table) = shoff.checked_add(shnum * 64).and_then(|end| data.get(shoff..end)).map(<[u8]>::to_vec)
            else {
                return "nothing (section headers gone)".into();
            };
            let pick = rng.below(shnum.max(1));
            let Some(one) = table.get(pick * 64..pick * 64 + 64).map(<[u8]>::to_vec) else {
                return "nothing".into();
            };
            let copies = copies.min(0xff00usize.saturating_sub(shnum));
            let at = data.len().next_multiple_of(8);
            data.resize(at, 0);
            data.extend(&table);
            data.extend(one.repeat(copies));
            data[0x28..0x30].copy_from_slice(&(at as u64).to_le_bytes());
            data[0x3c..0x3e].copy_from_slice(&((shnum + copies) as u16).to_le_bytes());
            format!("section header {pick} repeated {copies} times")
        }
        1 => {
            // The program header table again at the end, one header repeated.
            let (phoff, phnum) = (u64_at(data, 0x20) as usize, u16_at(data, 0x38) as usize);
            let Some(table) = phoff.checked_add(phnum * 56).and_then(|end| data.get(phoff..end)).map(<[u8]>::to_vec)
            else {
                return "nothing (program headers gone)".into();
            };
            let pick = rng.below(phnum.max(1));
            let Some(one) = table.get(pick * 56..pick * 56 + 56).map(<[u8]>::to_vec) else {
                return "nothing".into();
            };
            let copies = copies.min(0xfffeusize.saturating_sub(phnum));
            let at = data.len().next_multiple_of(8);
            data.resize(at, 0);
            data.extend(&table);
            data.extend(one.repeat(copies));
            data[0x20..0x28].copy_from_slice(&(at as u64).to_le_bytes());
            data[0x38..0x3a].copy_from_slice(&((phnum + copies) as u16).to_le_bytes());
            format!("program header {pick} repeated {copies} times")
        }
        2 => {
            let Some((name, at)) = seed.names.get(rng.below(seed.names.len())) else {
                return "nothing (no names)".into();
            };
            let at = at + 1 + rng.below(name.len() - 1);
            if at < data.len() {
                data[at] = b'X';
            }
            format!("rename {name} (byte {at:#x})")
        }
        _ => {
            let Some((off, len)) = seed.buildinfo.filter(|&(_, len)| len >= 64) else {
                return "nothing (no buildinfo)".into();
            };
            let v = VERSIONS[rng.below(VERSIONS.len())].as_bytes();
            let mut body = if rng.chance(8) { vec![0xff; 10] } else { vec![v.len() as u8] };
            body.extend(v);
            let end = (off + 32 + body.len()).min(off + len).min(data.len());
            if off + 32 < end {
                data[off + 32..end].copy_from_slice(&body[..end - off - 32]);
            }
            format!("buildinfo version {:?}", String::from_utf8_lossy(&body))
        }
    }
}

// ---------------------------------------------------------------------------
// Running one input
// ---------------------------------------------------------------------------

/// Everything gleak does with a binary before tracing it, on `data`.
/// Returns how far the input got: 0 refused as a binary, 1 parsed, 2 runtime facts loaded.
fn exercise(data: Vec<u8>, pcs: &[u64], buildinfo: Option<(usize, usize)>) -> u8 {
    if let Some((off, len)) = buildinfo {
        let end = off.saturating_add(len).min(data.len());
        if let Some(bytes) = data.get(off..end) {
            let _ = version_from_buildinfo(bytes);
            let _ = main_path_from_buildinfo(bytes);
        }
    }
    let Ok(bin) = GoBinary::from_bytes(data, Path::new("fuzz-input")) else {
        return 0;
    };
    let _ = bin.wait_reason_strings();
    if let Some(t) = bin.pclntab() {
        let n = t.functions().count();
        for (name, r) in t.functions().step_by((n / 64).max(1)) {
            let _ = t.function(name);
            let _ = t.frames(r.entry);
            let _ = t.frames(r.end.saturating_sub(1));
        }
    }
    for f in RUNTIME_FUNCS {
        let _ = bin.function_code(f);
    }
    for opts in [
        AttachOptions::default(),
        AttachOptions { trace_parks: true, stop_at_exit: true, ..AttachOptions::default() },
        AttachOptions { classic_sites: true, trace_parks: true, ..AttachOptions::default() },
    ] {
        let _ = gleak::tracing::placement::plan(&bin, opts);
    }
    let _ = globals::from_allgadd(&bin);
    let _ = globals::from_semacquire1(&bin);
    let _ = globals::from_mallocinit(&bin);
    let _ = globals::from_gcinit(&bin);
    if let Some(t) = bin.pclntab() {
        for &pc in pcs {
            let _ = t.sp_delta(pc);
        }
    }
    if bin.has_dwarf {
        if let Ok(d) = DwarfInfo::load(&bin) {
            let _ = d.struct_layouts(&bin, &["runtime.hchan", "runtime.sudog", "runtime.g"]);
        }
    }
    if let Ok(info) = RuntimeInfo::load(&bin) {
        for &pc in pcs {
            let _ = info.symbolizer.frames(pc);
            let _ = info.symbolizer.function_at(pc);
        }
        for r in 0..=255u8 {
            let _ = info.wait_reasons.name(r);
        }
        return 2;
    }
    1
}

enum Outcome {
    Ok {
        elapsed: Duration,
        peak: usize,
        depth: u8,
    },
    Failed {
        kind: &'static str,
        message: String,
        elapsed: Duration,
        peak: usize,
    },
    /// The worker is still running: it cannot be stopped, so the run ends.
    Hung {
        elapsed: Duration,
    },
}

/// The last panic's message and place, set by the hook installed in [`run`].
static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

fn run_one(data: Vec<u8>, seed: &Seed, label: String) -> Outcome {
    let limit = memory_limit(data.len());
    let pcs = seed.pcs.clone();
    let buildinfo = seed.buildinfo;
    *PANIC_MESSAGE.lock().unwrap() = None;
    let (tx, rx) = mpsc::channel();
    REFUSED.store(0, Ordering::Relaxed);
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let started = Instant::now();
    let worker = thread::Builder::new()
        .name(label)
        .stack_size(8 << 20)
        .spawn(move || {
            let depth = panic::catch_unwind(AssertUnwindSafe(|| exercise(data, &pcs, buildinfo))).ok();
            drop(pcs);
            let _ = tx.send(depth);
        })
        .expect("spawn a fuzz worker");
    let result = rx.recv_timeout(input_timeout());
    let elapsed = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    let refused = REFUSED.load(Ordering::Relaxed);
    match result {
        Err(mpsc::RecvTimeoutError::Timeout) => return Outcome::Hung { elapsed },
        Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let _ = worker.join();
        }
    }
    let failed = |kind, message| Outcome::Failed { kind, message, elapsed, peak };
    match result {
        Ok(Some(_)) if refused > 0 => failed("memory", format!("asked for one allocation of {refused} bytes")),
        Ok(Some(_)) if peak > limit => failed("memory", format!("peak heap {peak} bytes, limit {limit}")),
        Ok(Some(depth)) => Outcome::Ok { elapsed, peak, depth },
        _ => {
            let msg = PANIC_MESSAGE.lock().unwrap().take().unwrap_or_else(|| "(no message)".into());
            failed("panic", msg)
        }
    }
}

fn failures_dir() -> PathBuf {
    gleak_cache().join("fuzz-failures")
}

fn save_failure(name: &str, data: &[u8], note: &str) -> PathBuf {
    let dir = failures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{name}.bin"));
    if let Err(e) = std::fs::write(&path, data) {
        eprintln!("fuzz: cannot save {}: {e}", path.display());
    }
    let _ = std::fs::write(dir.join(format!("{name}.txt")), note);
    path
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    inputs: u64,
    /// Inputs that parsed as a Go binary, and that loaded its runtime facts too.
    parsed: u64,
    loaded: u64,
    failures: Vec<String>,
    slowest: (Duration, u64),
    peak: (usize, u64),
}

#[test]
fn fuzz_binary_readers() {
    let default_hook = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        // Panics outside the workers (the harness's own) print as usual.
        if !thread::current().name().is_some_and(|n| n.starts_with("fuzz-")) {
            return default_hook(info);
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = thread::current().name().unwrap_or("?").to_string();
        *PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{msg}{at} (thread {thread})"));
    }));
    let seed_value = env_u64("GLEAK_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let seconds = env_f64("GLEAK_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let max_iterations = env_u64("GLEAK_FUZZ_ITERATIONS").unwrap_or(DEFAULT_ITERATIONS);
    let only = env_u64("GLEAK_FUZZ_ONLY");

    if go_toolchains().is_empty() {
        assert!(!is_strict(), "fuzz: no Go toolchain to build seeds with (CI or cargo xtask test: not skipping)");
        eprintln!("fuzz: no Go toolchain found, nothing fuzzed");
        return;
    }
    let seeds = seeds();
    let seeds = Arc::new(seeds);
    eprintln!("fuzz: {} seeds:", seeds.len());
    // The pristine seeds first: they must pass, and they calibrate the limits.
    let mut seed_peaks = Vec::new();
    for s in seeds.iter() {
        let regions: HashMap<&str, usize> = s.regions.iter().fold(HashMap::new(), |mut m, r| {
            *m.entry(r.what.split(' ').next().unwrap_or("")).or_default() += 1;
            m
        });
        match run_one(s.data.clone(), s, "fuzz-seed".into()) {
            Outcome::Ok { elapsed, peak, .. } => {
                eprintln!(
                    "  {}: {} bytes, {} regions, {} pcs, {:.0} ms, peak heap {:.1} MiB ({:.1}× the file)",
                    s.name,
                    s.data.len(),
                    regions.values().sum::<usize>(),
                    s.pcs.len(),
                    elapsed.as_secs_f64() * 1e3,
                    peak as f64 / (1 << 20) as f64,
                    peak as f64 / s.data.len() as f64
                );
                seed_peaks.push(peak as f64 / s.data.len() as f64);
            }
            Outcome::Failed { kind, message, .. } => panic!("pristine seed {} fails ({kind}): {message}", s.name),
            Outcome::Hung { elapsed } => panic!("pristine seed {} hangs ({elapsed:?})", s.name),
        }
    }
    let max_ratio = seed_peaks.iter().cloned().fold(0.0, f64::max);
    eprintln!("fuzz: seed peaks at most {max_ratio:.1}× the file (limit: 64 MiB + 24× the input)");

    if let Some(path) = std::env::var_os("GLEAK_FUZZ_REPLAY") {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", Path::new(&path).display()));
        // The seed only supplies PCs to symbolize and the buildinfo range.
        let outcome = run_one(data, &seeds[0], "fuzz-replay".into());
        match outcome {
            Outcome::Ok { elapsed, peak, .. } => eprintln!("fuzz: replay passes ({elapsed:?}, peak {peak} bytes)"),
            Outcome::Failed { kind, message, .. } => panic!("replay fails ({kind}): {message}"),
            Outcome::Hung { elapsed } => panic!("replay hangs ({elapsed:?})"),
        }
        return;
    }

    eprintln!(
        "fuzz: seed {seed_value:#x}, up to {max_iterations} inputs or {seconds} s; replay one with \
         GLEAK_FUZZ_SEED={seed_value:#x} GLEAK_FUZZ_ONLY=<iteration>"
    );
    CURRENT_SEED.store(seed_value, Ordering::Relaxed);
    let started = Instant::now();
    let mut stats = Stats::default();
    let range = match only {
        Some(i) => i..i + 1,
        None => 0..max_iterations,
    };
    let mut hung = false;
    for iter in range {
        if only.is_none() && started.elapsed().as_secs_f64() >= seconds {
            break;
        }
        let mut rng = Rng::new(seed_value ^ iter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let seed = &seeds[rng.below(seeds.len())];
        let mut data = seed.data.clone();
        let mutations = mutate(&mut data, seed, &seeds, &mut rng);
        CURRENT_ITER.store(iter, Ordering::Relaxed);
        let keep = data.clone();
        let outcome = run_one(data, seed, format!("fuzz-{seed_value:x}-{iter}"));
        stats.inputs += 1;
        let (kind, message, elapsed, peak) = match outcome {
            Outcome::Ok { elapsed, peak, depth } => {
                stats.parsed += u64::from(depth >= 1);
                stats.loaded += u64::from(depth >= 2);
                if elapsed > stats.slowest.0 {
                    stats.slowest = (elapsed, iter);
                }
                if peak > stats.peak.0 {
                    stats.peak = (peak, iter);
                }
                continue;
            }
            Outcome::Failed { kind, message, elapsed, peak } => (kind, message, elapsed, peak),
            Outcome::Hung { elapsed } => {
                hung = true;
                ("hang", format!("no result after {elapsed:?}"), elapsed, 0)
            }
        };
        let name = format!("{seed_value:x}-{iter}-{kind}");
        let note = format!(
            "seed {seed_value:#x} iteration {iter}: {kind}: {message}\nseed binary: {}\nelapsed {elapsed:?}, \
             peak heap {peak} bytes\nmutations:\n  {}\n",
            seed.name,
            mutations.join("\n  ")
        );
        let path = save_failure(&name, &keep, &note);
        eprintln!("fuzz: FAILURE {note}  saved as {}", path.display());
        stats.failures.push(format!("iteration {iter}: {kind}: {message}"));
        if hung {
            eprintln!("fuzz: a worker hangs and cannot be stopped: ending the run");
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz summary: {} inputs in {secs:.1} s ({:.1} inputs/s), {} failures; seed {seed_value:#x}; \
         {} parsed, {} loaded runtime facts; slowest input {:.0} ms (iteration {}), largest peak heap \
         {:.1} MiB (iteration {})",
        stats.inputs,
        stats.inputs as f64 / secs.max(1e-9),
        stats.failures.len(),
        stats.parsed,
        stats.loaded,
        stats.slowest.0.as_secs_f64() * 1e3,
        stats.slowest.1,
        stats.peak.0 as f64 / (1 << 20) as f64,
        stats.peak.1
    );
    assert!(
        stats.failures.is_empty(),
        "{} fuzz failure(s), inputs saved under {}:\n{}",
        stats.failures.len(),
        failures_dir().display(),
        stats.failures.join("\n")
    );
}
