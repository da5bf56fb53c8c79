//! What gleak knows about the Go runtime of each release, as data.
//!
//! With DWARF, gleak reads `runtime.g`/`runtime.m` offsets and wait-reason names
//! from the binary itself. Stripped binaries (`-ldflags=-s -w`) have neither, so
//! the same facts are kept here, one entry per family of Go releases with the same
//! facts (as Delve's `pkg/proc` does). Offsets are identical on amd64 and arm64
//! (both 64-bit; checked for 1.19–1.27 in the project's reference notes).
//!
//! The entries are JSON files in `gotables/`, embedded in the binary (`index.rs`
//! lists them) and parsed once, on first use. They are generated: `cargo xtask
//! gotables` builds a small program with every Go toolchain on the machine, reads
//! the facts from its DWARF and `runtime.waitReasonStrings` ([`from_dwarf`]) and
//! writes one file per family; `tests/tests/gotables.rs` reads them again and fails
//! when a committed file differs. Go 1.20 has no toolchain on the build machine: its
//! file is kept by hand (its `origin` says where it comes from) and the generator
//! leaves it alone.
//!
//! What moved between families (the why behind the numbers):
//! - 1.20: `moduledata.covctrs`/`ecovctrs` moved `gofunc` +0x10; `g.goid` became a
//!   `uint64` and `g.atomicstatus` an `atomic.Uint32` (same offsets); wait reasons
//!   `sync.Mutex.Lock`… inserted, `timer goroutine (idle)` gone, `GC worker (active)`,
//!   `GC mark termination` and `stopping the world` added.
//! - 1.21: `g.parentGoid`; trace fields moved into `g.trace` at the end (`gopc`,
//!   `startpc`, `waiting` −0x10); user arena fields moved `mspan`'s tail and `mheap` +8.
//! - 1.22: `g.coroarg` (size only); `mspan.freeindex`/`nelems` became `uint16`;
//!   `sudog.waiters` took padding; wait reasons up to `coroutine`.
//! - 1.23: `g.syscallbp` moved everything from `atomicstatus` +8; `hchan.timer`
//!   moved the queues +8; `GC weak to strong wait` appended.
//! - 1.24: `g.fipsIndicator`/`syncGroup` (size only); `special.offset` widened to a
//!   `uintptr`; `sync.WaitGroup.Wait` inserted and synctest reasons appended.
//! - 1.25: `gobuf.ret` removed, so `g` after `sched` and `m` after `morebuf` −8;
//!   GOMAXPROCS updater inserted, synctest reasons renamed `(durable)`, `cleanup wait`
//!   appended.
//! - 1.26: `g.fipsOnlyBypass`/`ditWanted`/`secret` moved `parentGoid` onwards +8;
//!   `sudog.elem`/`c` became 16-byte `maybeTraceablePtr`s (offsets are of their `vu`
//!   word); wait reasons reordered so those a leaked goroutine can block in are
//!   contiguous; `_Gleaked` and `_Gdeadextra`.
//! - 1.27: `moduledata.typedesclen`/`itaboffset`/`itabsize` moved `gofunc`.

use std::ops::RangeInclusive;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::runtime::layout::{
    gstatus, BlockedLayout, GobufOffsets, HchanOffsets, HeapLayout, RuntimeLayout, SudogOffsets, WaitqOffsets,
};

pub mod from_dwarf;
mod index;

pub use index::{NEWEST_KNOWN_MINOR, OLDEST_KNOWN_MINOR};

