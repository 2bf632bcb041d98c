//! Escape tests: the real `enter` in a real child process, one process per
//! case (a sandbox cannot be undone), attacks tried from inside and
//! attestation checked from outside.
//!
//! `harness = false`: libtest runs tests on threads, and `enter` refuses a
//! multi-threaded process. This `main` is single-threaded; it re-executes
//! itself with `FLOW_SANDBOX_CASE=<case>` for each case. The child reports
//! over an inherited socket (`FLOW_SANDBOX_CTL`) with a tokio current-thread
//! runtime, proving the runtime works under each profile's allowlist.

// A harness-less test binary is not `#[test]` code to clippy, but it is test
// code: a failed setup step should abort the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use sandbox::{attest, expected_for, Applied, ProfileName, SandboxError, Spec};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CASE: &str = "FLOW_SANDBOX_CASE";
const CTL: &str = "FLOW_SANDBOX_CTL";
const DIR: &str = "FLOW_SANDBOX_DIR";
/// Exec cases: the SOCK_SEQPACKET end the exec-once listener goes out on.
const SUP: &str = "FLOW_SANDBOX_SUP";

/// Exec cases, each one process: `enter` with the exec allowance for
/// /bin/cat, the exec-once listener handed to the parent (or dropped, for
/// `exec-no-supervisor`), then `exec_checks`.
const EXEC_CASES: [&str; 5] = [
    "exec-cat",
    "exec-cat-outside",
    "exec-spent",
    "exec-absent",
    "exec-no-supervisor",
];

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        child(&case);
        return;
    }
    parent();
}

// ---------------------------------------------------------------- child side

fn errno_of(r: i64) -> i32 {
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        self.0.push(if ok {
            format!("OK {name}")
        } else {
            format!("FAIL {name}\t{detail}")
        });
    }
    /// The syscall must fail with exactly `want` (0: must succeed).
    fn denied(&mut self, name: &str, r: i64, want: i32) {
        let e = errno_of(r);
        let ok = if want == 0 {
            r >= 0
        } else {
            r < 0 && e == want
        };
        self.expect(
            name,
            ok,
            format!("returned {r}, errno {e}, wanted errno {want}"),
        );
    }
}

fn spec_for(case: &str, dir: &Path) -> Spec {
    let profile = match case {
        "worker" | "unsandboxed" | "worker-unprivileged" => ProfileName::ReasoningWorker,
        "executor" => ProfileName::Executor,
        c if c.starts_with("exec-") => ProfileName::Executor,
        "gateway" => ProfileName::EgressGateway,
        "llama" => ProfileName::LlamaServer,
        other => panic!("unknown case {other}"),
    };
    let mut spec = Spec::new(profile);
    match case {
        "executor" => spec.write_dirs = vec![dir.join("spool")],
        c if c.starts_with("exec-") => {
            spec.read_paths = vec![dir.join("model.bin")];
            spec.exec = Some(PathBuf::from("/bin/cat"));
        }
        "llama" => {
            spec.read_paths = vec![dir.join("model.bin")];
            spec.write_dirs = vec![dir.join("sock")];
        }
        _ => {}
    }
    spec
}

