//! Go's `waitReason` values as gleak's rules see them: each code a binary uses,
//! resolved once per binary to a [`WaitReason`], the name Go prints for it (as
//! `runtime.waitReasonStrings` spells it) and a [`WaitClass`] the rules match on.
//!
//! The numbering changes between Go releases (1.26 reordered it), so the codes
//! come from the binary: its `runtime.waitReasonStrings`, else its DWARF constants
//! (`runtime.waitReasonChanSend` = 20), else gleak's table for its release. Either
//! way each reason is looked up in [`KnownReason`], the one list of the reasons
//! Go 1.19–1.27 define, so the strings and the constants give the same values.

use std::collections::HashMap;

/// What a wait means for whoever judges the goroutine in it. Every rule matches
/// on these, never on a reason's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitClass {
    /// Nothing can ever end it: an operation on a nil channel, `select {}`.
    NeverWakes,
    /// A send, receive or `select` on channels that exist.
    Channel,
    /// A lock or semaphore a goroutine passes through: `sync.Mutex`, `RWMutex`,
    /// and `semacquire` (which before Go 1.24 is also what a `WaitGroup` shows).
    Lock,
    /// `sync.WaitGroup.Wait` (Go 1.24+): a semaphore, but not a lock one passes through.
    WaitGroup,
    /// `sync.Cond.Wait`.
    Cond,
    /// Waiting on the network poller (`IO wait`).
    Network,
    /// `time.Sleep`.
    Sleep,
    /// Made to assist the GC for its allocations: paused mid-work by the runtime,
    /// until the GC cycle progresses (`GC assist marking`, `GC assist wait`).
    GcAssist,
    /// Otherwise paused mid-work by the runtime: preempted, a stop of the world,
    /// waiting for a GC cycle to end.
    RuntimePaused,
    /// The runtime's own background work, idle or waiting on the GC, which ends by
    /// itself: GC workers, the sweeper and scavenger, `force gc (idle)`, the
    /// GOMAXPROCS updater, the old timer goroutine.
    Idle,
    /// Anything else: the runtime's rarer waits (finalizers, tracing, debug calls,
    /// coroutines), `synctest` bubbles, and reasons gleak does not know.
    Other,
}

impl WaitClass {
    /// Nothing can end the wait.
    pub fn never_wakes(self) -> bool {
        self == WaitClass::NeverWakes
    }

    /// The wait ends by itself (a timer, the network, the runtime's own idle
    /// workers, a GC assist): a growing population of them is not proof of a leak.
    pub fn ends_by_itself(self) -> bool {
        matches!(self, WaitClass::Sleep | WaitClass::Network | WaitClass::Idle | WaitClass::GcAssist)
    }

    /// A wait a goroutine serving a request passes through on its way: a lock, a
    /// condition. Brief by design, unlike a channel a request can hang on.
    pub fn passes_through_a_lock(self) -> bool {
        matches!(self, WaitClass::Lock | WaitClass::Cond)
    }

    /// The runtime pausing a goroutine mid-work (GC assist, preemption, a stop of
    /// the world): it is running, as far as what it serves is concerned.
    pub fn paused_by_runtime(self) -> bool {
        matches!(self, WaitClass::GcAssist | WaitClass::RuntimePaused)
    }
}

macro_rules! known_reasons {
    ($($variant:ident = $name:literal, $class:ident;)*) => {
        /// Every wait reason Go 1.19–1.27 defines, by its constant's name
        /// (`runtime.waitReasonChanSend` is [`KnownReason::ChanSend`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum KnownReason {
            $($variant,)*
        }

        impl KnownReason {
            /// All of them, in the order of this list.
            pub const ALL: &'static [KnownReason] = &[$(KnownReason::$variant,)*];

            /// The name of its constant after `runtime.waitReason`.
            pub fn constant(self) -> &'static str {
                match self {
                    $(KnownReason::$variant => stringify!($variant),)*
                }
            }

            /// What `runtime.waitReasonStrings` holds for it from Go 1.25 on
            /// (see [`KnownReason::name_in`] for older spellings).
            pub fn name(self) -> &'static str {
                match self {
                    $(KnownReason::$variant => $name,)*
                }
            }

            pub fn class(self) -> WaitClass {
                match self {
                    $(KnownReason::$variant => WaitClass::$class,)*
                }
            }
        }
    };
}

