//! Manual probe: enter a profile and print the self-report, or describe it.
//!
//! ```text
//! sandbox_probe show PROFILE [exec]           # describe() as JSON
//! sandbox_probe enter PROFILE [--read P]... [--write D]... [--exec CMD [ARGS...]]
//! ```
//!
//! e.g. as an unprivileged user:
//! `setpriv --reuid=65534 --regid=65534 --clear-groups sandbox_probe enter executor --write /tmp/spool`

use sandbox::{ProfileName, Spec};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(cmd), Some(profile)) = (
        args.first(),
        args.get(1).and_then(|p| ProfileName::parse(p)),
    ) else {
        eprintln!("usage: sandbox_probe show|enter PROFILE [...]");
        return ExitCode::from(2);
    };
    if cmd == "show" {
        let d = sandbox::describe(profile, args.get(2).is_some_and(|a| a == "exec"));
        match serde_json::to_string_pretty(&d) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("cannot encode: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut spec = Spec::new(profile);
    let mut rest = args.iter().skip(2);
    let mut exec_args = Vec::new();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--read" => spec.read_paths.extend(rest.next().map(PathBuf::from)),
            "--write" => spec.write_dirs.extend(rest.next().map(PathBuf::from)),
            "--exec" => {
                spec.exec = rest.next().map(PathBuf::from);
                exec_args.extend(rest.by_ref().map(std::ffi::OsString::from));
            }
            other => {
                eprintln!("unknown argument {other}");
                return ExitCode::from(2);
            }
        }
    }
    match sandbox::enter(&spec) {
        Ok(applied) => {
            eprintln!("{applied}");
            if let Some(exec) = &spec.exec {
                let err = sandbox::exec_allowed(exec, &exec_args);
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
