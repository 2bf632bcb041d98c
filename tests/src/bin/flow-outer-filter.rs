//! `flow-outer-filter -- CMD [ARGS]`: run CMD under an *outer* seccomp filter
//! that simulates a hostile host: `landlock_create_ruleset` answers ENOSYS (a
//! kernel without landlock) and `unshare(CLONE_NEWUSER)` answers EPERM (user
//! namespaces blocked, as by a container runtime's filter). Used by the
//! fail-closed tests: `flow up` under it must refuse to start.
//!
//! The filter is classic BPF written out by hand, so this test tool shares no
//! code with the sandbox it tests.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const NR_UNSHARE: u32 = 272;
const NR_LANDLOCK_CREATE_RULESET: u32 = 444;
const CLONE_NEWUSER: u32 = 0x1000_0000;
// offsetof(struct seccomp_data, ...)
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let args: Vec<_> = match args.first() {
        Some(a) if a == "--" => args[1..].to_vec(),
        _ => args,
    };
    if args.is_empty() {
        eprintln!("usage: flow-outer-filter -- CMD [ARGS]");
        std::process::exit(64);
    }
    let ld_w_abs = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq_k = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let jset_k = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
    let prog = [
        stmt(ld_w_abs, OFF_ARCH),
        jump(jeq_k, AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret_k, SECCOMP_RET_KILL_PROCESS),
        stmt(ld_w_abs, OFF_NR),
        jump(jeq_k, NR_LANDLOCK_CREATE_RULESET, 0, 1),
        stmt(ret_k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        jump(jeq_k, NR_UNSHARE, 0, 3),
        stmt(ld_w_abs, OFF_ARG0_LO),
        jump(jset_k, CLONE_NEWUSER, 0, 1),
        stmt(ret_k, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret_k, SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `fprog` points at a live, correctly sized program.
    let rc = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            -1
        } else {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    if rc != 0 {
        eprintln!(
            "flow-outer-filter: cannot install the filter: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(70);
    }
    let Ok(cargs) = args
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
    else {
        eprintln!("flow-outer-filter: argument with a NUL byte");
        std::process::exit(64);
    };
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: argv is NUL-terminated and outlives the call; the environment is inherited.
    unsafe { libc::execvp(cargs[0].as_ptr(), argv.as_ptr()) };
    eprintln!(
        "flow-outer-filter: cannot exec: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(127);
}
