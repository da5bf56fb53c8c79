//! Goroutine profiles in pprof's `profile.proto` format
//! (github.com/google/pprof/proto/profile.proto), readable by `go tool pprof`.
//!
//! The messages are `prost` types generated at build time from
//! `proto/profile.proto` (pprof's own, the fields gleak writes) by `protox`, a
//! protobuf compiler in Rust (no system `protoc`), and `prost-build`; the
//! encoded profile is gzip-compressed, as pprof expects.
//!
//! The profile carries one sample type, `goroutine`/`count`, like the Go
//! runtime's own goroutine profile. Locations are already symbolized (every
//! function and file name is in the profile). All of them belong to a single
//! mapping covering the whole address space and flagged as symbolized
//! (`has_functions`, `has_filenames`, `has_line_numbers`, `has_inline_frames`):
//! pprof then neither looks for a binary nor prints "Main binary filename not
//! available." (which it does for locations without a mapping, as it attaches
//! them to an unsymbolized fake mapping of its own).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::{write::GzEncoder, Compression};

use crate::{binary::symbolize::Frame, output::report::Report};

/// One stack of goroutines in the profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileSample {
    /// Innermost first. Each location is one return address (or the go statement's PC) with its
    /// frames (several when inlined, innermost first), as produced by the symbolizer.
    pub locations: Vec<(u64, Vec<Frame>)>,
    /// Number of goroutines with this stack.
    pub count: u64,
    /// The memory they hold: their share of what their site's goroutines hold
    /// (their stacks, and the heap only they reach once a proof measured it).
    pub held_bytes: u64,
    /// String labels, e.g. ("verdict","leak"), ("wait_reason","chan send"), ("created_by","main.handle").
    /// A label with an empty value is dropped by pprof's reader.
    pub labels: Vec<(String, String)>,
}

/// The live goroutines of a report as profile samples, as a goroutine profile
/// shows them: blocked ones by their current stack (where they are stuck), the
/// others (running, or not unwound) by their creation stack. Labels: `verdict`,
/// `created_at` (the `go` statement), `go_func`, `state`, `wait_reason`.
pub fn goroutine_samples(report: &Report) -> Vec<ProfileSample> {
    let mut samples = Vec::new();
    for s in report.sites.iter().filter(|s| s.live > 0) {
        let created_at = if s.line == 0 { s.function.clone() } else { format!("{}:{}", s.file, s.line) };
        let labels = |state: &str, wait_reason: &str| {
            vec![
                ("verdict".to_string(), s.verdict.as_str().to_string()),
                ("created_at".to_string(), created_at.clone()),
                ("go_func".to_string(), s.go_func.clone()),
                ("state".to_string(), state.to_string()),
                ("wait_reason".to_string(), wait_reason.to_string()),
            ]
        };
        let per_goroutine = crate::analysis::memory_outlook::bytes_held_per_goroutine(s);
        let held = |count: u64| (count as f64 * per_goroutine).round() as u64;
        let mut left = s.live;
        for b in s.blocked_at.iter().filter(|b| !b.locations.is_empty()) {
            let count = b.goroutines.min(left);
            left -= count;
            samples.push(ProfileSample {
                locations: b.locations.clone(),
                count,
                held_bytes: held(count),
                labels: labels("waiting", &b.wait_reason),
            });
        }
        if left == 0 {
            continue;
        }
        // The rest under the site's busiest creation path.
        let creation = |locations: Vec<(u64, Vec<Frame>)>, count: u64| ProfileSample {
            locations,
            count,
            held_bytes: held(count),
            labels: labels("created", ""),
        };
        let paths: Vec<_> = s.paths.iter().filter(|p| p.live > 0 && !p.locations.is_empty()).collect();
        match paths.first() {
            Some(first) => {
                samples.push(creation(first.locations.clone(), left));
            }
            None => {
                let frame = Frame { function: s.function.clone(), file: s.file.clone(), line: s.line };
                samples.push(creation(vec![(0, vec![frame])], left));
            }
        }
    }
    samples
}

/// Encodes a goroutine profile (sample type "goroutine"/"count", period type "goroutine"/"count",
/// period 1, time_nanos = now) and returns the gzip-compressed bytes.
pub fn encode_goroutine_profile(samples: &[ProfileSample]) -> Vec<u8> {
    let time_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    gzip(&encode_profile(samples, time_nanos))
}

