//! `gleak`: the command line over the tracing library.

/// `eprintln!` as one write: `eprintln!` writes a line in pieces, which the output
/// of another process on the same terminal or pipe (the command under `gleak run`)
/// can split, and a reader can catch half-written.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

mod cli;

fn main() {
    report_panics_in_one_line();
    match cli::main() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // No backtrace: say what failed and why, one cause per line.
            say!("gleak: {err}");
            for cause in err.chain().skip(1) {
                say!("  because: {cause}");
            }
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<gleak::Error>())
                .map_or(gleak::error::exit_code::USAGE, gleak::Error::exit_code);
            std::process::exit(code);
        }
    }
}

/// An unexpected panic (a bug): one line saying what failed and how to report
/// it, never a backtrace, and gleak ends at once, from whichever thread panicked.
/// Ending the process closes every probe's link, so the kernel detaches them;
/// under `gleak run` the command goes with it (its parent-death signal).
fn report_panics_in_one_line() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        say!(
            "gleak: internal error: {what}{at}. This is a bug in gleak {}: please report it with the command \
             line and this line. Its probes are detached.",
            env!("CARGO_PKG_VERSION")
        );
        std::process::exit(gleak::error::exit_code::INTERNAL);
    }));
}
