//! Goroutine profiles in pprof's `profile.proto` format
//! (github.com/google/pprof/proto/profile.proto), readable by `go tool pprof`.
//!
//! The protobuf is encoded by hand (a varint and length-delimited writer is all
//! `profile.proto` needs) and gzip-compressed, as pprof expects.
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

use crate::{report::Report, symbolize::Frame};

/// One stack of goroutines in the profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileSample {
    /// Innermost first. Each location is one return address (or the go statement's PC) with its
    /// frames (several when inlined, innermost first), as produced by the symbolizer.
    pub locations: Vec<(u64, Vec<Frame>)>,
    /// Number of goroutines with this stack.
    pub count: u64,
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
        let mut left = s.live;
        for b in s.blocked_at.iter().filter(|b| !b.locations.is_empty()) {
            let count = b.goroutines.min(left);
            left -= count;
            samples.push(ProfileSample {
                locations: b.locations.clone(),
                count,
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

// ---------------------------------------------------------------------------
// profile.proto field numbers
// ---------------------------------------------------------------------------

mod field {
    // Profile
    pub const SAMPLE_TYPE: u32 = 1;
    pub const SAMPLE: u32 = 2;
    pub const MAPPING: u32 = 3;
    pub const LOCATION: u32 = 4;
    pub const FUNCTION: u32 = 5;
    pub const STRING_TABLE: u32 = 6;
    pub const TIME_NANOS: u32 = 9;
    pub const PERIOD_TYPE: u32 = 11;
    pub const PERIOD: u32 = 12;
    // ValueType
    pub const VT_TYPE: u32 = 1;
    pub const VT_UNIT: u32 = 2;
    // Sample
    pub const S_LOCATION_ID: u32 = 1;
    pub const S_VALUE: u32 = 2;
    pub const S_LABEL: u32 = 3;
    // Label
    pub const L_KEY: u32 = 1;
    pub const L_STR: u32 = 2;
    // Mapping
    pub const M_ID: u32 = 1;
    pub const M_MEMORY_LIMIT: u32 = 3;
    pub const M_HAS_FUNCTIONS: u32 = 7;
    pub const M_HAS_FILENAMES: u32 = 8;
    pub const M_HAS_LINE_NUMBERS: u32 = 9;
    pub const M_HAS_INLINE_FRAMES: u32 = 10;
    // Location
    pub const LOC_ID: u32 = 1;
    pub const LOC_MAPPING_ID: u32 = 2;
    pub const LOC_ADDRESS: u32 = 3;
    pub const LOC_LINE: u32 = 4;
    // Line
    pub const LINE_FUNCTION_ID: u32 = 1;
    pub const LINE_LINE: u32 = 2;
    // Function
    pub const F_ID: u32 = 1;
    pub const F_NAME: u32 = 2;
    pub const F_SYSTEM_NAME: u32 = 3;
    pub const F_FILENAME: u32 = 4;
}

// ---------------------------------------------------------------------------
// Protobuf writer
// ---------------------------------------------------------------------------

/// The id of the one mapping every location belongs to.
const MAPPING_ID: u64 = 1;

const WIRE_VARINT: u32 = 0;
const WIRE_LEN: u32 = 2;

/// A protobuf message being written. Scalar fields equal to zero are omitted
/// (proto3 defaults); repeated and length-delimited fields are always written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.raw_varint(u64::from(field) << 3 | u64::from(wire));
    }

    /// A `uint64` field.
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, WIRE_VARINT);
            self.raw_varint(v);
        }
    }

    fn boolean(&mut self, field: u32, v: bool) {
        self.uint(field, u64::from(v));
    }

    /// An `int64` field (negative values as ten-byte two's complement varints).
    fn int(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, WIRE_LEN);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// A packed repeated `uint64`/`int64` field (omitted when empty).
    fn packed(&mut self, field: u32, vs: impl IntoIterator<Item = u64>) {
        let mut body = Msg::default();
        for v in vs {
            body.raw_varint(v);
        }
        if !body.0.is_empty() {
            self.bytes(field, &body.0);
        }
    }
}

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

    fn value_type(&mut self, ty: &str, unit: &str) -> Msg {
        let mut m = Msg::default();
        m.int(field::VT_TYPE, self.string(ty));
        m.int(field::VT_UNIT, self.string(unit));
        m
    }
}