fn child(case: &str) {
    let ctl: RawFd = std::env::var(CTL)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("ctl fd");
    let dir = PathBuf::from(std::env::var(DIR).expect("dir"));
    // SAFETY: the parent passed this descriptor for our exclusive use.
    let ctl_sock = unsafe { UnixStream::from_raw_fd(ctl) };
    // Opened before entry and kept: /proc is not mounted inside, so this is
    // how the child reads its own live status after entry.
    let status = std::fs::File::open("/proc/self/status")
        .expect("status")
        .into_raw_fd();
    let mut spec = spec_for(case, &dir);
    spec.keep_fds = vec![ctl, status];
    let sup: Option<RawFd> = std::env::var(SUP).ok().and_then(|v| v.parse().ok());
    if case.starts_with("exec-") {
        spec.keep_fds = vec![ctl, sup.expect("exec cases get a listener socket")];
        // SAFETY: status was opened above and is not used again.
        unsafe { libc::close(status) };
    }
    let mut applied: Option<Applied> = if case == "unsandboxed" {
        None
    } else {
        match sandbox::enter(&spec) {
            Ok(a) => Some(a),
            Err(e) => {
                let _ = (&ctl_sock).write_all(format!("ERR {e}\n").as_bytes());
                std::process::exit(2);
            }
        }
    };
    // Exec cases: hand the exec-once listener to the parent and keep no
    // copy, as `flow sandbox run` does; the fd table is then [0, 1, 2, ctl].
    if let Some(sup) = sup {
        // SAFETY: the parent passed this descriptor for our exclusive use.
        let sup = unsafe { OwnedFd::from_raw_fd(sup) };
        let listener = applied
            .as_mut()
            .and_then(|a| a.exec_listener.take())
            .expect("the exec variant returns a listener");
        proto::fdpass::send_with_fds(sup.as_fd(), b"L", &[listener.as_fd()])
            .expect("send listener");
    }
    // Report readiness and wait for the parent's attestation before the
    // runtime opens its epoll and eventfd descriptors: the parent checks the
    // fd table exactly as `enter` left it.
    let hash = applied
        .as_ref()
        .map(|a| a.installed_filter_sha256.clone())
        .unwrap_or_default();
    (&ctl_sock)
        .write_all(format!("READY {status} {hash}\n").as_bytes())
        .expect("ready");
    let mut go = [0u8; 3];
    (&ctl_sock).read_exact(&mut go).expect("go");
    if &go != b"GO\n" {
        std::process::exit(3);
    }
    if case.starts_with("exec-") {
        let mut c = Checks(Vec::new());
        let exec_cat = exec_checks(&mut c, case, &dir);
        for l in &c.0 {
            (&ctl_sock)
                .write_all(format!("{l}\n").as_bytes())
                .expect("result");
        }
        if !exec_cat {
            (&ctl_sock).write_all(b"DONE\n").expect("done");
            std::process::exit(0);
        }
        (&ctl_sock).write_all(b"EXEC\n").expect("exec");
        let target = if case == "exec-cat" {
            dir.join("model.bin")
        } else {
            PathBuf::from("/etc/passwd")
        };
        let err = sandbox::exec_allowed(Path::new("/bin/cat"), &[target.into_os_string()]);
        let _ = (&ctl_sock).write_all(format!("FAIL exec\t{err}\n").as_bytes());
        std::process::exit(4);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        ctl_sock.set_nonblocking(true).expect("nonblocking");
        let mut stream = tokio::net::UnixStream::from_std(ctl_sock).expect("tokio stream");
        let mut c = Checks(Vec::new());
        // The unsandboxed control case exists only to be refused by attest;
        // running the attacks there would really fork, ptrace and exec.
        if case != "unsandboxed" {
            inside_checks(&mut c, case, status, &dir);
        }
        for l in &c.0 {
            stream
                .write_all(format!("{l}\n").as_bytes())
                .await
                .expect("result");
        }
        stream.write_all(b"DONE\n").await.expect("done");
    });
}

fn pread_all(fd: RawFd) -> String {
    let mut buf = vec![0u8; 8192];
    // SAFETY: buf is a valid writable buffer of the given length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    buf.truncate(usize::try_from(n).unwrap_or(0));
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_value<'a>(s: &'a str, k: &str) -> &'a str {
    s.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(a, _)| *a == k)
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("")
}