/// What gleak knows about one family of Go releases (a contiguous range of minor
/// versions with the same facts): one data file, fields in the file's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFacts {
    /// Go 1.x for every x in this range; in the file, every release by name
    /// (`["1.26", "1.27"]`). Today each family is a single release: every two
    /// neighbours differ in some offset, size or wait reason.
    #[serde(rename = "releases", with = "release_names")]
    pub minors: RangeInclusive<u32>,
    pub origin: Origin,
    pub g: GOffsets,
    pub m: MOffsets,
    pub gobuf: GobufOffsets,
    pub sudog: SudogOffsets,
    pub hchan: HchanOffsets,
    pub waitq: WaitqOffsets,
    pub moduledata: ModuledataOffsets,
    /// The heap's span metadata (see [`HeapLayout`]); `None` where only the source was read.
    pub heap: Option<HeapLayout>,
    /// Package testing's `T`, to name the test a goroutine descends from; `None`
    /// where only the source was read and it did not settle the layout.
    pub testing: Option<TestingOffsets>,
    /// `runtime.gcControllerState`, to read GOMEMLIMIT as the runtime holds it;
    /// `None` where only the source was read.
    pub gc_controller: Option<GcControllerOffsets>,
    /// `g.atomicstatus` values (without the `_Gscan` bit) of a g that is not a goroutine:
    /// `_Gdead`, and from 1.26 `_Gdeadextra` (extra-M gs parked for cgo callbacks).
    pub dead_statuses: Vec<u32>,
    /// `_Gleaked` (1.26+): a goroutine the GC's leak detector found unreachable-blocked.
    pub leaked_status: Option<u32>,
    /// `runtime.waitReasonStrings`, indexed by waitReason value (exactly the strings Go prints).
    pub wait_reasons: Vec<String>,
}

/// Where an entry's facts come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Origin {
    /// Read by `cargo xtask gotables` from binaries these toolchains built (`go1.26.6`).
    GeneratedFrom(Vec<String>),
    /// Written by hand, for a release without a toolchain on the build machine: where
    /// the facts were read. The generator leaves such a file alone.
    HandKept(String),
}

/// `runtime.g`. `stack_lo`/`stack_hi` are `g.stack.lo`/`g.stack.hi`; `atomicstatus`
/// is the `uint32` itself (an `atomic.Uint32` from 1.20, whose value is at +0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GOffsets {
    /// `sizeof(runtime.g)`.
    pub size: u32,
    pub stack_lo: u32,
    pub stack_hi: u32,
    pub m: u32,
    /// The `gobuf` of a descheduled goroutine (see [`GobufOffsets`]).
    pub sched: u32,
    pub atomicstatus: u32,
    /// `int64` in 1.19, `uint64` from 1.20: read 8 bytes either way.
    pub goid: u32,
    pub waitsince: u32,
    /// `uint8`.
    pub waitreason: u32,
    /// `parentGoid`, Go 1.21+.
    pub parent_goid: Option<u32>,
    pub gopc: u32,
    pub startpc: u32,
    /// `*sudog`: the channel operation(s) a goroutine blocked in chan send/receive/select waits on.
    pub waiting: u32,
}

/// `testing.T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestingOffsets {
    /// `T.common.name`: the test's full name (`TestX/sub`), a Go string.
    pub name: u32,
}

/// `runtime.gcControllerState` (the global `runtime.gcController`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcControllerOffsets {
    /// `memoryLimit`, an `atomic.Int64`: the offset of its word.
    pub memory_limit: u32,
}

/// `runtime.m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MOffsets {
    pub curg: u32,
    /// The Linux thread id.
    pub procid: u32,
}

/// `runtime.moduledata` (`runtime.firstmoduledata`): where pclntab and the sections are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuledataOffsets {
    /// `*pcHeader`.
    pub pc_header: u32,
    /// `[]functab` slice header.
    pub ftab: u32,
    pub minpc: u32,
    pub text: u32,
    pub etext: u32,
    pub noptrdata: u32,
    pub data: u32,
    /// Base of `funcdata` offsets (inline trees).
    pub gofunc: u32,
}

impl ReleaseFacts {
    /// The subset the probes and the snapshot reader use, as the DWARF backend gives it.
    pub fn runtime_layout(&self) -> RuntimeLayout {
        RuntimeLayout {
            g_stack_lo: self.g.stack_lo,
            g_stack_hi: self.g.stack_hi,
            g_m: self.g.m,
            g_status: self.g.atomicstatus,
            g_goid: self.g.goid,
            g_waitsince: self.g.waitsince,
            g_waitreason: self.g.waitreason,
            g_parent_goid: self.g.parent_goid,
            g_gopc: self.g.gopc,
            g_startpc: self.g.startpc,
            m_curg: self.m.curg,
            m_procid: Some(self.m.procid),
            blocked: Some(self.blocked_layout()),
            heap: self.heap,
            test_name: self.testing.map(|t| t.name),
            gc_memory_limit: self.gc_controller.map(|c| c.memory_limit),
        }
    }

