//! The data files gleak embeds, oldest release first. Written by `cargo xtask gotables`.

/// The oldest release the table knows.
pub const OLDEST_KNOWN_MINOR: u32 = 19;
/// The newest release the table knows.
pub const NEWEST_KNOWN_MINOR: u32 = 27;

/// Each entry's file name and text.
pub(super) const FILES: &[(&str, &str)] = &[
    ("go1.19.json", include_str!("go1.19.json")),
    ("go1.20.json", include_str!("go1.20.json")),
    ("go1.21.json", include_str!("go1.21.json")),
    ("go1.22.json", include_str!("go1.22.json")),
    ("go1.23.json", include_str!("go1.23.json")),
    ("go1.24.json", include_str!("go1.24.json")),
    ("go1.25.json", include_str!("go1.25.json")),
    ("go1.26.json", include_str!("go1.26.json")),
    ("go1.27.json", include_str!("go1.27.json")),
];
