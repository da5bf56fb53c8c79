//! `cargo xtask gotables`: writes gleak's per-release Go runtime facts, the data
//! files in `gleak-userspace/src/runtime/gotables/` and the `index.rs` that embeds
//! them, from every Go toolchain on the machine.
//!
//! Each toolchain builds a small standard-library-only program; gleak's own reader
//! (`gleak::runtime::gotables::from_dwarf`) takes the facts from its DWARF and
//! `runtime.waitReasonStrings`. Neighbouring releases with the same facts share one
//! file. A release without a toolchain here keeps its committed file: the hand-kept
//! Go 1.20 one always, a generated one with a note. The unit tests and
//! `tests/tests/gotables.rs` check the result; `git diff` shows what a release changed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use gleak::binary::GoBinary;
use gleak::runtime::gotables::{self, from_dwarf, Origin, ReleaseFacts};
use gleak_tests::{gleak_cache, go_command, go_toolchains, GoToolchain};

use crate::{root, step};

pub fn run() -> Result<()> {
    let dir = root().join("gleak-userspace/src/runtime/gotables");
    let toolchains = go_toolchains();
    if toolchains.is_empty() {
        bail!(
            "no Go toolchain found (Debian's /usr/lib/go-1.19/bin/go or {}/go/<version>/bin/go): \
             run `cargo xtask setup`",
            gleak_cache().display()
        );
    }
    let names: Vec<&str> = toolchains.iter().map(|tc| tc.version.as_str()).collect();
    step(&format!("reading the Go runtime's facts with {} toolchains: {}", toolchains.len(), names.join(", ")));
    let regenerated = read_toolchains(&toolchains)?;
    let committed = committed_entries(&dir)?;
    let entries = plan(&committed, regenerated)?;
    write(&dir, &committed, &entries)
}

/// The facts of each toolchain's release, by minor version.
fn read_toolchains(toolchains: &[GoToolchain]) -> Result<BTreeMap<u32, ReleaseFacts>> {
    let work = gleak_cache().join("gotables");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // The same program tests/gotables.rs reads the facts back from: a channel,
    // `select`, a mutex and package testing's `T`, whose runtime parts the facts describe.
    let source = gleak_tests::fixture_source("release_facts");
    let mut by_minor: BTreeMap<u32, ReleaseFacts> = BTreeMap::new();
    for tc in toolchains {
        let binary_path = build_probe(tc, &source, &work)?;
        let binary = GoBinary::open(&binary_path, &binary_path)
            .with_context(|| format!("{tc}: reading the probe program {}", binary_path.display()))?;
        let label_minor = tc.version.split('.').nth(1).and_then(|minor| minor.parse().ok());
        if label_minor != Some(binary.go_version.minor) {
            bail!("{tc} ({}) built a {} binary", tc.go.display(), binary.go_version.raw);
        }
        let facts = from_dwarf::read_release_facts(&binary).map_err(|e| anyhow!("{tc}: {e}"))?;
        step(&format!(
            "  {}: runtime.g of {} bytes, {} wait reasons, dead statuses {:?}",
            binary.go_version.raw,
            facts.g.size,
            facts.wait_reasons.len(),
            facts.dead_statuses
        ));
        match by_minor.get_mut(&binary.go_version.minor) {
            None => {
                by_minor.insert(binary.go_version.minor, facts);
            }
            // Two toolchains of one release (Debian's 1.19 and a 1.19 wheel): the
            // table has one entry per minor version, so they must agree.
            Some(earlier) => {
                let differences = earlier.differences(&facts);
                if !differences.is_empty() {
                    bail!(
                        "{} and {} disagree (a patch release moved something):\n  {}",
                        built_by(&earlier.origin),
                        binary.go_version.raw,
                        differences.join("\n  ")
                    );
                }
                merge_origin(earlier, &facts.origin);
            }
        }
    }
    Ok(by_minor)
}

