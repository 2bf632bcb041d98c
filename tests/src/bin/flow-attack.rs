//! `flow-attack NAME [ARGS]`: exactly one real escape attempt per process.
//!
//! It prints one JSON line on stdout,
//! `{"attack":NAME,"outcome":"succeeded"|"denied"|"hidden"|"undecidable","errno":N|null,"detail":"..."}`,
//! and exits
//! - 0 when the attack succeeded,
//! - 1 when it was denied (`EPERM`, `EACCES`, `ENOSYS`; `EROFS` for writes) or
//!   hidden (`ENOENT`/`ENOTDIR` for path-based attacks, `ECONNREFUSED` for an
//!   abstract-name connect: see `flow_tests::Errnos`),
//! - 2 for any other errno: undecidable, which the suite counts as a failure,
//! - 3 on a usage error (a harness bug);
//!
//! or it dies by `SIGSYS` when seccomp kills it.
//!
//! Nothing here simulates: every attack makes the real system call. Nothing
//! here reads `/proc` either, because inside a profile `/proc` is hidden.
//!
//! Helper modes (not attacks): `--list` prints the implemented attack names;
//! `__landed NAME` is what a successful exec attack runs; `__sleeper SECS` is
//! the process the harness targets with ptrace/kill/pidfd attacks.

use flow_tests::Errnos;
use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The 32 bytes the sleeper holds and `process-vm-readv` tries to read.
static SECRET: [u8; 32] = *b"flow-escape-secret-0123456789abc";

/// A tiny static ELF built by `build.rs` (no libc, two syscalls): what
/// `memfd-exec` tries to run without touching the filesystem.
static LANDED_ELF: &[u8] = include_bytes!(env!("FLOW_LANDED_BIN"));

enum Fail {
    /// A system call failed.
    Errno { step: String, errno: i32 },
    /// The attack ran and found nothing (e.g. an empty environment).
    Nothing(String),
    /// The harness called us wrongly.
    Usage(String),
}

type Res = Result<String, Fail>;

/// One attack: runs the real thing, `Ok(detail)` when it worked.
type AttackFn = fn(&Call) -> Res;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `Err` with the current errno when a syscall-style return is negative.
fn chk(ret: i64, step: &str) -> Result<i64, Fail> {
    if ret < 0 {
        Err(Fail::Errno {
            step: step.to_string(),
            errno: errno(),
        })
    } else {
        Ok(ret)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn cstr(s: &str) -> Result<CString, Fail> {
    CString::new(s).map_err(|_| Fail::Usage(format!("argument contains NUL: {s:?}")))
}

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str, Fail> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| Fail::Usage(format!("missing argument {}: {what}", i + 1)))
}

fn num<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, Fail> {
    let s = arg(args, i, what)?;
    s.parse()
        .map_err(|_| Fail::Usage(format!("argument {}: {what}: not a number: {s:?}", i + 1)))
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::ENOKEY => "ENOKEY",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESTALE => "ESTALE",
        libc::ETXTBSY => "ETXTBSY",
        libc::EXDEV => "EXDEV",
        _ => "E?",
    }
}

// ── sockets ─────────────────────────────────────────────────────────────────

fn socket(domain: c_int, ty: c_int, proto: c_int) -> Result<OwnedFd, Fail> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    chk(fd.into(), "socket").map(owned)
}

fn socket_only(domain: c_int, ty: c_int, proto: c_int) -> Res {
    let fd = socket(domain, ty, proto)?;
    Ok(format!("socket() returned fd {}", fd.as_raw_fd()))
}

fn loopback4(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}

fn loopback6(port: u16) -> libc::sockaddr_in6 {
    let mut addr = [0u8; 16];
    addr[15] = 1;
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: addr },
        sin6_scope_id: 0,
    }
}

/// A `sockaddr_un` for a path (`abstract_name == false`) or an abstract name.
fn sockaddr_un(name: &str, abstract_name: bool) -> Result<(libc::sockaddr_un, u32), Fail> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let start = usize::from(abstract_name);
    let bytes = name.as_bytes();
    if start + bytes.len() + 1 > sa.sun_path.len() {
        return Err(Fail::Usage(format!("unix socket name too long: {name}")));
    }
    for (i, b) in bytes.iter().enumerate() {
        sa.sun_path[start + i] = *b as c_char;
    }
    let base = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = if abstract_name {
        base + 1 + bytes.len()
    } else {
        base + bytes.len() + 1
    };
    Ok((sa, len as u32))
}

fn bind_raw<T>(fd: &OwnedFd, sa: &T, len: u32) -> Result<(), Fail> {
    // SAFETY: `sa` points to a valid socket address of at least `len` bytes.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (sa as *const T).cast(), len) };
    chk(r.into(), "bind").map(drop)
}

fn connect_raw<T>(fd: &OwnedFd, sa: &T, len: u32) -> Result<(), Fail> {
    // SAFETY: `sa` points to a valid socket address of at least `len` bytes.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (sa as *const T).cast(), len) };
    chk(r.into(), "connect").map(drop)
}

