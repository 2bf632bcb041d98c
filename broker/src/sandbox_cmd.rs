//! `flow sandbox run` and `flow sandbox show`: the auditor's door into the
//! production profiles. `run` needs no broker; it enters the same entry
//! function as production spawns (`sandbox::enter`) and then makes exactly one
//! `execve`.
//!
//! "Exactly one" is enforced from outside the sandbox: `enter` (exec variant)
//! returns the exec-once listener (`sandbox::exec_once`); the child sends it
//! to this process over a socketpair made before `fork`, closes its copy and
//! calls `execve`; a supervisor thread here lets that first `execve` continue
//! and answers every later one `EPERM`. If this process dies, the kernel
//! answers them `ENOSYS`. Only fds and threads are wired here; the protocol
//! lives in `sandbox::exec_once`.

use sandbox::{ProfileName, Spec, Waivers};
use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxCmdError {
    #[error("'{0}' was not found in PATH: give an absolute path to the program")]
    NotInPath(String),
    #[error("cannot use {path} as the command: {source}")]
    BadCommand {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} contains a NUL byte: arguments must be C strings")]
    Nul(String),
    #[error("flow sandbox run must start single-threaded; this is a bug: please report it")]
    NotSingleThreaded,
    #[error("cannot {what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the sandboxed child did not hand over its exec-once listener ({detail}); it was killed, nothing ran: run 'flow doctor'")]
    ExecOnceHandoff { detail: String },
}

/// Payload of the one message that carries the exec-once listener.
const LISTENER_MSG: &[u8] = b"exec-once listener";

/// Resolve `cmd` the way a shell would, but before the environment is cleared.
pub fn resolve_command(cmd: &OsStr) -> Result<PathBuf, SandboxCmdError> {
    let bytes = cmd.as_bytes();
    let candidate = if bytes.contains(&b'/') {
        PathBuf::from(cmd)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
        std::env::split_paths(&path)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
            .ok_or_else(|| SandboxCmdError::NotInPath(cmd.to_string_lossy().into_owned()))?
    };
    std::fs::canonicalize(&candidate).map_err(|source| SandboxCmdError::BadCommand {
        path: candidate,
        source,
    })
}

fn cstring(s: &OsStr) -> Result<CString, SandboxCmdError> {
    CString::new(s.as_bytes()).map_err(|_| SandboxCmdError::Nul(s.to_string_lossy().into_owned()))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxCmdError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| SandboxCmdError::Os {
        what: "create a pipe",
        source: e.into(),
    })
}

/// Options of `flow sandbox run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub profile: ProfileName,
    pub command: Vec<OsString>,
    /// Files or directories visible read-only (llama-server: its model).
    pub read_paths: Vec<PathBuf>,
    /// Directories visible read-write (the executor's spool, llama-server's
    /// socket directory).
    pub write_dirs: Vec<PathBuf>,
    pub waivers: Waivers,
    /// Print what the child applied (filter hash, landlock rules, namespaces)
    /// on stderr before the command runs.
    pub report: bool,
}

/// Fork; in the child enter the profile and exec the command with an empty
/// environment; in the parent forward stdout/stderr and return the exit status
/// (128+N if the command died of signal N).
pub fn run(opts: &RunOptions) -> Result<i32, SandboxCmdError> {
    if !crate::single_threaded() {
        return Err(SandboxCmdError::NotSingleThreaded);
    }
    let Some(first) = opts.command.first() else {
        return Err(SandboxCmdError::NotInPath(String::new()));
    };
    let exe = resolve_command(first)?;
    let exe_c = cstring(exe.as_os_str())?;
    let mut argv_c = Vec::with_capacity(opts.command.len());
    for a in &opts.command {
        argv_c.push(cstring(a)?);
    }
    let mut spec = Spec::new(opts.profile);
    spec.exec = Some(exe.clone());
    spec.waivers = opts.waivers.clone();
    spec.read_paths = opts.read_paths.clone();
    spec.write_dirs = opts.write_dirs.clone();
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let report_fd = rep_w.as_raw_fd();
    spec.keep_fds.push(report_fd);
    // Carries the exec-once listener from the entered child to us.
    let (sup_r, sup_w) = proto::fdpass::seqpacket_pair().map_err(|e| SandboxCmdError::Os {
        what: "create the exec-once socketpair",
        source: std::io::Error::other(e.to_string()),
    })?;
    spec.keep_fds.push(sup_w.as_raw_fd());

    // SAFETY: this process is single-threaded (checked above), so the child
    // may allocate and run ordinary Rust code before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxCmdError::Os {
            what: "fork",
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        child(
            &spec,
            &exe_c,
            &argv_c,
            ChildFds {
                out_w: &out_w,
                err_w: &err_w,
                rep_w,
                sup_w,
            },
            opts.report,
            &[out_r, err_r, rep_r, sup_r],
        );
    }
    drop(out_w);
    drop(err_w);
    drop(rep_w);
    drop(sup_w);
    let mut report = String::new();
    let _ = std::fs::File::from(rep_r).read_to_string(&mut report);
    if opts.report && !report.is_empty() {
        eprintln!("flow-sandbox-report: {}", report.trim_end());
    }
    let t_out = forward(out_r, false);
    let t_err = forward(err_r, true);
    // The child's execve blocks until the supervisor answers, so nothing of
    // the command runs before this succeeds.
    let supervisor = match receive_listener(&sup_r) {
        Ok(Some(listener)) => Some(std::thread::spawn(move || {
            sandbox::exec_once::supervise(listener, pid)
        })),
        // The child exited before handing it over (e.g. `enter` failed and
        // said why on stderr): nothing can exec.
        Ok(None) => None,
        Err(e) => {
            // SAFETY: kill(2) on our own child; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = wait_child(pid);
            return Err(e);
        }
    };
    drop(sup_r);
    let status = wait_child(pid)?;
    let _ = t_out.join();
    let _ = t_err.join();
    // The listener reports hang-up once the reaped child released the filter.
    if let Some(t) = supervisor {
        match t.join() {
            Ok(Ok(r)) if r.refused > 0 => eprintln!(
                "flow sandbox run: refused {} execve call(s) after the first (exec allowed once)",
                r.refused
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("flow sandbox run: {e}"),
            Err(_) => eprintln!(
                "flow sandbox run: the exec-once supervisor panicked; execve stayed refused"
            ),
        }
    }
    Ok(exit_code(status))
}

