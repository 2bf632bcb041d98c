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
    if spec.exec.is_some() {
        return enter_and_exec(&spec, &exec_args);
    }
    match sandbox::enter(&spec) {
        Ok(applied) => {
            eprintln!("{applied}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The exec variant, as `flow sandbox run` does it: the child enters and
/// hands the exec-once listener to this process, which supervises it (the
/// child's one execve continues, any later one gets EPERM).
fn enter_and_exec(spec: &Spec, exec_args: &[std::ffi::OsString]) -> ExitCode {
    use std::os::fd::{AsFd, AsRawFd};
    let Ok((parent_end, child_end)) = proto::fdpass::seqpacket_pair() else {
        eprintln!("cannot create a socketpair");
        return ExitCode::FAILURE;
    };
    let mut spec = spec.clone();
    spec.keep_fds.push(child_end.as_raw_fd());
    // SAFETY: this example is single-threaded, so the child may run ordinary
    // Rust code before it execs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("fork: {}", std::io::Error::last_os_error());
        return ExitCode::FAILURE;
    }
    if pid == 0 {
        drop(parent_end);
        let code = match sandbox::enter(&spec) {
            Ok(mut applied) => {
                eprintln!("{applied}");
                let sent = applied
                    .exec_listener
                    .take()
                    .map(|l| proto::fdpass::send_with_fds(child_end.as_fd(), b"L", &[l.as_fd()]));
                drop(child_end);
                match (sent, &spec.exec) {
                    (Some(Ok(())), Some(exec)) => {
                        eprintln!("{}", sandbox::exec_allowed(exec, exec_args));
                    }
                    (other, _) => eprintln!("cannot hand over the exec-once listener: {other:?}"),
                }
                126
            }
            Err(e) => {
                eprintln!("{e}");
                125
            }
        };
        // SAFETY: _exit in the forked child; no destructors must run twice.
        unsafe { libc::_exit(code) }
    }
    drop(child_end);
    let supervisor = match proto::fdpass::recv_with_fds(parent_end.as_fd(), 16) {
        Ok((_, mut fds)) if fds.len() == 1 => fds
            .pop()
            .map(|l| std::thread::spawn(move || sandbox::exec_once::supervise(l, pid))),
        _ => None,
    };
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return ExitCode::FAILURE;
        }
    }
    if let Some(t) = supervisor {
        eprintln!("exec-once supervisor: {:?}", t.join());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