fn listen(fd: &OwnedFd) -> Result<(), Fail> {
    // SAFETY: plain syscall on a descriptor we own.
    let r = unsafe { libc::listen(fd.as_raw_fd(), 1) };
    chk(r.into(), "listen").map(drop)
}

fn socketpair_unix() -> Res {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors the kernel writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    chk(r.into(), "socketpair")?;
    let (_a, _b) = (owned(fds[0].into()), owned(fds[1].into()));
    Ok(format!(
        "socketpair() returned fds {} and {}",
        fds[0], fds[1]
    ))
}

fn unix_bind_path(args: &[String]) -> Res {
    let dir = arg(args, 0, "writable directory outside")?;
    let path = format!("{dir}/flow-escape.sock");
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)?;
    let (sa, len) = sockaddr_un(&path, false)?;
    bind_raw(&fd, &sa, len)?;
    Ok(format!("bound {path}"))
}

fn unix_connect(args: &[String], abstract_name: bool) -> Res {
    let name = arg(args, 0, "listener path or abstract name")?;
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)?;
    let (sa, len) = sockaddr_un(name, abstract_name)?;
    connect_raw(&fd, &sa, len)?;
    Ok(format!("connected to {name}"))
}

fn unix_bind_abstract(args: &[String]) -> Res {
    let name = arg(args, 0, "fresh abstract name")?;
    let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)?;
    let (sa, len) = sockaddr_un(name, true)?;
    bind_raw(&fd, &sa, len)?;
    Ok(format!("bound abstract name {name}"))
}

fn tcp_connect(args: &[String], v6: bool) -> Res {
    let port: u16 = num(args, 0, "TCP port of the listener outside")?;
    if v6 {
        let fd = socket(libc::AF_INET6, libc::SOCK_STREAM, 0)?;
        connect_raw(
            &fd,
            &loopback6(port),
            size_of::<libc::sockaddr_in6>() as u32,
        )?;
        Ok(format!("connected to [::1]:{port}"))
    } else {
        let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
        connect_raw(&fd, &loopback4(port), size_of::<libc::sockaddr_in>() as u32)?;
        Ok(format!("connected to 127.0.0.1:{port}"))
    }
}

/// `IPPROTO_MPTCP` (Linux's protocol number; absent from some libc crates).
const IPPROTO_MPTCP: c_int = 262;

/// Multipath TCP: a `SOCK_STREAM` socket that landlock's TCP rules do not
/// cover; a plain TCP listener accepts it (fallback to TCP).
fn tcp_connect_mptcp(args: &[String]) -> Res {
    let port: u16 = num(args, 0, "TCP port of the listener outside")?;
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, IPPROTO_MPTCP)?;
    connect_raw(&fd, &loopback4(port), size_of::<libc::sockaddr_in>() as u32)?;
    Ok(format!("connected to 127.0.0.1:{port} over MPTCP"))
}

/// TCP Fast Open: `sendto(MSG_FASTOPEN)` connects implicitly, without a
/// `connect` call, so it takes a different kernel path than `connect`.
/// Which system call carries `MSG_FASTOPEN`.
#[derive(Clone, Copy)]
enum SendCall {
    Sendto,
    Sendmsg,
    Sendmmsg,
}

fn tcp_fastopen(args: &[String], call: SendCall) -> Res {
    let port: u16 = num(args, 0, "TCP port of the listener outside")?;
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let mut sa = loopback4(port);
    let mut msg = *b"flow-escape";
    let salen = size_of::<libc::sockaddr_in>() as u32;
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: msg.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (&mut sa as *mut libc::sockaddr_in).cast();
    hdr.msg_namelen = salen;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    let (r, step) = match call {
        SendCall::Sendto => {
            // SAFETY: `msg` and `sa` are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_FASTOPEN,
                    (&sa as *const libc::sockaddr_in).cast(),
                    salen,
                )
            };
            (n as i64, "sendto(MSG_FASTOPEN)")
        }
        SendCall::Sendmsg => {
            // SAFETY: `hdr` points at live `sa`, `iov` and `msg`.
            let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &hdr, libc::MSG_FASTOPEN) };
            (n as i64, "sendmsg(MSG_FASTOPEN)")
        }
        SendCall::Sendmmsg => {
            let mut m = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
            // SAFETY: one mmsghdr whose msghdr points at live `sa`, `iov`, `msg`.
            let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), &mut m, 1, libc::MSG_FASTOPEN as _) };
            (i64::from(n), "sendmmsg(MSG_FASTOPEN)")
        }
    };
    let n = chk(r, step)?;
    Ok(format!("connected to 127.0.0.1:{port} by {step} ({n})"))
}

fn tcp_bind(args: &[String]) -> Res {
    let port: u16 = num(args, 0, "free TCP port")?;
    let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    bind_raw(&fd, &loopback4(port), size_of::<libc::sockaddr_in>() as u32)?;
    listen(&fd)?;
    Ok(format!("listening on 127.0.0.1:{port}"))
}

fn udp_send(args: &[String]) -> Res {
    let port: u16 = num(args, 0, "UDP port outside")?;
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let msg = b"flow-escape datagram";
    let sa = loopback4(port);
    // SAFETY: `msg` and `sa` are valid for the lengths given.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    let n = chk(r as i64, "sendto")?;
    Ok(format!("sent {n} bytes to 127.0.0.1:{port}"))
}

