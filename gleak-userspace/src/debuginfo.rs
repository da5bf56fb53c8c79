//! One interface over the ways of learning a binary's runtime: struct layout,
//! wait-reason names and symbolization. DWARF is the backend today; a `.gopclntab`
//! + per-version-table backend for stripped binaries plugs in here.

use crate::{
    binary::{dwarf::DwarfInfo, GoBinary},
    error::Result,
    layout::RuntimeLayout,
    symbolize::Symbolizer,
    waitreason::WaitReasons,
};

pub struct RuntimeInfo {
    pub layout: RuntimeLayout,
    pub wait_reasons: WaitReasons,
    pub symbolizer: Box<dyn Symbolizer + Send>,
}

impl RuntimeInfo {
    pub fn load(binary: &GoBinary) -> Result<Self> {
        let dwarf = DwarfInfo::load(binary)?;
        let (layout, wait_consts) = dwarf.runtime_layout(binary)?;
        let wait_reasons = match binary.wait_reason_strings() {
            Some(names) if !names.is_empty() => WaitReasons::from_strings(names),
            _ => WaitReasons::from_constants(&wait_consts),
        };
        let symbolizer = Box::new(dwarf.symbolizer(binary)?);
        Ok(Self { layout, wait_reasons, symbolizer })
    }
}
