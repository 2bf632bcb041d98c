//! The seccomp allowlists, one per profile, all in this file so that a
//! reviewer reads every permitted syscall in one place.
//!
//! Shape of every filter (x86-64 only):
//!
//! 1. a foreign architecture (i386 `int 0x80`, x32) kills the process;
//! 2. `clone3` answers `ENOSYS`: its flags live in a struct seccomp cannot
//!    read, so libc falls back to `clone`, whose flags the allowlist checks;
//! 3. the profile's allowlist, with argument conditions where a syscall is
//!    only safe for some arguments;
//! 4. anything else answers `EPERM` (never `EINVAL`/`EFAULT`/`EBADF`, which
//!    callers would mistake for a bug in their own arguments).
//!
//! Step 3 and 4 are compiled by `seccompiler`; steps 1 and 2 are a fixed
//! prologue spliced in front of its program (seccompiler has one match action
//! per filter, and `ENOSYS` is a second one). The prologue only jumps forward
//! inside itself and falls through into seccompiler's program, so the
//! relative jumps of that program stay valid.
//!
//! **Invariant:** no filter allows `socket` for the reasoning worker or the
//! executor, a socket other than TCP (`AF_INET`/`AF_INET6`, `SOCK_STREAM`,
//! protocol 0 or `IPPROTO_TCP`) for the gateway, a `sendto`/`sendmsg`/
//! `sendmmsg` whose flags carry `MSG_FASTOPEN` (an implicit TCP connect that
//! landlock's connect rule does not see), `seccomp` other than the exec
//! variant's one exec-once listener install, more than one `execve` (the
//! exec-once supervisor, [`crate::exec_once`]),
//! `execve`/`execveat` without the exec allowance, `fork`/`vfork`,
//! `clone` without thread flags, `ptrace`, `process_vm_*`, the keyring,
//! `io_uring_*`, `bpf`, `perf_event_open`, `userfaultfd`, `mount`, `pivot_root`,
//! `unshare`, `setns`, `memfd_create`, `open_by_handle_at` or `kill`.
//!
//! The filter bytes do not depend on the process (no pid is embedded), so the
//! sha256 that `flow sandbox show` prints equals the one of every production
//! spawn of the profile.

use crate::{ProfileName, SandboxError};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// One argument test: `(arg & mask) == value` (mask `u64::MAX` = plain equality).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub mask: u64,
    pub value: u64,
    /// 32-bit comparison for `int`-typed arguments, which the kernel truncates.
    pub dword: bool,
    pub text: &'static str,
}

/// One allowlist entry. `when` is a disjunction of conjunctions; empty means
/// the syscall is allowed with any arguments.
#[derive(Debug, Clone)]
pub struct Allow {
    pub name: &'static str,
    pub nr: i64,
    pub when: Vec<Vec<Cond>>,
}

/// Human-readable form of one entry, for `flow sandbox show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallRule {
    pub name: String,
    pub nr: i64,
    /// Empty: any arguments. Otherwise allowed when any one alternative holds.
    pub allowed_when: Vec<String>,
}

/// Action for everything not allowed.
pub const DEFAULT_ACTION: &str = "errno EPERM";
/// Fixed answers in the prologue, before the allowlist.
pub const PROLOGUE: [&str; 2] = [
    "architecture other than x86-64: kill process",
    "clone3: errno ENOSYS (libc falls back to clone, whose flags are checked)",
];

fn eq(arg: u8, value: u64, text: &'static str) -> Cond {
    Cond {
        arg,
        mask: u64::MAX,
        value,
        dword: true,
        text,
    }
}
fn masked(arg: u8, mask: u64, value: u64, text: &'static str) -> Cond {
    Cond {
        arg,
        mask,
        value,
        dword: false,
        text,
    }
}
fn dmasked(arg: u8, mask: u64, value: u64, text: &'static str) -> Cond {
    Cond {
        arg,
        mask,
        value,
        dword: true,
        text,
    }
}