/// Make an i386 system call through `int 0x80` from this 64-bit process.
fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
    let ret: i32;
    // SAFETY: `int 0x80` enters the kernel's compat entry; rbx (reserved by
    // LLVM) is swapped in and out around it, the return value is in eax, and
    // r8–r11 are declared clobbered. Pointer arguments are below 4 GiB.
    unsafe {
        std::arch::asm!(
            "xchg {a}, rbx",
            "int 0x80",
            "xchg {a}, rbx",
            a = inout(reg) u64::from(a) => _,
            inlateout("eax") nr as i32 => ret,
            in("ecx") b,
            in("edx") c,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    ret
}

fn int80_result(ret: i32, step: &str) -> Res {
    if ret < 0 {
        return Err(Fail::Errno {
            step: step.to_string(),
            errno: -ret,
        });
    }
    let _fd = owned(ret.into());
    Ok(format!("{step} returned fd {ret}"))
}

fn int80_socket() -> Res {
    // i386 __NR_socket = 359
    let r = int80(359, libc::AF_INET as u32, libc::SOCK_STREAM as u32, 0);
    int80_result(r, "int 0x80 socket")
}

fn int80_socketcall() -> Res {
    // SAFETY: anonymous private mapping; MAP_32BIT so the compat entry can
    // address it with a 32-bit pointer.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(Fail::Errno {
            step: "mmap(MAP_32BIT)".into(),
            errno: errno(),
        });
    }
    let args: [u32; 3] = [libc::AF_INET as u32, libc::SOCK_STREAM as u32, 0];
    // SAFETY: the page is writable and 4096 bytes long; we write 12 bytes.
    unsafe { std::ptr::copy_nonoverlapping(args.as_ptr(), page.cast::<u32>(), 3) };
    // i386 __NR_socketcall = 102, SYS_SOCKET = 1
    let r = int80(102, 1, page as usize as u32, 0);
    int80_result(r, "int 0x80 socketcall(SYS_SOCKET)")
}

// ── filesystem and environment ──────────────────────────────────────────────

fn open(path: &str, flags: c_int, mode: libc::mode_t) -> Result<OwnedFd, Fail> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    chk(fd.into(), &format!("open {path}")).map(owned)
}

fn read_all(fd: &OwnedFd, step: &str) -> Result<usize, Fail> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let n = chk(n as i64, step)?;
        if n == 0 || total > 1 << 20 {
            return Ok(total);
        }
        total += n as usize;
    }
}

fn read_file(path: &str) -> Res {
    let fd = open(path, libc::O_RDONLY, 0)?;
    let n = read_all(&fd, &format!("read {path}"))?;
    Ok(format!("read {n} bytes of {path}"))
}

fn write_tmp(args: &[String]) -> Res {
    let dir = arg(args, 0, "directory outside")?;
    let path = format!("{dir}/flow-escape-written");
    let fd = open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644)?;
    let msg = b"written from inside\n";
    // SAFETY: `msg` is valid for reads of its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
    let n = chk(n as i64, "write")?;
    Ok(format!("created {path} and wrote {n} bytes"))
}

fn symlink(args: &[String]) -> Res {
    let dir = arg(args, 0, "directory outside")?;
    let path = format!("{dir}/flow-escape-symlink");
    let (target, link) = (cstr("/etc/passwd")?, cstr(&path)?);
    // SAFETY: both are valid NUL-terminated paths.
    let r = unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    chk(r.into(), "symlink")?;
    Ok(format!("created symlink {path}"))
}

fn mknod(args: &[String]) -> Res {
    let dir = arg(args, 0, "directory outside")?;
    let path = format!("{dir}/flow-escape-node");
    let c = cstr(&path)?;
    // SAFETY: valid path; creates a character device node (1:3, like /dev/null).
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    chk(r.into(), "mknod")?;
    Ok(format!("created char device {path}"))
}

fn environ() -> Res {
    let names: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        Err(Fail::Nothing("the environment is empty".into()))
    } else {
        // Names only: values may be secrets.
        Ok(format!("{} variables: {}", names.len(), names.join(",")))
    }
}

#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: c_int,
    f_handle: [u8; 128],
}

