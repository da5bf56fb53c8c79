//! How urgent a leak is: the target's memory limit that binds first (its
//! cgroup's, `GOMEMLIMIT`, else the host's memory), its use, what the leak sites
//! add per second, and when the limit is reached at that rate. Said only when
//! the growth has been measured over enough time; otherwise "not yet
//! measurable" and why, never a guess. Plain arithmetic over what was read
//! ([`MemoryFacts`]) and the sites' reports.

use crate::{
    analysis::verdict::Verdict,
    output::report::{MemoryReport, SiteReport},
    process::memory_limit::{CgroupLimit, CgroupVersion},
};

/// The shortest trend window a growth is believed over: shorter, a burst of
/// creations looks like a leak's steady rate.
pub const MIN_WINDOW_S: f64 = 10.0;

/// What was read of the target's memory at one look (any part may be unknown).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryFacts {
    /// The cgroup limit that binds it, with that cgroup's usage.
    pub cgroup: Option<CgroupLimit>,
    /// `GOMEMLIMIT` as its runtime holds it (`None`: no limit, or unreadable).
    pub go_memory_limit: Option<u64>,
    /// Its resident set.
    pub rss_bytes: Option<u64>,
    /// The host's memory.
    pub host_bytes: Option<u64>,
}

/// The limit that binds first and the use it is compared with.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingLimit {
    pub limit_bytes: u64,
    pub limit_source: &'static str,
    pub limit_cgroup: Option<String>,
    pub current_bytes: u64,
    pub current_source: &'static str,
}

impl BindingLimit {
    fn room(&self) -> u64 {
        self.limit_bytes.saturating_sub(self.current_bytes)
    }
}

/// Of the limits known, the one leaving the least room: reached first at any
/// growth. A cgroup's is compared with its own usage (what the kernel compares),
/// `GOMEMLIMIT` and the host's memory with the resident set.
pub fn binding_limit(facts: &MemoryFacts) -> Option<BindingLimit> {
    let mut candidates = Vec::new();
    if let Some(c) = &facts.cgroup {
        candidates.push(BindingLimit {
            limit_bytes: c.limit_bytes,
            limit_source: match c.version {
                CgroupVersion::V2 => "the cgroup's memory.max",
                CgroupVersion::V1 => "the cgroup's memory.limit_in_bytes",
            },
            limit_cgroup: Some(c.cgroup.clone()),
            current_bytes: c.usage_bytes,
            current_source: match c.version {
                CgroupVersion::V2 => "cgroup memory.current",
                CgroupVersion::V1 => "cgroup memory.usage_in_bytes",
            },
        });
    }
    if let Some(rss) = facts.rss_bytes {
        // GOMEMLIMIT bounds the runtime's own total (heap, stacks, metadata:
        // `/memory/classes/total - heap/released`), which gleak cannot read from
        // outside; the resident set is its approximation (it adds the binary's
        // text and what cgo allocates).
        if let Some(limit) = facts.go_memory_limit {
            candidates.push(BindingLimit {
                limit_bytes: limit,
                limit_source: "GOMEMLIMIT",
                limit_cgroup: None,
                current_bytes: rss,
                current_source: "RSS",
            });
        }
        if let Some(host) = facts.host_bytes {
            candidates.push(BindingLimit {
                limit_bytes: host,
                limit_source: "the host's memory",
                limit_cgroup: None,
                current_bytes: rss,
                current_source: "RSS",
            });
        }
    }
    // On a tie the first: the cgroup's (what the kernel enforces), then GOMEMLIMIT.
    candidates.into_iter().reduce(|best, next| if next.room() < best.room() { next } else { best })
}

/// The memory each live goroutine of `site` holds, on average: what its proven
/// goroutines retain once a proof measured it, else its stack.
/// The one place that says what a leaked goroutine costs.
pub fn bytes_held_per_goroutine(site: &SiteReport) -> f64 {
    if site.live == 0 {
        return 0.0;
    }
    // What its proven goroutines retain (heap only they reach, and their stacks),
    // spread over them, once measured; else its stacks.
    match &site.retained {
        Some(r) if r.goroutines > 0 => {
            (r.bytes as f64 / r.goroutines as f64).max(site.stack_bytes as f64 / site.live as f64)
        }
        _ => site.stack_bytes as f64 / site.live as f64,
    }
}

/// What the leak sites add per second, and over which window it was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakGrowth {
    pub bytes_per_s: f64,
    /// The shortest trend window among the leak sites (0 with none).
    pub window_s: f64,
    pub leak_sites: usize,
}