fn any(name: &'static str, nr: libc::c_long) -> Allow {
    Allow {
        name,
        nr,
        when: Vec::new(),
    }
}
fn when(name: &'static str, nr: libc::c_long, alts: Vec<Vec<Cond>>) -> Allow {
    Allow {
        name,
        nr,
        when: alts,
    }
}
/// Allowed when the argument equals one of `values`.
fn one_of(name: &'static str, nr: libc::c_long, arg: u8, values: &[(u64, &'static str)]) -> Allow {
    when(
        name,
        nr,
        values.iter().map(|(v, t)| vec![eq(arg, *v, t)]).collect(),
    )
}

/// A send call allowed only when its `flags` argument (`arg`) has no
/// `MSG_FASTOPEN` bit: TCP Fast Open makes `sendto`/`sendmsg`/`sendmmsg`
/// connect implicitly, a path landlock's TCP connect rule does not govern.
/// (`sendmmsg` passes its `flags` argument to every message; the
/// `msg_flags` fields inside the vector are ignored on send.)
fn no_fastopen(name: &'static str, nr: libc::c_long, arg: u8) -> Allow {
    when(
        name,
        nr,
        vec![vec![dmasked(
            arg,
            MSG_FASTOPEN,
            0,
            "flags has no MSG_FASTOPEN",
        )]],
    )
}

const MSG_FASTOPEN: u64 = libc::MSG_FASTOPEN as u32 as u64;
const P_WRITE: u64 = libc::PROT_WRITE as u64;
const P_EXEC: u64 = libc::PROT_EXEC as u64;
/// `arch_prctl` code that sets the TLS base (asm/prctl.h).
const ARCH_SET_FS: u64 = 0x1002;
/// Every `CLONE_NEW*` flag (namespaces) plus `CLONE_NEWTIME`'s bit, which is
/// only meaningful for clone3/unshare but is refused here too.
const CLONE_NEW_MASK: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | 0x80) as u64;
const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;

