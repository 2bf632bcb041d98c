//! Exactly one `execve`: the exec-once supervisor.
//!
//! A profile's exec-allowance filter allows `execve` (landlock and the mount
//! namespace decide *what* may be executed), and a seccomp filter cannot be
//! removed once installed, so on its own it would let the command execute
//! itself again, or the ELF interpreter with any file it can read. This module
//! makes the allowance single-use:
//!
//! 1. [`install_listener`] (the last step of [`crate::enter`], exec variant
//!    only) installs a second, tiny classic-BPF filter — foreign ABI: kill;
//!    `execve`, `execveat`: `SECCOMP_RET_USER_NOTIF`; anything else: allow —
//!    with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and returns the listener
//!    descriptor (close-on-exec) in [`crate::Applied::exec_listener`].
//! 2. The caller passes the listener to a process **outside** the sandbox
//!    (`flow sandbox run`: its parent, over a socketpair made before `fork`)
//!    and closes its own copy. From then on every `execve` of the sandboxed
//!    process blocks until that process answers.
//! 3. The outside process runs [`supervise`]: the **first** notification is the
//!    sandboxed process's own `execve` of the command, made by our code
//!    before any untrusted code runs, and is answered
//!    `SECCOMP_USER_NOTIF_FLAG_CONTINUE`; every later `execve`/`execveat` is
//!    answered `EPERM`. The allowance is spent by the first notification even
//!    if that `execve` fails.
//!
//! **Fail closed:** if the supervisor exits or dies, the kernel answers every
//! pending and future notification with `ENOSYS` (the listener is gone), so
//! no `execve` can succeed without a live supervisor saying so.
//! **Invariant:** the sandboxed process never holds the listener when it
//! runs untrusted code (the descriptor is closed before `execve`, and is
//! close-on-exec anyway).
//!
//! The notification's arguments are not inspected (a pointer argument can be
//! changed by another thread after the check); the decision rests only on
//! *which* `execve` it is, which the sandboxed process cannot influence.

use crate::SandboxError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One classic BPF instruction (`struct sock_filter`).
type Insn = libc::sock_filter;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 system calls carry this bit in `nr` and share x86-64's arch value.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The listener filter. Its lines are in [`PROGRAM_TEXT`].
pub fn program() -> Vec<Insn> {
    let nr = |n: libc::c_long| u32::try_from(n).unwrap_or(u32::MAX);
    vec![
        /* 0 */ ins(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        /* 1 */ ins(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        /* 2 */ ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        /* 3 */ ins(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        /* 4 */ ins(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        /* 5 */ ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        /* 6 */ ins(BPF_JMP_JEQ_K, 2, 0, nr(libc::SYS_execve)),
        /* 7 */ ins(BPF_JMP_JEQ_K, 1, 0, nr(libc::SYS_execveat)),
        /* 8 */ ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        /* 9 */ ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF),
    ]
}

/// [`program`] in words, for `flow sandbox show`.
pub const PROGRAM_TEXT: [&str; 4] = [
    "architecture other than x86-64: kill process",
    "x32 system call numbers: kill process",
    "execve, execveat: user notification to the supervisor (first: continue; later: errno EPERM; no supervisor: errno ENOSYS)",
    "anything else: allow (the profile's allowlist decides)",
];

/// What `flow sandbox show` says about the exec allowance.
pub const SUMMARY: &str =
    "execve allowed once, enforced by a seccomp user-notification supervisor in the parent";

/// sha256 of [`program`], in the same byte layout as
/// [`crate::seccomp::program_bytes`].
pub fn sha256() -> String {
    let mut bytes = Vec::new();
    for i in program() {
        bytes.extend_from_slice(&i.code.to_le_bytes());
        bytes.push(i.jt);
        bytes.push(i.jf);
        bytes.extend_from_slice(&i.k.to_le_bytes());
    }
    hex::encode(Sha256::digest(bytes))
}

/// Install the listener filter on the calling thread and return the listener
/// (close-on-exec). Needs `no_new_privs` and a single thread (`enter` has
/// both by then); the profile's exec-allowance filter permits exactly this
/// `seccomp` call.
pub fn install_listener() -> Result<OwnedFd, SandboxError> {
    let prog = program();
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).unwrap_or(u16::MAX),
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at `prog`, a valid array of `len` instructions
    // that outlives the call; the kernel copies it. On success the return
    // value is a new descriptor that nothing else owns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(SandboxError::ExecOnce {
            action: "install the exec-once listener filter",
            source: io::Error::last_os_error(),
        });
    }
    let fd = RawFd::try_from(r).map_err(|_| SandboxError::ExecOnce {
        action: "install the exec-once listener filter",
        source: io::Error::from_raw_os_error(libc::EBADF),
    })?;
    // SAFETY: fd was just returned by seccomp(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the supervisor did, once the sandboxed process is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SuperviseReport {
    /// `execve` calls let through (0 or 1).
    pub continued: u32,
    /// `execve`/`execveat` calls answered `EPERM`.
    pub refused: u32,
}