/// Over the sites judged `leak`: live goroutines gained per second times the
/// bytes each holds.
pub fn leak_growth(sites: &[SiteReport]) -> LeakGrowth {
    let leaks: Vec<&SiteReport> = sites.iter().filter(|s| s.verdict == Verdict::Leak).collect();
    let bytes_per_s = leaks.iter().map(|s| s.trend.live_per_s * bytes_held_per_goroutine(s)).sum();
    let window_s = leaks.iter().map(|s| s.trend.window_s).reduce(f64::min).unwrap_or(0.0);
    LeakGrowth { bytes_per_s, window_s, leak_sites: leaks.len() }
}

/// The report's `memory` object: `None` when no limit and use are known.
pub fn outlook(facts: &MemoryFacts, sites: &[SiteReport]) -> Option<MemoryReport> {
    let limit = binding_limit(facts)?;
    let growth = leak_growth(sites);
    let (time_to_limit_s, note) = time_to_limit(&limit, &growth);
    Some(MemoryReport {
        limit_bytes: limit.limit_bytes,
        limit_source: limit.limit_source,
        limit_cgroup: limit.limit_cgroup,
        current_bytes: limit.current_bytes,
        current_source: limit.current_source,
        growth_bytes_per_s: growth.bytes_per_s,
        window_s: growth.window_s,
        time_to_limit_s,
        note,
    })
}

