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
            let code = err
                .chain()
                .find_map(|e| e.downcast_ref::<gleak::Error>())
                .map_or(gleak::error::exit_code::USAGE, gleak::Error::exit_code);
            std::process::exit(code);
        }
    }
}