fn notif_err(action: &'static str) -> impl Fn(io::Error) -> SandboxError {
    move |source| SandboxError::ExecOnce { action, source }
}

/// Answer the notifications of `listener` until every process using the
/// filter is gone: the first one (expected: `execve` by `pid`, the sandboxed
/// process, before it runs the command) continues, every later one gets
/// `EPERM`. Blocking; run it on a thread of the process outside the sandbox
/// that received the listener. Returning (or failing) closes the listener,
/// after which the kernel refuses every `execve` of the sandboxed process
/// with `ENOSYS`.
pub fn supervise(listener: OwnedFd, pid: i32) -> Result<SuperviseReport, SandboxError> {
    let fd = listener.as_raw_fd();
    let mut report = SuperviseReport::default();
    let mut spent = false;
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, alive for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(notif_err("wait for exec-once notifications")(e));
        }
        if pfd.revents & libc::POLLIN == 0 {
            // POLLHUP: no process uses the filter any more.
            if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return Ok(report);
            }
            continue;
        }
        // SAFETY: seccomp_notif is plain old data; the kernel requires it
        // zeroed before SECCOMP_IOCTL_NOTIF_RECV.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: `req` is a valid, writable seccomp_notif of the size the
        // ioctl number encodes.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The notifying task died (or was interrupted) before we read.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => return Err(notif_err("receive an exec-once notification")(e)),
            }
        }
        let first = !spent;
        spent = true;
        let allow = first
            && i64::from(req.pid) == i64::from(pid)
            && req.data.arch == AUDIT_ARCH_X86_64
            && i64::from(req.data.nr) == libc::SYS_execve;
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val: 0,
            error: if allow { 0 } else { -libc::EPERM },
            flags: if allow {
                libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            } else {
                0
            },
        };
        // SAFETY: `resp` is a valid seccomp_notif_resp of the size the ioctl
        // number encodes, alive for the call.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) } < 0 {
            let e = io::Error::last_os_error();
            // ENOENT: the task died (e.g. killed) while we decided.
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(notif_err("answer an exec-once notification")(e));
            }
        }
        if allow {
            report.continued += 1;
        } else {
            report.refused += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_routes_exec_to_the_supervisor_and_allows_the_rest() {
        let p = program();
        assert_eq!(p.len(), 10);
        // Both exec calls jump to the USER_NOTIF return; the fall-through allows.
        assert_eq!(p[6].k as libc::c_long, libc::SYS_execve);
        assert_eq!(6 + 1 + usize::from(p[6].jt), 9);
        assert_eq!(p[7].k as libc::c_long, libc::SYS_execveat);
        assert_eq!(7 + 1 + usize::from(p[7].jt), 9);
        assert_eq!(p[8].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(p[9].k, libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(p[2].k, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(p[5].k, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(sha256(), sha256());
        assert_eq!(sha256().len(), 64);
    }
}
