//! One interface over the ways of learning a binary's runtime, chosen per fact:
//! DWARF and ELF symbols where the binary has them, else `.gopclntab`, the machine
//! code and gleak's per-release tables ([`crate::runtime::gotables`]). A binary with
//! symbols but no DWARF (the Go toolchain's own) uses its symbols for addresses
//! and the tables for struct offsets; a stripped one uses `.gopclntab` for both
//! addresses and lines.

use std::sync::Arc;

use crate::{
    binary::symbolize::{Frame, Symbolizer},
    binary::{
        dwarf::DwarfInfo,
        globals::{self, FoundBy, GoroutineTable},
        GoBinary,
    },
    error::{Error, Result},
    runtime::gotables,
    runtime::layout::RuntimeLayout,
    runtime::waitreason::WaitReasons,
};

pub struct RuntimeInfo {
    pub layout: RuntimeLayout,
    pub wait_reasons: WaitReasons,
    pub symbolizer: Box<dyn Symbolizer + Send>,
    /// Where `runtime.allgs`/`allglen` are, or why that is unknown.
    pub goroutine_table: std::result::Result<GoroutineTable, String>,
    /// Where `runtime.semtable` is (link address), or why that is unknown: where
    /// goroutines blocked on a mutex or WaitGroup are found before Go 1.26.
    pub semtable: std::result::Result<u64, String>,
    /// Where `runtime.mheap_` is (link address), or why that is unknown.
    pub mheap: std::result::Result<u64, String>,
    /// Where GOMEMLIMIT as the runtime holds it is (link address of
    /// `runtime.gcController.memoryLimit`), or why that is unknown.
    pub go_memory_limit: std::result::Result<u64, String>,
    /// Which backend gave each fact, for the banner and the JSON report.
    pub sources: FactSources,
    /// Facts no backend had, in words for the report.
    pub gaps: Vec<String>,
}

/// Where each fact came from, in words (`"DWARF"`, `".gopclntab"`, `"Go 1.26 table"`…).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct FactSources {
    pub functions: String,
    pub layout: String,
    pub wait_reasons: String,
    pub lines: String,
    pub goroutine_table: String,
    pub semaphore_table: String,
    pub heap: String,
    /// Where `runtime.gcController.memoryLimit` (GOMEMLIMIT) was found.
    pub memory_limit: String,
}

impl std::fmt::Display for FactSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "functions from {}, offsets from {}, wait reasons from {}, lines from {}, goroutine table {}",
            self.functions, self.layout, self.wait_reasons, self.lines, self.goroutine_table
        )
    }
}