fn open_by_handle(args: &[String]) -> Res {
    let mount_path = arg(args, 0, "a path on the secret's filesystem")?;
    let handle_type: c_int = num(args, 1, "handle type")?;
    let hex = arg(args, 2, "handle bytes (hex)")?;
    let mut fh = FileHandle {
        handle_bytes: 0,
        handle_type,
        f_handle: [0; 128],
    };
    if hex.len() % 2 != 0 || hex.len() / 2 > fh.f_handle.len() {
        return Err(Fail::Usage(format!("bad handle hex {hex:?}")));
    }
    for i in 0..hex.len() / 2 {
        fh.f_handle[i] = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
            .map_err(|_| Fail::Usage(format!("bad handle hex {hex:?}")))?;
    }
    fh.handle_bytes = (hex.len() / 2) as u32;
    // The mount fd: the visible binary when we may open it, else the working
    // directory (AT_FDCWD). Either way the call itself is made: the kernel
    // checks CAP_DAC_READ_SEARCH before it decodes the handle.
    let mount_fd = open(mount_path, libc::O_RDONLY, 0).ok();
    let (anchor, via) = match &mount_fd {
        Some(fd) => (fd.as_raw_fd(), "an fd on the flow-attack binary"),
        None => (libc::AT_FDCWD, "AT_FDCWD (the binary could not be opened)"),
    };
    // SAFETY: `fh` is a valid struct file_handle with `handle_bytes` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            anchor,
            &mut fh as *mut FileHandle,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let fd = owned(chk(fd, &format!("open_by_handle_at via {via}"))?);
    let n = read_all(&fd, "read the opened handle")?;
    Ok(format!(
        "opened a file by handle via {via} and read {n} bytes"
    ))
}

// ── processes and exec ──────────────────────────────────────────────────────

fn reap(pid: i64, how: &str) -> Res {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) };
    chk(r.into(), "waitpid")?;
    Ok(format!("{how} created child {pid}, status {status:#x}"))
}

fn fork() -> Res {
    // SAFETY: single-threaded process; the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe exit of the child.
        unsafe { libc::_exit(0) }
    }
    reap(chk(pid.into(), "fork")?, "fork()")
}

fn clone_raw() -> Res {
    // SAFETY: raw clone without CLONE_VM: the child gets a copy of the address
    // space (like fork) and only calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
            0 as c_long,
        )
    };
    if pid == 0 {
        // SAFETY: async-signal-safe exit of the child.
        unsafe { libc::_exit(0) }
    }
    reap(chk(pid, "clone(SIGCHLD)")?, "clone(SIGCHLD)")
}

fn clone3() -> Res {
    // struct clone_args, CLONE_ARGS_SIZE_VER0: flags, pidfd, child_tid,
    // parent_tid, exit_signal, stack, stack_size, tls.
    let args: [u64; 8] = [0, 0, 0, 0, libc::SIGCHLD as u64, 0, 0, 0];
    // SAFETY: `args` is a valid clone_args of 64 bytes; without CLONE_VM the
    // child runs on a copy of our stack and only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), 64usize) };
    if pid == 0 {
        // SAFETY: async-signal-safe exit of the child.
        unsafe { libc::_exit(0) }
    }
    reap(chk(pid, "clone3")?, "clone3")
}

extern "C" fn clone_child(_: *mut c_void) -> c_int {
    0
}

fn clone_vm_process() -> Res {
    let mut stack = vec![0u8; 256 * 1024];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs `clone_child` on its own 256 KiB stack and
    // returns at once; CLONE_VFORK suspends us until it has exited.
    let pid = unsafe {
        libc::clone(
            clone_child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    let r = reap(
        chk(pid.into(), "clone(CLONE_VM|CLONE_VFORK)")?,
        "clone(CLONE_VM|CLONE_VFORK|SIGCHLD)",
    );
    drop(stack);
    r
}

fn execve(path: &CStr, argv: &[&CStr]) -> Fail {
    let mut ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const c_char; 1] = [std::ptr::null()];
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that outlive
    // the call; on success this never returns.
    unsafe { libc::execve(path.as_ptr(), ptrs.as_ptr(), envp.as_ptr()) };
    Fail::Errno {
        step: format!("execve {}", path.to_string_lossy()),
        errno: errno(),
    }
}

fn landed_json(name: &str, detail: &str) -> String {
    serde_json::json!({"attack": name, "outcome": "succeeded", "errno": null, "detail": detail})
        .to_string()
}

fn execve_bin() -> Res {
    let line = landed_json("execve-bin", "/bin/echo ran after execve");
    let line = cstr(&line)?;
    Err(execve(c"/bin/echo", &[c"/bin/echo", &line]))
}

fn execve_self(argv0: &str) -> Res {
    let me = cstr(argv0)?;
    Err(execve(&me, &[&me, c"__landed", c"execve-self"]))
}

/// The ELF interpreter of this very process, from its program headers in
/// memory (no file access).
fn own_interpreter() -> Result<CString, Fail> {
    // SAFETY: getauxval only reads the auxiliary vector.
    let (phdr, phnum) = unsafe {
        (
            libc::getauxval(libc::AT_PHDR) as usize,
            libc::getauxval(libc::AT_PHNUM) as usize,
        )
    };
    if phdr == 0 || phnum == 0 {
        return Err(Fail::Usage("no program headers in the auxv".into()));
    }
    // SAFETY: AT_PHDR/AT_PHNUM describe our own mapped program header table.
    let phdrs = unsafe { std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum) };
    let bias = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_PHDR)
        .map_or(0, |p| phdr - p.p_vaddr as usize);
    let interp = phdrs
        .iter()
        .find(|p| p.p_type == libc::PT_INTERP)
        .ok_or_else(|| Fail::Usage("flow-attack is statically linked: no PT_INTERP".into()))?;
    // SAFETY: PT_INTERP points at a NUL-terminated path in a mapped segment.
    let s = unsafe { CStr::from_ptr((bias + interp.p_vaddr as usize) as *const c_char) };
    Ok(s.to_owned())
}

