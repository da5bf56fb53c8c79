//! `gleak`: the command line over the tracing library.

mod cli;

fn main() {
    if let Err(err) = cli::main() {
        // No backtrace: say what failed and why, one cause per line.
        eprintln!("gleak: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  because: {cause}");
        }
        std::process::exit(2);
    }
}