impl RuntimeInfo {
    pub fn load(binary: &GoBinary) -> Result<Self> {
        let release = gotables::for_release(binary.go_version.minor);
        let table_name = format!("gleak's Go 1.{} table", binary.go_version.minor);
        let dwarf = if binary.has_dwarf {
            match DwarfInfo::load(binary) {
                Ok(d) => Some(d),
                Err(e) => {
                    log::warn!(
                        "{}: unreadable DWARF ({e}); using .gopclntab and gleak's tables",
                        binary.path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let mut sources = FactSources::default();
        let mut gaps = Vec::new();

        // Struct offsets: DWARF, else the release's table.
        let dwarf_layout = dwarf.as_ref().and_then(|d| match d.runtime_layout(binary) {
            Ok(found) => Some(found),
            Err(e) => {
                log::warn!("{e}; using gleak's tables");
                None
            }
        });
        let (mut layout, wait_consts) = match (dwarf_layout, release) {
            (Some((layout, consts)), _) => {
                sources.layout = "DWARF".into();
                (layout, consts)
            }
            (None, Some(facts)) => {
                sources.layout = table_name.clone();
                (facts.runtime_layout(), Default::default())
            }
            (None, None) => {
                return Err(Error::UnknownRelease {
                    path: binary.path.clone(),
                    version: binary.go_version.raw.clone(),
                    newest: gotables::NEWEST_KNOWN_MINOR,
                })
            }
        };

        // Blocked goroutines' structures (sched, sudog, hchan): DWARF, else the table.
        if layout.blocked.is_none() {
            layout.blocked = release.map(|facts| facts.blocked_layout());
        }
        if layout.heap.is_none() {
            layout.heap = release.and_then(|facts| facts.heap);
        }
        // Package testing's layout: in DWARF only where the program links it.
        if layout.test_name.is_none() {
            layout.test_name = release.and_then(|facts| facts.testing).map(|t| t.name);
        }
        if layout.gc_memory_limit.is_none() {
            layout.gc_memory_limit = release.and_then(|facts| facts.gc_controller).map(|c| c.memory_limit);
        }
        if layout.blocked.is_none() {
            gaps.push(format!(
                "where blocked goroutines are stuck is not shown: neither DWARF nor gleak's tables (Go 1.{}–1.{}) \
                 describe this release's runtime.gobuf/sudog/hchan",
                gotables::OLDEST_KNOWN_MINOR,
                gotables::NEWEST_KNOWN_MINOR
            ));
        }

        // Wait-reason names: the binary's own strings, else DWARF constants, else the table.
        let wait_reasons = match binary.wait_reason_strings() {
            Some(names) if !names.is_empty() => {
                sources.wait_reasons = "runtime.waitReasonStrings".into();
                WaitReasons::from_strings(names)
            }
            _ if !wait_consts.is_empty() => {
                sources.wait_reasons = "DWARF constants".into();
                WaitReasons::from_constants(&wait_consts, binary.go_version.minor)
            }
            _ => match release {
                Some(facts) => {
                    sources.wait_reasons = table_name.clone();
                    WaitReasons::from_strings(facts.wait_reasons.clone())
                }
                None => {
                    sources.wait_reasons = "nowhere (numbers only)".into();
                    gaps.push("wait reasons are shown as numbers: no names in the binary or gleak's tables".into());
                    WaitReasons::default()
                }
            },
        };

        // Lines: DWARF, else .gopclntab.
        let dwarf_symbolizer = dwarf.as_ref().and_then(|d| d.symbolizer(binary).ok());
        let symbolizer: Box<dyn Symbolizer + Send> = match (dwarf_symbolizer, binary.pclntab()) {
            (Some(s), _) => {
                sources.lines = "DWARF".into();
                Box::new(s)
            }
            (None, Some(table)) => {
                sources.lines = ".gopclntab".into();
                Box::new(SharedPclntab(table.clone()))
            }
            (None, None) => {
                sources.lines = "nowhere (addresses only)".into();
                let why = binary.pclntab_problem.as_deref().unwrap_or("unreadable");
                gaps.push(format!("source lines are not known: no DWARF, and .gopclntab: {why}"));
                Box::new(NoLines)
            }
        };
        sources.functions = if binary.has_symtab() { "ELF symbols".into() } else { ".gopclntab".into() };

        let goroutine_table = globals::goroutine_table(binary).map(|(table, how)| {
            sources.goroutine_table = match how {
                FoundBy::Symbols => "from symbols".into(),
                FoundBy::MachineCode => "from runtime.allgadd's code".into(),
            };
            table
        });
        if let Err(why) = &goroutine_table {
            sources.goroutine_table = format!("not found ({why})");
        }
        let semtable = globals::semtable(binary).map(|(addr, how)| {
            sources.semaphore_table = match how {
                FoundBy::Symbols => "from symbols".into(),
                FoundBy::MachineCode => "from runtime.semacquire1's code".into(),
            };
            addr
        });
        if let Err(why) = &semtable {
            sources.semaphore_table = format!("not found ({why})");
        }
        let mheap = globals::mheap(binary).map(|(addr, how)| {
            sources.heap = match how {
                FoundBy::Symbols => "from symbols".into(),
                FoundBy::MachineCode => "from runtime.mallocinit's code".into(),
            };
            addr
        });
        if let Err(why) = &mheap {
            sources.heap = format!("not found ({why})");
        }
        let go_memory_limit = match (globals::gc_controller(binary), layout.gc_memory_limit) {
            (Ok((addr, how)), Some(offset)) => {
                sources.memory_limit = match how {
                    FoundBy::Symbols => "from symbols".into(),
                    FoundBy::MachineCode => "from runtime.gcinit's code".into(),
                };
                Ok(addr.wrapping_add(u64::from(offset)))
            }
            (Err(why), _) => Err(why),
            (Ok(_), None) => {
                Err("runtime.gcControllerState's layout is known neither from DWARF nor gleak's tables".into())
            }
        };
        if let Err(why) = &go_memory_limit {
            sources.memory_limit = format!("not found ({why})");
        }
        Ok(Self { layout, wait_reasons, symbolizer, goroutine_table, semtable, mheap, go_memory_limit, sources, gaps })
    }
}

struct SharedPclntab(Arc<crate::binary::pclntab::Pclntab>);

impl Symbolizer for SharedPclntab {
    fn frames(&self, pc: u64) -> Vec<Frame> {
        self.0.frames(pc)
    }
}

struct NoLines;

impl Symbolizer for NoLines {
    fn frames(&self, _pc: u64) -> Vec<Frame> {
        Vec::new()
    }
}