/// Builds [`PROBE_PROGRAM`] with `tc` into `<work>/<version>/probe`, in GOPATH mode
/// Builds `source` (`tests/fixtures/release_facts.go`) with `tc` into `<work>/<version>/probe`, in GOPATH mode
fn build_probe(tc: &GoToolchain, source: &Path, work: &Path) -> Result<PathBuf> {
    let out_dir = work.join(&tc.version);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binary = out_dir.join("probe");
    let mut build = go_command(tc);
    build.arg("build").arg("-o").arg(&binary).arg(source).current_dir(&out_dir).stdin(Stdio::null());
    let output = build.output().with_context(|| format!("{tc}: running {}", tc.go.display()))?;
    if !output.status.success() {
        bail!(
            "{tc}: `go build` of the probe program failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(binary)
}

/// `1.26, 1.27`.
fn releases(minors: &[u32]) -> String {
    minors.iter().map(|minor| format!("1.{minor}")).collect::<Vec<_>>().join(", ")
}

/// The toolchains an entry was read from: `go1.19.8, go1.19.13`.
fn built_by(origin: &Origin) -> String {
    match origin {
        Origin::GeneratedFrom(toolchains) => toolchains.join(", "),
        Origin::HandKept(_) => "no toolchain (hand-kept)".into(),
    }
}

fn merge_origin(into: &mut ReleaseFacts, from: &Origin) {
    if let (Origin::GeneratedFrom(into), Origin::GeneratedFrom(from)) = (&mut into.origin, from) {
        into.extend(from.iter().cloned());
    }
}

/// The data files as committed (in the work tree), parsed and checked as gleak
/// loads them.
fn committed_entries(dir: &Path) -> Result<Vec<ReleaseFacts>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.ends_with(".json")) else {
            continue;
        };
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push((name.to_string(), text));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (name.as_str(), text.as_str())).collect();
    gotables::load(&files).map_err(|e| anyhow!("{}: {e}", dir.display()))
}

/// One entry of the table to write.
struct Entry {
    facts: ReleaseFacts,
    /// Kept as committed: its file is not rewritten.
    kept: bool,
}

/// The table to write: committed entries for releases without a toolchain here,
/// families of regenerated releases for the others, oldest first, without gaps.
fn plan(committed: &[ReleaseFacts], mut regenerated: BTreeMap<u32, ReleaseFacts>) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for entry in committed {
        let with_toolchain: Vec<u32> = entry.minors.clone().filter(|minor| regenerated.contains_key(minor)).collect();
        let name = entry.file_name();
        match &entry.origin {
            Origin::HandKept(_) if with_toolchain.is_empty() => step(&format!("{name}: hand-kept, left alone")),
            Origin::HandKept(_) => {
                step(&format!(
                    "{name}: hand-kept, left alone although Go {} has a toolchain here; \
                     delete the file and run again to generate it",
                    releases(&with_toolchain)
                ));
                regenerated.retain(|minor, _| !entry.minors.contains(minor));
            }
            Origin::GeneratedFrom(_) if with_toolchain.is_empty() => {
                step(&format!(
                    "{name}: no toolchain for it here, kept as committed (generated from {})",
                    built_by(&entry.origin)
                ));
            }
            Origin::GeneratedFrom(_) if with_toolchain.len() == entry.minors.clone().count() => continue,
            Origin::GeneratedFrom(_) => bail!(
                "{name}: of its releases only Go {} has a toolchain here: install the others \
                 (cargo xtask setup) to regenerate it",
                releases(&with_toolchain)
            ),
        }
        entries.push(Entry { facts: entry.clone(), kept: true });
    }
    let mut families: Vec<ReleaseFacts> = Vec::new();
    for (minor, facts) in regenerated {
        match families.last_mut() {
            Some(family)
                if family.minors.end().checked_add(1) == Some(minor) && family.differences(&facts).is_empty() =>
            {
                family.minors = *family.minors.start()..=minor;
                merge_origin(family, &facts.origin);
            }
            _ => families.push(facts),
        }
    }
    entries.extend(families.into_iter().map(|facts| Entry { facts, kept: false }));
    entries.sort_by_key(|entry| *entry.facts.minors.start());
    for pair in entries.windows(2) {
        let (older, newer) = (&pair[0].facts, &pair[1].facts);
        if older.minors.end().checked_add(1) != Some(*newer.minors.start()) {
            bail!(
                "no entry for the releases between {} and {}: no toolchain here and no committed file \
                 (cargo xtask setup installs the toolchains)",
                older.file_name(),
                newer.file_name()
            );
        }
    }
    // What gleak will load: each file and the whole table as its loader checks them.
    let texts: Vec<(String, String)> = entries.iter().map(|e| (e.facts.file_name(), e.facts.to_json())).collect();
    let files: Vec<(&str, &str)> = texts.iter().map(|(name, text)| (name.as_str(), text.as_str())).collect();
    gotables::load(&files).map_err(|e| anyhow!("the table would not load: {e}"))?;
    Ok(entries)
}