known_reasons! {
    Zero = "", Other;
    GCAssistMarking = "GC assist marking", GcAssist;
    IOWait = "IO wait", Network;
    ChanReceiveNilChan = "chan receive (nil chan)", NeverWakes;
    ChanSendNilChan = "chan send (nil chan)", NeverWakes;
    DumpingHeap = "dumping heap", Other;
    GarbageCollection = "garbage collection", Other;
    GarbageCollectionScan = "garbage collection scan", Other;
    PanicWait = "panicwait", Other;
    Select = "select", Channel;
    SelectNoCases = "select (no cases)", NeverWakes;
    GCAssistWait = "GC assist wait", GcAssist;
    GCSweepWait = "GC sweep wait", Idle;
    GCScavengeWait = "GC scavenge wait", Idle;
    ChanReceive = "chan receive", Channel;
    ChanSend = "chan send", Channel;
    FinalizerWait = "finalizer wait", Other;
    ForceGCIdle = "force gc (idle)", Idle;
    UpdateGOMAXPROCSIdle = "GOMAXPROCS updater (idle)", Idle;
    Semacquire = "semacquire", Lock;
    Sleep = "sleep", Sleep;
    SyncCondWait = "sync.Cond.Wait", Cond;
    TimerGoroutineIdle = "timer goroutine (idle)", Idle;
    SyncMutexLock = "sync.Mutex.Lock", Lock;
    SyncRWMutexRLock = "sync.RWMutex.RLock", Lock;
    SyncRWMutexLock = "sync.RWMutex.Lock", Lock;
    SyncWaitGroupWait = "sync.WaitGroup.Wait", WaitGroup;
    TraceReaderBlocked = "trace reader (blocked)", Other;
    WaitForGCCycle = "wait for GC cycle", RuntimePaused;
    GCWorkerIdle = "GC worker (idle)", Idle;
    GCWorkerActive = "GC worker (active)", Idle;
    Preempted = "preempted", RuntimePaused;
    DebugCall = "debug call", Other;
    GCMarkTermination = "GC mark termination", Idle;
    StoppingTheWorld = "stopping the world", RuntimePaused;
    FlushProcCaches = "flushing proc caches", Other;
    TraceGoroutineStatus = "trace goroutine status", Other;
    TraceProcStatus = "trace proc status", Other;
    PageTraceFlush = "page trace flush", Other;
    Coroutine = "coroutine", Other;
    GCWeakToStrongWait = "GC weak to strong wait", Idle;
    SynctestRun = "synctest.Run", Other;
    SynctestWait = "synctest.Wait", Other;
    SynctestChanReceive = "chan receive (durable)", Other;
    SynctestChanSend = "chan send (durable)", Other;
    SynctestSelect = "select (durable)", Other;
    SynctestWaitGroupWait = "sync.WaitGroup.Wait (durable)", Other;
    CleanupWait = "cleanup wait", Other;
}

impl KnownReason {
    /// What `runtime.waitReasonStrings` of Go 1.`minor` holds for it: Go 1.24
    /// named the waits of a `synctest` bubble `(synctest)`, 1.25 renamed them `(durable)`.
    pub fn name_in(self, minor: u32) -> &'static str {
        match self {
            KnownReason::SynctestChanReceive if minor <= 24 => "chan receive (synctest)",
            KnownReason::SynctestChanSend if minor <= 24 => "chan send (synctest)",
            KnownReason::SynctestSelect if minor <= 24 => "select (synctest)",
            other => other.name(),
        }
    }

    /// The reason Go prints as `name`, in any release.
    pub fn from_name(name: &str) -> Option<KnownReason> {
        match name {
            "chan receive (synctest)" => Some(KnownReason::SynctestChanReceive),
            "chan send (synctest)" => Some(KnownReason::SynctestChanSend),
            "select (synctest)" => Some(KnownReason::SynctestSelect),
            _ => KnownReason::ALL.iter().copied().find(|known| known.name() == name),
        }
    }

    /// The reason whose constant is `runtime.waitReason{constant}`.
    pub fn from_constant(constant: &str) -> Option<KnownReason> {
        KnownReason::ALL.iter().copied().find(|known| known.constant() == constant)
    }
}

