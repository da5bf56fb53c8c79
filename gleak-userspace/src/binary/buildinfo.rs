//! The Go version a binary was built with, from its `.go.buildinfo` header.
//!
//! Kept by `-s -w`, so it works on stripped binaries too. Layout (Go ≥ 1.18, flag bit 1):
//! 14-byte magic, pointer size, flags, 16 bytes of padding, then varint-prefixed strings:
//! the version and the module info.

use std::fmt;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const FLAG_VERSION_INLINE: u8 = 0x2;

/// A Go release, e.g. `go1.23.9` → 1.23.9.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// As found in the binary (`go1.23.9`, `devel go1.24-abcdef …`).
    pub raw: String,
}

impl GoVersion {
    /// Parses `go1.N[.P]`, tolerating a `devel ` prefix and trailing text (`X:` experiments, `rc1`).
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        let start = s.find("go1.")?;
        // "1.N[.P]": digit runs split by single dots, read by position (the text
        // after them may be anything, multi-byte characters included).
        let digits = |t: &str| -> Option<(u32, usize)> {
            let n = t.bytes().take_while(u8::is_ascii_digit).count();
            Some((t[..n].parse().ok()?, n))
        };
        let rest = &s[start + 2..];
        let (major, n) = digits(rest)?;
        let rest = rest[n..].strip_prefix('.')?;
        let (minor, n) = digits(rest)?;
        // A patch only counts if it directly follows "1.N.".
        let patch = rest[n..].strip_prefix('.').and_then(digits).map_or(0, |(p, _)| p);
        Some(Self { major, minor, patch, raw: raw.to_string() })
    }

    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Reads the version string from the bytes of a `.go.buildinfo` section, or from
/// any data that contains the header at a 16-byte aligned position.
pub fn version_from_buildinfo(data: &[u8]) -> Option<String> {
    let at = (0..data.len().saturating_sub(32)).step_by(16).find(|&i| data[i..].starts_with(MAGIC))?;
    let header = &data[at..];
    let flags = header[15];
    if flags & FLAG_VERSION_INLINE == 0 {
        // Go < 1.18 stored pointers here; gleak does not support those releases.
        return Some("go1.17-or-older".to_string());
    }
    let (len, n) = read_uvarint(&header[32..])?;
    let start = 32 + n;
    let bytes = header.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// What precedes the module info (`cmd/go`'s `infoStart`).
const MODINFO_START: [u8; 16] = *b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";

/// The main package's import path (`path` line of the module info that follows
/// the version: `example.com/cmd/server`, `command-line-arguments` for a file
/// built by name), from the same bytes as [`version_from_buildinfo`].
pub fn main_path_from_buildinfo(data: &[u8]) -> Option<String> {
    let at = (0..data.len().saturating_sub(32)).step_by(16).find(|&i| data[i..].starts_with(MAGIC))?;
    let header = &data[at..];
    if header[15] & FLAG_VERSION_INLINE == 0 {
        return None;
    }
    let (len, n) = read_uvarint(&header[32..])?;
    let modinfo_at = 32usize.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?;
    let (len, n) = read_uvarint(header.get(modinfo_at..)?)?;
    let start = modinfo_at.checked_add(n)?;
    let modinfo = header.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    // The text sits between two 16-byte sentinels (`runtime/debug`'s infoStart/End).
    let modinfo = modinfo.strip_prefix(&MODINFO_START[..]).unwrap_or(modinfo);
    let text = String::from_utf8_lossy(modinfo);
    let path = text.lines().find_map(|l| l.strip_prefix("path\t"))?;
    Some(path.chars().filter(|c| !c.is_control()).collect())
}

fn read_uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v = GoVersion::parse("go1.23.9").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 23, 9));
        let v = GoVersion::parse("go1.22").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 22, 0));
        let v = GoVersion::parse("devel go1.24-3f2a1b Tue").unwrap();
        assert_eq!((v.major, v.minor), (1, 24));
        let v = GoVersion::parse("go1.25rc1 X:nocoverageredesign").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 25, 0));
        assert!(GoVersion::parse("rust").is_none());
        assert!(GoVersion::parse("go1.21.13").unwrap().at_least(1, 21));
        assert!(!GoVersion::parse("go1.19.8").unwrap().at_least(1, 22));
    }

    #[test]
    fn reads_inline_version_header() {
        let mut section = vec![0u8; 16];
        let mut header = MAGIC.to_vec();
        header.extend([8, FLAG_VERSION_INLINE]);
        header.resize(32, 0);
        header.push(8);
        header.extend(b"go1.27.3");
        header.push(0);
        section.extend(header);
        assert_eq!(version_from_buildinfo(&section).as_deref(), Some("go1.27.3"));
        assert_eq!(version_from_buildinfo(b"nothing here at all, not even close......"), None);
        // A length varint near u64::MAX must not wrap the end offset (it did).
        let mut huge = section[..16 + 32].to_vec();
        huge.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        huge.extend([b'x'; 32]);
        assert_eq!(version_from_buildinfo(&huge), None);
    }

    /// Hostile version strings: the minor's digits followed by text that is not
    /// what "1.N" reprinted would be (it was sliced at that length, inside a
    /// multi-byte character: a panic).
    #[test]
    fn reads_the_main_path() {
        let mut header = MAGIC.to_vec();
        header.extend([8, FLAG_VERSION_INLINE]);
        header.resize(32, 0);
        header.push(8);
        header.extend(b"go1.27.3");
        let mut modinfo = MODINFO_START.to_vec();
        modinfo.extend(b"path\texample.com/cmd/server\nmod\texample.com\t(devel)\t\n");
        header.push(modinfo.len() as u8);
        header.extend(&modinfo);
        header.resize(header.len() + 32, 0);
        assert_eq!(main_path_from_buildinfo(&header).as_deref(), Some("example.com/cmd/server"));
        // No module info after the version: nothing, no panic.
        assert_eq!(main_path_from_buildinfo(&header[..42]), None);
    }

    #[test]
    fn odd_version_strings() {
        assert!(GoVersion::parse("go1.é7").is_none());
        assert!(GoVersion::parse("go1.07é").is_some_and(|v| (v.minor, v.patch) == (7, 0)));
        assert!(GoVersion::parse("go1.007.é").is_some_and(|v| (v.minor, v.patch) == (7, 0)));
        assert!(GoVersion::parse("go1.22.é3").is_some_and(|v| (v.minor, v.patch) == (22, 0)));
        assert!(GoVersion::parse("go1.22.3é").is_some_and(|v| (v.minor, v.patch) == (22, 3)));
        assert!(GoVersion::parse("go1.x22").is_none());
        assert!(GoVersion::parse("go1.").is_none());
        assert!(GoVersion::parse("go1.99999999999").is_none());
        assert!(GoVersion::parse("go1.22.99999999999").is_some_and(|v| v.patch == 0));
    }
}
