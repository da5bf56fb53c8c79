//! The guest side: what goes into the initramfs (busybox, the runner
//! `tests/vm/init.sh`, the plan, gleak, the Go fixtures, setpriv with its
//! libraries) and how the host reads back what the runner framed on the second
//! serial port.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::initramfs::Initramfs;

/// The runner, PID 1 of every guest.
const INIT_SH: &str = include_str!("../../../tests/vm/init.sh");
/// Applets the runner needs before `busybox --install` made the rest.
const BUSYBOX: &str = "/bin/busybox";

/// What one initramfs holds besides the runner: host files at guest paths.
pub struct GuestFiles {
    pub busybox: PathBuf,
    pub files: Vec<(String, PathBuf)>,
}

/// Writes the initramfs: busybox, `/init`, `/vmtest/plan.sh` and `files`.
pub fn write_initramfs(dest: &Path, files: &GuestFiles, plan: &str) -> Result<()> {
    let mut cpio = Initramfs::create(dest)?;
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/usr/bin"] {
        cpio.dir(dir)?;
    }
    // The kernel opens it for PID 1's stdio before anything is mounted.
    cpio.char_device("/dev/console", 5, 1)?;
    cpio.host_file(BUSYBOX, &files.busybox)?;
    cpio.symlink("/bin/sh", "busybox")?;
    cpio.file("/init", INIT_SH.as_bytes(), 0o755)?;
    cpio.file("/vmtest/plan.sh", plan.as_bytes(), 0o644)?;
    for (guest, host) in &files.files {
        cpio.host_file(guest, host)?;
    }
    cpio.finish()
}

/// A dynamically linked host program and the shared libraries `ldd` names,
/// each at its own path (the guest has no library cache: the loader looks in
/// its built-in directories, where these paths are).
pub fn with_libraries(program: &Path) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("ldd").arg(program).output().context("running ldd")?;
    if !out.status.success() {
        bail!("ldd {}: {}", program.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut files = vec![(program.display().to_string(), program.to_path_buf())];
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        files.push((word.to_string(), PathBuf::from(word)));
    }
    Ok(files)
}

/// One check's output, as the runner framed it.
#[derive(Debug, Default, Clone)]
pub struct CheckOutput {
    pub stdout: String,
    pub stderr: String,
    /// The command's exit status (137: killed at its time limit).
    pub rc: i32,
    pub secs: u64,
}

/// What the host learns from the runner, line by line.
#[derive(Debug)]
pub enum Event {
    /// `/init` runs: the kernel booted.
    Init {
        release: String,
    },
    /// A problem outside any check (a fixture that did not start).
    Note(String),
    /// A fixture is up: progress only.
    Ready(String),
    Finished {
        id: String,
        output: CheckOutput,
    },
    /// The plan ran to its end.
    Done,
}

#[derive(Clone, Copy)]
enum Section {
    Stdout,
    Stderr,
}

/// Reads the runner's frames from the bytes of the second serial port, fed as they come.
#[derive(Default)]
pub struct ResultsParser {
    partial: Vec<u8>,
    current: Option<(String, Option<Section>, CheckOutput)>,
}

/// Most output kept of one check's stream: gleak's JSON is far smaller; a
/// runaway guest must not fill the host's memory.
const MAX_STREAM: usize = 16 << 20;

impl ResultsParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.partial.extend_from_slice(bytes);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        let text = String::from_utf8_lossy(&complete).into_owned();
        text.lines().filter_map(|line| self.line(line.trim_end_matches('\r'))).collect()
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        let Some(frame) = line.strip_prefix("@@vmtest ") else {
            if let Some((_, Some(section), output)) = &mut self.current {
                let stream = match section {
                    Section::Stdout => &mut output.stdout,
                    Section::Stderr => &mut output.stderr,
                };
                if stream.len() < MAX_STREAM {
                    stream.push_str(line);
                    stream.push('\n');
                }
            }
            return None;
        };
        let (word, rest) = frame.split_once(' ').unwrap_or((frame, ""));
        match word {
            "init" => return Some(Event::Init { release: rest.to_string() }),
            "note" => return Some(Event::Note(rest.to_string())),
            "ready" => return Some(Event::Ready(rest.to_string())),
            "done" => return Some(Event::Done),
            "begin" => self.current = Some((rest.to_string(), None, CheckOutput::default())),
            "stdout" | "stderr" => {
                if let Some((_, section, _)) = &mut self.current {
                    *section = Some(if word == "stdout" { Section::Stdout } else { Section::Stderr });
                }
            }
            "end" => {
                let (id, _, mut output) = self.current.take()?;
                for field in rest.split_whitespace() {
                    match field.split_once('=') {
                        Some(("rc", v)) => output.rc = v.parse().unwrap_or(-1),
                        Some(("secs", v)) => output.secs = v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
                return Some(Event::Finished { id, output });
            }
            _ => {}
        }
        None
    }
}

/// `'text'` for the guest's shell.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frames_split_anywhere() {
        let stream = "@@vmtest init 6.1.0-40-cloud-amd64\r\nboot noise\n@@vmtest ready chan_send (pid 9)\n\
                      @@vmtest begin attach\n@@vmtest stdout\n{\"a\":1}\n@@vmtest stderr\ngleak: tracing\n\
                      @@vmtest end attach rc=0 secs=4\n@@vmtest done\n";
        let mut parser = ResultsParser::default();
        let mut events = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            events.extend(parser.feed(chunk));
        }
        assert!(matches!(&events[0], Event::Init { release } if release == "6.1.0-40-cloud-amd64"));
        assert!(matches!(&events[1], Event::Ready(what) if what == "chan_send (pid 9)"));
        let Event::Finished { id, output } = &events[2] else { panic!("{events:?}") };
        assert_eq!((id.as_str(), output.rc, output.secs), ("attach", 0, 4));
        assert_eq!((output.stdout.as_str(), output.stderr.as_str()), ("{\"a\":1}\n", "gleak: tracing\n"));
        assert!(matches!(events[3], Event::Done));
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
