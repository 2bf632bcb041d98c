//! The escape-test table: every attack `flow-attack` knows, what it tries, what
//! the harness must provide, and what each production profile must make of it.
//!
//! This is the one place an auditor reads. `tests/tests/escape.rs` runs it,
//! `tests/src/bin/flow-attack.rs` implements it, and `tests/ESCAPE.md` carries
//! the rendering of [`render_markdown`] (a test fails when the two drift).
//!
//! **Invariant:** every row's baseline (the same attack run without any
//! sandbox) must succeed, or the row proves nothing; the harness fails the case
//! with "baseline did not succeed: test would prove nothing".

/// The production profiles, in the column order of [`Attack::expect`].
pub const PROFILES: [&str; 4] = [
    "reasoning-worker",
    "executor",
    "egress-gateway",
    "llama-server",
];

/// What a profile must make of an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The attack must fail with a denial errno (`EPERM`, `EACCES`, `ENOSYS`),
    /// be hidden (path-based attacks: `ENOENT`/`ENOTDIR`), or be killed by
    /// `SIGSYS`; no outside effect may be observed.
    Blocked,
    /// The profile grants this (e.g. the gateway's TCP socket creation).
    Succeeds,
}

pub mod gateway_harness;

use Expect::{Blocked as B, Succeeds as S};

/// Blocked in every profile.
const ALL_B: [Expect; 4] = [B, B, B, B];

/// How `flow-attack` reads an errno for this attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errnos {
    /// `EPERM`, `EACCES`, `ENOSYS` are denials; anything else is undecidable.
    Plain,
    /// Also `ENOENT`/`ENOTDIR` = "hidden" by the empty mount root.
    Path,
    /// A filesystem write: like `Path`, plus `EROFS` = denied.
    FsWrite,
    /// Connect to an abstract unix name: `ECONNREFUSED` = "hidden", because
    /// abstract names belong to the net namespace and the listener's name
    /// does not exist in a fresh one (the baseline proves it exists outside).
    AbstractConnect,
}

/// Who must be able to run the attack successfully without a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Succeeds unsandboxed as root and as an unprivileged user.
    AnyUser,
    /// Succeeds unsandboxed as root only (the reason says which privilege).
    /// In the unprivileged run its baseline is still run, as root.
    RootOnly(&'static str),
}

/// What the harness sets up and passes as an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A fresh directory (mode 0777) under `/tmp`, outside the sandbox.
    Dir,
    /// Port of a TCP listener on 127.0.0.1 the harness holds.
    TcpPort,
    /// Port of a TCP listener on ::1 the harness holds.
    Tcp6Port,
    /// A currently free TCP port on 127.0.0.1.
    FreeTcpPort,
    /// Port of a UDP socket on 127.0.0.1 the harness reads.
    UdpPort,
    /// Path of a unix stream listener the harness holds (in [`Arg::Dir`]'s kind
    /// of directory).
    UnixListenerPath,
    /// Abstract name of a unix stream listener the harness holds, in the host
    /// net namespace.
    AbstractListenerName,
    /// An abstract name nobody holds.
    FreshAbstractName,
    /// Pid of a sleeper the harness started as uid/gid 65534 — the host uid
    /// sandboxed processes run as — so only the sandbox stands in the way.
    SleeperPid,
    /// Address (hex) of a 32-byte secret in the sleeper's memory.
    SleeperSecretAddr,
    /// An fd number the sleeper holds open (on `/etc/passwd`).
    SleeperFd,
    /// Three arguments: a path visible inside the sandbox (the `flow-attack`
    /// binary itself) and the type and hex bytes of a file handle, made with
    /// `name_to_handle_at` outside, for a secret file on the same filesystem.
    SecretHandle,
}

/// What the harness checks from the outside after the attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The attack's own report only.
    Report,
    /// The [`Arg::TcpPort`]/[`Arg::Tcp6Port`] listener has a connection queued.
    TcpAccepted,
    /// The [`Arg::UdpPort`] socket received a datagram.
    UdpReceived,
    /// The [`Arg::UnixListenerPath`] or [`Arg::AbstractListenerName`]
    /// listener has a connection queued.
    UnixAccepted,
    /// The sleeper died.
    SleeperKilled,
    /// The named entry exists in the [`Arg::Dir`] directory.
    DirEntry(&'static str),
}