fn execve_ld_so(argv0: &str) -> Res {
    let ld = own_interpreter()?;
    let me = cstr(argv0)?;
    Err(execve(&ld, &[&ld, &me, c"__landed", c"execve-ld-so"]))
}

fn memfd_exec() -> Res {
    // SAFETY: valid name, no flags.
    let fd = unsafe { libc::memfd_create(c"flow-escape".as_ptr(), 0) };
    let fd = owned(chk(fd.into(), "memfd_create")?);
    let mut off = 0;
    while off < LANDED_ELF.len() {
        let rest = LANDED_ELF.get(off..).unwrap_or_default();
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        off += chk(n as i64, "write memfd")? as usize;
    }
    let argv: [*const c_char; 2] = [c"flow-escape-landed".as_ptr(), std::ptr::null()];
    let envp: [*const c_char; 1] = [std::ptr::null()];
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, NULL-terminated arrays.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(Fail::Errno {
        step: "execveat(memfd, AT_EMPTY_PATH)".into(),
        errno: errno(),
    })
}

fn ptrace_traceme() -> Res {
    // SAFETY: PTRACE_TRACEME takes no pointers.
    let r = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
    chk(r, "ptrace(PTRACE_TRACEME)")?;
    Ok("now traceable by the parent".into())
}

fn ptrace_attach(args: &[String]) -> Res {
    let pid: libc::pid_t = num(args, 0, "target pid")?;
    // SAFETY: PTRACE_SEIZE with null addr/data.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    chk(r, "ptrace(PTRACE_SEIZE)")?;
    Ok(format!("seized pid {pid}"))
}

fn process_vm_readv(args: &[String]) -> Res {
    let pid: libc::pid_t = num(args, 0, "target pid")?;
    let addr_s = arg(args, 1, "remote address (hex)")?;
    let addr = usize::from_str_radix(addr_s.trim_start_matches("0x"), 16)
        .map_err(|_| Fail::Usage(format!("bad address {addr_s:?}")))?;
    let mut buf = [0u8; 32];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec points at `buf`; the remote one is only read
    // by the kernel from the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    let n = chk(n as i64, "process_vm_readv")?;
    Ok(format!(
        "read {n} bytes of pid {pid}; secret matched: {}",
        buf == SECRET
    ))
}

fn kill(args: &[String]) -> Res {
    let pid: libc::pid_t = num(args, 0, "target pid")?;
    // SAFETY: plain syscall.
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    chk(r.into(), "kill(SIGKILL)")?;
    Ok(format!("sent SIGKILL to pid {pid}"))
}

fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Fail> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    chk(fd, "pidfd_open").map(owned)
}

fn pidfd_signal(args: &[String]) -> Res {
    let pid: libc::pid_t = num(args, 0, "target pid")?;
    let pidfd = pidfd_open(pid)?;
    // SAFETY: null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<c_void>(),
            0,
        )
    };
    chk(r, "pidfd_send_signal(SIGKILL)")?;
    Ok(format!("sent SIGKILL to pid {pid} through a pidfd"))
}

fn pidfd_getfd(args: &[String]) -> Res {
    let pid: libc::pid_t = num(args, 0, "target pid")?;
    let target: c_int = num(args, 1, "target fd")?;
    let pidfd = pidfd_open(pid)?;
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    let fd = owned(chk(fd, "pidfd_getfd")?);
    let n = read_all(&fd, "read the stolen fd")?;
    Ok(format!("stole fd {target} of pid {pid} and read {n} bytes"))
}

fn setns_pidfd(args: &[String]) -> Res {
    let pid: libc::pid_t = num(args, 0, "target pid")?;
    let pidfd = pidfd_open(pid)?;
    // SAFETY: plain syscall.
    let r = unsafe { libc::setns(pidfd.as_raw_fd(), libc::CLONE_NEWNET) };
    chk(r.into(), "setns(pidfd, CLONE_NEWNET)")?;
    Ok(format!("joined the net namespace of pid {pid}"))
}

// ── kernel surfaces ─────────────────────────────────────────────────────────

fn io_uring_setup() -> Res {
    let mut params = [0u8; 120]; // struct io_uring_params
                                 // SAFETY: `params` is a zeroed io_uring_params the kernel fills in.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    let fd = owned(chk(fd, "io_uring_setup")?);
    Ok(format!("io_uring fd {}", fd.as_raw_fd()))
}

fn keyctl_session() -> Res {
    // KEYCTL_GET_KEYRING_ID = 0, KEY_SPEC_SESSION_KEYRING = -3, create = 0
    // SAFETY: integer arguments only.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, 0 as c_long, -3 as c_long, 0 as c_long) };
    let id = chk(id, "keyctl(KEYCTL_GET_KEYRING_ID)")?;
    Ok(format!("session keyring id {id}"))
}

fn add_key() -> Res {
    let payload = b"flow-escape";
    // KEY_SPEC_PROCESS_KEYRING = -2: dies with this process.
    // SAFETY: valid NUL-terminated type/description, payload of given length.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"flow-escape-test".as_ptr(),
            payload.as_ptr(),
            payload.len(),
            -2 as c_long,
        )
    };
    let id = chk(id, "add_key")?;
    Ok(format!("added key {id}"))
}