/// One wait reason of one binary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WaitReason {
    /// What Go prints for it (`chan receive (nil chan)`, `IO wait`): what reports show.
    pub name: String,
    /// Which of Go's reasons it is, if gleak knows it.
    pub known: Option<KnownReason>,
    pub class: WaitClass,
}

impl WaitReason {
    /// The reason a binary names `name` in its `runtime.waitReasonStrings`.
    pub fn from_name(name: impl Into<String>) -> Self {
        let name = name.into();
        let known = KnownReason::from_name(&name);
        Self { class: known.map_or(WaitClass::Other, KnownReason::class), known, name }
    }

    /// The reason of the constant `runtime.waitReason{constant}` of Go 1.`minor`,
    /// named as that release's strings name it; an unknown constant is named by
    /// its words (`ChanSendNilChan` → `chan send nil chan`).
    pub fn from_constant(constant: &str, minor: u32) -> Self {
        match KnownReason::from_constant(constant) {
            Some(known) => Self { name: known.name_in(minor).to_string(), known: Some(known), class: known.class() },
            None => Self { name: words(constant), known: None, class: WaitClass::Other },
        }
    }

    /// A code no source names: `waitReason(N)`.
    fn unnamed(code: u8) -> Self {
        Self { name: format!("waitReason({code})"), known: None, class: WaitClass::Other }
    }

    pub fn is(&self, known: KnownReason) -> bool {
        self.known == Some(known)
    }
}

/// Every `waitReason` code (a `uint8`) of one binary, resolved once.
#[derive(Clone, Debug)]
pub struct WaitReasons {
    by_code: Vec<WaitReason>,
}

impl Default for WaitReasons {
    /// No names known: every code is `waitReason(N)`, 0 the empty reason.
    fn default() -> Self {
        Self::resolve(|_| None)
    }
}

impl WaitReasons {
    fn resolve(mut named: impl FnMut(u8) -> Option<WaitReason>) -> Self {
        let by_code = (0..=u8::MAX)
            .map(|code| match named(code) {
                Some(reason) if !reason.name.is_empty() => reason,
                _ if code == 0 => WaitReason::from_name(""),
                _ => WaitReason::unnamed(code),
            })
            .collect();
        Self { by_code }
    }

    /// From `runtime.waitReasonStrings` (exactly what Go prints in tracebacks),
    /// indexed by code; names past 255 are no `uint8` code and are left out.
    pub fn from_strings(names: Vec<String>) -> Self {
        let mut names = names.into_iter().map(Some).collect::<Vec<_>>();
        Self::resolve(|code| names.get_mut(usize::from(code)).and_then(Option::take).map(WaitReason::from_name))
    }

    /// From the DWARF constants of a Go 1.`minor` binary (`ChanSend` for
    /// `runtime.waitReasonChanSend`, by value), when its string table is unavailable.
    pub fn from_constants(consts: &HashMap<u8, String>, minor: u32) -> Self {
        Self::resolve(|code| consts.get(&code).map(|constant| WaitReason::from_constant(constant, minor)))
    }

    /// The reason of `code`.
    pub fn get(&self, code: u8) -> &WaitReason {
        // 256 entries, one per u8.
        &self.by_code[usize::from(code)]
    }

    /// What Go prints for `code`.
    pub fn name(&self, code: u8) -> &str {
        &self.get(code).name
    }
}