    /// Where blocked goroutines are stuck and on what.
    pub fn blocked_layout(&self) -> BlockedLayout {
        // No overflow: parsing checked that the gobuf lies inside the g.
        BlockedLayout {
            g_sched_sp: self.g.sched + self.gobuf.sp,
            g_sched_pc: self.g.sched + self.gobuf.pc,
            g_sched_bp: self.g.sched + self.gobuf.bp,
            g_sched_ctxt: self.g.sched + self.gobuf.ctxt,
            g_waiting: self.g.waiting,
            sudog: self.sudog,
            hchan: self.hchan,
            waitq: self.waitq,
        }
    }

    /// Whether `status` (with or without the `_Gscan` bit) marks a g that is no goroutine.
    pub fn is_dead(&self, status: u32) -> bool {
        self.dead_statuses.contains(&(status & !gstatus::SCAN))
    }

    /// The data file this entry is written to: `go1.26.json`, or `go1.26-1.27.json`
    /// for a family of several releases.
    pub fn file_name(&self) -> String {
        let (first, last) = (self.minors.start(), self.minors.end());
        if first == last {
            format!("go1.{first}.json")
        } else {
            format!("go1.{first}-1.{last}.json")
        }
    }

    /// The entry as its data file holds it: the one text the generator writes, so a
    /// file that did not change does not show in a diff.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("release facts serialize (plain data)");
        text.push('\n');
        text
    }

    /// One line per fact that differs between `self` and `other` (`g.goid: 152 →
    /// 160`, `wait_reasons[19]: "chan receive" → "chan send"`), leaving out which
    /// releases they cover and where they come from: empty when the facts are the same.
    pub fn differences(&self, other: &ReleaseFacts) -> Vec<String> {
        let facts = |entry: &ReleaseFacts| {
            let mut value = serde_json::to_value(entry).expect("release facts serialize (plain data)");
            if let Some(fields) = value.as_object_mut() {
                fields.remove("releases");
                fields.remove("origin");
            }
            value
        };
        let mut lines = Vec::new();
        diff_values("", &facts(self), &facts(other), &mut lines);
        lines
    }

    /// Checks what readers of the target's memory rely on: every offset lies far
    /// below `u32::MAX` (so adding one to a struct's address, or two together, cannot
    /// overflow), every `g` field and the `gobuf` in `g.sched` end inside the `g`,
    /// field widths are ones gleak reads, and a wait reason fits its `uint8`.
    fn check(&self) -> Result<(), String> {
        let value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        for (section, fields) in value.as_object().into_iter().flatten() {
            for (field, offset) in fields.as_object().into_iter().flatten() {
                if offset.as_u64().is_some_and(|offset| offset > u64::from(MAX_OFFSET)) {
                    return Err(format!("{section}.{field} = {offset}: beyond any runtime struct ({MAX_OFFSET})"));
                }
            }
        }
        let g = &self.g;
        let word_fits_g = |what: &str, offset: Option<u32>| match offset.and_then(|o| o.checked_add(8)) {
            Some(end) if end <= g.size => Ok(()),
            _ => Err(format!("{what} ({offset:?}) does not fit in the {}-byte g", g.size)),
        };
        let g_fields = [
            ("g.stack_lo", g.stack_lo),
            ("g.stack_hi", g.stack_hi),
            ("g.m", g.m),
            ("g.atomicstatus", g.atomicstatus),
            ("g.goid", g.goid),
            ("g.waitsince", g.waitsince),
            ("g.waitreason", g.waitreason),
            ("g.gopc", g.gopc),
            ("g.startpc", g.startpc),
            ("g.waiting", g.waiting),
        ];
        for (what, offset) in g_fields {
            word_fits_g(what, Some(offset))?;
        }
        if let Some(parent_goid) = g.parent_goid {
            word_fits_g("g.parent_goid", Some(parent_goid))?;
        }
        let gobuf = &self.gobuf;
        for (what, offset) in
            [("g.sched.sp", gobuf.sp), ("g.sched.pc", gobuf.pc), ("g.sched.ctxt", gobuf.ctxt), ("g.sched.bp", gobuf.bp)]
        {
            word_fits_g(what, g.sched.checked_add(offset))?;
        }
        if let Some(heap) = &self.heap {
            for (what, width) in [
                ("heap.mspan_freeindex_bytes", heap.mspan_freeindex_bytes),
                ("heap.special_offset_bytes", heap.special_offset_bytes),
            ] {
                if !matches!(width, 2 | 8) {
                    return Err(format!("{what} = {width}: gleak reads 2- or 8-byte fields"));
                }
            }
            if heap.g_size != g.size {
                return Err(format!("heap.g_size = {} but g.size = {}", heap.g_size, g.size));
            }
            word_fits_g("heap.g_syscallsp", Some(heap.g_syscallsp))?;
        }
        if self.wait_reasons.len() > usize::from(u8::MAX) + 1 {
            return Err(format!("{} wait reasons: a waitReason is a uint8", self.wait_reasons.len()));
        }
        if self.dead_statuses.is_empty() {
            return Err("no dead statuses".into());
        }
        Ok(())
    }
}