fn keyctl_persistent() -> Res {
    // KEYCTL_GET_PERSISTENT = 22, uid -1 (own), KEY_SPEC_PROCESS_KEYRING = -2
    // SAFETY: integer arguments only.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, 22 as c_long, -1 as c_long, -2 as c_long) };
    let id = chk(id, "keyctl(KEYCTL_GET_PERSISTENT)")?;
    Ok(format!("persistent keyring id {id}"))
}

fn unshare(flags: c_int, what: &str) -> Res {
    // SAFETY: plain syscall; single-threaded process.
    let r = unsafe { libc::unshare(flags) };
    chk(r.into(), &format!("unshare({what})"))?;
    Ok(format!("unshare({what}) succeeded"))
}

fn mount_tmpfs(args: &[String]) -> Res {
    let dir = arg(args, 0, "directory outside")?;
    let target = cstr(dir)?;
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            c"flow-escape".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1m".as_ptr().cast(),
        )
    };
    chk(r.into(), "mount(tmpfs)")?;
    // SAFETY: valid path; undo the mount made just above.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    Ok(format!("mounted (and unmounted) a tmpfs on {dir}"))
}

fn fsopen_tmpfs() -> Res {
    // SAFETY: valid NUL-terminated filesystem name; FSOPEN_CLOEXEC = 1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 1 as c_long) };
    let fs = owned(chk(fs, "fsopen(tmpfs)")?);
    // SAFETY: FSCONFIG_CMD_CREATE = 6 takes no key/value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            6 as c_long,
            std::ptr::null::<c_char>(),
            std::ptr::null::<c_void>(),
            0 as c_long,
        )
    };
    chk(r, "fsconfig(FSCONFIG_CMD_CREATE)")?;
    // SAFETY: FSMOUNT_CLOEXEC = 1, no attributes.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), 1 as c_long, 0 as c_long) };
    let m = owned(chk(m, "fsmount")?);
    Ok(format!("detached tmpfs mount fd {}", m.as_raw_fd()))
}

fn pivot_root(args: &[String]) -> Res {
    let dir = arg(args, 0, "new root (a mount point)")?;
    let c = cstr(dir)?;
    // SAFETY: valid NUL-terminated paths.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c.as_ptr(), c.as_ptr()) };
    chk(r, "pivot_root")?;
    Ok(format!("pivoted the root to {dir}"))
}

fn chroot() -> Res {
    // SAFETY: valid path.
    let r = unsafe { libc::chroot(c"/".as_ptr()) };
    chk(r.into(), "chroot(/)")?;
    Ok("chroot(\"/\") succeeded".into())
}

fn setuid_root() -> Res {
    // SAFETY: plain syscall; single-threaded process.
    let r = unsafe { libc::setuid(0) };
    chk(r.into(), "setuid(0)")?;
    // SAFETY: plain syscalls.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    Ok(format!("setuid(0) succeeded; uid {uid}, euid {euid}"))
}

fn bpf_map_create() -> Res {
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size,
    // max_entries, ...
    let mut attr = [0u32; 12];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: `attr` is a zeroed bpf_attr prefix of the size given.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0 as c_long, attr.as_mut_ptr(), 48usize) };
    let fd = owned(chk(fd, "bpf(BPF_MAP_CREATE)")?);
    Ok(format!("bpf map fd {}", fd.as_raw_fd()))
}

fn perf_event_open() -> Res {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER0 = 64 bytes
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&64u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&1u64.to_ne_bytes()); // PERF_COUNT_SW_TASK_CLOCK
                                                      // flags: disabled | exclude_kernel | exclude_hv
    attr[40..48].copy_from_slice(&((1u64 << 0) | (1 << 5) | (1 << 6)).to_ne_bytes());
    // SAFETY: `attr` is a valid perf_event_attr of 64 bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as c_long,
            -1 as c_long,
            -1 as c_long,
            8 as c_long, // PERF_FLAG_FD_CLOEXEC
        )
    };
    let fd = owned(chk(fd, "perf_event_open")?);
    Ok(format!("perf event fd {}", fd.as_raw_fd()))
}

fn userfaultfd() -> Res {
    // UFFD_USER_MODE_ONLY = 1
    // SAFETY: integer flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, (libc::O_CLOEXEC | 1) as c_long) };
    let fd = owned(chk(fd, "userfaultfd")?);
    Ok(format!("userfaultfd {}", fd.as_raw_fd()))
}

fn tiocsti() -> Res {
    let ch: c_char = b' ' as c_char;
    let mut errs = Vec::new();
    for fd in 0..3 {
        // SAFETY: TIOCSTI reads one byte from the pointer.
        let r = unsafe { libc::ioctl(fd, libc::TIOCSTI, &ch as *const c_char) };
        if r == 0 {
            return Ok(format!("injected a byte into the terminal on fd {fd}"));
        }
        errs.push((fd, errno()));
    }
    // Report the tty's errno: ENOTTY on the others says nothing.
    let (fd, e) = errs
        .iter()
        .copied()
        .find(|(_, e)| *e != libc::ENOTTY)
        .unwrap_or((0, libc::ENOTTY));
    Err(Fail::Errno {
        step: format!("ioctl(fd {fd}, TIOCSTI)"),
        errno: e,
    })
}