/// Extra setup the baseline needs so that a successful attack does no harm
/// to the machine running the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineSetup {
    None,
    /// Run the baseline in a private mount namespace in which [`Arg::Dir`] is
    /// a tmpfs mount point (`unshare --mount --propagation private`).
    PrivateMountNsWithTmpfsAtDir,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Attack {
    /// `flow-attack NAME`.
    pub name: &'static str,
    /// What the attack really does (the real syscall, no simulation).
    pub tries: &'static str,
    pub args: &'static [Arg],
    pub errnos: Errnos,
    pub baseline: Baseline,
    pub setup: BaselineSetup,
    /// Give the attack a pseudo-terminal as stderr (TIOCSTI needs a tty).
    pub tty_stderr: bool,
    pub evidence: Evidence,
    /// Indexed like [`PROFILES`].
    pub expect: [Expect; 4],
    /// A kernel option the baseline needs. When the baseline fails with
    /// `EAFNOSUPPORT`, `EPROTONOSUPPORT` or `ENOPROTOOPT` (the address family
    /// or protocol is missing or disabled) the row is reported as SKIPPED
    /// (never as passed).
    pub kernel: Option<&'static str>,
    /// Why an expectation or baseline is what it is, when not obvious.
    pub note: &'static str,
}

const fn row(name: &'static str, tries: &'static str) -> Attack {
    Attack {
        name,
        tries,
        args: &[],
        errnos: Errnos::Plain,
        baseline: Baseline::AnyUser,
        setup: BaselineSetup::None,
        tty_stderr: false,
        evidence: Evidence::Report,
        expect: ALL_B,
        kernel: None,
        note: "",
    }
}

impl Attack {
    const fn args(mut self, args: &'static [Arg]) -> Attack {
        self.args = args;
        self
    }
    const fn errnos(mut self, errnos: Errnos) -> Attack {
        self.errnos = errnos;
        self
    }
    const fn root(mut self, why: &'static str) -> Attack {
        self.baseline = Baseline::RootOnly(why);
        self
    }
    const fn evidence(mut self, evidence: Evidence) -> Attack {
        self.evidence = evidence;
        self
    }
    const fn expect(mut self, expect: [Expect; 4]) -> Attack {
        self.expect = expect;
        self
    }
    const fn note(mut self, note: &'static str) -> Attack {
        self.note = note;
        self
    }
    const fn setup(mut self, setup: BaselineSetup) -> Attack {
        self.setup = setup;
        self
    }
    const fn kernel(mut self, config: &'static str) -> Attack {
        self.kernel = Some(config);
        self
    }
    const fn tty(mut self) -> Attack {
        self.tty_stderr = true;
        self
    }
}