/// Far beyond any offset in a runtime struct (the largest gleak reads into,
/// `runtime.mheap`, is about 65 KiB), far below `u32::MAX`.
const MAX_OFFSET: u32 = 1 << 20;

/// Appends to `lines` where `old` and `new` differ, naming each field by its path.
fn diff_values(path: &str, old: &serde_json::Value, new: &serde_json::Value, lines: &mut Vec<String>) {
    use serde_json::Value;
    let child = |name: &str| if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
    match (old, new) {
        // A section on one side only (`heap: null`) is compared field by field too.
        (Value::Object(_), _) | (_, Value::Object(_)) => {
            let no_fields = serde_json::Map::new();
            let (old, new) = (old.as_object().unwrap_or(&no_fields), new.as_object().unwrap_or(&no_fields));
            for name in old.keys().chain(new.keys().filter(|name| !old.contains_key(*name))) {
                let field = |fields: &serde_json::Map<String, Value>| fields.get(name).cloned().unwrap_or_default();
                diff_values(&child(name), &field(old), &field(new), lines);
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            for index in 0..old.len().max(new.len()) {
                let (old_item, new_item) = (old.get(index), new.get(index));
                if old_item != new_item {
                    let show = |item: Option<&Value>| item.map_or_else(|| "(none)".to_string(), Value::to_string);
                    lines.push(format!("{path}[{index}]: {} → {}", show(old_item), show(new_item)));
                }
            }
        }
        _ if old != new => lines.push(format!("{path}: {old} → {new}")),
        _ => {}
    }
}

/// `releases` in a data file: each release by name, consecutive, oldest first.
mod release_names {
    use std::ops::RangeInclusive;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(minors: &RangeInclusive<u32>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(minors.clone().map(|minor| format!("1.{minor}")))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RangeInclusive<u32>, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        let minors = names
            .iter()
            .map(|name| {
                name.strip_prefix("1.")
                    .and_then(|minor| minor.parse::<u32>().ok())
                    .ok_or_else(|| D::Error::custom(format!("release {name:?} is not 1.N")))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let (Some(&first), Some(&last)) = (minors.first(), minors.last()) else {
            return Err(D::Error::custom("no releases"));
        };
        if !minors.windows(2).all(|pair| pair[0].checked_add(1) == Some(pair[1])) {
            return Err(D::Error::custom(format!("releases {names:?} are not consecutive, oldest first")));
        }
        Ok(first..=last)
    }
}

/// Parses the data file `file_name` and checks it (see [`ReleaseFacts::check`]):
/// an error, never a panic, names the file and what is wrong.
pub fn parse(file_name: &str, text: &str) -> Result<ReleaseFacts, String> {
    let parse_and_check = || {
        let facts: ReleaseFacts = serde_json::from_str(text).map_err(|e| e.to_string())?;
        facts.check()?;
        if facts.file_name() != file_name {
            return Err(format!("its releases belong in {}", facts.file_name()));
        }
        Ok(facts)
    };
    parse_and_check().map_err(|e| format!("{file_name}: {e}"))
}

/// Parses every data file (`(name, text)`) into one table, oldest family first,
/// and checks that the families follow each other without gaps or overlaps.
pub fn load(files: &[(&str, &str)]) -> Result<Vec<ReleaseFacts>, String> {
    let mut table = files.iter().map(|(name, text)| parse(name, text)).collect::<Result<Vec<_>, _>>()?;
    table.sort_by_key(|facts| *facts.minors.start());
    for pair in table.windows(2) {
        if pair[0].minors.end().checked_add(1) != Some(*pair[1].minors.start()) {
            return Err(format!("{} and {} leave a gap or overlap", pair[0].file_name(), pair[1].file_name()));
        }
    }
    Ok(table)
}

/// The embedded table, parsed on first use. Malformed data is a build bug that the
/// unit tests catch; should it ship anyway, gleak logs it and works as if it had no
/// table (binaries with DWARF are still traced) rather than panic.
fn table() -> &'static [ReleaseFacts] {
    static TABLE: OnceLock<Vec<ReleaseFacts>> = OnceLock::new();
    TABLE.get_or_init(|| {
        load(index::FILES).unwrap_or_else(|e| {
            log::error!("gleak's built-in Go release table is malformed ({e}): a bug, please report it");
            Vec::new()
        })
    })
}

/// The facts for Go 1.`minor`, or None if gleak does not know that release (older
/// than 1.19 or newer than the newest entry: a new release may move anything).
pub fn for_release(minor: u32) -> Option<&'static ReleaseFacts> {
    table().iter().find(|facts| facts.minors.contains(&minor))
}

/// The `_Gdead`-like statuses of Go 1.`minor`. Unlike offsets these are stable
/// (`_Gdead` = 6 since Go 1.0), so releases outside the table get their nearest
/// neighbour's: older ones `_Gdead` only, newer ones the newest entry's.
pub fn dead_statuses(minor: u32) -> &'static [u32] {
    match for_release(minor.clamp(OLDEST_KNOWN_MINOR, NEWEST_KNOWN_MINOR)) {
        Some(facts) => &facts.dead_statuses,
        None => &[gstatus::DEAD],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(facts: &ReleaseFacts) -> String {
        let (first, last) = (facts.minors.start(), facts.minors.end());
        if first == last {
            format!("Go 1.{first}")
        } else {
            format!("Go 1.{first}–1.{last}")
        }
    }

    fn embedded() -> Vec<ReleaseFacts> {
        load(index::FILES).unwrap_or_else(|e| panic!("the embedded release table: {e}"))
    }

    /// The creation probe reads one span from `g.goid`: every release's fields fit.
    #[test]
    fn creation_fields_fit_the_probe_span() {
        for facts in &embedded() {
            assert!(facts.runtime_layout().fits_create_span(), "Go 1.{:?}", facts.minors);
        }
    }

    #[test]
    fn families_cover_the_known_releases_without_gaps_or_overlaps() {
        let table = embedded();
        assert_eq!(table.len(), index::FILES.len());
        assert_eq!(table.first().map(|f| *f.minors.start()), Some(OLDEST_KNOWN_MINOR));
        assert_eq!(table.last().map(|f| *f.minors.end()), Some(NEWEST_KNOWN_MINOR), "index.rs's NEWEST_KNOWN_MINOR");
        assert_eq!(OLDEST_KNOWN_MINOR, 19);
        for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
            let facts = for_release(minor).unwrap_or_else(|| panic!("no entry for 1.{minor}"));
            assert!(facts.minors.contains(&minor));
        }
    }

    /// A data file added by hand but not to the index would be silently ignored.
    #[test]
    fn every_data_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime/gotables");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = index::FILES.iter().map(|(name, _)| name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "run `cargo xtask gotables` to rewrite index.rs");
    }

    /// Each file is exactly the text the generator writes, hand-kept ones too, so
    /// that regenerating shows only real changes.
    #[test]
    fn files_are_in_the_generators_form() {
        for (name, text) in index::FILES {
            let facts = parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(facts.to_json(), *text, "{name} is not in the form `cargo xtask gotables` writes");
        }
    }

    #[test]
    fn only_go_1_20_is_hand_kept() {
        for facts in &embedded() {
            let hand_kept = matches!(facts.origin, Origin::HandKept(_));
            assert_eq!(hand_kept, facts.minors == (20..=20), "{}: {:?}", label(facts), facts.origin);
        }
    }

    #[test]
    fn unknown_releases() {
        assert!(for_release(18).is_none());
        assert!(for_release(0).is_none());
        assert!(for_release(NEWEST_KNOWN_MINOR + 1).is_none());
        assert_eq!(dead_statuses(18), [gstatus::DEAD]);
        assert_eq!(dead_statuses(NEWEST_KNOWN_MINOR + 1), [gstatus::DEAD, gstatus::DEAD_EXTRA]);
    }

    /// Catches typos, above all in the 1.20 entry no binary checks: fields are in
    /// struct order and fit in the struct.
    #[test]
    fn offsets_are_in_field_order() {
        for facts in &embedded() {
            let g = &facts.g;
            let mut order =
                vec![g.stack_lo, g.stack_hi, g.m, g.sched, g.atomicstatus, g.goid, g.waitsince, g.waitreason];
            order.extend(g.parent_goid);
            order.extend([g.gopc, g.startpc, g.waiting, g.size]);
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{}: g offsets out of order: {order:x?}", label(facts));
            assert!(g.sched + facts.gobuf.bp < g.atomicstatus, "{}: gobuf does not fit", label(facts));
            let s = &facts.sudog;
            assert!(
                s.g < s.next && s.next < s.elem && s.elem < s.isselect && s.isselect < s.waitlink && s.waitlink < s.c
            );
            let h = &facts.hchan;
            assert!(h.qcount < h.dataqsiz && h.dataqsiz < h.elemsize && h.elemsize < h.closed && h.closed < h.recvq);
            assert_eq!(h.sendq, h.recvq + 16, "{}: a waitq is two pointers", label(facts));
            let md = &facts.moduledata;
            assert!(md.pc_header < md.ftab && md.ftab < md.minpc && md.minpc < md.text && md.text < md.etext);
            assert!(md.etext < md.noptrdata && md.noptrdata < md.data && md.data < md.gofunc);
        }
    }

    #[test]
    fn wait_reasons_look_like_go_s() {
        for facts in &embedded() {
            let reasons = &facts.wait_reasons;
            assert_eq!(reasons.first().map(String::as_str), Some(""), "waitReasonZero prints nothing");
            assert!(reasons[1..].iter().all(|r| !r.is_empty()));
            for wanted in ["chan send", "chan receive", "select", "semacquire", "sleep", "sync.Cond.Wait"] {
                assert!(reasons.iter().any(|r| r == wanted), "{} lacks {wanted:?}", label(facts));
            }
            let mut sorted = reasons.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), reasons.len(), "{}: duplicate wait reason", label(facts));
        }
        // Values the reference notes checked by disassembly of gopark call sites.
        let reason = |minor: u32, value: usize| for_release(minor).map(|f| f.wait_reasons[value].as_str());
        assert_eq!(reason(19, 14), Some("chan receive"));
        assert_eq!(reason(27, 15), Some("chan receive (nil chan)"));
        assert_eq!(reason(27, 19), Some("chan receive"));
        assert_eq!(reason(24, 41), Some("chan receive (synctest)"));
        assert_eq!(reason(25, 42), Some("chan receive (durable)"));
    }

    /// Consistent with `layout::gstatus`, which names the statuses for the report.
    #[test]
    fn statuses_match_layout_gstatus() {
        for facts in &embedded() {
            assert!(facts.dead_statuses.contains(&gstatus::DEAD));
            assert!(facts.dead_statuses.iter().all(|&s| gstatus::name(s) == "dead"));
            assert!(facts.is_dead(gstatus::DEAD | gstatus::SCAN));
            assert!(!facts.is_dead(gstatus::WAITING));
            let new_statuses = *facts.minors.start() >= 26;
            assert_eq!(facts.dead_statuses.contains(&gstatus::DEAD_EXTRA), new_statuses);
            assert_eq!(facts.leaked_status, new_statuses.then_some(gstatus::LEAKED));
            if let Some(leaked) = facts.leaked_status {
                assert_eq!(gstatus::name(leaked), "leaked");
            }
        }
        assert_eq!(dead_statuses(25), [gstatus::DEAD]);
        assert_eq!(dead_statuses(26), [gstatus::DEAD, gstatus::DEAD_EXTRA]);
    }

    #[test]
    fn runtime_layout_is_the_g_and_m_facts() {
        let facts = for_release(23).expect("1.23 is known");
        let layout = facts.runtime_layout();
        assert_eq!((layout.g_goid, layout.g_status, layout.g_waitreason, layout.m_curg), (0xa0, 0x98, 0xb8, 0xc0));
        assert_eq!(layout.g_parent_goid, Some(0x118));
        assert_eq!(for_release(19).and_then(|f| f.runtime_layout().g_parent_goid), None);
    }

    #[test]
    fn differences_name_the_field() {
        let old = for_release(26).expect("1.26 is known").clone();
        assert!(old.differences(&old).is_empty());
        let mut new = old.clone();
        new.minors = 27..=27;
        new.origin = Origin::GeneratedFrom(vec!["go1.27.3".into()]);
        assert!(old.differences(&new).is_empty(), "releases and origin are not facts");
        new.g.goid += 8;
        new.heap = None;
        new.wait_reasons[19] = "chan send".into();
        new.wait_reasons.push("new reason".into());
        let lines = old.differences(&new);
        assert!(lines.contains(&format!("g.goid: {} → {}", old.g.goid, new.g.goid)), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("heap.mspan_start: ") && l.ends_with(" → null")), "{lines:?}");
        assert!(lines.contains(&r#"wait_reasons[19]: "chan receive" → "chan send""#.to_string()), "{lines:?}");
        assert!(lines.contains(&r#"wait_reasons[47]: (none) → "new reason""#.to_string()), "{lines:?}");
    }

    /// Malformed data is an error naming the file and the fault, never a panic.
    #[test]
    fn malformed_files_are_errors() {
        let good = for_release(26).expect("1.26 is known").to_json();
        let edit = |from: &str, to: &str| {
            assert!(good.contains(from), "{from:?} not in the 1.26 file");
            good.replacen(from, to, 1)
        };
        let bad = [
            ("not json", "{".to_string(), "EOF"),
            ("truncated", good[..good.len() / 2].to_string(), "EOF"),
            ("unknown field", edit("\"procid\"", "\"pid\": 1, \"procid\""), "unknown field `pid`"),
            ("missing field", edit("\"curg\": 184,", ""), "missing field `curg`"),
            ("negative offset", edit("\"curg\": 184", "\"curg\": -1"), "invalid value"),
            ("offset past u32", edit("\"curg\": 184", "\"curg\": 4294967296"), "invalid value"),
            ("huge offset", edit("\"curg\": 184", "\"curg\": 4294967295"), "beyond any runtime struct"),
            ("g field outside g", edit("\"size\": 456", "\"size\": 64"), "does not fit"),
            ("gobuf outside g", edit("\"sched\": 56", "\"sched\": 452"), "g.sched"),
            ("odd width", edit("\"special_offset_bytes\": 8", "\"special_offset_bytes\": 3"), "2- or 8-byte"),
            ("release name", edit("\"1.26\"", "\"go1.26\""), "is not 1.N"),
            ("no releases", edit("\"1.26\"", ""), "no releases"),
            ("other file's release", edit("\"1.26\"", "\"1.25\""), "belong in go1.25.json"),
            ("no dead status", edit("\"dead_statuses\": [\n    6,\n    11\n  ]", "\"dead_statuses\": []"), "dead"),
            ("origin", edit("generated_from", "generated"), "unknown variant"),
        ];
        for (what, text, expected) in bad {
            match parse("go1.26.json", &text) {
                Ok(_) => panic!("{what}: parsed"),
                Err(e) => assert!(e.starts_with("go1.26.json: ") && e.contains(expected), "{what}: {e}"),
            }
        }
        let many_reasons = format!("\"wait_reasons\": [{}\"\",", "\"x\",".repeat(256));
        let e = parse("go1.26.json", &edit("\"wait_reasons\": [", &many_reasons)).expect_err("257 reasons");
        assert!(e.contains("a waitReason is a uint8"), "{e}");
        let gap = [("go1.19.json", index::FILES[0].1), ("go1.26.json", good.as_str())];
        assert!(load(&gap).expect_err("gap").contains("gap or overlap"));
        let twice = [("go1.26.json", good.as_str()), ("go1.26.json", good.as_str())];
        assert!(load(&twice).expect_err("overlap").contains("gap or overlap"));
    }
}
