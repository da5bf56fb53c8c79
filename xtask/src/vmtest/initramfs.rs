//! A gzip'd `newc` cpio archive, the format the kernel unpacks as its initial
//! root file system (Documentation/driver-api/early-userspace/buffer-format.rst).
//! Written here because the machine has no `cpio` binary.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use flate2::{write::GzEncoder, Compression};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An archive being written; [`Initramfs::finish`] completes it. Parent
/// directories are added before their entries (the kernel does not create them).
pub struct Initramfs {
    out: GzEncoder<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    dirs: BTreeSet<String>,
    next_inode: u32,
}

impl Initramfs {
    pub fn create(dest: &Path) -> Result<Initramfs> {
        let tmp = dest.with_extension("tmp");
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Initramfs {
            out: GzEncoder::new(BufWriter::new(file), Compression::fast()),
            tmp,
            dest: dest.to_path_buf(),
            dirs: BTreeSet::new(),
            next_inode: 1,
        })
    }

    /// A directory and its parents; `path` is absolute in the guest.
    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = relative(path)?;
        let mut so_far = String::new();
        for part in path.split('/') {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if self.dirs.insert(so_far.clone()) {
                let name = so_far.clone();
                self.entry(&name, S_IFDIR | 0o755, 0, &[])?;
            }
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        self.parent(path)?;
        self.entry(relative(path)?, S_IFREG | (mode & 0o7777), 0, data)
    }

    /// A copy of a host file (symbolic links followed), with its permissions.
    pub fn host_file(&mut self, path: &str, host: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)?.permissions().mode();
        self.file(path, &data, mode)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.parent(path)?;
        self.entry(relative(path)?, S_IFLNK | 0o777, 0, target.as_bytes())
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        self.parent(path)?;
        self.entry(relative(path)?, S_IFCHR | 0o600, (major << 8) | minor, &[])
    }

    /// Writes the trailer and moves the archive into place.
    pub fn finish(mut self) -> Result<()> {
        self.entry("TRAILER!!!", 0, 0, &[])?;
        self.out.finish()?.flush()?;
        fs::rename(&self.tmp, &self.dest)?;
        Ok(())
    }

    fn parent(&mut self, path: &str) -> Result<()> {
        match path.rsplit_once('/') {
            Some((parent, _)) if !parent.is_empty() => self.dir(parent),
            _ => Ok(()),
        }
    }

    /// One `newc` header (13 fields of 8 hex digits after the magic), the name,
    /// the data, each padded to 4 bytes.
    fn entry(&mut self, name: &str, mode: u32, rdev: u32, data: &[u8]) -> Result<()> {
        let Ok(size) = u32::try_from(data.len()) else { bail!("{name}: over 4 GiB, too big for cpio") };
        let inode = self.next_inode;
        self.next_inode += 1;
        let name_size = name.len() + 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let (rdev_major, rdev_minor) = (rdev >> 8, rdev & 0xff);
        let fields = [inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size as u32, 0];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.out.write_all(&[0; 3][..padding(header.len() + name_size)])?;
        self.out.write_all(data)?;
        self.out.write_all(&[0; 3][..padding(data.len())])?;
        Ok(())
    }
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// `bin/busybox` of `/bin/busybox`: archive names have no leading slash.
fn relative(path: &str) -> Result<&str> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        bail!("bad path in the initramfs: {path:?}");
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn newc_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-initramfs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.cpio.gz");
        let mut cpio = Initramfs::create(&path).unwrap();
        cpio.file("/a/b/init", b"#!/bin/sh\n", 0o755).unwrap();
        cpio.symlink("/a/sh", "busybox").unwrap();
        cpio.finish().unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&path).unwrap()).read_to_end(&mut raw).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let names: Vec<&str> = text.split("070701").skip(1).map(|e| e[104..].split('\0').next().unwrap()).collect();
        assert_eq!(names, ["a", "a/b", "a/b/init", "a/sh", "TRAILER!!!"]);
        assert!(raw.len() % 4 == 0);
        // a/b/init: regular file 0755, 10 bytes.
        let init = text.split("070701").nth(3).unwrap();
        assert_eq!(&init[8..16], "000081ED");
        assert_eq!(&init[48..56], "0000000A");
        assert!(relative("/x/../y").is_err());
    }
}