fn reboot_cad() -> Res {
    // SAFETY: CAD_ON only selects what Ctrl-Alt-Del does (the default).
    let r = unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_ON) };
    chk(r.into(), "reboot(LINUX_REBOOT_CMD_CAD_ON)")?;
    Ok("reboot(CAD_ON) succeeded".into())
}

fn syslog_read() -> Res {
    let mut buf = vec![0u8; 1 << 16];
    // SYSLOG_ACTION_READ_ALL = 3
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as c_int) };
    let n = chk(n.into(), "syslog(SYSLOG_ACTION_READ_ALL)")?;
    Ok(format!("read {n} bytes of the kernel log"))
}

// ── dispatch ────────────────────────────────────────────────────────────────

/// Every implemented attack, by name: the one dispatch list (`--list` reads it).
const IMPLS: &[(&str, AttackFn)] = {
    use libc::{AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM};
    &[
        ("socket-inet", |_| socket_only(AF_INET, SOCK_STREAM, 0)),
        ("socket-inet-udp", |_| socket_only(AF_INET, SOCK_DGRAM, 0)),
        ("socket-inet6", |_| socket_only(AF_INET6, SOCK_STREAM, 0)),
        ("socket-inet-raw", |_| {
            socket_only(AF_INET, SOCK_RAW, libc::IPPROTO_ICMP)
        }),
        ("socket-unix", |_| socket_only(AF_UNIX, SOCK_STREAM, 0)),
        ("socketpair-unix", |_| socketpair_unix()),
        ("socket-netlink", |_| {
            socket_only(AF_NETLINK, SOCK_RAW, libc::NETLINK_ROUTE)
        }),
        ("socket-packet", |_| {
            socket_only(
                libc::AF_PACKET,
                SOCK_RAW,
                c_int::from((libc::ETH_P_ALL as u16).to_be()),
            )
        }),
        ("socket-vsock", |_| {
            socket_only(libc::AF_VSOCK, SOCK_STREAM, 0)
        }),
        ("socket-alg", |_| {
            socket_only(libc::AF_ALG, libc::SOCK_SEQPACKET, 0)
        }),
        ("int80-socket", |_| int80_socket()),
        ("int80-socketcall", |_| int80_socketcall()),
        ("unix-bind-path", |c| unix_bind_path(&c.args)),
        ("unix-connect-path", |c| unix_connect(&c.args, false)),
        ("unix-bind-abstract", |c| unix_bind_abstract(&c.args)),
        ("unix-connect-abstract", |c| unix_connect(&c.args, true)),
        ("tcp-connect", |c| tcp_connect(&c.args, false)),
        ("tcp6-connect", |c| tcp_connect(&c.args, true)),
        ("tcp-connect-mptcp", |c| tcp_connect_mptcp(&c.args)),
        ("tcp-fastopen", |c| tcp_fastopen(&c.args, SendCall::Sendto)),
        ("tcp-fastopen-sendmsg", |c| {
            tcp_fastopen(&c.args, SendCall::Sendmsg)
        }),
        ("tcp-fastopen-sendmmsg", |c| {
            tcp_fastopen(&c.args, SendCall::Sendmmsg)
        }),
        ("tcp-bind", |c| tcp_bind(&c.args)),
        ("udp-send", |c| udp_send(&c.args)),
        ("read-etc-passwd", |_| read_file("/etc/passwd")),
        ("read-proc-self-environ", |_| {
            read_file("/proc/self/environ")
        }),
        ("read-proc-1-cmdline", |_| read_file("/proc/1/cmdline")),
        ("read-inherited-cwd", |_| {
            read_file("flow-escape-cwd-secret")
        }),
        ("write-tmp", |c| write_tmp(&c.args)),
        ("symlink", |c| symlink(&c.args)),
        ("mknod", |c| mknod(&c.args)),
        ("environ", |_| environ()),
        ("open-by-handle", |c| open_by_handle(&c.args)),
        ("fork", |_| fork()),
        ("clone", |_| clone_raw()),
        ("clone3", |_| clone3()),
        ("clone-vm-process", |_| clone_vm_process()),
        ("execve-bin", |_| execve_bin()),
        ("execve-self", |c| execve_self(&c.argv0)),
        ("execve-ld-so", |c| execve_ld_so(&c.argv0)),
        ("memfd-exec", |_| memfd_exec()),
        ("ptrace-traceme", |_| ptrace_traceme()),
        ("ptrace-attach", |c| ptrace_attach(&c.args)),
        ("process-vm-readv", |c| process_vm_readv(&c.args)),
        ("kill", |c| kill(&c.args)),
        ("pidfd-signal", |c| pidfd_signal(&c.args)),
        ("pidfd-getfd", |c| pidfd_getfd(&c.args)),
        ("setns-pidfd", |c| setns_pidfd(&c.args)),
        ("io-uring-setup", |_| io_uring_setup()),
        ("keyctl-session", |_| keyctl_session()),
        ("add-key", |_| add_key()),
        ("keyctl-persistent", |_| keyctl_persistent()),
        ("unshare-user", |_| {
            unshare(libc::CLONE_NEWUSER, "CLONE_NEWUSER")
        }),
        ("unshare-net", |_| {
            unshare(libc::CLONE_NEWNET, "CLONE_NEWNET")
        }),
        ("mount-tmpfs", |c| mount_tmpfs(&c.args)),
        ("fsopen-tmpfs", |_| fsopen_tmpfs()),
        ("pivot-root", |c| pivot_root(&c.args)),
        ("chroot", |_| chroot()),
        ("setuid-root", |_| setuid_root()),
        ("bpf-map-create", |_| bpf_map_create()),
        ("perf-event-open", |_| perf_event_open()),
        ("userfaultfd", |_| userfaultfd()),
        ("tiocsti", |_| tiocsti()),
        ("reboot-cad", |_| reboot_cad()),
        ("syslog-read", |_| syslog_read()),
    ]
};