/// What a Rust program with a tokio current-thread runtime (and std threads)
/// needs after entry, on descriptors it was given. Every profile has these.
fn runtime() -> Vec<Allow> {
    use libc::*;
    vec![
        any("read", SYS_read),
        any("write", SYS_write),
        any("readv", SYS_readv),
        any("writev", SYS_writev),
        any("pread64", SYS_pread64),
        any("close", SYS_close),
        // On descriptors the broker passed; creating sockets is `socket`.
        // Never MSG_FASTOPEN: on a TCP socket it connects implicitly,
        // without `connect`, so landlock's connect rule never sees it.
        any("recvmsg", SYS_recvmsg),
        no_fastopen("sendmsg", SYS_sendmsg, 2),
        any("recvfrom", SYS_recvfrom),
        no_fastopen("sendto", SYS_sendto, 3),
        any("shutdown", SYS_shutdown),
        any("epoll_create1", SYS_epoll_create1),
        any("epoll_ctl", SYS_epoll_ctl),
        any("epoll_wait", SYS_epoll_wait),
        any("epoll_pwait", SYS_epoll_pwait),
        any("epoll_pwait2", SYS_epoll_pwait2),
        any("eventfd2", SYS_eventfd2),
        any("poll", SYS_poll),
        any("ppoll", SYS_ppoll),
        any("futex", SYS_futex),
        any("brk", SYS_brk),
        when(
            "mmap",
            SYS_mmap,
            vec![
                vec![dmasked(2, P_EXEC, 0, "prot has no PROT_EXEC")],
                vec![dmasked(2, P_WRITE, 0, "prot has no PROT_WRITE")],
            ],
        ),
        when(
            "mprotect",
            SYS_mprotect,
            vec![vec![dmasked(2, P_EXEC, 0, "prot has no PROT_EXEC")]],
        ),
        any("munmap", SYS_munmap),
        any("mremap", SYS_mremap),
        any("madvise", SYS_madvise),
        any("rt_sigaction", SYS_rt_sigaction),
        any("rt_sigprocmask", SYS_rt_sigprocmask),
        any("rt_sigreturn", SYS_rt_sigreturn),
        any("sigaltstack", SYS_sigaltstack),
        any("getpid", SYS_getpid),
        any("gettid", SYS_gettid),
        any("getuid", SYS_getuid),
        any("geteuid", SYS_geteuid),
        any("getgid", SYS_getgid),
        any("getegid", SYS_getegid),
        any("clock_gettime", SYS_clock_gettime),
        any("clock_getres", SYS_clock_getres),
        any("clock_nanosleep", SYS_clock_nanosleep),
        any("nanosleep", SYS_nanosleep),
        any("gettimeofday", SYS_gettimeofday),
        any("sched_yield", SYS_sched_yield),
        any("sched_getaffinity", SYS_sched_getaffinity),
        any("getrandom", SYS_getrandom),
        any("exit", SYS_exit),
        any("exit_group", SYS_exit_group),
        any("set_robust_list", SYS_set_robust_list),
        any("rseq", SYS_rseq),
        any("restart_syscall", SYS_restart_syscall),
        any("fstat", SYS_fstat),
        // glibc's fstat is newfstatat(fd, "", buf, AT_EMPTY_PATH).
        when(
            "newfstatat",
            SYS_newfstatat,
            vec![vec![dmasked(
                3,
                AT_EMPTY_PATH as u64,
                AT_EMPTY_PATH as u64,
                "flags has AT_EMPTY_PATH",
            )]],
        ),
        one_of(
            "fcntl",
            SYS_fcntl,
            1,
            &[
                (F_GETFD as u64, "cmd == F_GETFD"),
                (F_SETFD as u64, "cmd == F_SETFD"),
                (F_GETFL as u64, "cmd == F_GETFL"),
                (F_SETFL as u64, "cmd == F_SETFL"),
                (F_DUPFD_CLOEXEC as u64, "cmd == F_DUPFD_CLOEXEC"),
            ],
        ),
        // Never TIOCSTI (typing into the controlling terminal).
        one_of(
            "ioctl",
            SYS_ioctl,
            1,
            &[
                (FIONBIO, "cmd == FIONBIO"),
                (FIOCLEX, "cmd == FIOCLEX"),
                (FIONCLEX, "cmd == FIONCLEX"),
                (FIONREAD, "cmd == FIONREAD"),
                (TCGETS, "cmd == TCGETS"),
            ],
        ),
        // Thread names, plus read-only queries of the process's own security
        // state, so that a probe inside the sandbox (an auditor's, or ours)
        // can decide NoNewPrivs, the seccomp mode, the capability bounding
        // set, securebits and dumpability from within. Nothing that sets.
        one_of(
            "prctl",
            SYS_prctl,
            0,
            &[
                (PR_SET_NAME as u64, "option == PR_SET_NAME"),
                (PR_GET_NAME as u64, "option == PR_GET_NAME"),
                (
                    libc::PR_GET_NO_NEW_PRIVS as u64,
                    "option == PR_GET_NO_NEW_PRIVS",
                ),
                (libc::PR_GET_SECCOMP as u64, "option == PR_GET_SECCOMP"),
                (libc::PR_CAPBSET_READ as u64, "option == PR_CAPBSET_READ"),
                (
                    libc::PR_GET_SECUREBITS as u64,
                    "option == PR_GET_SECUREBITS",
                ),
                (libc::PR_GET_DUMPABLE as u64, "option == PR_GET_DUMPABLE"),
                (libc::PR_GET_KEEPCAPS as u64, "option == PR_GET_KEEPCAPS"),
            ],
        ),
        // Read-only: lets a probe see its (empty) capability sets.
        any("capget", libc::SYS_capget),
        // Threads only: a new process (fork) or new namespaces are refused.
        when(
            "clone",
            SYS_clone,
            vec![vec![
                masked(
                    0,
                    CLONE_THREAD_FLAGS,
                    CLONE_THREAD_FLAGS,
                    "flags has CLONE_VM|CLONE_THREAD|CLONE_SIGHAND",
                ),
                masked(0, CLONE_NEW_MASK, 0, "flags has no CLONE_NEW*"),
            ]],
        ),
        // abort() raises SIGABRT on the calling thread. Signals to other
        // processes are refused by landlock's signal scope (ABI >= 6); the pid
        // is not embedded here so the filter hash is the same in every process.
        when(
            "tgkill",
            SYS_tgkill,
            vec![vec![eq(2, SIGABRT as u64, "sig == SIGABRT")]],
        ),
    ]
}

