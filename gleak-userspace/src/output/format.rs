//! Formatting shared by the report's printers (the table in `report`, the page
//! in `html`): sizes, paths, labels, and how much of a site they show.

use std::{io::Write as _, path::Path};

use crate::output::report::SiteReport;

/// Text for HTML or XML: markup characters escaped, and the control characters
/// XML 1.0 forbids dropped (names and paths come from the target).
pub(crate) fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes `text` to `path` atomically: into a temporary file next to it, then
/// renamed over it, so that a reader (a browser reloading, a CI job) never sees
/// half of it.
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        ));
    };
    // Same directory, so the rename stays within one filesystem; the PID keeps
    // two gleaks writing the same file from sharing a temporary one.
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// How many blocking places of a site a printer lists.
pub(crate) const BLOCKED_AT_SHOWN: usize = 3;

/// A size in a narrow table column: `8K`, `3.0M`, `1.2G`; `-` for none.
pub(crate) fn bytes_in_column(b: u64) -> String {
    match b {
        0 => "-".into(),
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b => format!("{}K", b.div_ceil(1024)),
    }
}

/// A size in prose: `512 B`, `4.0 MiB`.
pub(crate) fn bytes_in_words(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `function (dir/file.go:line)`, or just the name for sites with no source line.
pub(crate) fn site_label(s: &SiteReport) -> String {
    if s.line == 0 {
        s.function.clone()
    } else {
        format!("{} ({}:{})", s.function, short_path(&s.file), s.line)
    }
}

/// At most `n` characters, the last an ellipsis when cut.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// The last three path components: enough to recognise a file.
pub(crate) fn short_path(path: &str) -> &str {
    let mut idx = path.len();
    for _ in 0..3 {
        match path[..idx].rfind('/') {
            Some(i) => idx = i,
            None => return path,
        }
    }
    &path[idx + 1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_paths_and_cuts() {
        assert_eq!(short_path("/a/b/c/d/e.go"), "c/d/e.go");
        assert_eq!(short_path("e.go"), "e.go");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(bytes_in_column(0), "-");
        assert_eq!(bytes_in_column(8192), "8K");
        assert_eq!(bytes_in_column(3 << 20), "3.0M");
        assert_eq!(bytes_in_words(512), "512 B");
        assert_eq!(bytes_in_words(4 << 20), "4.0 MiB");
    }
}