/// Writes the regenerated files and `index.rs`, removes files a family replaced, and
/// says what changed.
fn write(dir: &Path, committed: &[ReleaseFacts], entries: &[Entry]) -> Result<()> {
    for entry in entries.iter().filter(|entry| !entry.kept) {
        let facts = &entry.facts;
        let name = facts.file_name();
        let path = dir.join(&name);
        let text = facts.to_json();
        if fs::read_to_string(&path).is_ok_and(|old| old == text) {
            step(&format!("{name}: unchanged"));
            continue;
        }
        fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        let replaced: Vec<&ReleaseFacts> = committed
            .iter()
            .filter(|old| old.minors.start() <= facts.minors.end() && facts.minors.start() <= old.minors.end())
            .collect();
        if replaced.is_empty() {
            step(&format!("{name}: written (new)"));
        }
        for old in replaced {
            let changes = old.differences(facts);
            let what = match (old.file_name() == name, changes.is_empty()) {
                (true, true) => "written: the same facts, from another toolchain".to_string(),
                (true, false) => "written, changed".to_string(),
                (false, _) => format!("written, replacing {}", old.file_name()),
            };
            step(&format!("{name}: {what}{}", changes.iter().map(|c| format!("\n    {c}")).collect::<String>()));
        }
    }
    let names: Vec<String> = entries.iter().map(|entry| entry.facts.file_name()).collect();
    for old in committed.iter().map(ReleaseFacts::file_name).filter(|old| !names.contains(old)) {
        fs::remove_file(dir.join(&old)).with_context(|| format!("removing {old}"))?;
        step(&format!("{old}: removed (its releases are in another file now)"));
    }
    let index = dir.join("index.rs");
    let text = index_rs(entries);
    if fs::read_to_string(&index).is_ok_and(|old| old == text) {
        step("index.rs: unchanged");
    } else {
        fs::write(&index, text).with_context(|| format!("writing {}", index.display()))?;
        step("index.rs: written");
    }
    let (first, last) = (&entries[0].facts, &entries[entries.len() - 1].facts);
    step(&format!(
        "{} entries for Go 1.{}–1.{} in {}; review them with `git diff`, then run \
         `cargo test -p gleak-userspace gotables` and the DWARF check (tests/tests/gotables.rs)",
        entries.len(),
        first.minors.start(),
        last.minors.end(),
        dir.strip_prefix(root()).unwrap_or(dir).display()
    ));
    Ok(())
}

/// `index.rs`: the known range and every data file, embedded, oldest first.
fn index_rs(entries: &[Entry]) -> String {
    let oldest = entries.first().map_or(0, |entry| *entry.facts.minors.start());
    let newest = entries.last().map_or(0, |entry| *entry.facts.minors.end());
    let mut text = format!(
        "//! The data files gleak embeds, oldest release first. Written by `cargo xtask gotables`.\n\
         \n\
         /// The oldest release the table knows.\n\
         pub const OLDEST_KNOWN_MINOR: u32 = {oldest};\n\
         /// The newest release the table knows.\n\
         pub const NEWEST_KNOWN_MINOR: u32 = {newest};\n\
         \n\
         /// Each entry's file name and text.\n\
         pub(super) const FILES: &[(&str, &str)] = &[\n"
    );
    for entry in entries {
        let name = entry.facts.file_name();
        text.push_str(&format!("    (\"{name}\", include_str!(\"{name}\")),\n"));
    }
    text.push_str("];\n");
    text
}