/// The table. Order is the order of the report.
pub const ATTACKS: &[Attack] = &[
    // ── sockets ────────────────────────────────────────────────────────────
    row("socket-inet", "socket(AF_INET, SOCK_STREAM)")
        .expect([B, B, S, B])
        .note("the gateway may create TCP sockets (landlock governs their connect and bind)"),
    row("socket-inet-udp", "socket(AF_INET, SOCK_DGRAM)").note(
        "TCP only, even in the gateway: landlock does not govern UDP; DNS over UDP arrives later with the gateway's own resolver rule",
    ),
    row("socket-inet6", "socket(AF_INET6, SOCK_STREAM)")
        .expect([B, B, S, B])
        .note("the gateway may create TCP sockets (landlock governs their connect and bind)"),
    row("socket-inet-raw", "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)")
        .root("CAP_NET_RAW")
        .note("raw IP is not TCP/UDP: blocked in the gateway too"),
    row("socket-unix", "socket(AF_UNIX, SOCK_STREAM)")
        .expect([B, B, B, S])
        .note("llama-server may create AF_UNIX sockets"),
    row("socketpair-unix", "socketpair(AF_UNIX, SOCK_STREAM)")
        .note("a socket creation too; llama-server's AF_UNIX grant is socket() only"),
    row("socket-netlink", "socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)"),
    row("socket-packet", "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)").root("CAP_NET_RAW"),
    row("socket-vsock", "socket(AF_VSOCK, SOCK_STREAM)")
        .note("vsock reaches the hypervisor host and is not governed by net namespaces"),
    row("socket-alg", "socket(AF_ALG, SOCK_SEQPACKET)")
        .kernel("CONFIG_CRYPTO_USER_API")
        .note("skipped (and reported) where the kernel lacks AF_ALG"),
    row(
        "int80-socket",
        "socket(AF_INET, SOCK_STREAM) through the i386 compat entry (int 0x80, nr 359)",
    )
    .note("seccomp must check the architecture; killing with SIGSYS counts as blocked"),
    row(
        "int80-socketcall",
        "socketcall(SYS_SOCKET) through int 0x80 (i386 nr 102 = x86_64 getuid)",
    )
    .note("an allowlist that admits getuid without checking the arch would admit this"),
    // ── unix and IP connectivity ───────────────────────────────────────────
    row("unix-bind-path", "socket(AF_UNIX) + bind to DIR/flow-escape.sock outside")
        .args(&[Arg::Dir])
        .errnos(Errnos::FsWrite)
        .evidence(Evidence::DirEntry("flow-escape.sock"))
        .note("a net namespace does not isolate path sockets: the mount root and landlock must"),
    row("unix-connect-path", "socket(AF_UNIX) + connect to a path listener outside")
        .args(&[Arg::UnixListenerPath])
        .errnos(Errnos::Path)
        .evidence(Evidence::UnixAccepted),
    row("unix-bind-abstract", "socket(AF_UNIX) + bind to a fresh abstract name")
        .args(&[Arg::FreshAbstractName])
        .expect([B, B, B, S])
        .note("llama-server's abstract names live in its own empty net namespace"),
    row(
        "unix-connect-abstract",
        "socket(AF_UNIX) + connect to an abstract listener in the host net namespace",
    )
    .args(&[Arg::AbstractListenerName])
    .errnos(Errnos::AbstractConnect)
    .evidence(Evidence::UnixAccepted)
    .note("landlock abstract-unix scoping (and the net namespace) must deny"),
    row("tcp-connect", "connect to a TCP listener on 127.0.0.1 outside")
        .args(&[Arg::TcpPort])
        .evidence(Evidence::TcpAccepted)
        .note("gateway: landlock denies TCP connect to every port"),
    row("tcp6-connect", "connect to a TCP listener on ::1 outside")
        .args(&[Arg::Tcp6Port])
        .evidence(Evidence::TcpAccepted)
        .note("gateway: landlock denies TCP connect to every port"),
    row(
        "tcp-connect-mptcp",
        "socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP) + connect to a TCP listener on 127.0.0.1 outside",
    )
    .args(&[Arg::TcpPort])
    .evidence(Evidence::TcpAccepted)
    .kernel("CONFIG_MPTCP and net.mptcp.enabled = 1")
    .note("MPTCP is SOCK_STREAM but not TCP to landlock: the gateway may create protocol 0/IPPROTO_TCP sockets only"),
    row(
        "tcp-fastopen",
        "sendto(MSG_FASTOPEN) to a TCP listener on 127.0.0.1 outside: a connect without connect()",
    )
    .args(&[Arg::TcpPort])
    .evidence(Evidence::TcpAccepted)
    .note("net.ipv4.tcp_fastopen client bit (default on); must not bypass landlock's connect rule"),
    row("tcp-fastopen-sendmsg", "the same through sendmsg(MSG_FASTOPEN)")
        .args(&[Arg::TcpPort])
        .evidence(Evidence::TcpAccepted),
    row("tcp-fastopen-sendmmsg", "the same through sendmmsg(MSG_FASTOPEN)")
        .args(&[Arg::TcpPort])
        .evidence(Evidence::TcpAccepted),
    row("tcp-bind", "bind + listen on a free TCP port of 127.0.0.1")
        .args(&[Arg::FreeTcpPort])
        .note("gateway: landlock denies TCP bind to every port"),
    row("udp-send", "sendto a UDP socket on 127.0.0.1 outside")
        .args(&[Arg::UdpPort])
        .evidence(Evidence::UdpReceived)
        .note("landlock governs TCP only, so no profile may create a UDP socket"),
    // ── filesystem and environment ─────────────────────────────────────────
    row("read-etc-passwd", "open + read /etc/passwd").errnos(Errnos::Path),
    row("read-proc-self-environ", "open + read /proc/self/environ").errnos(Errnos::Path),
    row("read-proc-1-cmdline", "open + read /proc/1/cmdline").errnos(Errnos::Path),
    row(
        "read-inherited-cwd",
        "open + read ./flow-escape-cwd-secret: a file in the directory `flow` was started in",
    )
    .errnos(Errnos::Path)
    .note("a working directory kept from outside the mount root is a way out of it"),
    row("write-tmp", "create + write DIR/flow-escape-written outside")
        .args(&[Arg::Dir])
        .errnos(Errnos::FsWrite)
        .evidence(Evidence::DirEntry("flow-escape-written")),
    row("symlink", "symlink DIR/flow-escape-symlink -> /etc/passwd outside")
        .args(&[Arg::Dir])
        .errnos(Errnos::FsWrite)
        .evidence(Evidence::DirEntry("flow-escape-symlink")),
    row("mknod", "mknod DIR/flow-escape-node (char 1:3) outside")
        .args(&[Arg::Dir])
        .errnos(Errnos::FsWrite)
        .root("CAP_MKNOD")
        .evidence(Evidence::DirEntry("flow-escape-node")),
    row("environ", "see any environment variable (harness sets one on `flow`)"),
    row(
        "open-by-handle",
        "open_by_handle_at a secret file outside, via an fd on the visible flow-attack binary (or AT_FDCWD)",
    )
    .args(&[Arg::SecretHandle])
    .root("CAP_DAC_READ_SEARCH")
    .note("the \"shocker\" escape out of a mount namespace"),
    // ── processes and exec ─────────────────────────────────────────────────
    row("fork", "fork() (libc)"),
    row("clone", "raw clone(SIGCHLD): process creation"),
    row("clone3", "raw clone3 with exit_signal SIGCHLD").note("must be ENOSYS (or EPERM)"),
    row("clone-vm-process", "clone(CLONE_VM | CLONE_VFORK | SIGCHLD) with its own stack")
        .note("process creation with thread-like flags (posix_spawn's way)"),
    row("execve-bin", "execve /bin/echo (prints the success report)").errnos(Errnos::Path),
    row("execve-self", "execve the flow-attack binary again (visible, landlock-executable)")
        .note("only \"no exec after the first\" stands in the way: the exec-once supervisor answers EPERM"),
    row(
        "execve-ld-so",
        "execve the ELF interpreter (visible, executable) to load flow-attack again",
    )
    .note("the classic noexec bypass: ld.so maps a file without execve on it; refused by the exec-once supervisor"),
    row("memfd-exec", "memfd_create + write an embedded static ELF + execveat(AT_EMPTY_PATH)"),
    row("ptrace-traceme", "ptrace(PTRACE_TRACEME)"),
    row("ptrace-attach", "ptrace(PTRACE_SEIZE) the sleeper outside").args(&[Arg::SleeperPid]),
    row("process-vm-readv", "process_vm_readv 32 secret bytes of the sleeper outside")
        .args(&[Arg::SleeperPid, Arg::SleeperSecretAddr]),
    row("kill", "kill(SIGKILL) the sleeper outside")
        .args(&[Arg::SleeperPid])
        .evidence(Evidence::SleeperKilled)
        .note("same host uid: only landlock signal scoping (and seccomp) stand in the way"),
    row("pidfd-signal", "pidfd_open + pidfd_send_signal(SIGKILL) the sleeper outside")
        .args(&[Arg::SleeperPid])
        .evidence(Evidence::SleeperKilled),
    row("pidfd-getfd", "pidfd_open + pidfd_getfd an fd of the sleeper, then read it")
        .args(&[Arg::SleeperPid, Arg::SleeperFd]),
    row("setns-pidfd", "pidfd_open the sleeper + setns(CLONE_NEWNET) into the host net namespace")
        .args(&[Arg::SleeperPid])
        .root("CAP_SYS_ADMIN over the host net namespace"),
    // ── kernel surfaces ────────────────────────────────────────────────────
    row("io-uring-setup", "io_uring_setup(4 entries)")
        .note("io_uring operations bypass seccomp's view of file and socket calls"),
    row("keyctl-session", "keyctl(KEYCTL_GET_KEYRING_ID, session keyring)"),
    row("add-key", "add_key(\"user\", ...) to the process keyring"),
    row("keyctl-persistent", "keyctl(KEYCTL_GET_PERSISTENT): the keyring where connection credentials live")
        .note("only the broker may reach the keyring; keyutils credentials live in the persistent keyring"),
    row("unshare-user", "unshare(CLONE_NEWUSER)"),
    row("unshare-net", "unshare(CLONE_NEWNET)").root("CAP_SYS_ADMIN"),
    row("mount-tmpfs", "mount tmpfs on DIR outside (then umount)")
        .args(&[Arg::Dir])
        .errnos(Errnos::Path)
        .root("CAP_SYS_ADMIN"),
    row("fsopen-tmpfs", "fsopen(\"tmpfs\") + fsconfig(CREATE) + fsmount: a detached mount, no path")
        .root("CAP_SYS_ADMIN"),
    row("pivot-root", "pivot_root(DIR, DIR)")
        .args(&[Arg::Dir])
        .root("CAP_SYS_ADMIN")
        .setup(BaselineSetup::PrivateMountNsWithTmpfsAtDir)
        .note("may_mount() is checked before the path, so hidden DIR still yields EPERM"),
    row("chroot", "chroot(\"/\")").root("CAP_SYS_CHROOT"),
    row("setuid-root", "setuid(0)").root("CAP_SETUID (or being root)"),
    row("bpf-map-create", "bpf(BPF_MAP_CREATE, array)").root("CAP_BPF (unprivileged_bpf_disabled)"),
    row("perf-event-open", "perf_event_open(software task clock, self, user only)")
        .note("baseline as nobody needs kernel.perf_event_paranoid <= 2"),
    row("userfaultfd", "userfaultfd(UFFD_USER_MODE_ONLY)"),
    row("tiocsti", "ioctl(TIOCSTI) on fds 0, 1, 2 (stderr is a pty)")
        .tty()
        .root("CAP_SYS_ADMIN (the pty is not the caller's controlling tty)"),
    row("reboot-cad", "reboot(LINUX_REBOOT_CMD_CAD_ON) (harmless: the default setting)")
        .root("CAP_SYS_BOOT"),
    row("syslog-read", "syslog(SYSLOG_ACTION_READ_ALL): the kernel log")
        .root("CAP_SYSLOG (kernel.dmesg_restrict = 1)"),
];