/// Seconds until `limit` is reached at `growth`, or why that is not yet measurable.
pub fn time_to_limit(limit: &BindingLimit, growth: &LeakGrowth) -> (Option<f64>, String) {
    if growth.leak_sites == 0 {
        return (None, "not yet measurable: no site is judged a leak".into());
    }
    if growth.window_s < MIN_WINDOW_S {
        return (
            None,
            format!(
                "not yet measurable: growth seen over {:.1} s, under the {MIN_WINDOW_S:.0} s it takes to tell a leak's \
                 rate from a burst",
                growth.window_s
            ),
        );
    }
    if !growth.bytes_per_s.is_finite() || growth.bytes_per_s <= 0.0 {
        return (
            None,
            format!("not yet measurable: the leak sites did not grow over the last {:.0} s", growth.window_s),
        );
    }
    let seconds = limit.room() as f64 / growth.bytes_per_s;
    let basis = format!(
        "at the leak sites' growth over the last {:.0} s ({} site{}), each goroutine counted by its stack",
        growth.window_s,
        growth.leak_sites,
        if growth.leak_sites == 1 { "" } else { "s" }
    );
    (Some(seconds), basis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::sample;

    const MIB: u64 = 1 << 20;

    fn cgroup(limit_mib: u64, usage_mib: u64) -> CgroupLimit {
        CgroupLimit {
            version: CgroupVersion::V2,
            cgroup: "/kubepods/pod1/ctr".into(),
            limit_bytes: limit_mib * MIB,
            usage_bytes: usage_mib * MIB,
        }
    }

    /// A leak site holding `stack_kib` KiB per goroutine, gaining `per_s` a
    /// second over `window_s`.
    fn leak_site(live: u64, stack_kib: u64, per_s: f64, window_s: f64) -> SiteReport {
        let mut s = sample::site(Verdict::Leak, "main.handler", "/src/main.go", 10, vec![0, live]);
        s.live = live;
        s.stack_bytes = live * stack_kib * 1024;
        s.trend.window_s = window_s;
        s.trend.live_per_s = per_s;
        s
    }

    #[test]
    fn the_limit_leaving_least_room_binds() {
        let facts = MemoryFacts {
            cgroup: Some(cgroup(512, 391)),
            go_memory_limit: None,
            rss_bytes: Some(380 * MIB),
            host_bytes: Some(16 << 30),
        };
        let limit = binding_limit(&facts).unwrap();
        assert_eq!(limit.limit_source, "the cgroup's memory.max");
        assert_eq!((limit.limit_bytes, limit.current_bytes), (512 * MIB, 391 * MIB));
        assert_eq!(limit.current_source, "cgroup memory.current");
        assert_eq!(limit.limit_cgroup.as_deref(), Some("/kubepods/pod1/ctr"));

        // A GOMEMLIMIT under the cgroup's: the runtime's limit binds, against RSS.
        let with_gomemlimit = MemoryFacts { go_memory_limit: Some(400 * MIB), ..facts.clone() };
        let limit = binding_limit(&with_gomemlimit).unwrap();
        assert_eq!((limit.limit_source, limit.limit_bytes, limit.current_source), ("GOMEMLIMIT", 400 * MIB, "RSS"));
        assert_eq!(limit.limit_cgroup, None);

        // A GOMEMLIMIT above the cgroup's room: the cgroup binds.
        let loose = MemoryFacts { go_memory_limit: Some(2 << 30), ..facts.clone() };
        assert_eq!(binding_limit(&loose).unwrap().limit_source, "the cgroup's memory.max");

        // No cgroup limit, no GOMEMLIMIT: the host's memory.
        let host_only = MemoryFacts { cgroup: None, ..facts.clone() };
        let limit = binding_limit(&host_only).unwrap();
        assert_eq!(
            (limit.limit_source, limit.limit_bytes, limit.current_bytes),
            ("the host's memory", 16 << 30, 380 * MIB)
        );

        let v1 = MemoryFacts { cgroup: Some(CgroupLimit { version: CgroupVersion::V1, ..cgroup(512, 391) }), ..facts };
        let limit = binding_limit(&v1).unwrap();
        assert_eq!(
            (limit.limit_source, limit.current_source),
            ("the cgroup's memory.limit_in_bytes", "cgroup memory.usage_in_bytes")
        );

        assert_eq!(binding_limit(&MemoryFacts::default()), None, "nothing known");
        // Without a resident set, only the cgroup can be compared.
        let no_rss = MemoryFacts { cgroup: None, go_memory_limit: Some(MIB), rss_bytes: None, host_bytes: Some(MIB) };
        assert_eq!(binding_limit(&no_rss), None);
    }

    #[test]
    fn time_to_the_limit_at_the_leak_sites_growth() {
        // 2 MiB/s: 40 goroutines a second of 32 KiB each, and 64 KiB ones at 12 a second.
        let sites = vec![
            leak_site(400, 32, 40.0, 30.0),
            leak_site(120, 64, 12.0, 30.0),
            // Neither a stable site nor a suspect one counts, however it grows.
            SiteReport { verdict: Verdict::Suspect, ..leak_site(1000, 64, 50.0, 30.0) },
            SiteReport { verdict: Verdict::Stable, ..leak_site(1000, 8, 5.0, 30.0) },
        ];
        let growth = leak_growth(&sites);
        let expected = 40.0 * 32768.0 + 12.0 * 65536.0;
        assert!((growth.bytes_per_s - expected).abs() < 1e-6, "{growth:?}");
        assert_eq!((growth.window_s, growth.leak_sites), (30.0, 2));
        let facts = MemoryFacts { cgroup: Some(cgroup(512, 391)), ..MemoryFacts::default() };
        let report = outlook(&facts, &sites).unwrap();
        let seconds = report.time_to_limit_s.expect("measurable");
        assert!((seconds - (121 * MIB) as f64 / expected).abs() < 1e-6, "{seconds}");
        assert!(report.note.contains("2 sites"), "{}", report.note);
        assert_eq!((report.limit_bytes, report.current_bytes), (512 * MIB, 391 * MIB));

        // Already over the limit: no time left.
        let over = MemoryFacts { cgroup: Some(cgroup(512, 600)), ..MemoryFacts::default() };
        assert_eq!(outlook(&over, &sites).unwrap().time_to_limit_s, Some(0.0));
    }

    #[test]
    fn not_yet_measurable_says_why() {
        let facts = MemoryFacts { cgroup: Some(cgroup(512, 391)), ..MemoryFacts::default() };
        let cases = [
            (vec![leak_site(50, 32, 10.0, 4.0)], "under the 10 s"),
            (vec![leak_site(50, 32, 0.0, 30.0)], "did not grow"),
            (vec![leak_site(50, 32, -3.0, 30.0)], "did not grow"),
            (vec![SiteReport { verdict: Verdict::Suspect, ..leak_site(50, 32, 10.0, 30.0) }], "no site is judged"),
            (Vec::new(), "no site is judged"),
        ];
        for (sites, why) in cases {
            let report = outlook(&facts, &sites).unwrap();
            assert_eq!(report.time_to_limit_s, None, "{why}");
            assert!(report.note.starts_with("not yet measurable: ") && report.note.contains(why), "{}", report.note);
        }
        // The shortest leak window decides: one young site makes the sum young.
        let mixed = [leak_site(50, 32, 10.0, 30.0), leak_site(5, 32, 1.0, 3.0)];
        assert_eq!(outlook(&facts, &mixed).unwrap().time_to_limit_s, None);
    }

    #[test]
    fn bytes_per_goroutine_is_the_average_stack() {
        assert_eq!(bytes_held_per_goroutine(&leak_site(10, 64, 1.0, 30.0)), 65536.0);
        let mut empty = leak_site(10, 64, 1.0, 30.0);
        empty.live = 0;
        assert_eq!(bytes_held_per_goroutine(&empty), 0.0, "no division by zero");
    }
}