/// Convenience: encode and write to `path`.
pub fn write_goroutine_profile(path: &Path, samples: &[ProfileSample]) -> std::io::Result<()> {
    std::fs::write(path, encode_goroutine_profile(samples))
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 2 + 64), Compression::default());
    // Writing into a Vec cannot fail.
    enc.write_all(raw).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// pprof's `profile.proto` messages (package `perftools.profiles`).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

use prost::Message;

/// The id of the one mapping every location belongs to.
const MAPPING_ID: u64 = 1;

// ---------------------------------------------------------------------------
// Profile builder
// ---------------------------------------------------------------------------

/// One location's identity: its address and its (function id, line) pairs,
/// innermost first.
type LocationKey = (u64, Vec<(u64, i64)>);

struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    /// (name, filename) string indices; function id = index + 1.
    functions: Vec<(i64, i64)>,
    function_ids: HashMap<(String, String), u64>,
    /// Location id = index + 1.
    locations: Vec<LocationKey>,
    location_ids: HashMap<LocationKey, u64>,
}

impl Builder {
    fn new() -> Builder {
        let mut b = Builder {
            strings: Vec::new(),
            string_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
        };
        // pprof requires string_table[0] == "".
        b.string("");
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn function(&mut self, name: &str, file: &str) -> u64 {
        let key = (name.to_owned(), file.to_owned());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let entry = (self.string(name), self.string(file));
        self.functions.push(entry);
        let id = self.functions.len() as u64;
        self.function_ids.insert(key, id);
        id
    }

    fn location(&mut self, address: u64, frames: &[Frame]) -> u64 {
        let lines: Vec<(u64, i64)> =
            frames.iter().map(|f| (self.function(&f.function, &f.file), i64::from(f.line))).collect();
        let key = (address, lines);
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        self.locations.push(key.clone());
        let id = self.locations.len() as u64;
        self.location_ids.insert(key, id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType { r#type: self.string(ty), unit: self.string(unit) }
    }
}

/// The uncompressed `Profile` message.
fn encode_profile(samples: &[ProfileSample], time_nanos: i64) -> Vec<u8> {
    let mut b = Builder::new();
    // Goroutines, and the memory they hold (`-sample_index=held`); goroutines by default.
    let sample_type = vec![b.value_type("goroutine", "count"), b.value_type("held", "bytes")];
    let default_sample_type = b.string("goroutine");
    let sample = samples
        .iter()
        .map(|s| proto::Sample {
            location_id: s.locations.iter().map(|(addr, frames)| b.location(*addr, frames)).collect(),
            value: vec![i64::try_from(s.count).unwrap_or(i64::MAX), i64::try_from(s.held_bytes).unwrap_or(i64::MAX)],
            label: s
                .labels
                .iter()
                .map(|(k, v)| proto::Label { key: b.string(k), str: b.string(v), ..Default::default() })
                .collect(),
        })
        .collect();
    let period_type = Some(b.value_type("goroutine", "count"));
    let profile = proto::Profile {
        default_sample_type,
        sample_type,
        sample,
        mapping: vec![proto::Mapping {
            id: MAPPING_ID,
            memory_limit: u64::MAX,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Default::default()
        }],
        location: b
            .locations
            .iter()
            .enumerate()
            .map(|(i, (address, lines))| proto::Location {
                id: i as u64 + 1,
                mapping_id: MAPPING_ID,
                address: *address,
                line: lines
                    .iter()
                    .map(|&(function_id, line)| proto::Line { function_id, line, ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        function: b
            .functions
            .iter()
            .enumerate()
            .map(|(i, &(name, filename))| proto::Function {
                id: i as u64 + 1,
                name,
                system_name: name,
                filename,
                ..Default::default()
            })
            .collect(),
        time_nanos,
        period_type,
        period: 1,
        // Last: every string has been interned by now.
        string_table: std::mem::take(&mut b.strings),
        ..Default::default()
    };
    profile.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    // -- Decoded profile ----------------------------------------------------

    /// (location ids, values, labels as strings)
    type DecodedSample = (Vec<u64>, Vec<u64>, Vec<(String, String)>);
    /// (id, address, [(function id, line)])
    type DecodedLocation = (u64, u64, Vec<(u64, u64)>);

    #[derive(Debug)]
    struct Decoded {
        strings: Vec<String>,
        samples: Vec<DecodedSample>,
        locations: Vec<DecodedLocation>,
        /// (id, name, system_name, filename, start_line)
        functions: Vec<(u64, String, String, String, u64)>,
        sample_type: (String, String),
        period_type: (String, String),
        period: u64,
        time_nanos: u64,
        /// (id, start, limit, offset, filename, has_functions..has_inline_frames)
        mappings: Vec<(u64, u64, u64, u64, String, [u64; 4])>,
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz).read_to_end(&mut raw).unwrap();
        raw
    }

    fn decode(gz: &[u8]) -> Decoded {
        let p = proto::Profile::decode(gunzip(gz).as_slice()).expect("a valid profile.proto message");
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].clone();
        let vt = |v: &proto::ValueType| (s(v.r#type), s(v.unit));
        assert_eq!(p.sample_type.len(), 2);
        Decoded {
            samples: p
                .sample
                .iter()
                .map(|m| {
                    let labels = m
                        .label
                        .iter()
                        .map(|l| {
                            assert_eq!(l.num, 0, "num label");
                            (s(l.key), s(l.str))
                        })
                        .collect();
                    (m.location_id.clone(), m.value.iter().map(|&v| v as u64).collect(), labels)
                })
                .collect(),
            locations: p
                .location
                .iter()
                .map(|m| {
                    assert_eq!(m.mapping_id, MAPPING_ID);
                    (m.id, m.address, m.line.iter().map(|l| (l.function_id, l.line as u64)).collect())
                })
                .collect(),
            functions: p
                .function
                .iter()
                .map(|f| (f.id, s(f.name), s(f.system_name), s(f.filename), f.start_line as u64))
                .collect(),
            sample_type: vt(&p.sample_type[0]),
            period_type: vt(p.period_type.as_ref().expect("period_type")),
            period: p.period as u64,
            time_nanos: p.time_nanos as u64,
            mappings: p
                .mapping
                .iter()
                .map(|m| {
                    (
                        m.id,
                        m.memory_start,
                        m.memory_limit,
                        m.file_offset,
                        s(m.filename),
                        [m.has_functions, m.has_filenames, m.has_line_numbers, m.has_inline_frames].map(u64::from),
                    )
                })
                .collect(),
            strings: p.string_table.clone(),
        }
    }

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame { function: function.into(), file: file.into(), line }
    }

    fn labels(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn two_samples() -> Vec<ProfileSample> {
        vec![
            ProfileSample {
                locations: vec![
                    (0x401000, vec![frame("main.leak", "/src/a.go", 10)]),
                    (0x402000, vec![frame("main.main", "/src/a.go", 20)]),
                ],
                count: 300,
                held_bytes: 300 * 8192,
                labels: labels(&[("verdict", "leak"), ("wait_reason", "chan send")]),
            },
            ProfileSample {
                locations: vec![
                    // Inlined: main.helper inlined into main.worker at one PC.
                    (0x403000, vec![frame("main.helper", "/src/b.go", 5), frame("main.worker", "/src/a.go", 31)]),
                    // Same address and frames as in the first sample: shared.
                    (0x402000, vec![frame("main.main", "/src/a.go", 20)]),
                ],
                count: 2,
                held_bytes: 2 * 4096,
                labels: labels(&[("verdict", "leak"), ("created_by", "main.main")]),
            },
        ]
    }

    // -- Tests --------------------------------------------------------------

    #[test]
    fn header_and_string_table() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let p = decode(&encode_goroutine_profile(&two_samples()));
        assert_eq!(p.strings[0], "", "string_table[0] must be empty");
        let mut unique = p.strings.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), p.strings.len(), "duplicate strings: {:?}", p.strings);
        for s in [
            "goroutine",
            "count",
            "main.leak",
            "main.main",
            "main.worker",
            "main.helper",
            "/src/a.go",
            "/src/b.go",
            "verdict",
            "leak",
            "wait_reason",
            "chan send",
            "created_by",
        ] {
            assert!(p.strings.iter().any(|x| x == s), "{s:?} not in {:?}", p.strings);
        }
        let gc = ("goroutine".to_string(), "count".to_string());
        assert_eq!(p.sample_type, gc);
        assert_eq!(p.period_type, gc);
        assert_eq!(p.period, 1);
        assert!(p.time_nanos >= before, "time_nanos {} < {before}", p.time_nanos);
        assert_eq!(p.mappings, [(1, 0, u64::MAX, 0, String::new(), [1, 1, 1, 1])]);
    }

    #[test]
    fn samples_locations_functions() {
        let p = decode(&encode_goroutine_profile(&two_samples()));

        // Functions: deduplicated by (name, file), ids 1.., start_line 0.
        let func = |id: u64| {
            let f = p.functions.iter().find(|f| f.0 == id).unwrap();
            assert_eq!(f.1, f.2, "system_name == name");
            assert_eq!(f.4, 0, "start_line");
            (f.1.as_str(), f.3.as_str())
        };
        let ids: Vec<u64> = p.functions.iter().map(|f| f.0).collect();
        assert_eq!(ids, [1, 2, 3, 4]);

        // Locations: 0x402000/main.main shared by both samples.
        let ids: Vec<u64> = p.locations.iter().map(|l| l.0).collect();
        assert_eq!(ids, [1, 2, 3]);
        let loc = |id: u64| {
            let l = p.locations.iter().find(|l| l.0 == id).unwrap();
            let lines: Vec<(&str, &str, u64)> =
                l.2.iter()
                    .map(|&(f, line)| {
                        let (name, file) = func(f);
                        (name, file, line)
                    })
                    .collect();
            (l.1, lines)
        };

        assert_eq!(p.samples.len(), 2);
        let (locs, values, labels0) = &p.samples[0];
        assert_eq!(values, &[300, 300 * 8192]);
        assert_eq!(locs.len(), 2);
        assert_eq!(loc(locs[0]), (0x401000, vec![("main.leak", "/src/a.go", 10)]));
        assert_eq!(loc(locs[1]), (0x402000, vec![("main.main", "/src/a.go", 20)]));
        assert_eq!(labels0, &labels(&[("verdict", "leak"), ("wait_reason", "chan send")]));

        let (locs, values, labels1) = &p.samples[1];
        assert_eq!(values, &[2, 2 * 4096]);
        assert_eq!(loc(locs[0]), (0x403000, vec![("main.helper", "/src/b.go", 5), ("main.worker", "/src/a.go", 31)]));
        assert_eq!(locs[1], p.samples[0].0[1], "shared location reused");
        assert_eq!(labels1, &labels(&[("verdict", "leak"), ("created_by", "main.main")]));
    }

    #[test]
    fn same_address_different_frames_are_distinct_locations() {
        let samples = vec![
            ProfileSample {
                locations: vec![(0x1000, vec![frame("main.a", "/x.go", 1)])],
                count: 1,
                held_bytes: 0,
                labels: vec![],
            },
            ProfileSample {
                locations: vec![(0x1000, vec![frame("main.b", "/x.go", 2)])],
                count: 1,
                held_bytes: 0,
                labels: vec![],
            },
            ProfileSample {
                locations: vec![(0x1000, vec![frame("main.a", "/x.go", 1)])],
                count: 4,
                held_bytes: 0,
                labels: vec![],
            },
            // Same function name in another file is another function.
            ProfileSample {
                locations: vec![(0x2000, vec![frame("main.a", "/y.go", 1)])],
                count: 1,
                held_bytes: 0,
                labels: vec![],
            },
        ];
        let p = decode(&encode_goroutine_profile(&samples));
        assert_eq!(p.locations.len(), 3);
        assert_eq!(p.functions.len(), 3);
        let first: Vec<u64> = p.samples.iter().map(|s| s.0[0]).collect();
        assert_eq!(first, [1, 2, 1, 3]);
        assert_eq!(p.samples[2].1, [4, 0]);
    }

    #[test]
    fn empty_profile_and_edge_values() {
        let p = decode(&encode_goroutine_profile(&[]));
        assert_eq!(p.strings, ["", "goroutine", "count", "held", "bytes"]);
        assert!(p.samples.is_empty() && p.locations.is_empty() && p.functions.is_empty());

        // A location with no frames, address 0, and a huge count.
        let p = decode(&encode_goroutine_profile(&[ProfileSample {
            locations: vec![(0, vec![])],
            count: u64::MAX,
            held_bytes: u64::MAX,
            labels: vec![],
        }]));
        assert_eq!(p.locations, [(1, 0, vec![])]);
        assert_eq!(p.samples[0].1, [i64::MAX as u64, i64::MAX as u64]);
    }

    #[test]
    fn writes_file() {
        let path = std::env::temp_dir().join(format!("gleak-pprof-unit-{}.pb.gz", std::process::id()));
        write_goroutine_profile(&path, &two_samples()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(decode(&bytes).samples.len(), 2);
    }
}