/// Look a row up by name.
pub fn attack(name: &str) -> Option<&'static Attack> {
    ATTACKS.iter().find(|a| a.name == name)
}

fn expect_cell(e: Expect) -> &'static str {
    match e {
        Expect::Blocked => "blocked",
        Expect::Succeeds => "**succeeds**",
    }
}

/// The table as Markdown, as `tests/ESCAPE.md` carries it.
pub fn render_markdown() -> String {
    let mut s = String::new();
    s.push_str("| attack | tries | baseline | ");
    s.push_str(&PROFILES.join(" | "));
    s.push_str(" | note |\n|---|---|---|");
    for _ in PROFILES {
        s.push_str("---|");
    }
    s.push_str("---|\n");
    for a in ATTACKS {
        let baseline = match a.baseline {
            Baseline::AnyUser => "any user".to_string(),
            Baseline::RootOnly(why) => format!("root only: {why}"),
        };
        let baseline = match a.kernel {
            Some(config) => format!("{baseline}; needs {config}"),
            None => baseline,
        };
        let cells: Vec<&str> = a.expect.iter().map(|e| expect_cell(*e)).collect();
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            a.name,
            a.tries.replace('|', "\\|"),
            baseline,
            cells.join(" | "),
            a.note.replace('|', "\\|"),
        ));
    }
    s
}
