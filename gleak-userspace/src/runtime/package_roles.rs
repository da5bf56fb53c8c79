//! Which part a Go package plays for gleak's rules: the runtime, the machinery a
//! goroutine blocks through, the testing framework, or the program itself. The
//! one place that decides it; the rules ask [`PackageRole`], never a prefix.

use crate::binary::symbolize::package_of;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackageRole {
    /// `runtime`: where every goroutine parks, and the runtime's own goroutines (GC
    /// workers, finalizer, sweeper, scavenger, forced GC) are created.
    Runtime,
    /// `runtime/…`: `runtime/pprof`, `runtime/trace` and the runtime's internals.
    RuntimeSupport,
    /// `internal/…`: the standard library's internals (`internal/poll`, `internal/sync`).
    StdInternal,
    /// `sync`, `sync/atomic`, `time`, `iter`, `unique`, `weak`: the primitives a
    /// goroutine blocks through (a lock, a sleep, an iterator's coroutine).
    Synchronization,
    /// `testing`: the test runner (`tRunner`) and its bookkeeping.
    Testing,
    /// `testing/…` (`testing/synctest`, `testing/fstest`).
    TestingSupport,
    /// `os/signal` and below: signal delivery's goroutine.
    Signal,
    /// Everything else: the program's own code and the rest of the standard library.
    Program,
}

impl PackageRole {
    /// The role of the package with import path `package` (`net/http`).
    pub fn of_package(package: &str) -> Self {
        let under = |parent: &str| package.strip_prefix(parent).is_some_and(|rest| rest.starts_with('/'));
        match package {
            "runtime" => PackageRole::Runtime,
            "testing" => PackageRole::Testing,
            "sync" | "sync/atomic" | "time" | "iter" | "unique" | "weak" => PackageRole::Synchronization,
            "os/signal" => PackageRole::Signal,
            _ if under("runtime") => PackageRole::RuntimeSupport,
            _ if under("internal") => PackageRole::StdInternal,
            _ if under("testing") => PackageRole::TestingSupport,
            _ if under("os/signal") => PackageRole::Signal,
            _ => PackageRole::Program,
        }
    }

    /// The role of the package of `function` (`net/http.(*conn).serve`).
    pub fn of_function(function: &str) -> Self {
        Self::of_package(package_of(function))
    }

    /// The runtime itself: its goroutines are never a leak (as goleak ignores them).
    pub fn is_runtime(self) -> bool {
        self == PackageRole::Runtime
    }

    /// Goroutines of these packages are infrastructure, not the program's: the
    /// runtime, the testing framework, signal delivery (what goleak ignores).
    pub fn is_infrastructure(self) -> bool {
        matches!(
            self,
            PackageRole::Runtime
                | PackageRole::RuntimeSupport
                | PackageRole::Testing
                | PackageRole::TestingSupport
                | PackageRole::Signal
        )
    }

    /// The machinery a goroutine blocks *through* (the runtime, `sync`,
    /// `internal/…`, `time`'s sleep) rather than the code that blocked: the first
    /// frame of another package is where the goroutine is stuck.
    pub fn is_blocking_machinery(self) -> bool {
        matches!(
            self,
            PackageRole::Runtime
                | PackageRole::RuntimeSupport
                | PackageRole::StdInternal
                | PackageRole::Synchronization
        )
    }

    /// The `testing` package itself (not `testing/…`): where test goroutines start.
    pub fn is_test_runner(self) -> bool {
        self == PackageRole::Testing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_packages() {
        use PackageRole::*;
        let cases = [
            ("runtime.gcBgMarkWorker", Runtime),
            ("runtime.(*mheap).alloc", Runtime),
            ("runtime/trace.Start.func1", RuntimeSupport),
            ("runtime/pprof.profileWriter", RuntimeSupport),
            ("internal/poll.(*FD).Read", StdInternal),
            ("sync.(*Mutex).Lock", Synchronization),
            ("sync/atomic.(*Int32).Add", Synchronization),
            ("time.Sleep", Synchronization),
            ("iter.Pull[...].func1", Synchronization),
            ("testing.tRunner", Testing),
            ("testing.(*T).Run", Testing),
            ("testing/synctest.Test", TestingSupport),
            ("os/signal.Notify.func1", Signal),
            ("main.leak", Program),
            ("main goroutine", Program),
            ("net/http.(*conn).serve", Program),
            ("net.(*conn).Read", Program),
            ("os.(*File).Read", Program),
            // Names that only look like the standard library's.
            ("runtimex.foo", Program),
            ("example.com/runtime.F", Program),
            ("example.com/internal/x.F", Program),
            ("internalx.F", Program),
            ("testingx.F", Program),
            ("sync/errgroup.F", Program),
            ("os/signalx.F", Program),
        ];
        for (function, role) in cases {
            assert_eq!(PackageRole::of_function(function), role, "{function}");
        }
    }

    #[test]
    fn what_each_rule_counts() {
        let runtime = ["runtime.gcBgMarkWorker"];
        let infrastructure =
            ["runtime/trace.Start.func1", "testing.tRunner", "testing/synctest.Test", "os/signal.loop"];
        let machinery =
            ["runtime.gopark", "runtime/pprof.x", "internal/poll.(*FD).Read", "sync.(*Mutex).Lock", "time.Sleep"];
        for f in runtime {
            let role = PackageRole::of_function(f);
            assert!(role.is_runtime() && role.is_infrastructure() && role.is_blocking_machinery(), "{f}");
        }
        for f in infrastructure {
            assert!(PackageRole::of_function(f).is_infrastructure(), "{f}");
            assert!(!PackageRole::of_function(f).is_runtime(), "{f}");
        }
        for f in machinery {
            assert!(PackageRole::of_function(f).is_blocking_machinery(), "{f}");
        }
        for f in ["internal/poll.(*FD).Read", "sync.(*WaitGroup).Wait", "main.leak", "net/http.(*conn).serve"] {
            assert!(!PackageRole::of_function(f).is_infrastructure(), "{f}");
        }
        for f in ["testing.tRunner", "os/signal.loop", "main.worker", "net.(*conn).Read", "example.com/runtime.F"] {
            assert!(!PackageRole::of_function(f).is_blocking_machinery(), "{f}");
        }
        assert!(PackageRole::of_function("testing.tRunner").is_test_runner());
        assert!(!PackageRole::of_function("testing/synctest.Test").is_test_runner());
    }
}
