//! Which test each goroutine belongs to: the test whose `tRunner` goroutine is
//! its ancestor, however many generations down, whether tests run in parallel or
//! not. A test starts where `t.Run` runs `go tRunner(t, f)`: the creation probe
//! reads that goroutine's `*testing.T` (see `GoroutineEvent::captured`), and every
//! goroutine it creates, and theirs, inherit its test. A test ends when its
//! `tRunner` goroutine exits (after its subtests, as `go test` counts it).
//!
//! Fed by the aggregator, in time order; the names are read from the target by
//! the tracer ([`TestLedger::unnamed`]), as soon as the start is applied: the
//! `testing.T` may be freed once its test ends.

use foldhash::HashMap;

use super::aggregate::SiteKey;

/// A test, as the index of its [`TestRun`] + 1; 0 for no test.
pub type TestId = u32;

/// Tests tracked at most per target; later ones are blamed on their parent test.
const MAX_TESTS: usize = 1 << 20;

/// One test run (`TestX`, `TestX/sub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The `*testing.T`.
    pub t_addr: u64,
    /// Read from `t.name`; `None` until read, or when it could not be.
    pub name: Option<String>,
    /// The goroutine running it (`tRunner`).
    pub goid: u64,
    pub started_ns: u64,
    /// When its `tRunner` goroutine exited.
    pub ended_ns: Option<u64>,
    /// The test that ran `t.Run` for it; 0 for a top-level test.
    pub parent: TestId,
}

/// Goroutines of one site that outlived their test: still alive when it ended,
/// gone by the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outlived {
    pub goroutines: u64,
    /// The longest time one of them lived past the test's end.
    pub longest_ns: u64,
}

#[derive(Default)]
pub struct TestLedger {
    runs: Vec<TestRun>,
    /// Started tests whose name is still to be read.
    unnamed: Vec<TestId>,
    /// By test and site.
    outlived: HashMap<(TestId, SiteKey), Outlived>,
}

impl TestLedger {
    /// A test starts on goroutine `goid`, with its `*testing.T` at `t_addr`; `parent`
    /// is the creator's test. Returns its id (the parent's, past [`MAX_TESTS`]).
    pub fn start(&mut self, t_addr: u64, goid: u64, ts_ns: u64, parent: TestId) -> TestId {
        if self.runs.len() >= MAX_TESTS {
            return parent;
        }
        self.runs.push(TestRun { t_addr, name: None, goid, started_ns: ts_ns, ended_ns: None, parent });
        let id = self.runs.len() as TestId;
        self.unnamed.push(id);
        id
    }

    /// The tests whose names are to be read now (`*testing.T` addresses); each is
    /// handed out once.
    pub fn take_unnamed(&mut self) -> Vec<(TestId, u64)> {
        let ids = std::mem::take(&mut self.unnamed);
        ids.into_iter().filter_map(|id| Some((id, self.get(id)?.t_addr))).collect()
    }

    pub fn set_name(&mut self, id: TestId, name: String) {
        if let Some(run) = self.get_mut(id) {
            run.name = Some(name);
        }
    }

    /// Test `id`'s goroutine exited.
    pub fn end(&mut self, id: TestId, ts_ns: u64) {
        if let Some(run) = self.get_mut(id) {
            run.ended_ns.get_or_insert(ts_ns);
        }
    }

    /// A goroutine of test `id`, created at `site`, exited at `ts_ns`: after its
    /// test ended, it outlived it.
    pub fn goroutine_exited(&mut self, id: TestId, site: SiteKey, ts_ns: u64) {
        let Some(ended) = self.get(id).and_then(|run| run.ended_ns) else { return };
        if ts_ns > ended {
            let entry = self.outlived.entry((id, site)).or_default();
            entry.goroutines += 1;
            entry.longest_ns = entry.longest_ns.max(ts_ns - ended);
        }
    }

    pub fn get(&self, id: TestId) -> Option<&TestRun> {
        self.runs.get((id as usize).checked_sub(1)?)
    }

    fn get_mut(&mut self, id: TestId) -> Option<&mut TestRun> {
        self.runs.get_mut((id as usize).checked_sub(1)?)
    }

    /// Every test seen, with its id, in the order they started.
    pub fn runs(&self) -> impl Iterator<Item = (TestId, &TestRun)> {
        self.runs.iter().enumerate().map(|(i, run)| (i as TestId + 1, run))
    }

    /// Goroutines that outlived their test, by test and site.
    pub fn outlived(&self) -> impl Iterator<Item = (TestId, SiteKey, Outlived)> + '_ {
        self.outlived.iter().map(|(&(test, site), &o)| (test, site, o))
    }

    /// Test `id`'s name, or how it is known when its name could not be read.
    pub fn name(&self, id: TestId) -> String {
        match self.get(id) {
            Some(TestRun { name: Some(name), .. }) => name.clone(),
            Some(run) => format!("(a test whose name could not be read, testing.T at {:#x})", run.t_addr),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_are_numbered_named_once_and_ended() {
        let mut ledger = TestLedger::default();
        let a = ledger.start(0xc000_1000, 7, 100, 0);
        let sub = ledger.start(0xc000_2000, 9, 150, a);
        assert_eq!((a, sub), (1, 2));
        assert_eq!(ledger.take_unnamed(), [(1, 0xc000_1000), (2, 0xc000_2000)]);
        assert!(ledger.take_unnamed().is_empty());
        ledger.set_name(sub, "TestA/sub".into());
        assert_eq!(ledger.name(sub), "TestA/sub");
        assert!(ledger.name(a).contains("0xc0001000"), "{}", ledger.name(a));
        assert_eq!(ledger.get(sub).unwrap().parent, a);
        ledger.end(sub, 200);
        ledger.end(sub, 300); // its first end stands
        assert_eq!(ledger.get(sub).unwrap().ended_ns, Some(200));
        assert_eq!(ledger.get(0), None);
    }

    #[test]
    fn goroutines_exiting_after_their_test_outlived_it() {
        let mut ledger = TestLedger::default();
        let t = ledger.start(0xc000_1000, 7, 100, 0);
        ledger.goroutine_exited(t, 0x40, 150); // before the test ended: fine
        ledger.end(t, 200);
        ledger.goroutine_exited(t, 0x40, 1_200);
        ledger.goroutine_exited(t, 0x40, 700);
        ledger.goroutine_exited(0, 0x40, 900); // no test
        let outlived: Vec<_> = ledger.outlived().collect();
        assert_eq!(outlived, [(t, 0x40, Outlived { goroutines: 2, longest_ns: 1_000 })]);
    }
}
