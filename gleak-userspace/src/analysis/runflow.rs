//! How a `gleak run` session ends, as a state machine with no side effects: from
//! why tracing stopped, through freezing the command and judging it, to leaving
//! it settled (reaped, killed, or resumed untraced).
//!
//! The command line carries out each [`Step`] and reports back what it saw
//! ([`Observed`]); the order of steps, which is what decides whether a goroutine
//! is judged alive or gone, lives here alone and is tested without processes.

use nix::sys::signal::Signal;

use crate::analysis::gate::Ending;

/// Why the trace loop of a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopEnd {
    /// `--duration` ran out.
    Deadline,
    /// gleak received this signal.
    Interrupted(Signal),
    /// The command is gone: with its exit code when it was already reaped.
    TargetExited(Option<i32>),
    /// The command exec'd another program: what gleak attached to is gone.
    ImageChanged,
    /// The command reached its exit and is held stopped there.
    ExitStop,
}

/// What the command line does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// SIGSTOP the command, wait until every thread has stopped, take in every event
    /// still in the ring; then say [`Observed::Frozen`], with whether the command had
    /// reached its exit meanwhile.
    Freeze,
    /// The command is held at its exit: wait until it has stopped, and forget the
    /// goroutine calling exit (goleak does not count it either).
    RetireExiting,
    /// Build the final report from what was traced and detach the probes.
    Report,
    /// Let the command, held at its exit, finish exiting (SIGCONT).
    Resume,
    /// Reap the command and say [`Observed::Exited`]. Signals gleak receives
    /// meanwhile are passed on; `forwarded` is the one already passed on, whose
    /// grace period runs (SIGKILL when it ends).
    Wait { forwarded: Option<Signal> },
    /// Judge the report by how the command ended and print it: the gate's exit code
    /// is gleak's.
    Judge(Ending),
    /// Pass the signal gleak received on to the frozen command, and resume it.
    Forward(Signal),
    /// SIGKILL the command.
    Kill,
    /// Resume the command, untraced, and forget it (`--leave-running`).
    LeaveRunning,
    /// Nothing left to do.
    Finish,
}

/// What the command line saw carrying out the last [`Step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The step is done (every step but [`Step::Freeze`] and [`Step::Wait`]).
    Done,
    /// After [`Step::Freeze`]: the command is stopped; `at_exit` if it had reached its
    /// exit before the SIGSTOP took hold.
    Frozen { at_exit: bool },
    /// After [`Step::Wait`]: the command ended with this exit code (128 + signal when
    /// killed).
    Exited(i32),
}

