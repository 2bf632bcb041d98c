//! `flow`: the CLI, and (`flow up`) the broker daemon itself.
//!
//! **Invariant:** `flow sandbox run` and `flow up` decide what to do before any
//! thread exists; `sandbox run` forks while single-threaded.

use broker::cli;
use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flow: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