/// Raw syscalls: std would retry, allocate or go through paths that hide
/// the errno the filter returned.
fn inside_checks(c: &mut Checks, case: &str, status_fd: RawFd, dir: &Path) {
    {
        let s = pread_all(status_fd);
        c.expect(
            "inside: Seccomp 2",
            status_value(&s, "Seccomp") == "2",
            status_value(&s, "Seccomp"),
        );
        c.expect(
            "inside: NoNewPrivs 1",
            status_value(&s, "NoNewPrivs") == "1",
            status_value(&s, "NoNewPrivs"),
        );
        for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            c.expect(
                &format!("inside: {k} zero"),
                status_value(&s, k) == "0000000000000000",
                status_value(&s, k),
            );
        }
        let uid = status_value(&s, "Uid");
        c.expect(
            "inside: host uid is not root",
            !uid.split_whitespace().any(|u| u == "0"),
            uid,
        );
        c.expect(
            "inside: environment empty",
            std::env::vars_os().count() == 0,
            std::env::vars_os().count(),
        );
    }
    // SAFETY: raw calls with integer arguments or pointers to live local
    // buffers; each is expected to fail or is harmless.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        c.denied("fork refused", i64::from(pid), libc::EPERM);
        c.denied(
            "clone3 answers ENOSYS",
            libc::syscall(libc::SYS_clone3, 0usize, 0usize),
            libc::ENOSYS,
        );
        c.denied("kill refused", i64::from(libc::kill(1, 0)), libc::EPERM);
        c.denied(
            "ptrace refused",
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0),
            libc::EPERM,
        );
        c.denied(
            "TIOCSTI refused",
            i64::from(libc::ioctl(1, libc::TIOCSTI, c"x".as_ptr())),
            libc::EPERM,
        );
        c.denied(
            "io_uring_setup refused",
            libc::syscall(libc::SYS_io_uring_setup, 1, 0usize),
            libc::EPERM,
        );
        c.denied(
            "bpf refused",
            libc::syscall(libc::SYS_bpf, 0, 0usize, 0),
            libc::EPERM,
        );
        c.denied(
            "keyctl refused",
            libc::syscall(libc::SYS_keyctl, 0, 0),
            libc::EPERM,
        );
        c.denied(
            "memfd_create refused",
            libc::syscall(libc::SYS_memfd_create, c"x".as_ptr(), 0),
            libc::EPERM,
        );
        c.denied(
            "unshare refused",
            i64::from(libc::unshare(libc::CLONE_NEWUSER)),
            libc::EPERM,
        );
        c.denied(
            "mount refused",
            i64::from(libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )),
            libc::EPERM,
        );
        c.denied(
            "userfaultfd refused",
            libc::syscall(libc::SYS_userfaultfd, 0),
            libc::EPERM,
        );
        let argv = [c"/bin/sh".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        c.denied(
            "execve refused",
            i64::from(libc::execve(
                c"/bin/sh".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
            )),
            libc::EPERM,
        );
        let m = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        c.denied(
            "mmap W+X refused",
            if m == libc::MAP_FAILED { -1 } else { 0 },
            libc::EPERM,
        );
        let m = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        c.expect("mmap RW allowed", m != libc::MAP_FAILED, "mmap failed");
        c.denied(
            "mprotect +X refused",
            i64::from(libc::mprotect(m, 4096, libc::PROT_READ | libc::PROT_EXEC)),
            libc::EPERM,
        );
        let mut sv = [0; 2];
        c.denied(
            "socketpair refused",
            i64::from(libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM,
                0,
                sv.as_mut_ptr(),
            )),
            libc::EPERM,
        );
    }
    let t = std::thread::spawn(|| 7);
    c.expect("threads allowed", t.join().ok() == Some(7), "thread failed");

    // SAFETY: as above.
    unsafe {
        match case {
            "worker" | "worker-unprivileged" => {
                c.denied(
                    "worker: socket(AF_INET) refused",
                    i64::from(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
                    libc::EPERM,
                );
                c.denied(
                    "worker: socket(AF_UNIX) refused",
                    i64::from(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)),
                    libc::EPERM,
                );
                c.denied(
                    "worker: open /etc/passwd refused",
                    i64::from(libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY)),
                    libc::EPERM,
                );
                let mut st: libc::stat = std::mem::zeroed();
                c.denied(
                    "worker: stat by path refused",
                    i64::from(libc::stat(c"/".as_ptr(), &mut st)),
                    libc::EPERM,
                );
                c.denied(
                    "worker: fstat allowed",
                    i64::from(libc::fstat(1, &mut st)),
                    0,
                );
            }
            "executor" => {
                c.denied(
                    "executor: socket(AF_INET) refused",
                    i64::from(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
                    libc::EPERM,
                );
                // /etc and /proc are empty mode-000 decoys in the sandbox root.
                c.denied(
                    "executor: open /etc/passwd denied",
                    i64::from(libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY)),
                    libc::EACCES,
                );
                c.denied(
                    "executor: /proc denied",
                    i64::from(libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY)),
                    libc::EACCES,
                );
                let outside =
                    libc::open(c"/escape".as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
                c.expect(
                    "executor: create outside spool refused",
                    outside < 0,
                    "created /escape",
                );
            }
            "gateway" => {
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                c.expect(
                    "gateway: socket(AF_INET, STREAM) allowed",
                    s >= 0,
                    std::io::Error::last_os_error(),
                );
                let addr = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 9u16.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                let r = libc::connect(
                    s,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
                c.denied(
                    "gateway: tcp connect to an ungranted port refused by landlock",
                    i64::from(r),
                    libc::EACCES,
                );
                let msg = b"x";
                let r = libc::sendto(
                    s,
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_FASTOPEN,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
                c.denied(
                    "gateway: sendto(MSG_FASTOPEN) refused (an implicit connect)",
                    r as i64,
                    libc::EPERM,
                );
                c.denied(
                    "gateway: socket(AF_INET, DGRAM) refused (TCP only)",
                    i64::from(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)),
                    libc::EPERM,
                );
                c.denied(
                    "gateway: socket(AF_INET6, DGRAM) refused (TCP only)",
                    i64::from(libc::socket(
                        libc::AF_INET6,
                        libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                        0,
                    )),
                    libc::EPERM,
                );
                c.denied(
                    "gateway: socket(AF_INET, STREAM, IPPROTO_MPTCP) refused",
                    i64::from(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 262)),
                    libc::EPERM,
                );
                let s6 = libc::socket(
                    libc::AF_INET6,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_TCP,
                );
                c.expect(
                    "gateway: socket(AF_INET6, STREAM|NONBLOCK|CLOEXEC, IPPROTO_TCP) allowed",
                    s6 >= 0,
                    std::io::Error::last_os_error(),
                );
                c.denied(
                    "gateway: socket(AF_UNIX) refused",
                    i64::from(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)),
                    libc::EPERM,
                );
                c.denied(
                    "gateway: socket(AF_INET, RAW) refused",
                    i64::from(libc::socket(libc::AF_INET, libc::SOCK_RAW, 1)),
                    libc::EPERM,
                );
                c.denied(
                    "gateway: socket(AF_NETLINK) refused",
                    i64::from(libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM, 0)),
                    libc::EPERM,
                );
            }
            "llama" => {
                c.denied(
                    "llama: socket(AF_INET) refused",
                    i64::from(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
                    libc::EPERM,
                );
                let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                c.expect(
                    "llama: socket(AF_UNIX) allowed",
                    s >= 0,
                    std::io::Error::last_os_error(),
                );
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                addr.sun_family = libc::AF_UNIX as u16;
                let p = dir.join("sock/llama.sock");
                for (i, b) in p.to_string_lossy().bytes().enumerate() {
                    addr.sun_path[i] = b as libc::c_char;
                }
                let r = libc::bind(
                    s,
                    (&addr as *const libc::sockaddr_un).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as u32,
                );
                c.denied("llama: bind in socket dir allowed", i64::from(r), 0);
                c.denied("llama: listen allowed", i64::from(libc::listen(s, 4)), 0);
                let model =
                    std::ffi::CString::new(dir.join("model.bin").to_string_lossy().into_owned())
                        .expect("path");
                let fd = libc::open(model.as_ptr(), libc::O_RDONLY);
                c.expect(
                    "llama: model readable",
                    fd >= 0,
                    std::io::Error::last_os_error(),
                );
                c.denied(
                    "llama: model not writable",
                    i64::from(libc::open(model.as_ptr(), libc::O_RDWR)),
                    libc::EPERM,
                );
            }
            _ => {}
        }
    }
    if case == "executor" {
        let f = dir.join("spool/out.txt");
        let ok = std::fs::write(&f, b"spool").is_ok()
            && std::fs::read(&f).ok().as_deref() == Some(b"spool".as_slice());
        c.expect("executor: spool read/write allowed", ok, "spool io failed");
        let denied = std::fs::write(dir.join("outside.txt"), b"x").is_err();
        c.expect(
            "executor: write next to spool refused",
            denied,
            "wrote outside",
        );
    }
}