fn wait_child(pid: libc::pid_t) -> Result<i32, SandboxCmdError> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(SandboxCmdError::Os {
                what: "wait for the sandboxed command",
                source: e,
            });
        }
    }
}

/// The exec-once listener from the entered child: `Ok(None)` when the child
/// closed its end without sending one (it failed before `execve`).
fn receive_listener(sock: &OwnedFd) -> Result<Option<OwnedFd>, SandboxCmdError> {
    use std::os::fd::AsFd;
    match proto::fdpass::recv_with_fds(sock.as_fd(), LISTENER_MSG.len()) {
        Ok((payload, mut fds)) if payload == LISTENER_MSG && fds.len() == 1 => Ok(fds.pop()),
        Ok((_, fds)) => Err(SandboxCmdError::ExecOnceHandoff {
            detail: format!("unexpected message with {} descriptors", fds.len()),
        }),
        Err(proto::ProtoError::Closed) => Ok(None),
        Err(e) => Err(SandboxCmdError::ExecOnceHandoff {
            detail: e.to_string(),
        }),
    }
}

/// Map a wait status to a shell-style exit code.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

fn forward(fd: OwnedFd, to_stderr: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut src = std::fs::File::from(fd);
        let mut buf = [0u8; 8192];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let r = if to_stderr {
                std::io::stderr().write_all(&buf[..n])
            } else {
                std::io::stdout().write_all(&buf[..n])
            };
            if r.is_err() {
                return;
            }
        }
    })
}

/// The child's ends of the pipes and of the exec-once socketpair.
struct ChildFds<'a> {
    out_w: &'a OwnedFd,
    err_w: &'a OwnedFd,
    rep_w: OwnedFd,
    sup_w: OwnedFd,
}

fn child(
    spec: &Spec,
    exe: &CString,
    argv: &[CString],
    fds: ChildFds<'_>,
    want_report: bool,
    parent_ends: &[OwnedFd],
) -> ! {
    let ChildFds {
        out_w,
        err_w,
        rep_w,
        sup_w,
    } = fds;
    // SAFETY: dup2 onto 1 and 2 of fds we own; clears CLOEXEC on the targets.
    let ok =
        unsafe { libc::dup2(out_w.as_raw_fd(), 1) >= 0 && libc::dup2(err_w.as_raw_fd(), 2) >= 0 };
    if !ok {
        fail(
            "cannot redirect stdout/stderr",
            &std::io::Error::last_os_error(),
        );
    }
    for fd in parent_ends {
        // SAFETY: closing fds this child does not use; they stay open in the parent.
        unsafe { libc::close(fd.as_raw_fd()) };
    }
    let mut applied = match sandbox::enter(spec) {
        Ok(a) => a,
        Err(e) => {
            let mut stderr = std::io::stderr();
            let _ = writeln!(stderr, "flow sandbox run: {e}");
            // SAFETY: _exit never returns; no destructors must run in a forked child.
            unsafe { libc::_exit(125) }
        }
    };
    let mut rep = std::fs::File::from(rep_w);
    if want_report {
        if let Ok(json) = serde_json::to_string(&applied) {
            let _ = rep.write_all(json.as_bytes());
        }
    }
    drop(rep);
    // Hand the exec-once listener to the parent and keep no copy: the parent
    // answers our execve below, and refuses any later one.
    let Some(listener) = applied.exec_listener.take() else {
        fail(
            "the sandbox returned no exec-once listener",
            &std::io::Error::from_raw_os_error(libc::EINVAL),
        )
    };
    {
        use std::os::fd::AsFd;
        if let Err(e) =
            proto::fdpass::send_with_fds(sup_w.as_fd(), LISTENER_MSG, &[listener.as_fd()])
        {
            fail(
                "cannot hand the exec-once listener to the parent",
                &std::io::Error::other(e.to_string()),
            );
        }
    }
    drop(listener);
    drop(sup_w);
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: exe, argv and envp are NUL-terminated and outlive the call; the
    // environment is deliberately empty.
    unsafe { libc::execve(exe.as_ptr(), argv_p.as_ptr(), envp.as_ptr()) };
    fail("execve failed", &std::io::Error::last_os_error())
}