#[cfg(test)]
mod tests {
    use gleak::runtime::gotables::{for_release, NEWEST_KNOWN_MINOR, OLDEST_KNOWN_MINOR};

    use super::*;

    /// The table gleak embeds, one entry per family.
    fn committed() -> Vec<ReleaseFacts> {
        let mut entries: Vec<ReleaseFacts> =
            (OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR).filter_map(for_release).cloned().collect();
        entries.dedup_by_key(|entry| entry.file_name());
        entries
    }

    /// What the generator reads from toolchains of these releases: the committed facts.
    fn regenerated(minors: impl IntoIterator<Item = u32>) -> BTreeMap<u32, ReleaseFacts> {
        minors.into_iter().map(|minor| (minor, for_release(minor).expect("known release").clone())).collect()
    }

    fn file_names(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(|entry| entry.facts.file_name()).collect()
    }

    #[test]
    fn a_release_with_its_predecessors_facts_joins_its_family() {
        let mut toolchains = regenerated((19..=27).filter(|&minor| minor != 20));
        let mut go_1_28 = toolchains[&27].clone();
        go_1_28.minors = 28..=28;
        go_1_28.origin = Origin::GeneratedFrom(vec!["go1.28.0".into()]);
        toolchains.insert(28, go_1_28);
        let entries = plan(&committed(), toolchains).expect("a table");
        let newest = &entries.last().expect("entries").facts;
        assert_eq!(newest.file_name(), "go1.27-1.28.json");
        assert_eq!(newest.origin, Origin::GeneratedFrom(vec!["go1.27.3".into(), "go1.28.0".into()]));
        assert_eq!(entries.len(), 9);
        let index = index_rs(&entries);
        assert!(index.contains("NEWEST_KNOWN_MINOR: u32 = 28;"), "{index}");
        assert!(index.contains(r#"("go1.27-1.28.json", include_str!("go1.27-1.28.json")),"#), "{index}");
    }

    #[test]
    fn releases_without_a_toolchain_keep_their_files() {
        let entries = plan(&committed(), regenerated([19, 27])).expect("a table");
        assert_eq!(file_names(&entries), committed().iter().map(ReleaseFacts::file_name).collect::<Vec<_>>());
        let kept: Vec<bool> = entries.iter().map(|entry| entry.kept).collect();
        assert_eq!(kept, [false, true, true, true, true, true, true, true, false]);
    }

    #[test]
    fn the_hand_kept_entry_is_left_alone_even_with_a_toolchain() {
        let mut toolchains = regenerated((19..=27).filter(|&minor| minor != 20));
        let mut go_1_20 = toolchains[&19].clone();
        go_1_20.minors = 20..=20;
        toolchains.insert(20, go_1_20);
        let entries = plan(&committed(), toolchains).expect("a table");
        let go_1_20 = entries.iter().find(|entry| entry.facts.minors.contains(&20)).expect("1.20");
        assert!(go_1_20.kept && matches!(go_1_20.facts.origin, Origin::HandKept(_)));
        assert_eq!(entries.len(), 9, "1.19 and 1.20 stay apart");
    }

    #[test]
    fn a_family_half_regenerated_is_an_error() {
        let mut entries = committed();
        entries.pop();
        let family = entries.last_mut().expect("1.26");
        family.minors = 26..=27;
        let error = plan(&entries, regenerated((19..=26).filter(|&minor| minor != 20))).err().expect("an error");
        assert!(
            error.to_string().contains("go1.26-1.27.json: of its releases only Go 1.26 has a toolchain"),
            "{error}"
        );
    }

    #[test]
    fn a_release_without_toolchain_or_file_is_an_error() {
        let without_go_1_20: Vec<ReleaseFacts> =
            committed().into_iter().filter(|entry| !entry.minors.contains(&20)).collect();
        let error = plan(&without_go_1_20, regenerated([19, 21])).err().expect("an error");
        assert!(error.to_string().contains("between go1.19.json and go1.21.json"), "{error}");
    }
}