fn execve(path: &std::ffi::CStr, arg: Option<&std::ffi::CStr>) -> i64 {
    let argv = [
        path.as_ptr(),
        arg.map_or(std::ptr::null(), |a| a.as_ptr()),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null()];
    // SAFETY: NUL-terminated arrays of NUL-terminated strings that outlive
    // the call; on success it does not return.
    i64::from(unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) })
}

/// The checks of an exec case, run after `enter` and after the listener left
/// the process. Returns whether the case then execs /bin/cat for real.
fn exec_checks(c: &mut Checks, case: &str, dir: &Path) -> bool {
    let model =
        std::ffi::CString::new(dir.join("model.bin").to_string_lossy().into_owned()).expect("path");
    match case {
        "exec-cat" | "exec-cat-outside" => return true,
        "exec-spent" => {
            // The first execve is let through by the supervisor and refused
            // by landlock; that spends the allowance.
            c.denied(
                "exec: the first execve (a library) is refused by landlock",
                execve(c"/lib/x86_64-linux-gnu/libc.so.6", None),
                libc::EACCES,
            );
            c.denied(
                "exec-once: a second execve is refused",
                execve(c"/bin/sh", None),
                libc::EPERM,
            );
            c.denied(
                "exec-once: even the allowed binary is refused once the allowance is spent",
                execve(c"/bin/cat", Some(&model)),
                libc::EPERM,
            );
            let argv = [c"cat".as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            // SAFETY: as in `execve`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    libc::AT_FDCWD,
                    c"/bin/cat".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    0,
                )
            };
            c.denied("exec: execveat refused", r, libc::EPERM);
            // The one seccomp call the exec allowance permits is dead: the
            // kernel allows one listener per filter chain.
            let prog = [libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let fprog = libc::sock_fprog {
                len: 1,
                filter: prog.as_ptr().cast_mut(),
            };
            // SAFETY: fprog points at a one-instruction program alive for the call.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    &fprog as *const libc::sock_fprog,
                )
            };
            c.denied(
                "exec-once: a second listener cannot be installed",
                r,
                libc::EBUSY,
            );
            // SAFETY: as above, other flags.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const libc::sock_fprog,
                )
            };
            c.denied(
                "exec: seccomp without the listener flag refused",
                r,
                libc::EPERM,
            );
            // SAFETY: socket with integer arguments.
            let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            c.denied("exec: socket still refused", i64::from(s), libc::EPERM);
        }
        "exec-absent" => {
            c.denied(
                "exec: the first execve (a binary outside the sandbox) finds nothing",
                execve(c"/bin/sh", None),
                libc::ENOENT,
            );
            c.denied(
                "exec-once: a failed first execve spent the allowance",
                execve(c"/bin/cat", Some(&model)),
                libc::EPERM,
            );
        }
        "exec-no-supervisor" => {
            c.denied(
                "exec-once: without a supervisor the kernel refuses execve (fail closed)",
                execve(c"/bin/cat", Some(&model)),
                libc::ENOSYS,
            );
        }
        other => panic!("unknown exec case {other}"),
    }
    false
}