/// One invocation: `argv[0]` (an absolute path, visible inside the sandbox) and the
/// attack's arguments.
struct Call {
    argv0: String,
    args: Vec<String>,
}

#[derive(Clone, Copy)]
enum Outcome {
    Succeeded,
    Denied,
    Hidden,
    Undecidable,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Denied => "denied",
            Outcome::Hidden => "hidden",
            Outcome::Undecidable => "undecidable",
            Outcome::Error => "error",
        }
    }
    fn exit_code(self) -> i32 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Denied | Outcome::Hidden => 1,
            Outcome::Undecidable => 2,
            Outcome::Error => 3,
        }
    }
}

fn classify(errnos: Errnos, e: i32) -> Outcome {
    let path = matches!(errnos, Errnos::Path | Errnos::FsWrite);
    match e {
        libc::EPERM | libc::EACCES | libc::ENOSYS => Outcome::Denied,
        libc::EROFS if errnos == Errnos::FsWrite => Outcome::Denied,
        libc::ENOENT | libc::ENOTDIR if path => Outcome::Hidden,
        libc::ECONNREFUSED if errnos == Errnos::AbstractConnect => Outcome::Hidden,
        _ => Outcome::Undecidable,
    }
}

fn report(name: &str, outcome: Outcome, errno: Option<i32>, detail: &str) -> ! {
    let line = serde_json::json!({
        "attack": name,
        "outcome": outcome.as_str(),
        "errno": errno,
        "detail": detail,
    });
    let mut out = std::io::stdout().lock();
    // A failed write (closed stdout) still leaves the exit code.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(outcome.exit_code())
}

fn sleeper(secs: u64) -> ! {
    // Let any same-uid process ptrace us even under Yama ptrace_scope 1
    // (fails harmlessly with EINVAL where Yama is absent).
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0) };
    let fd = match std::fs::File::open("/etc/passwd") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            eprintln!("flow-attack sleeper: cannot open /etc/passwd: {e}");
            std::process::exit(3)
        }
    };
    let line = serde_json::json!({
        "pid": std::process::id(),
        "addr": format!("{:#x}", std::hint::black_box(SECRET.as_ptr()) as usize),
        "fd": fd.as_raw_fd(),
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    std::thread::sleep(std::time::Duration::from_secs(secs));
    drop(fd);
    std::process::exit(0)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let argv0 = argv.first().cloned().unwrap_or_default();
    let Some(name) = argv.get(1).cloned() else {
        eprintln!("usage: flow-attack NAME [ARGS] | --list");
        std::process::exit(3)
    };
    let rest = argv.get(2..).unwrap_or_default();
    match name.as_str() {
        "--list" => {
            for (name, _) in IMPLS {
                println!("{name}");
            }
            std::process::exit(0)
        }
        "__landed" => {
            let what = rest.first().map(String::as_str).unwrap_or("?");
            report(
                what,
                Outcome::Succeeded,
                None,
                "the new image runs after exec",
            )
        }
        "__sleeper" => sleeper(rest.first().and_then(|s| s.parse().ok()).unwrap_or(60)),
        _ => {}
    }
    let Some(row) = flow_tests::attack(&name) else {
        report(&name, Outcome::Error, None, "unknown attack (see --list)")
    };
    let Some((_, attack)) = IMPLS.iter().find(|(n, _)| *n == name) else {
        report(
            &name,
            Outcome::Error,
            None,
            "in the table but not implemented",
        )
    };
    let call = Call {
        argv0,
        args: rest.to_vec(),
    };
    match attack(&call) {
        Ok(detail) => report(&name, Outcome::Succeeded, None, &detail),
        Err(Fail::Nothing(detail)) => report(&name, Outcome::Denied, None, &detail),
        Err(Fail::Usage(detail)) => report(&name, Outcome::Error, None, &detail),
        Err(Fail::Errno { step, errno }) => {
            let outcome = classify(row.errnos, errno);
            let detail = format!("{step}: {} ({errno})", errno_name(errno));
            report(&name, outcome, Some(errno), &detail)
        }
    }
}