/// The uncompressed `Profile` message.
fn encode_profile(samples: &[ProfileSample], time_nanos: i64) -> Vec<u8> {
    let mut b = Builder::new();
    let mut out = Msg::default();

    let sample_type = b.value_type("goroutine", "count");
    out.message(field::SAMPLE_TYPE, sample_type);

    for s in samples {
        let ids: Vec<u64> = s.locations.iter().map(|(addr, frames)| b.location(*addr, frames)).collect();
        let mut m = Msg::default();
        m.packed(field::S_LOCATION_ID, ids);
        m.packed(field::S_VALUE, [i64::try_from(s.count).unwrap_or(i64::MAX) as u64]);
        for (k, v) in &s.labels {
            let mut l = Msg::default();
            l.int(field::L_KEY, b.string(k));
            l.int(field::L_STR, b.string(v));
            m.message(field::S_LABEL, l);
        }
        out.message(field::SAMPLE, m);
    }

    let mut m = Msg::default();
    m.uint(field::M_ID, MAPPING_ID);
    // memory_start 0, file_offset 0, filename "", build_id "": defaults, omitted.
    m.uint(field::M_MEMORY_LIMIT, u64::MAX);
    m.boolean(field::M_HAS_FUNCTIONS, true);
    m.boolean(field::M_HAS_FILENAMES, true);
    m.boolean(field::M_HAS_LINE_NUMBERS, true);
    m.boolean(field::M_HAS_INLINE_FRAMES, true);
    out.message(field::MAPPING, m);

    for (i, (address, lines)) in b.locations.iter().enumerate() {
        let mut m = Msg::default();
        m.uint(field::LOC_ID, i as u64 + 1);
        m.uint(field::LOC_MAPPING_ID, MAPPING_ID);
        m.uint(field::LOC_ADDRESS, *address);
        for &(function_id, line) in lines {
            let mut l = Msg::default();
            l.uint(field::LINE_FUNCTION_ID, function_id);
            l.int(field::LINE_LINE, line);
            m.message(field::LOC_LINE, l);
        }
        out.message(field::LOCATION, m);
    }

    for (i, &(name, filename)) in b.functions.iter().enumerate() {
        let mut m = Msg::default();
        m.uint(field::F_ID, i as u64 + 1);
        m.int(field::F_NAME, name);
        m.int(field::F_SYSTEM_NAME, name);
        m.int(field::F_FILENAME, filename);
        out.message(field::FUNCTION, m);
    }

    out.int(field::TIME_NANOS, time_nanos);
    let period_type = b.value_type("goroutine", "count");
    out.message(field::PERIOD_TYPE, period_type);
    out.int(field::PERIOD, 1);

    // Last: every string has been interned by now.
    for s in &b.strings {
        out.bytes(field::STRING_TABLE, s.as_bytes());
    }
    out.0
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    // -- A minimal protobuf reader ------------------------------------------

    #[derive(Debug, Clone, PartialEq)]
    enum Val<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
    }

    fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[*pos];
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
            assert!(shift < 64, "varint too long");
        }
    }

    /// All (field, value) pairs of a message, in order.
    fn fields(buf: &[u8]) -> Vec<(u32, Val<'_>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos);
            let (field, wire) = ((key >> 3) as u32, (key & 7) as u32);
            assert!(field > 0, "field number 0");
            match wire {
                WIRE_VARINT => out.push((field, Val::Varint(read_varint(buf, &mut pos)))),
                WIRE_LEN => {
                    let len = read_varint(buf, &mut pos) as usize;
                    out.push((field, Val::Bytes(&buf[pos..pos + len])));
                    pos += len;
                }
                w => panic!("unexpected wire type {w} for field {field}"),
            }
        }
        assert_eq!(pos, buf.len(), "message overruns its buffer");
        out
    }

    fn varints(buf: &[u8], field: u32) -> Vec<u64> {
        let mut out = Vec::new();
        for (f, v) in fields(buf) {
            if f != field {
                continue;
            }
            match v {
                Val::Varint(x) => out.push(x),
                Val::Bytes(packed) => {
                    let mut pos = 0;
                    while pos < packed.len() {
                        out.push(read_varint(packed, &mut pos));
                    }
                }
            }
        }
        out
    }

    /// Scalar field, 0 when absent (proto3 default).
    fn scalar(buf: &[u8], field: u32) -> u64 {
        let v = varints(buf, field);
        assert!(v.len() <= 1, "field {field} repeated: {v:?}");
        v.first().copied().unwrap_or(0)
    }

    fn messages(buf: &[u8], field: u32) -> Vec<&[u8]> {
        fields(buf)
            .into_iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, v)| match v {
                Val::Bytes(b) => b,
                Val::Varint(_) => panic!("field {field} is a varint, expected a message"),
            })
            .collect()
    }

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
        let raw = gunzip(gz);
        let buf = raw.as_slice();
        let strings: Vec<String> =
            messages(buf, field::STRING_TABLE).into_iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect();
        let s = |i: u64| strings[i as usize].clone();
        let vt = |m: &[u8]| (s(scalar(m, 1)), s(scalar(m, 2)));
        let sample_types = messages(buf, field::SAMPLE_TYPE);
        assert_eq!(sample_types.len(), 1);
        let period_types = messages(buf, field::PERIOD_TYPE);
        assert_eq!(period_types.len(), 1);
        Decoded {
            samples: messages(buf, field::SAMPLE)
                .into_iter()
                .map(|m| {
                    let labels = messages(m, field::S_LABEL)
                        .into_iter()
                        .map(|l| {
                            assert_eq!(scalar(l, 3), 0, "num label");
                            (s(scalar(l, field::L_KEY)), s(scalar(l, field::L_STR)))
                        })
                        .collect();
                    (varints(m, field::S_LOCATION_ID), varints(m, field::S_VALUE), labels)
                })
                .collect(),
            locations: messages(buf, field::LOCATION)
                .into_iter()
                .map(|m| {
                    assert_eq!(scalar(m, field::LOC_MAPPING_ID), MAPPING_ID);
                    let lines = messages(m, field::LOC_LINE)
                        .into_iter()
                        .map(|l| (scalar(l, field::LINE_FUNCTION_ID), scalar(l, field::LINE_LINE)))
                        .collect();
                    (scalar(m, field::LOC_ID), scalar(m, field::LOC_ADDRESS), lines)
                })
                .collect(),
            functions: messages(buf, field::FUNCTION)
                .into_iter()
                .map(|m| {
                    (
                        scalar(m, field::F_ID),
                        s(scalar(m, field::F_NAME)),
                        s(scalar(m, field::F_SYSTEM_NAME)),
                        s(scalar(m, field::F_FILENAME)),
                        scalar(m, 5),
                    )
                })
                .collect(),
            sample_type: vt(sample_types[0]),
            period_type: vt(period_types[0]),
            period: scalar(buf, field::PERIOD),
            time_nanos: scalar(buf, field::TIME_NANOS),
            mappings: messages(buf, field::MAPPING)
                .into_iter()
                .map(|m| {
                    (
                        scalar(m, field::M_ID),
                        scalar(m, 2),
                        scalar(m, field::M_MEMORY_LIMIT),
                        scalar(m, 4),
                        s(scalar(m, 5)),
                        [7, 8, 9, 10].map(|f| scalar(m, f)),
                    )
                })
                .collect(),
            strings,
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
                labels: labels(&[("verdict", "leak"), ("created_by", "main.main")]),
            },
        ]
    }

    // -- Tests --------------------------------------------------------------

    #[test]
    fn varint_encoding() {
        let mut m = Msg::default();
        m.raw_varint(0);
        m.raw_varint(1);
        m.raw_varint(127);
        m.raw_varint(128);
        m.raw_varint(300);
        m.raw_varint(u64::MAX);
        assert_eq!(
            m.0,
            [0x00, 0x01, 0x7f, 0x80, 0x01, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        let mut pos = 0;
        let back: Vec<u64> = (0..6).map(|_| read_varint(&m.0, &mut pos)).collect();
        assert_eq!(back, [0, 1, 127, 128, 300, u64::MAX]);
    }

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
        assert_eq!(values, &[300]);
        assert_eq!(locs.len(), 2);
        assert_eq!(loc(locs[0]), (0x401000, vec![("main.leak", "/src/a.go", 10)]));
        assert_eq!(loc(locs[1]), (0x402000, vec![("main.main", "/src/a.go", 20)]));
        assert_eq!(labels0, &labels(&[("verdict", "leak"), ("wait_reason", "chan send")]));

        let (locs, values, labels1) = &p.samples[1];
        assert_eq!(values, &[2]);
        assert_eq!(loc(locs[0]), (0x403000, vec![("main.helper", "/src/b.go", 5), ("main.worker", "/src/a.go", 31)]));
        assert_eq!(locs[1], p.samples[0].0[1], "shared location reused");
        assert_eq!(labels1, &labels(&[("verdict", "leak"), ("created_by", "main.main")]));
    }

    #[test]
    fn same_address_different_frames_are_distinct_locations() {
        let samples = vec![
            ProfileSample { locations: vec![(0x1000, vec![frame("main.a", "/x.go", 1)])], count: 1, labels: vec![] },
            ProfileSample { locations: vec![(0x1000, vec![frame("main.b", "/x.go", 2)])], count: 1, labels: vec![] },
            ProfileSample { locations: vec![(0x1000, vec![frame("main.a", "/x.go", 1)])], count: 4, labels: vec![] },
            // Same function name in another file is another function.
            ProfileSample { locations: vec![(0x2000, vec![frame("main.a", "/y.go", 1)])], count: 1, labels: vec![] },
        ];
        let p = decode(&encode_goroutine_profile(&samples));
        assert_eq!(p.locations.len(), 3);
        assert_eq!(p.functions.len(), 3);
        let first: Vec<u64> = p.samples.iter().map(|s| s.0[0]).collect();
        assert_eq!(first, [1, 2, 1, 3]);
        assert_eq!(p.samples[2].1, [4]);
    }

    #[test]
    fn empty_profile_and_edge_values() {
        let p = decode(&encode_goroutine_profile(&[]));
        assert_eq!(p.strings, ["", "goroutine", "count"]);
        assert!(p.samples.is_empty() && p.locations.is_empty() && p.functions.is_empty());

        // A location with no frames, address 0, and a huge count.
        let p = decode(&encode_goroutine_profile(&[ProfileSample {
            locations: vec![(0, vec![])],
            count: u64::MAX,
            labels: vec![],
        }]));
        assert_eq!(p.locations, [(1, 0, vec![])]);
        assert_eq!(p.samples[0].1, [i64::MAX as u64]);
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