/// Where a session's ending stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Begin(LoopEnd),
    Freezing(Option<Signal>),
    /// Held at its exit: goroutine states are exact.
    AtExit(AtExit),
    /// Gone by itself (killed, crashed): what was traced is all there is.
    Gone(Gone),
    /// Exec'd another program: judged on what was traced, then waited for.
    Exec(Exec),
    /// Frozen by gleak while still running.
    Stopped(Stopped),
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AtExit {
    Retiring,
    Reporting,
    Resuming,
    Waiting,
    Judging,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    Waiting,
    Reporting(i32),
    Judging,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exec {
    Reporting,
    Waiting,
    Judging,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    Reporting(Option<Signal>),
    Judging(Option<Signal>),
    /// Killed or sent the signal gleak received: to be reaped, within that signal's
    /// grace period.
    Reaping(Option<Signal>),
    /// Reaped or left running: nothing left.
    Settled,
}

/// The ending of one `gleak run` session.
#[derive(Debug)]
pub struct RunEnding {
    state: State,
    /// `--leave-running`: a command gleak stopped (not one that exited) is resumed
    /// untraced rather than stopped for good.
    leave_running: bool,
}

impl RunEnding {
    pub fn new(end: LoopEnd, leave_running: bool) -> Self {
        Self { state: State::Begin(end), leave_running }
    }

    /// The first step.
    pub fn start(&mut self) -> Step {
        let State::Begin(end) = self.state else { return Step::Finish };
        let (state, step) = match end {
            // Frozen first: it may reach its exit before the SIGSTOP takes hold.
            LoopEnd::Deadline => (State::Freezing(None), Step::Freeze),
            LoopEnd::Interrupted(signal) => (State::Freezing(Some(signal)), Step::Freeze),
            LoopEnd::ExitStop => (State::AtExit(AtExit::Retiring), Step::RetireExiting),
            LoopEnd::TargetExited(Some(status)) => (State::Gone(Gone::Reporting(status)), Step::Report),
            LoopEnd::TargetExited(None) => (State::Gone(Gone::Waiting), Step::Wait { forwarded: None }),
            LoopEnd::ImageChanged => (State::Exec(Exec::Reporting), Step::Report),
        };
        self.state = state;
        step
    }

    /// The step after the last one, given what it showed.
    pub fn next(&mut self, observed: Observed) -> Step {
        let (state, step) = match (self.state, observed) {
            (State::Begin(_), _) => return self.start(),
            (State::Freezing(_), Observed::Frozen { at_exit: true }) => {
                (State::AtExit(AtExit::Retiring), Step::RetireExiting)
            }
            (State::Freezing(signal), Observed::Frozen { at_exit: false }) => {
                (State::Stopped(Stopped::Reporting(signal)), Step::Report)
            }

            (State::AtExit(AtExit::Retiring), Observed::Done) => (State::AtExit(AtExit::Reporting), Step::Report),
            (State::AtExit(AtExit::Reporting), Observed::Done) => (State::AtExit(AtExit::Resuming), Step::Resume),
            (State::AtExit(AtExit::Resuming), Observed::Done) => {
                (State::AtExit(AtExit::Waiting), Step::Wait { forwarded: None })
            }
            (State::AtExit(AtExit::Waiting), Observed::Exited(status)) => {
                (State::AtExit(AtExit::Judging), Step::Judge(Ending::Exited { status, states_known: true }))
            }

            (State::Gone(Gone::Waiting), Observed::Exited(status)) => {
                (State::Gone(Gone::Reporting(status)), Step::Report)
            }
            (State::Gone(Gone::Reporting(status)), Observed::Done) => {
                (State::Gone(Gone::Judging), Step::Judge(Ending::Exited { status, states_known: false }))
            }

            (State::Exec(Exec::Reporting), Observed::Done) => {
                (State::Exec(Exec::Waiting), Step::Wait { forwarded: None })
            }
            (State::Exec(Exec::Waiting), Observed::Exited(status)) => {
                (State::Exec(Exec::Judging), Step::Judge(Ending::Exec { status }))
            }

            // Judged and printed before it is settled: that may take the command a while.
            (State::Stopped(Stopped::Reporting(signal)), Observed::Done) => {
                (State::Stopped(Stopped::Judging(signal)), Step::Judge(Ending::Stopped { signal }))
            }
            (State::Stopped(Stopped::Judging(_)), Observed::Done) if self.leave_running => {
                (State::Stopped(Stopped::Settled), Step::LeaveRunning)
            }
            (State::Stopped(Stopped::Judging(Some(signal))), Observed::Done) => {
                (State::Stopped(Stopped::Reaping(Some(signal))), Step::Forward(signal))
            }
            (State::Stopped(Stopped::Judging(None)), Observed::Done) => {
                (State::Stopped(Stopped::Reaping(None)), Step::Kill)
            }
            (State::Stopped(Stopped::Reaping(forwarded)), Observed::Done) => {
                (State::Stopped(Stopped::Settled), Step::Wait { forwarded })
            }

            (
                State::AtExit(AtExit::Judging) | State::Gone(Gone::Judging) | State::Exec(Exec::Judging),
                Observed::Done,
            )
            | (State::Stopped(Stopped::Settled), Observed::Done | Observed::Exited(_)) => {
                (State::Finished, Step::Finish)
            }

            (State::Finished, _) => (State::Finished, Step::Finish),
            // A step answered out of turn: a bug of the caller. End rather than guess.
            (state, observed) => {
                debug_assert!(false, "gleak run: {observed:?} in {state:?}");
                (State::Finished, Step::Finish)
            }
        };
        self.state = state;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a session's ending to the end, answering each step as `world` says.
    fn steps(end: LoopEnd, leave_running: bool, mut world: impl FnMut(Step) -> Observed) -> Vec<Step> {
        let mut ending = RunEnding::new(end, leave_running);
        let mut out = vec![ending.start()];
        while *out.last().unwrap() != Step::Finish {
            assert!(out.len() < 20, "no end: {out:?}");
            let observed = world(*out.last().unwrap());
            out.push(ending.next(observed));
        }
        out
    }

    /// A command that exits with `status` when waited for, and is not at its exit
    /// when frozen.
    fn running(status: i32) -> impl FnMut(Step) -> Observed {
        move |step| match step {
            Step::Freeze => Observed::Frozen { at_exit: false },
            Step::Wait { .. } => Observed::Exited(status),
            _ => Observed::Done,
        }
    }

    #[test]
    fn held_at_exit_is_judged_with_exact_states_after_it_exits() {
        assert_eq!(
            steps(LoopEnd::ExitStop, false, running(3)),
            [
                Step::RetireExiting,
                Step::Report,
                Step::Resume,
                Step::Wait { forwarded: None },
                Step::Judge(Ending::Exited { status: 3, states_known: true }),
                Step::Finish,
            ]
        );
    }

    #[test]
    fn deadline_freezes_then_judges_then_kills() {
        assert_eq!(
            steps(LoopEnd::Deadline, false, running(137)),
            [
                Step::Freeze,
                Step::Report,
                Step::Judge(Ending::Stopped { signal: None }),
                Step::Kill,
                Step::Wait { forwarded: None },
                Step::Finish,
            ]
        );
    }

    #[test]
    fn a_command_that_reaches_its_exit_while_being_frozen_is_judged_at_exit() {
        let world = |step| match step {
            Step::Freeze => Observed::Frozen { at_exit: true },
            Step::Wait { .. } => Observed::Exited(0),
            _ => Observed::Done,
        };
        for end in [LoopEnd::Deadline, LoopEnd::Interrupted(Signal::SIGINT)] {
            let got = steps(end, true, world);
            assert_eq!(got[1], Step::RetireExiting, "{end:?}: {got:?}");
            assert!(got.contains(&Step::Judge(Ending::Exited { status: 0, states_known: true })), "{got:?}");
            // It exited: nothing is left running.
            assert!(!got.contains(&Step::LeaveRunning), "{got:?}");
        }
    }

    #[test]
    fn a_signal_is_judged_first_then_passed_on_and_waited_for() {
        assert_eq!(
            steps(LoopEnd::Interrupted(Signal::SIGTERM), false, running(143)),
            [
                Step::Freeze,
                Step::Report,
                Step::Judge(Ending::Stopped { signal: Some(Signal::SIGTERM) }),
                Step::Forward(Signal::SIGTERM),
                Step::Wait { forwarded: Some(Signal::SIGTERM) },
                Step::Finish,
            ]
        );
    }

    #[test]
    fn leave_running_resumes_a_stopped_command_and_does_not_wait() {
        for end in [LoopEnd::Deadline, LoopEnd::Interrupted(Signal::SIGHUP)] {
            let got = steps(end, true, running(0));
            assert_eq!(got[got.len() - 2..], [Step::LeaveRunning, Step::Finish], "{end:?}: {got:?}");
            assert!(!got.iter().any(|s| matches!(s, Step::Wait { .. } | Step::Kill)), "{got:?}");
        }
    }

    #[test]
    fn a_command_gone_by_itself_is_judged_on_what_was_traced() {
        let reaped = steps(LoopEnd::TargetExited(Some(137)), false, running(0));
        assert_eq!(
            reaped,
            [Step::Report, Step::Judge(Ending::Exited { status: 137, states_known: false }), Step::Finish]
        );
        // Not reaped yet: reaped first, for its status.
        let unreaped = steps(LoopEnd::TargetExited(None), false, running(9));
        assert_eq!(
            unreaped,
            [
                Step::Wait { forwarded: None },
                Step::Report,
                Step::Judge(Ending::Exited { status: 9, states_known: false }),
                Step::Finish,
            ]
        );
    }

    #[test]
    fn an_exec_is_reported_at_once_and_judged_with_the_new_programs_status() {
        assert_eq!(
            steps(LoopEnd::ImageChanged, true, running(4)),
            [Step::Report, Step::Wait { forwarded: None }, Step::Judge(Ending::Exec { status: 4 }), Step::Finish]
        );
    }

    #[test]
    fn every_path_reports_once_and_judges_once() {
        let ends = [
            LoopEnd::Deadline,
            LoopEnd::Interrupted(Signal::SIGINT),
            LoopEnd::ExitStop,
            LoopEnd::TargetExited(None),
            LoopEnd::TargetExited(Some(1)),
            LoopEnd::ImageChanged,
        ];
        for end in ends {
            for leave_running in [false, true] {
                for at_exit in [false, true] {
                    let got = steps(end, leave_running, |step| match step {
                        Step::Freeze => Observed::Frozen { at_exit },
                        Step::Wait { .. } => Observed::Exited(0),
                        _ => Observed::Done,
                    });
                    let count = |f: fn(&Step) -> bool| got.iter().filter(|s| f(s)).count();
                    assert_eq!(count(|s| *s == Step::Report), 1, "{end:?}: {got:?}");
                    assert_eq!(count(|s| matches!(s, Step::Judge(_))), 1, "{end:?}: {got:?}");
                    // The report is built before the command is let go of.
                    let report = got.iter().position(|s| *s == Step::Report).unwrap();
                    let release = got
                        .iter()
                        .position(|s| matches!(s, Step::Resume | Step::Kill | Step::Forward(_) | Step::LeaveRunning));
                    assert!(release.is_none_or(|r| r > report), "{end:?}: {got:?}");
                }
            }
        }
    }

    #[test]
    fn an_answer_out_of_turn_ends_the_session() {
        let mut ending = RunEnding::new(LoopEnd::Deadline, false);
        assert_eq!(ending.start(), Step::Freeze);
        let step = std::panic::catch_unwind(move || ending.next(Observed::Exited(0)));
        // A bug of the caller: a debug build says so, a release build ends cleanly.
        assert!(step.is_err() || step.unwrap() == Step::Finish);
    }
}
