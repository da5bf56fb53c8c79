//! Names of Go's `waitReason` values, taken from the target binary itself: the
//! numbering changes between Go releases (1.26 reordered it), so no fixed table.

use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct WaitReasons {
    names: Vec<String>,
}

impl WaitReasons {
    /// From `runtime.waitReasonStrings` (exactly what Go prints in tracebacks).
    pub fn from_strings(names: Vec<String>) -> Self {
        Self { names }
    }

    /// From the DWARF constants `runtime.waitReasonChanSend` = N, when the string
    /// table is unavailable: the constant names, lower-cased into words.
    pub fn from_constants(consts: &HashMap<u8, String>) -> Self {
        let len = consts.keys().map(|&k| k as usize + 1).max().unwrap_or(0);
        let mut names = vec![String::new(); len];
        for (&value, name) in consts {
            names[value as usize] = words(name);
        }
        Self { names }
    }

    pub fn name(&self, reason: u8) -> String {
        match self.names.get(reason as usize) {
            Some(n) if !n.is_empty() => n.clone(),
            _ if reason == 0 => String::new(),
            _ => format!("waitReason({reason})"),
        }
    }
}

/// `ChanSendNilChan` → `chan send nil chan`.
fn words(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_strings_and_constants() {
        let w = WaitReasons::from_strings(vec!["".into(), "GC assist marking".into(), "chan send".into()]);
        assert_eq!(w.name(2), "chan send");
        assert_eq!(w.name(0), "");
        assert_eq!(w.name(99), "waitReason(99)");
        let mut c = HashMap::new();
        c.insert(20u8, "ChanSend".to_string());
        c.insert(18u8, "Select".to_string());
        let w = WaitReasons::from_constants(&c);
        assert_eq!(w.name(20), "chan send");
        assert_eq!(w.name(18), "select");
    }
}