fn fail(what: &str, e: &std::io::Error) -> ! {
    let _ = writeln!(std::io::stderr(), "flow sandbox run: {what}: {e}");
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(126) }
}

/// Text form of `flow sandbox show`, for auditors reading a terminal.
pub fn render_description(d: &sandbox::describe::ProfileDescription) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "profile            {}", d.profile);
    let _ = writeln!(
        o,
        "exec allowance     {}",
        match &d.seccomp.exec_once {
            Some(e) => format!("one execve of CMD (flow sandbox run): {}", e.summary),
            None => "none".to_string(),
        }
    );
    let _ = writeln!(o, "seccomp sha256     {}", d.seccomp.sha256);
    let _ = writeln!(o, "  production       {}", d.seccomp.base_sha256);
    let _ = writeln!(o, "  exec allowance   {}", d.seccomp.exec_sha256);
    if let Some(e) = &d.seccomp.exec_once {
        let _ = writeln!(o, "  exec-once filter {}", e.sha256);
    }
    let _ = writeln!(o, "namespaces (new)   {}", d.namespaces_fresh.join(", "));
    let _ = writeln!(
        o,
        "namespaces (host)  {}",
        if d.namespaces_shared.is_empty() {
            "none".to_string()
        } else {
            d.namespaces_shared.join(", ")
        }
    );
    let _ = writeln!(o, "filesystem         {}", d.filesystem);
    let _ = writeln!(o, "sockets            {}", d.sockets);
    let _ = writeln!(o, "capabilities       {}", d.capabilities);
    let _ = writeln!(o, "no_new_privs       {}", d.no_new_privs);
    let rl: Vec<String> = d
        .rlimits
        .iter()
        .map(|r| format!("{}={}", r.name, r.value))
        .collect();
    let _ = writeln!(o, "rlimits            {}", rl.join(" "));
    let l = &d.landlock;
    let _ = writeln!(
        o,
        "landlock           kernel ABI {}; handled fs: {}",
        l.host_abi, l.handled_fs
    );
    let _ = writeln!(
        o,
        "  handled net      {}",
        if l.handled_net.is_empty() {
            "none".to_string()
        } else {
            l.handled_net.join(", ")
        }
    );
    let ports: Vec<String> = l.connect_ports.iter().map(u16::to_string).collect();
    let _ = writeln!(
        o,
        "  tcp connect to   {}",
        if ports.is_empty() && !l.connect_ports_source.is_empty() {
            l.connect_ports_source.clone()
        } else if ports.is_empty() {
            "no port".to_string()
        } else {
            ports.join(", ")
        }
    );
    let _ = writeln!(o, "  scopes           {}", l.scopes.join(", "));
    if l.rules.is_empty() {
        let _ = writeln!(o, "  rules            none: no path is accessible");
    }
    for r in &l.rules {
        let _ = writeln!(
            o,
            "  rule             {} {:?}: {}",
            r.path,
            r.grant,
            r.rights.join(", ")
        );
    }
    let s = &d.seccomp;
    let _ = writeln!(o, "seccomp            default: {}", s.default_action);
    for p in &s.prologue {
        let _ = writeln!(o, "  first            {p}");
    }
    for a in &s.allowed {
        if a.allowed_when.is_empty() {
            let _ = writeln!(o, "  allow {:<22} (nr {})", a.name, a.nr);
        } else {
            let _ = writeln!(
                o,
                "  allow {:<22} (nr {}) only when {}",
                a.name,
                a.nr,
                a.allowed_when.join(" | ")
            );
        }
    }
    if let Some(e) = &s.exec_once {
        let _ = writeln!(
            o,
            "exec-once filter   installed after the allowlist: {}",
            e.summary
        );
        for line in &e.program {
            let _ = writeln!(o, "  rule             {line}");
        }
    }
    o
}