/// The executor's spool: file and directory operations. Landlock and the
/// mount namespace confine them to the spool directory.
fn spool_files() -> Vec<Allow> {
    use libc::*;
    vec![
        any("openat", SYS_openat),
        any("newfstatat", SYS_newfstatat),
        any("statx", SYS_statx),
        any("lseek", SYS_lseek),
        any("pwrite64", SYS_pwrite64),
        any("fsync", SYS_fsync),
        any("fdatasync", SYS_fdatasync),
        any("ftruncate", SYS_ftruncate),
        any("fallocate", SYS_fallocate),
        any("getdents64", SYS_getdents64),
        any("mkdir", SYS_mkdir),
        any("mkdirat", SYS_mkdirat),
        any("rmdir", SYS_rmdir),
        any("unlink", SYS_unlink),
        any("unlinkat", SYS_unlinkat),
        any("rename", SYS_rename),
        any("renameat", SYS_renameat),
        any("renameat2", SYS_renameat2),
        any("readlink", SYS_readlink),
        any("readlinkat", SYS_readlinkat),
        any("getcwd", SYS_getcwd),
        any("access", SYS_access),
        any("faccessat", SYS_faccessat),
        any("faccessat2", SYS_faccessat2),
        any("copy_file_range", SYS_copy_file_range),
        any("flock", SYS_flock),
    ]
}

/// openat that can neither write nor create.
fn open_read_only() -> Allow {
    use libc::*;
    when(
        "openat",
        SYS_openat,
        vec![vec![
            dmasked(
                2,
                O_ACCMODE as u64,
                O_RDONLY as u64,
                "(flags & O_ACCMODE) == O_RDONLY",
            ),
            dmasked(2, O_CREAT as u64, 0, "flags has no O_CREAT"),
            dmasked(
                2,
                O_TMPFILE as u64 & !(O_DIRECTORY as u64),
                0,
                "flags has no O_TMPFILE",
            ),
        ]],
    )
}

/// Read-only files given as `read_paths` (the gateway's CA bundle and
/// resolver configuration, llama-server's model).
fn read_files() -> Vec<Allow> {
    use libc::*;
    vec![
        open_read_only(),
        any("newfstatat", SYS_newfstatat),
        any("statx", SYS_statx),
        any("lseek", SYS_lseek),
        any("getdents64", SYS_getdents64),
        any("readlink", SYS_readlink),
        any("readlinkat", SYS_readlinkat),
        any("access", SYS_access),
        any("faccessat", SYS_faccessat),
        any("faccessat2", SYS_faccessat2),
        any("fadvise64", SYS_fadvise64),
    ]
}

/// Sockets on descriptors the process already holds or may create.
fn socket_io() -> Vec<Allow> {
    use libc::*;
    vec![
        any("getsockopt", SYS_getsockopt),
        any("setsockopt", SYS_setsockopt),
        any("getsockname", SYS_getsockname),
        any("getpeername", SYS_getpeername),
        no_fastopen("sendmmsg", SYS_sendmmsg, 3),
        any("recvmmsg", SYS_recvmmsg),
    ]
}