// --------------------------------------------------------------- parent side

struct Outcome {
    passed: Vec<String>,
    failed: Vec<String>,
}

impl Outcome {
    fn check(&mut self, name: String, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("test {name} ... ok");
            self.passed.push(name);
        } else {
            println!("test {name} ... FAILED: {detail}");
            self.failed.push(name);
        }
    }
}

fn socketpair() -> (UnixStream, OwnedFd) {
    let mut sv = [0; 2];
    // SAFETY: sv is a valid out-array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // The child's end must survive exec: clear its close-on-exec flag. The
    // parent is single-threaded, so no other child can inherit it.
    // SAFETY: fcntl on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(sv[1], libc::F_SETFD, 0) }, 0);
    // SAFETY: both descriptors were just created and are owned here.
    unsafe { (UnixStream::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) }
}

fn pidfd_open(pid: u32) -> OwnedFd {
    // SAFETY: pidfd_open returns a new descriptor for our own child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just returned and is owned here.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A SOCK_SEQPACKET pair for the exec-once listener; the child's end
/// survives exec (the parent is single-threaded).
fn listener_pair() -> (OwnedFd, OwnedFd) {
    let (parent, child) = proto::fdpass::seqpacket_pair().expect("seqpacket pair");
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let r = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&child), libc::F_SETFD, 0) };
    assert_eq!(r, 0);
    (parent, child)
}

