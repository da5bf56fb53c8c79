//! `gleak`: the command line over the tracing library.

mod cli;

fn main() {
    match cli::main() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            // No backtrace: say what failed and why, one cause per line.
            eprintln!("gleak: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            std::process::exit(2);
        }
    }
}
