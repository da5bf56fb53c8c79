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