/// `ChanSendNilChan` → `chan send nil chan`.
fn words(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::gotables::{self, NEWEST_KNOWN_MINOR, OLDEST_KNOWN_MINOR};

    #[test]
    fn names_from_strings_and_constants() {
        let w = WaitReasons::from_strings(vec!["".into(), "GC assist marking".into(), "chan send".into()]);
        assert_eq!(w.name(2), "chan send");
        assert_eq!(w.get(2).class, WaitClass::Channel);
        assert!(w.get(2).is(KnownReason::ChanSend));
        assert_eq!(w.name(0), "");
        assert_eq!(w.name(99), "waitReason(99)");
        assert_eq!(w.get(99).class, WaitClass::Other);
        assert_eq!(w.name(255), "waitReason(255)");
        let mut c = HashMap::new();
        c.insert(20u8, "ChanSend".to_string());
        c.insert(18u8, "Select".to_string());
        c.insert(3u8, "ChanReceiveNilChan".to_string());
        c.insert(2u8, "IOWait".to_string());
        c.insert(7u8, "SomethingNew".to_string());
        let w = WaitReasons::from_constants(&c, 25);
        assert_eq!(w.name(20), "chan send");
        assert_eq!(w.name(18), "select");
        // Go's own spelling, not the constant's words: what the rules and tests meet.
        assert_eq!(w.name(3), "chan receive (nil chan)");
        assert_eq!(w.get(3).class, WaitClass::NeverWakes);
        assert_eq!(w.name(2), "IO wait");
        assert_eq!(w.get(2).class, WaitClass::Network);
        assert_eq!((w.name(7), w.get(7).class), ("something new", WaitClass::Other));
        assert_eq!(w.name(4), "waitReason(4)");
        assert_eq!(WaitReasons::default().name(0), "");
        assert_eq!(WaitReasons::default().name(1), "waitReason(1)");
    }

    #[test]
    fn strings_past_a_uint8_are_no_code() {
        let w = WaitReasons::from_strings(vec!["x".into(); 300]);
        assert_eq!(w.name(255), "x");
    }

    /// Every constant in the list is spelled once, and every name too (the
    /// strings and the constants resolve to the same reason).
    #[test]
    fn known_reasons_are_distinct() {
        for (i, a) in KnownReason::ALL.iter().enumerate() {
            for b in &KnownReason::ALL[i + 1..] {
                assert_ne!(a.constant(), b.constant());
                assert_ne!(a.name(), b.name());
            }
            assert_eq!(KnownReason::from_name(a.name()), Some(*a));
            assert_eq!(KnownReason::from_constant(a.constant()), Some(*a));
            for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
                assert_eq!(KnownReason::from_name(a.name_in(minor)), Some(*a), "{a:?} in 1.{minor}");
            }
        }
    }

    /// The reasons that are meant to be [`WaitClass::Other`]: waits no rule
    /// looks at. Any other reason that resolves to `Other` is a gap in the list.
    const MEANT_AS_OTHER: &[&str] = &[
        "",
        "dumping heap",
        "garbage collection",
        "garbage collection scan",
        "panicwait",
        "finalizer wait",
        "trace reader (blocked)",
        "debug call",
        "flushing proc caches",
        "trace goroutine status",
        "trace proc status",
        "page trace flush",
        "coroutine",
        "synctest.Run",
        "synctest.Wait",
        "chan receive (synctest)",
        "chan send (synctest)",
        "select (synctest)",
        "chan receive (durable)",
        "chan send (durable)",
        "select (durable)",
        "sync.WaitGroup.Wait (durable)",
        "cleanup wait",
    ];

    /// Every string of every release table resolves to a reason gleak knows, and
    /// only the ones meant to are `Other`.
    #[test]
    fn every_table_string_is_known() {
        for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
            let facts = gotables::for_release(minor).expect("release in the table");
            let reasons = WaitReasons::from_strings(facts.wait_reasons.clone());
            for (code, name) in facts.wait_reasons.iter().enumerate() {
                let reason = reasons.get(code as u8);
                assert_eq!(&reason.name, name, "1.{minor} code {code}: the name is kept as Go prints it");
                let known = reason.known.unwrap_or_else(|| panic!("1.{minor}: {name:?} is not a known reason"));
                assert_eq!(known.name_in(minor), name, "1.{minor}: {known:?}");
                assert_eq!(
                    reason.class == WaitClass::Other,
                    MEANT_AS_OTHER.contains(&name.as_str()),
                    "1.{minor}: {name:?} is {:?}",
                    reason.class
                );
            }
        }
    }

    /// What the rules rely on, release by release: the reasons they single out
    /// have the class the rules expect wherever the release has them.
    #[test]
    fn the_rules_reasons_have_their_classes() {
        use WaitClass::*;
        let expected: &[(&str, WaitClass)] = &[
            ("chan receive (nil chan)", NeverWakes),
            ("chan send (nil chan)", NeverWakes),
            ("select (no cases)", NeverWakes),
            ("chan send", Channel),
            ("chan receive", Channel),
            ("select", Channel),
            ("semacquire", Lock),
            ("sync.Mutex.Lock", Lock),
            ("sync.RWMutex.RLock", Lock),
            ("sync.RWMutex.Lock", Lock),
            ("sync.WaitGroup.Wait", WaitGroup),
            ("sync.Cond.Wait", Cond),
            ("IO wait", Network),
            ("sleep", Sleep),
            ("GC assist marking", GcAssist),
            ("GC assist wait", GcAssist),
            ("preempted", RuntimePaused),
            ("stopping the world", RuntimePaused),
            ("wait for GC cycle", RuntimePaused),
            ("GC worker (idle)", Idle),
            ("force gc (idle)", Idle),
        ];
        for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
            let facts = gotables::for_release(minor).expect("release in the table");
            let reasons = WaitReasons::from_strings(facts.wait_reasons.clone());
            for &(name, class) in expected {
                // Go 1.20 added the sync reasons (before, all were `semacquire`) and
                // `stopping the world`, 1.24 WaitGroup's.
                let since = match name {
                    "sync.Mutex.Lock" | "sync.RWMutex.RLock" | "sync.RWMutex.Lock" | "stopping the world" => 20,
                    "sync.WaitGroup.Wait" => 24,
                    _ => OLDEST_KNOWN_MINOR,
                };
                let Some(code) = facts.wait_reasons.iter().position(|n| n == name) else {
                    assert!(minor < since, "1.{minor} lacks {name:?}");
                    continue;
                };
                assert_eq!(reasons.get(code as u8).class, class, "1.{minor}: {name:?}");
            }
        }
    }

    /// The predicates the rules use, as the string rules spelled them before the
    /// classes: `ends_by_itself` was `sleep`, `IO wait`, `GC …` or `… (idle)`.
    #[test]
    fn class_predicates_keep_the_old_string_rules() {
        for known in KnownReason::ALL {
            for minor in OLDEST_KNOWN_MINOR..=NEWEST_KNOWN_MINOR {
                let name = known.name_in(minor);
                let class = known.class();
                let old_ends =
                    matches!(name, "sleep" | "IO wait") || name.starts_with("GC ") || name.contains("(idle)");
                assert_eq!(class.ends_by_itself(), old_ends, "{name:?}");
                let old_never =
                    matches!(name, "chan receive (nil chan)" | "chan send (nil chan)" | "select (no cases)");
                assert_eq!(class.never_wakes(), old_never, "{name:?}");
                let old_lock = matches!(
                    name,
                    "semacquire" | "sync.Cond.Wait" | "sync.Mutex.Lock" | "sync.RWMutex.RLock" | "sync.RWMutex.Lock"
                );
                assert_eq!(class.passes_through_a_lock(), old_lock, "{name:?}");
                let old_paused = matches!(
                    name,
                    "GC assist marking" | "GC assist wait" | "preempted" | "stopping the world" | "wait for GC cycle"
                );
                assert_eq!(class.paused_by_runtime(), old_paused, "{name:?}");
            }
        }
    }
}