/// `type` with `SOCK_NONBLOCK`/`SOCK_CLOEXEC` masked off (the kernel refuses
/// any other flag bit).
const SOCK_TYPE_MASK: u64 = !((libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u32) as u64;

/// `socket(domain, type, protocol)` for every combination of the given
/// domains, types (flags masked off) and protocols (empty: any protocol).
fn socket_of(
    families: &[(u64, &'static str)],
    types: &[(u64, &'static str)],
    protocols: &[(u64, &'static str)],
) -> Allow {
    let mut alts = Vec::new();
    for (f, ft) in families {
        for (t, tt) in types {
            let base = vec![eq(0, *f, ft), dmasked(1, SOCK_TYPE_MASK, *t, tt)];
            if protocols.is_empty() {
                alts.push(base);
                continue;
            }
            for (p, pt) in protocols {
                let mut alt = base.clone();
                alt.push(eq(2, *p, pt));
                alts.push(alt);
            }
        }
    }
    when("socket", libc::SYS_socket, alts)
}

/// The gateway's sockets: **TCP only**. Landlock governs TCP bind/connect
/// (no port is granted until the catalog grants one) and nothing else, so
/// every other socket kind is refused here:
/// - no `SOCK_DGRAM`: UDP would reach any host and port. DNS over UDP
///   arrives later with the gateway's own resolver rule;
/// - protocol `0` or `IPPROTO_TCP` only: `IPPROTO_MPTCP` (and SCTP, where the
///   kernel has it) are `SOCK_STREAM` too, but landlock's TCP rules do not
///   cover them, so they would connect anywhere.
fn egress_gateway() -> Vec<Allow> {
    use libc::*;
    // No file calls: the gateway has no filesystem (its roots are bundled,
    // its configuration and the enterprise CA arrive from the broker).
    let mut v = Vec::new();
    v.extend(socket_io());
    v.push(socket_of(
        &[
            (AF_INET as u64, "domain == AF_INET"),
            (AF_INET6 as u64, "domain == AF_INET6"),
        ],
        &[(
            SOCK_STREAM as u64,
            "type & ~(SOCK_NONBLOCK|SOCK_CLOEXEC) == SOCK_STREAM",
        )],
        &[
            (0, "protocol == 0"),
            (IPPROTO_TCP as u64, "protocol == IPPROTO_TCP"),
        ],
    ));
    // Landlock refuses TCP connect to every port the catalog has not granted.
    v.push(any("connect", SYS_connect));
    v
}

fn llama_server() -> Vec<Allow> {
    use libc::*;
    let mut v = read_files();
    v.extend(socket_io());
    v.push(socket_of(
        &[(AF_UNIX as u64, "domain == AF_UNIX")],
        &[(
            SOCK_STREAM as u64,
            "type & ~(SOCK_NONBLOCK|SOCK_CLOEXEC) == SOCK_STREAM",
        )],
        // Any protocol: AF_UNIX knows only 0 (and PF_UNIX).
        &[],
    ));
    v.extend([
        any("bind", SYS_bind),
        any("listen", SYS_listen),
        any("accept", SYS_accept),
        any("accept4", SYS_accept4),
        // Removing its socket file in its own socket directory at exit.
        any("unlink", SYS_unlink),
        any("unlinkat", SYS_unlinkat),
        any("getcwd", SYS_getcwd),
        any("uname", SYS_uname),
        any("sysinfo", SYS_sysinfo),
        any("pipe2", SYS_pipe2),
        any("dup", SYS_dup),
        any("dup2", SYS_dup2),
        any("dup3", SYS_dup3),
        any("sched_setaffinity", SYS_sched_setaffinity),
        any("getrusage", SYS_getrusage),
        when(
            "prlimit64",
            SYS_prlimit64,
            vec![vec![masked(2, u64::MAX, 0, "new_limit == NULL")]],
        ),
    ]);
    v
}

/// The exec allowance: `execve` of the one binary landlock lets execute, and
/// what the dynamic loader and a C or Rust program's startup need.
///
/// `execve` is allowed here, but only once: `enter` installs the exec-once
/// listener filter ([`crate::exec_once`]) right after this one, and a
/// supervisor outside the sandbox answers every `execve` after the first with
/// `EPERM`. Installing that filter is the one `seccomp` call allowed: mode
/// `SECCOMP_SET_MODE_FILTER` with exactly `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
/// Once `enter` has installed it the same call can only fail (`EBUSY`: the
/// kernel allows one listener per filter chain), so the command cannot use it.
fn exec_allowance() -> Vec<Allow> {
    use libc::*;
    vec![
        any("execve", SYS_execve),
        when(
            "seccomp",
            SYS_seccomp,
            vec![vec![
                eq(
                    0,
                    u64::from(SECCOMP_SET_MODE_FILTER),
                    "operation == SECCOMP_SET_MODE_FILTER",
                ),
                eq(
                    1,
                    SECCOMP_FILTER_FLAG_NEW_LISTENER,
                    "flags == SECCOMP_FILTER_FLAG_NEW_LISTENER (the exec-once listener; EBUSY once installed)",
                ),
            ]],
        ),
        open_read_only(),
        any("newfstatat", SYS_newfstatat),
        any("statx", SYS_statx),
        any("lseek", SYS_lseek),
        any("access", SYS_access),
        any("faccessat", SYS_faccessat),
        any("faccessat2", SYS_faccessat2),
        any("readlink", SYS_readlink),
        any("readlinkat", SYS_readlinkat),
        any("getcwd", SYS_getcwd),
        any("uname", SYS_uname),
        any("fadvise64", SYS_fadvise64),
        any("set_tid_address", SYS_set_tid_address),
        one_of(
            "arch_prctl",
            SYS_arch_prctl,
            0,
            &[(ARCH_SET_FS, "code == ARCH_SET_FS")],
        ),
        when(
            "prlimit64",
            SYS_prlimit64,
            vec![vec![masked(2, u64::MAX, 0, "new_limit == NULL")]],
        ),
    ]
}

/// The full allowlist of `profile`, with the exec allowance when `exec`.
/// Entries for the same syscall are merged: any unconditional entry wins,
/// otherwise the alternatives are concatenated.
pub fn allowlist(profile: ProfileName, exec: bool) -> Vec<Allow> {
    let mut all = runtime();
    match profile {
        ProfileName::ReasoningWorker => {}
        ProfileName::Executor => all.extend(spool_files()),
        ProfileName::EgressGateway => all.extend(egress_gateway()),
        ProfileName::LlamaServer => all.extend(llama_server()),
    }
    if exec {
        all.extend(exec_allowance());
    }
    let mut merged: BTreeMap<i64, Allow> = BTreeMap::new();
    for a in all {
        match merged.get_mut(&a.nr) {
            None => {
                merged.insert(a.nr, a);
            }
            Some(prev) => {
                if prev.when.is_empty() || a.when.is_empty() {
                    prev.when.clear();
                } else {
                    for alt in a.when {
                        if !prev.when.contains(&alt) {
                            prev.when.push(alt);
                        }
                    }
                }
            }
        }
    }
    merged.into_values().collect()
}

/// The allowlist as text, in syscall-number order.
pub fn describe_rules(profile: ProfileName, exec: bool) -> Vec<SyscallRule> {
    allowlist(profile, exec)
        .into_iter()
        .map(|a| SyscallRule {
            name: a.name.to_string(),
            nr: a.nr,
            allowed_when: a
                .when
                .iter()
                .map(|alt| alt.iter().map(|c| c.text).collect::<Vec<_>>().join(" && "))
                .collect(),
        })
        .collect()
}

fn build_err(profile: ProfileName, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::SeccompBuild {
        profile: profile.to_string(),
        detail: e.to_string(),
    }
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Compile the filter for `(profile, exec)`. The one code path used both to
/// install (in [`install`]) and to hash (in [`sha256`]).
pub fn compile(profile: ProfileName, exec: bool) -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in allowlist(profile, exec) {
        let mut chain = Vec::new();
        for alt in &a.when {
            let conds = alt
                .iter()
                .map(|c| {
                    let (len, op) = if c.mask == u64::MAX {
                        (
                            if c.dword {
                                SeccompCmpArgLen::Dword
                            } else {
                                SeccompCmpArgLen::Qword
                            },
                            SeccompCmpOp::Eq,
                        )
                    } else {
                        (
                            if c.dword {
                                SeccompCmpArgLen::Dword
                            } else {
                                SeccompCmpArgLen::Qword
                            },
                            SeccompCmpOp::MaskedEq(c.mask),
                        )
                    };
                    SeccompCondition::new(c.arg, len, op, c.value)
                        .map_err(|e| build_err(profile, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            chain.push(SeccompRule::new(conds).map_err(|e| build_err(profile, e))?);
        }
        rules.insert(a.nr, chain);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| build_err(profile, e))?;
    let body: BpfProgram = filter.try_into().map_err(|e| build_err(profile, e))?;
    let mut prog = vec![
        ins(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        ins(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ins(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
        ins(BPF_JMP_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
        ins(
            BPF_RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
    ];
    prog.extend(body);
    // The kernel refuses programs longer than BPF_MAXINSNS.
    if prog.len() > 4096 {
        return Err(build_err(
            profile,
            format!("program has {} instructions", prog.len()),
        ));
    }
    Ok(prog)
}

/// The bytes the hash is taken over: each instruction as code u16 LE, jt u8,
/// jf u8, k u32 LE (the kernel's `struct sock_filter` layout).
pub fn program_bytes(prog: &[sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * 8);
    for i in prog {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out
}

pub fn sha256_of(prog: &[sock_filter]) -> String {
    hex::encode(Sha256::digest(program_bytes(prog)))
}

/// sha256 of the filter that [`install`] would install for `(profile, exec)`.
pub fn sha256(profile: ProfileName, exec: bool) -> Result<String, SandboxError> {
    Ok(sha256_of(&compile(profile, exec)?))
}

/// Install the filter on the calling thread (the process is single-threaded:
/// `enter` checked it). Returns the sha256 of the installed program.
pub fn install(profile: ProfileName, exec: bool) -> Result<String, SandboxError> {
    let prog = compile(profile, exec)?;
    let hash = sha256_of(&prog);
    seccompiler::apply_filter(&prog).map_err(|e| SandboxError::SeccompInstall {
        profile: profile.to_string(),
        detail: e.to_string(),
    })?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for p in ProfileName::ALL {
            for exec in [false, true] {
                let a = sha256(p, exec).unwrap();
                assert_eq!(a, sha256(p, exec).unwrap());
                assert!(seen.insert(a), "{p} exec={exec} collides");
            }
        }
    }

    fn names(p: ProfileName, exec: bool) -> Vec<&'static str> {
        allowlist(p, exec).into_iter().map(|a| a.name).collect()
    }

    #[test]
    fn forbidden_syscalls_are_absent_everywhere() {
        let forbidden = [
            "execveat",
            "fork",
            "vfork",
            "clone3",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "keyctl",
            "add_key",
            "request_key",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "memfd_create",
            "open_by_handle_at",
            "kill",
            "tkill",
            "socketpair",
            "open",
            "openat2",
        ];
        for p in ProfileName::ALL {
            for exec in [false, true] {
                let n = names(p, exec);
                for f in forbidden {
                    assert!(!n.contains(&f), "{p} exec={exec} allows {f}");
                }
                assert_eq!(n.contains(&"execve"), exec, "{p}");
            }
        }
    }

    #[test]
    fn worker_has_no_filesystem_and_no_socket() {
        let n = names(ProfileName::ReasoningWorker, false);
        for f in [
            "socket",
            "openat",
            "statx",
            "access",
            "readlink",
            "connect",
            "bind",
            "getdents64",
        ] {
            assert!(!n.contains(&f), "worker allows {f}");
        }
        let stat = allowlist(ProfileName::ReasoningWorker, false)
            .into_iter()
            .find(|a| a.name == "newfstatat")
            .unwrap();
        assert_eq!(stat.when.len(), 1);
        assert!(!names(ProfileName::Executor, false).contains(&"socket"));
    }

    fn rule(p: ProfileName, exec: bool, name: &str) -> Option<Allow> {
        allowlist(p, exec).into_iter().find(|a| a.name == name)
    }

    #[test]
    fn no_send_call_may_carry_msg_fastopen() {
        for p in ProfileName::ALL {
            for exec in [false, true] {
                for (name, arg) in [("sendto", 3), ("sendmsg", 2), ("sendmmsg", 3)] {
                    let Some(a) = rule(p, exec, name) else {
                        continue;
                    };
                    assert!(!a.when.is_empty(), "{p} exec={exec}: {name} unconditional");
                    for alt in &a.when {
                        assert!(
                            alt.iter().any(|c| c.arg == arg
                                && c.mask == 0x2000_0000
                                && c.value == 0
                                && c.dword),
                            "{p} exec={exec}: {name} alternative without the MSG_FASTOPEN test"
                        );
                    }
                }
                assert!(rule(p, exec, "sendto").is_some(), "{p}");
                assert!(rule(p, exec, "sendmsg").is_some(), "{p}");
            }
        }
        assert!(rule(ProfileName::EgressGateway, false, "sendmmsg").is_some());
    }

    #[test]
    fn gateway_creates_tcp_sockets_only() {
        for exec in [false, true] {
            let s = rule(ProfileName::EgressGateway, exec, "socket").unwrap();
            assert_eq!(s.when.len(), 4);
            for alt in &s.when {
                let values: Vec<(u8, u64, u64)> =
                    alt.iter().map(|c| (c.arg, c.mask, c.value)).collect();
                assert!(
                    values.contains(&(0, u64::MAX, libc::AF_INET as u64))
                        || values.contains(&(0, u64::MAX, libc::AF_INET6 as u64)),
                    "{values:?}"
                );
                assert!(
                    values.contains(&(1, SOCK_TYPE_MASK, libc::SOCK_STREAM as u64)),
                    "{values:?}"
                );
                assert!(
                    values.contains(&(2, u64::MAX, 0))
                        || values.contains(&(2, u64::MAX, libc::IPPROTO_TCP as u64)),
                    "{values:?}"
                );
            }
        }
        // The mask keeps every type bit but the two creation flags.
        assert_eq!(
            SOCK_TYPE_MASK & libc::SOCK_DGRAM as u64,
            libc::SOCK_DGRAM as u64
        );
        assert_eq!(SOCK_TYPE_MASK & 0x80800, 0);
    }

    #[test]
    fn seccomp_only_installs_the_exec_once_listener() {
        for p in ProfileName::ALL {
            assert!(rule(p, false, "seccomp").is_none(), "{p}");
            let s = rule(p, true, "seccomp").unwrap();
            assert_eq!(s.when.len(), 1);
            let conds: Vec<(u8, u64, u64)> =
                s.when[0].iter().map(|c| (c.arg, c.mask, c.value)).collect();
            assert_eq!(
                conds,
                vec![
                    (0, u64::MAX, u64::from(libc::SECCOMP_SET_MODE_FILTER)),
                    (1, u64::MAX, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER),
                ]
            );
        }
    }

    #[test]
    fn prologue_answers_clone3_with_enosys() {
        let prog = compile(ProfileName::ReasoningWorker, false).unwrap();
        assert_eq!(prog[4].k, libc::SYS_clone3 as u32);
        assert_eq!(prog[5].k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        // The last instruction of seccompiler's program is the default action.
        assert_eq!(
            prog.last().unwrap().k,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
    }
}
