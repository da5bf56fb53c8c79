//! Formatting shared by the report's printers (the table in `report`, the page
//! in `html`): sizes, paths, labels, and how much of a site they show.

use crate::output::report::SiteReport;

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