fn run_case(out: &mut Outcome, case: &str, dir: &Path, wrapper: Option<&[&str]>) {
    let exe = std::env::current_exe().expect("current_exe");
    let (mut parent_end, child_end) = socketpair();
    let child_fd = std::os::fd::AsRawFd::as_raw_fd(&child_end);
    let exec_case = case.starts_with("exec-");
    let sup = exec_case.then(listener_pair);
    let mut cmd = match wrapper {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.env(CASE, case)
        .env(CTL, child_fd.to_string())
        .env(DIR, dir)
        .stdin(Stdio::null())
        .stdout(if exec_case {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
    if let Some((_, child_sup)) = &sup {
        cmd.env(SUP, std::os::fd::AsRawFd::as_raw_fd(child_sup).to_string());
    }
    let mut child = cmd.spawn().expect("spawn");
    drop(child_end);
    let pidfd = pidfd_open(child.id());
    // Exec cases: take the exec-once listener, as `flow sandbox run` does,
    // and supervise it (except in `exec-no-supervisor`, which drops it).
    let mut supervisor = None;
    if let Some((parent_sup, child_sup)) = sup {
        drop(child_sup);
        match proto::fdpass::recv_with_fds(parent_sup.as_fd(), 16) {
            Ok((payload, mut fds)) if payload == b"L" && fds.len() == 1 => {
                let listener = fds.pop().expect("one fd");
                if case == "exec-no-supervisor" {
                    drop(listener);
                } else {
                    let pid = child.id() as i32;
                    supervisor = Some(std::thread::spawn(move || {
                        sandbox::exec_once::supervise(listener, pid)
                    }));
                }
            }
            other => out.check(
                format!("{case}: the child hands over its exec-once listener"),
                false,
                format!("{:?}", other.map(|(p, f)| (p, f.len()))),
            ),
        }
    }
    let mut reader = BufReader::new(parent_end.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("ready line");
    let Some(rest) = line.trim().strip_prefix("READY ") else {
        out.check(format!("{case}: enter"), false, line.trim());
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let mut parts = rest.split_whitespace();
    let status_fd: i32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
    let hash = parts.next().unwrap_or("").to_string();
    let spec = spec_for(case, dir);
    let mut fds = vec![0, 1, 2, child_fd];
    if !exec_case {
        fds.push(status_fd);
    }
    let own = sandbox::attest::own_seccomp_filters().expect("own filters");
    // An exec-variant process shows one more filter: the exec-once listener.
    let expected = expected_for(spec.profile, own + u32::from(exec_case), &fds);
    if case == "llama" {
        foreign_binary_checks(out, &pidfd, child.id() as i32, status_fd, dir, &expected);
    }
    let result = attest(pidfd.as_fd(), child.id() as i32, &expected);
    if case == "unsandboxed" {
        let refused = matches!(&result, Err(SandboxError::Attestation { .. }));
        out.check(
            format!("{case}: attest refuses an unsandboxed child"),
            refused,
            format!("{result:?}"),
        );
    } else {
        match &result {
            Ok(r) => out.check(
                format!("{case}: attest passes"),
                r.no_new_privs && r.seccomp_mode == 2 && r.cap_bnd == 0 && r.host_uid != 0,
                format!("{r:?}"),
            ),
            Err(e) => out.check(format!("{case}: attest passes"), false, e),
        }
        let want_hash = sandbox::seccomp::sha256(spec.profile, spec.exec.is_some()).expect("hash");
        out.check(
            format!("{case}: installed filter hash equals describe()"),
            hash == want_hash,
            format!("{hash} != {want_hash}"),
        );
    }
    parent_end.write_all(b"GO\n").expect("go");
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim();
        if l == "DONE" || l == "EXEC" {
            break;
        }
        if let Some(name) = l.strip_prefix("OK ") {
            out.check(format!("{case}: {name}"), true, "");
        } else {
            let (name, detail) = l
                .strip_prefix("FAIL ")
                .unwrap_or(l)
                .split_once('\t')
                .unwrap_or((l, ""));
            out.check(format!("{case}: {name}"), false, detail);
        }
    }
    let mut stdout = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    let status = child.wait().expect("wait");
    if let Some(t) = supervisor {
        let report = t.join().expect("supervisor thread");
        let want = match case {
            "exec-spent" => (1, 2),
            "exec-absent" => (1, 1),
            _ => (1, 0),
        };
        out.check(
            format!("{case}: the supervisor let one execve through and refused the rest"),
            matches!(&report, Ok(r) if (r.continued, r.refused) == want),
            format!("{report:?}, wanted (continued, refused) = {want:?}"),
        );
    }
    match case {
        "exec-cat" => out.check(
            format!("{case}: /bin/cat runs in the sandbox and reads its read_path"),
            status.success() && stdout == "weights\n",
            format!("{status:?} stdout {stdout:?}"),
        ),
        "exec-cat-outside" => out.check(
            format!("{case}: /bin/cat cannot read /etc/passwd"),
            !status.success() && stdout.is_empty(),
            format!("{status:?} stdout {stdout:?}"),
        ),
        _ => out.check(
            format!("{case}: child exits cleanly"),
            status.success(),
            format!("{status:?}"),
        ),
    }
}

/// The foreign-binary fd policy, on the llama case's real fd table: it
/// refuses the open /proc file the child kept (not a socket, pipe,
/// anon_inode, /dev/null or allowed path) and accepts the table once that
/// file is allowed too.
fn foreign_binary_checks(
    out: &mut Outcome,
    pidfd: &OwnedFd,
    pid: i32,
    status_fd: i32,
    dir: &Path,
    exact: &sandbox::Expected,
) {
    let target = |fd: i32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    // stdout/stderr are whatever the test runner gave us: allow them as they are.
    let mut allowed = vec![dir.join("model.bin"), dir.join("sock")];
    allowed.extend([1, 2].into_iter().filter_map(target));
    let policy = exact.clone().foreign_binary(allowed.clone());
    let r = attest(pidfd.as_fd(), pid, &policy);
    out.check(
        "llama: foreign-binary fd policy refuses an open file outside the allowed paths".into(),
        matches!(&r, Err(SandboxError::Attestation { check, .. }) if *check == format!("fd {status_fd}")),
        format!("{r:?}"),
    );
    allowed.extend(target(status_fd));
    let policy = exact.clone().foreign_binary(allowed);
    let r = attest(pidfd.as_fd(), pid, &policy);
    out.check(
        "llama: foreign-binary fd policy accepts sockets, /dev/null and allowed paths".into(),
        matches!(&r, Ok(rep) if rep.fds.contains(&status_fd)),
        format!("{r:?}"),
    );
}

fn parent() {
    let base = std::env::temp_dir().join(format!("flow-sandbox-escape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("spool")).expect("spool");
    std::fs::create_dir_all(base.join("sock")).expect("sock");
    std::fs::write(base.join("model.bin"), b"weights\n").expect("model");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // Sandboxed children run as nobody: let them use the test directory.
        for d in [&base, &base.join("spool"), &base.join("sock")] {
            std::os::unix::fs::chown(d, Some(65534), Some(65534)).expect("chown");
        }
    }
    let mut out = Outcome {
        passed: Vec::new(),
        failed: Vec::new(),
    };
    for case in ["worker", "executor", "gateway", "llama"]
        .into_iter()
        .chain(EXEC_CASES)
        .chain(["unsandboxed"])
    {
        run_case(&mut out, case, &base, None);
    }
    // The same entry as an unprivileged user (no root to drop from).
    let setpriv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    if root && Path::new("/usr/bin/setpriv").exists() {
        run_case(&mut out, "worker-unprivileged", &base, Some(&setpriv));
    } else {
        println!("test worker-unprivileged ... skipped (needs root and setpriv)");
    }
    let _ = std::fs::remove_dir_all(&base);
    println!("\n{} passed, {} failed", out.passed.len(), out.failed.len());
    if !out.failed.is_empty() {
        for f in &out.failed {
            println!("failed: {f}");
        }
        std::process::exit(1);
    }
}
