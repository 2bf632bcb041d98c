//! Escape tests: every attack of `flow_tests::ATTACKS` × every production
//! profile, with the real `flow sandbox run` and the real kernel.
//!
//! For each case the attack first runs WITHOUT any sandbox and must succeed
//! (with its outside evidence: a queued connection, a received datagram, a
//! dead sleeper, a created file), or the case fails with "baseline did not
//! succeed: test would prove nothing". Then it runs once under
//! `flow sandbox run --profile P -- flow-attack NAME ARGS`, one process per
//! case, and must give the table's result; for a blocked attack, no outside
//! evidence may appear either.
//!
//! Two matrices: `escape_matrix_as_root` (the harness and `flow` run as root)
//! and `escape_matrix_unprivileged` (`flow` and the baselines run as uid/gid
//! 65534 through `setpriv`, or as the invoking user when that is not root —
//! the CI mode; rows whose baseline needs root get it as root, or are
//! reported SKIPPED-BASELINE when nobody can be root).
//!
//! Debugging aids (print a notice when active): `FLOW_ESCAPE_ONLY=a,b` runs
//! only the named attacks; `FLOW_BIN` names the `flow` binary;
//! `FLOW_ESCAPE_BLESS=1` rewrites the table in `tests/ESCAPE.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flow_tests::{Arg, Attack, Baseline, BaselineSetup, Evidence, Expect, ATTACKS, PROFILES};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The host uid/gid sandboxed processes run as when `flow` starts as root
/// (`sandbox::profile::DEFAULT_RUN_AS`), and the unprivileged test user.
const NOBODY: u32 = 65534;
/// Set on every command; a sandboxed process must not see it.
const CANARY: (&str, &str) = ("FLOW_ESCAPE_CANARY", "must-not-leak-into-the-sandbox");
const CASE_TIMEOUT: Duration = Duration::from_secs(30);

// ── binaries ────────────────────────────────────────────────────────────────

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn locate_flow() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOW_BIN") {
        return PathBuf::from(p);
    }
    let beside = Path::new(env!("CARGO_BIN_EXE_flow-attack")).with_file_name("flow");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let candidates = [
        beside,
        target.join("debug/flow"),
        target.join("release/flow"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no flow binary (looked at {candidates:?}): run 'cargo build --workspace' first")
        })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under /tmp with `mode`, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str, mode: u32) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "flow-escape-{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binaries under test, copied to a 0755 directory so that uid 65534 can
/// execute them whatever the permissions of the build directory.
struct Bins {
    _dir: TempDir,
    flow: PathBuf,
    attack: PathBuf,
    probe: PathBuf,
}

impl Bins {
    fn stage(tag: &str) -> Bins {
        Self::stage_with(tag, Some(locate_flow()))
    }

    fn stage_with(tag: &str, flow: Option<PathBuf>) -> Bins {
        let dir = TempDir::new(&format!("bins-{tag}"), 0o755);
        let copy = |from: &Path, name: &str| {
            let to = dir.0.join(name);
            std::fs::copy(from, &to).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", from.display(), to.display())
            });
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
            to
        };
        let flow = flow.map_or_else(|| dir.0.join("flow-absent"), |f| copy(&f, "flow"));
        let attack = copy(Path::new(env!("CARGO_BIN_EXE_flow-attack")), "flow-attack");
        let probe = copy(Path::new(env!("FLOW_PROBE_BIN")), "flow-probe");
        Bins {
            _dir: dir,
            flow,
            attack,
            probe,
        }
    }
}

// ── identities ──────────────────────────────────────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum As {
    Root,
    /// uid/gid 65534 through setpriv when we are root; ourselves otherwise.
    Unprivileged,
}

fn command(who: As, program: &Path) -> Command {
    let mut c = if who == As::Unprivileged && is_root() {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--inh-caps=-all", "--"])
            .arg(program);
        c
    } else {
        assert!(who != As::Root || is_root(), "a root run needs root");
        Command::new(program)
    };
    c.env(CANARY.0, CANARY.1).stdin(Stdio::null());
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Root,
    Unprivileged,
}

impl Mode {
    fn flow_user(self) -> As {
        match self {
            Mode::Root => As::Root,
            Mode::Unprivileged => As::Unprivileged,
        }
    }

    /// Who runs the baseline of `row`, or why nobody can.
    fn baseline_user(self, row: &Attack) -> Result<As, String> {
        match (self, row.baseline) {
            (Mode::Root, _) => Ok(As::Root),
            (Mode::Unprivileged, Baseline::AnyUser) => Ok(As::Unprivileged),
            (Mode::Unprivileged, Baseline::RootOnly(_)) if is_root() => Ok(As::Root),
            (Mode::Unprivileged, Baseline::RootOnly(why)) => Err(format!(
                "baseline needs root ({why}) and the harness is not root"
            )),
        }
    }
}

// ── per-case resources ──────────────────────────────────────────────────────

struct Sleeper {
    child: Child,
    pid: u32,
    addr: String,
    fd: i64,
}

impl Sleeper {
    /// A `flow-attack __sleeper` as the uid sandboxed processes run as.
    fn spawn(bins: &Bins) -> Sleeper {
        let mut child = command(As::Unprivileged, &bins.attack)
            .args(["__sleeper", "120"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("sleeper said {line:?}: {e}"));
        let pid = v["pid"].as_u64().unwrap() as u32;
        assert_eq!(pid, child.id(), "the sleeper is our direct child");
        Sleeper {
            child,
            pid,
            addr: v["addr"].as_str().unwrap().to_string(),
            fd: v["fd"].as_i64().unwrap(),
        }
    }

    /// Whether the sleeper died within `within`.
    fn died(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pseudo-terminal: the slave goes to the attack as stderr; a thread drains
/// the master until every slave descriptor is closed.
fn open_pty() -> OwnedFd {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a descriptor we own,
    // with a buffer of the size we pass.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = OwnedFd::from_raw_fd(m);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(
            s >= 0,
            "open pty slave: {}",
            std::io::Error::last_os_error()
        );
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(master);
            let mut buf = [0u8; 4096];
            while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
        });
        OwnedFd::from_raw_fd(s)
    }
}

/// `name_to_handle_at(path)`: (handle type, handle bytes in hex).
fn file_handle(path: &Path) -> (i32, String) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 8 + 128];
    buf[0..4].copy_from_slice(&128u32.to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a struct file_handle with room for 128 handle bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "name_to_handle_at: {}",
        std::io::Error::last_os_error()
    );
    let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
    let ty = i32::from_ne_bytes(buf[4..8].try_into().unwrap());
    let hex: String = buf[8..8 + len].iter().map(|b| format!("{b:02x}")).collect();
    (ty, hex)
}

/// Everything one run of one attack needs, set up fresh.
struct Case {
    dir: TempDir,
    args: Vec<String>,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    unix: Option<UnixListener>,
    sleeper: Option<Sleeper>,
    pty: Option<OwnedFd>,
}

impl Case {
    fn new(row: &Attack, bins: &Bins) -> Case {
        let dir = TempDir::new(row.name, 0o777);
        // Every command starts in `dir`; `read-inherited-cwd` looks for this.
        let secret = dir.0.join("flow-escape-cwd-secret");
        std::fs::write(&secret, "outside the mount root\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut case = Case {
            args: Vec::new(),
            tcp: None,
            udp: None,
            unix: None,
            sleeper: None,
            pty: row.tty_stderr.then(open_pty),
            dir,
        };
        for a in row.args {
            match a {
                Arg::Dir => case.args.push(case.dir.0.display().to_string()),
                Arg::TcpPort | Arg::Tcp6Port => {
                    let addr = if *a == Arg::TcpPort {
                        "127.0.0.1:0"
                    } else {
                        "[::1]:0"
                    };
                    let l = TcpListener::bind(addr).unwrap();
                    l.set_nonblocking(true).unwrap();
                    case.args.push(l.local_addr().unwrap().port().to_string());
                    case.tcp = Some(l);
                }
                Arg::FreeTcpPort => {
                    let port = TcpListener::bind("127.0.0.1:0")
                        .unwrap()
                        .local_addr()
                        .unwrap()
                        .port();
                    case.args.push(port.to_string());
                }
                Arg::UdpPort => {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.set_nonblocking(true).unwrap();
                    case.args.push(s.local_addr().unwrap().port().to_string());
                    case.udp = Some(s);
                }
                Arg::UnixListenerPath => {
                    let path = case.dir.0.join("listener.sock");
                    let l = UnixListener::bind(&path).unwrap();
                    // Connecting needs write permission on the socket file.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                        .unwrap();
                    l.set_nonblocking(true).unwrap();
                    case.args.push(path.display().to_string());
                    case.unix = Some(l);
                }
                Arg::AbstractListenerName | Arg::FreshAbstractName => {
                    let name = format!(
                        "flow-escape-{}-{}",
                        std::process::id(),
                        SEQ.fetch_add(1, Ordering::Relaxed)
                    );
                    if *a == Arg::AbstractListenerName {
                        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
                        let l = UnixListener::bind_addr(&addr).unwrap();
                        l.set_nonblocking(true).unwrap();
                        case.unix = Some(l);
                    }
                    case.args.push(name);
                }
                Arg::SleeperPid | Arg::SleeperSecretAddr | Arg::SleeperFd => {
                    if case.sleeper.is_none() {
                        case.sleeper = Some(Sleeper::spawn(bins));
                    }
                    let s = case.sleeper.as_ref().unwrap();
                    case.args.push(match a {
                        Arg::SleeperPid => s.pid.to_string(),
                        Arg::SleeperSecretAddr => s.addr.clone(),
                        _ => s.fd.to_string(),
                    });
                }
                Arg::SecretHandle => {
                    let secret = case.dir.0.join("secret");
                    std::fs::write(&secret, "flow-escape secret outside the sandbox\n").unwrap();
                    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                    let dev = |p: &Path| {
                        std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap())
                    };
                    assert_eq!(
                        dev(&secret),
                        dev(&bins.attack),
                        "the secret must share a filesystem with the flow-attack binary"
                    );
                    let (ty, hex) = file_handle(&secret);
                    case.args.push(bins.attack.display().to_string());
                    case.args.push(ty.to_string());
                    case.args.push(hex);
                }
            }
        }
        case
    }

    /// Whether the attack's effect is visible from the outside, or `None`
    /// when the row has no outside evidence.
    fn evidence(&mut self, ev: Evidence) -> Option<bool> {
        match ev {
            Evidence::Report => None,
            Evidence::TcpAccepted => Some(self.tcp.as_ref().unwrap().accept().is_ok()),
            Evidence::UdpReceived => {
                let mut buf = [0u8; 64];
                Some(self.udp.as_ref().unwrap().recv(&mut buf).is_ok())
            }
            Evidence::UnixAccepted => Some(self.unix.as_ref().unwrap().accept().is_ok()),
            Evidence::SleeperKilled => Some(
                self.sleeper
                    .as_mut()
                    .unwrap()
                    .died(Duration::from_millis(1000)),
            ),
            Evidence::DirEntry(name) => Some(self.dir.0.join(name).symlink_metadata().is_ok()),
        }
    }
}

// ── running and judging ─────────────────────────────────────────────────────

struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

fn execute(mut cmd: Command, stderr: Option<OwnedFd>) -> Run {
    cmd.stdout(Stdio::piped());
    let tty_stderr = stderr.is_some();
    match stderr {
        Some(fd) => cmd.stderr(Stdio::from(fd)),
        None => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    drop(cmd); // closes our copy of a pty slave
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            let _ = tx.send(String::from_utf8_lossy(&s).into_owned());
        });
        rx
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let end = Instant::now() + CASE_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let grace = Duration::from_secs(2);
    Run {
        code: status.code(),
        signal: status.signal(),
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: if tty_stderr {
            "(stderr was a pty)".into()
        } else {
            err.recv_timeout(grace).unwrap_or_default()
        },
        timed_out,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Succeeded(String),
    Blocked(String),
    Undecidable(String),
    Broken(String),
}

impl Seen {
    fn short(&self) -> String {
        match self {
            Seen::Succeeded(d) => format!("succeeded: {d}"),
            Seen::Blocked(d) => format!("blocked: {d}"),
            Seen::Undecidable(d) => format!("UNDECIDABLE: {d}"),
            Seen::Broken(d) => format!("BROKEN: {d}"),
        }
    }
}

fn judge(name: &str, run: &Run, sandboxed: bool) -> Seen {
    let tail = |s: &str| {
        let t: Vec<&str> = s.lines().rev().take(4).collect();
        t.into_iter().rev().collect::<Vec<_>>().join(" / ")
    };
    if run.timed_out {
        return Seen::Broken(format!("timed out after {CASE_TIMEOUT:?}"));
    }
    let report = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["attack"] == name);
    let Some(r) = report else {
        let sigsys = if sandboxed {
            run.code == Some(128 + libc::SIGSYS)
        } else {
            run.signal == Some(libc::SIGSYS)
        };
        if sigsys {
            return Seen::Blocked("killed by SIGSYS".into());
        }
        return Seen::Broken(format!(
            "no report; exit {:?} signal {:?}; stdout {:?}; stderr {:?}",
            run.code,
            run.signal,
            tail(&run.stdout),
            tail(&run.stderr)
        ));
    };
    let outcome = r["outcome"].as_str().unwrap_or("?");
    let detail = format!("{} {}", outcome, r["detail"].as_str().unwrap_or(""));
    match (outcome, run.code) {
        ("succeeded", Some(0)) => Seen::Succeeded(detail),
        ("denied" | "hidden", Some(1)) => Seen::Blocked(detail),
        ("undecidable", Some(2)) => Seen::Undecidable(detail),
        _ => Seen::Broken(format!(
            "report {r} disagrees with exit {:?} signal {:?}; stderr {:?}",
            run.code,
            run.signal,
            tail(&run.stderr)
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Pass,
    Skip(String),
    Fail(String),
}

struct Line {
    attack: &'static str,
    who: String,
    expected: &'static str,
    seen: String,
    verdict: Verdict,
}

fn attack_command(bins: &Bins, row: &Attack, who: As, args: &[String], setup: bool) -> Command {
    if setup && row.setup == BaselineSetup::PrivateMountNsWithTmpfsAtDir {
        let mut c = command(who, Path::new("/usr/bin/unshare"));
        c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(r#"mount -t tmpfs flow-escape "$2" && exec "$0" "$1" "$2""#)
            .arg(&bins.attack)
            .arg(row.name)
            .args(args);
        return c;
    }
    let mut c = command(who, &bins.attack);
    c.arg(row.name).args(args);
    c
}

fn run_baseline(bins: &Bins, row: &Attack, mode: Mode) -> Line {
    let mut line = Line {
        attack: row.name,
        who: "baseline".into(),
        expected: "succeeds",
        seen: String::new(),
        verdict: Verdict::Pass,
    };
    let who = match mode.baseline_user(row) {
        Ok(w) => w,
        Err(why) => {
            line.seen = "not run".into();
            line.verdict = Verdict::Skip(format!("SKIPPED-BASELINE: {why}"));
            return line;
        }
    };
    line.who = format!(
        "baseline as {}",
        if who == As::Root {
            "root"
        } else {
            "unprivileged"
        }
    );
    let mut case = Case::new(row, bins);
    let mut cmd = attack_command(bins, row, who, &case.args, true);
    cmd.current_dir(&case.dir.0);
    let run = execute(cmd, case.pty.take());
    let seen = judge(row.name, &run, false);
    let evidence = case.evidence(row.evidence);
    line.seen = format!("{}{}", seen.short(), evidence_note(evidence));
    line.verdict = match (&seen, evidence) {
        (Seen::Succeeded(_), None | Some(true)) => Verdict::Pass,
        (Seen::Undecidable(d), _)
            if row.kernel.is_some()
                && ["EAFNOSUPPORT", "EPROTONOSUPPORT", "ENOPROTOOPT"]
                    .iter()
                    .any(|e| d.contains(e)) =>
        {
            Verdict::Skip(format!(
                "SKIPPED: the kernel lacks {}",
                row.kernel.unwrap_or_default()
            ))
        }
        _ => Verdict::Fail("baseline did not succeed: test would prove nothing".into()),
    };
    line
}

fn evidence_note(e: Option<bool>) -> &'static str {
    match e {
        None => "",
        Some(true) => " [outside effect SEEN]",
        Some(false) => " [no outside effect]",
    }
}

fn run_sandboxed(bins: &Bins, row: &Attack, mode: Mode, pi: usize) -> Line {
    let profile = PROFILES[pi];
    let expect = row.expect[pi];
    let mut case = Case::new(row, bins);
    let spool = TempDir::new("spool", 0o777);
    let mut cmd = sandbox_run(mode, bins, profile, &spool);
    cmd.arg(&bins.attack).arg(row.name).args(&case.args);
    cmd.current_dir(&case.dir.0);
    let run = execute(cmd, case.pty.take());
    let seen = judge(row.name, &run, true);
    let evidence = case.evidence(row.evidence);
    let verdict = match (expect, &seen, evidence) {
        (Expect::Blocked, Seen::Blocked(_), None | Some(false)) => Verdict::Pass,
        (Expect::Blocked, Seen::Blocked(_), Some(true)) => {
            Verdict::Fail("ESCAPE: reported blocked but the outside effect happened".into())
        }
        (Expect::Blocked, Seen::Succeeded(_), _) => Verdict::Fail("ESCAPE".into()),
        (Expect::Blocked, _, Some(true)) => Verdict::Fail("ESCAPE (outside effect seen)".into()),
        (Expect::Succeeds, Seen::Succeeded(_), _) => Verdict::Pass,
        (_, Seen::Undecidable(_), _) => {
            Verdict::Fail("UNDECIDABLE errno: not a denial, counts as a failure".into())
        }
        (_, Seen::Broken(_), _) => Verdict::Fail("BROKEN run".into()),
        (Expect::Succeeds, _, _) => Verdict::Fail("a granted operation was refused".into()),
    };
    Line {
        attack: row.name,
        who: profile.into(),
        expected: match expect {
            Expect::Blocked => "blocked",
            Expect::Succeeds => "succeeds",
        },
        seen: format!("{}{}", seen.short(), evidence_note(evidence)),
        verdict,
    }
}

/// `flow sandbox run --profile P [--spool DIR] --`, as the mode's flow user.
/// The executor gets a fresh, empty spool of its own (`spool`), never one of
/// the attack targets, and never the invoking user's real spool.
fn sandbox_run(mode: Mode, bins: &Bins, profile: &str, spool: &TempDir) -> Command {
    let mut cmd = command(mode.flow_user(), &bins.flow);
    cmd.args(["sandbox", "run", "--profile", profile]);
    if profile == "executor" {
        cmd.arg("--spool").arg(&spool.0);
    }
    cmd.arg("--");
    cmd
}

fn selected_rows() -> Vec<&'static Attack> {
    match std::env::var("FLOW_ESCAPE_ONLY") {
        Ok(only) if !only.is_empty() => {
            let names: BTreeSet<&str> = only.split(',').collect();
            eprintln!("NOTICE: FLOW_ESCAPE_ONLY is set: running only {names:?}");
            for n in &names {
                assert!(
                    flow_tests::attack(n).is_some(),
                    "FLOW_ESCAPE_ONLY: unknown attack {n}"
                );
            }
            ATTACKS.iter().filter(|a| names.contains(a.name)).collect()
        }
        _ => ATTACKS.iter().collect(),
    }
}

fn print_and_assert(title: &str, lines: &[Line]) {
    let mut text = format!("\n== {title} ==\n");
    text.push_str(&format!(
        "{:<24} {:<28} {:<9} {:<6} {}\n",
        "attack", "run", "expected", "verdict", "seen"
    ));
    for l in lines {
        let v = match &l.verdict {
            Verdict::Pass => "ok".to_string(),
            Verdict::Skip(_) => "SKIP".to_string(),
            Verdict::Fail(_) => "FAIL".to_string(),
        };
        text.push_str(&format!(
            "{:<24} {:<28} {:<9} {:<6} {}\n",
            l.attack, l.who, l.expected, v, l.seen
        ));
    }
    let skips: Vec<String> = lines
        .iter()
        .filter_map(|l| match &l.verdict {
            Verdict::Skip(why) => Some(format!("  {} / {}: {why}", l.attack, l.who)),
            _ => None,
        })
        .collect();
    let fails: Vec<String> = lines
        .iter()
        .filter_map(|l| match &l.verdict {
            Verdict::Fail(why) => Some(format!("  {} / {}: {why} — {}", l.attack, l.who, l.seen)),
            _ => None,
        })
        .collect();
    if !skips.is_empty() {
        text.push_str(&format!(
            "\nskipped ({}):\n{}\n",
            skips.len(),
            skips.join("\n")
        ));
    }
    eprintln!("{text}");
    assert!(
        fails.is_empty(),
        "{title}: {} of {} cases failed:\n{}",
        fails.len(),
        lines.len(),
        fails.join("\n")
    );
}

fn run_matrix(mode: Mode) {
    let bins = Bins::stage(match mode {
        Mode::Root => "root",
        Mode::Unprivileged => "unpriv",
    });
    let mut lines = Vec::new();
    for row in selected_rows() {
        lines.push(run_baseline(&bins, row, mode));
        for pi in 0..PROFILES.len() {
            lines.push(run_sandboxed(&bins, row, mode, pi));
        }
    }
    print_and_assert(&format!("escape matrix ({mode:?})"), &lines);
}

// ── the tests ───────────────────────────────────────────────────────────────

/// Positive control: the same write attack that must fail everywhere else
/// succeeds in the one place a profile grants it (the executor's spool), so a
/// "blocked" in the matrix is the sandbox's doing, not a broken harness.
fn executor_writes_its_spool(mode: Mode) {
    let bins = Bins::stage(&format!("control-{mode:?}"));
    let spool = TempDir::new("spool", 0o777);
    let mut cmd = sandbox_run(mode, &bins, "executor", &spool);
    cmd.arg(&bins.attack).arg("write-tmp").arg(&spool.0);
    let run = execute(cmd, None);
    let seen = judge("write-tmp", &run, true);
    assert!(matches!(seen, Seen::Succeeded(_)), "{seen:?}");
    assert!(spool.0.join("flow-escape-written").is_file());
}

#[test]
fn positive_control_executor_writes_its_spool() {
    if is_root() {
        executor_writes_its_spool(Mode::Root);
    }
    executor_writes_its_spool(Mode::Unprivileged);
}

#[test]
fn escape_matrix_as_root() {
    if !is_root() {
        eprintln!(
            "SKIPPED escape_matrix_as_root: needs root (escape_matrix_unprivileged covers CI)"
        );
        return;
    }
    run_matrix(Mode::Root);
}

#[test]
fn escape_matrix_unprivileged() {
    run_matrix(Mode::Unprivileged);
}

/// Every baseline alone, as root and unprivileged: needs no `flow`, so it
/// also guards the attack binary while the sandbox is being built.
#[test]
fn every_attack_succeeds_without_a_sandbox() {
    let bins = Bins::stage_with("baseline", None);
    let mut lines = Vec::new();
    for row in selected_rows() {
        if is_root() {
            lines.push(run_baseline(&bins, row, Mode::Root));
        }
        lines.push(run_baseline(&bins, row, Mode::Unprivileged));
    }
    print_and_assert("baselines without a sandbox", &lines);
}

#[test]
fn attack_binary_implements_exactly_the_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_flow-attack"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success());
    let implemented: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let table: Vec<String> = ATTACKS.iter().map(|a| a.name.to_string()).collect();
    assert_eq!(
        implemented, table,
        "flow-attack --list vs flow_tests::ATTACKS (same order)"
    );
    assert!(ATTACKS.len() >= 30);
}

#[test]
fn escape_md_carries_the_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ESCAPE.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- table:begin -->\n", "<!-- table:end -->");
    let b = doc.find(begin).expect("ESCAPE.md has a table:begin marker") + begin.len();
    let e = doc.find(end).expect("ESCAPE.md has a table:end marker");
    let rendered = flow_tests::render_markdown();
    if std::env::var_os("FLOW_ESCAPE_BLESS").is_some() {
        let new = format!("{}{}{}", &doc[..b], rendered, &doc[e..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        &doc[b..e],
        rendered,
        "tests/ESCAPE.md is out of date: run FLOW_ESCAPE_BLESS=1 cargo test -p flow-tests --test escape escape_md"
    );
}

// ── the in-sandbox probe, checked from inside and from outside ─────────────

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in status"))
}

fn ns(pid: &str, which: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{which}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{which}: {e}"))
        .display()
        .to_string()
}

/// Everything the harness checks about the paused probe from the outside.
fn outside_view(pid: u32, flow_pid: u32) -> serde_json::Value {
    let p = pid.to_string();
    let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
    let mut fds: Vec<i64> = std::fs::read_dir(format!("/proc/{p}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    fds.sort_unstable();
    let uid: Vec<String> = status_field(&status, "Uid")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let fresh: serde_json::Map<String, serde_json::Value> = ["user", "mnt", "ipc", "uts", "net"]
        .iter()
        .map(|n| (n.to_string(), (ns(&p, n) != ns("self", n)).into()))
        .collect();
    serde_json::json!({
        "ppid_is_flow": status_field(&status, "PPid") == flow_pid.to_string(),
        "threads": status_field(&status, "Threads"),
        "no_new_privs": status_field(&status, "NoNewPrivs"),
        "seccomp": status_field(&status, "Seccomp"),
        "seccomp_filters_at_least_one": status_field(&status, "Seccomp_filters").parse::<u32>().unwrap() >= 1,
        "cap_inh": status_field(&status, "CapInh"),
        "cap_prm": status_field(&status, "CapPrm"),
        "cap_eff": status_field(&status, "CapEff"),
        "cap_bnd": status_field(&status, "CapBnd"),
        "cap_amb": status_field(&status, "CapAmb"),
        "host_uid_nonzero_and_uniform": uid.iter().all(|u| u != "0" && *u == uid[0]),
        "fds": fds,
        "environ_bytes": std::fs::read(format!("/proc/{p}/environ")).unwrap().len(),
        "fresh_namespaces": fresh,
    })
}

fn expected_outside_view(profile: &str) -> serde_json::Value {
    let gateway = profile == "egress-gateway";
    serde_json::json!({
        "ppid_is_flow": true,
        "threads": "1",
        "no_new_privs": "1",
        "seccomp": "2",
        "seccomp_filters_at_least_one": true,
        "cap_inh": "0000000000000000",
        "cap_prm": "0000000000000000",
        "cap_eff": "0000000000000000",
        "cap_bnd": "0000000000000000",
        "cap_amb": "0000000000000000",
        "host_uid_nonzero_and_uniform": true,
        "fds": [0, 1, 2],
        "environ_bytes": 0,
        "fresh_namespaces": {"user": true, "mnt": true, "ipc": true, "uts": true, "net": !gateway},
    })
}

fn probe_in_every_profile(mode: Mode) {
    let bins = Bins::stage(&format!("probe-{mode:?}"));
    let mut failures = Vec::new();
    for profile in PROFILES {
        let spool = TempDir::new("spool", 0o777);
        let mut cmd = sandbox_run(mode, &bins, profile, &spool);
        cmd.arg(&bins.probe)
            .args(["--pause", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let flow_pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let inside: Option<serde_json::Value> = serde_json::from_str(&first).ok();
        // Look from the outside while the probe pauses.
        let outside = inside
            .as_ref()
            .and_then(|v| v["pid"].as_u64())
            .map(|pid| outside_view(pid as u32, flow_pid));
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        let Some(inside) = inside else {
            failures.push(format!(
                "{profile}: the probe printed no report (exit {status:?}): stdout {first:?} stderr {stderr:?}"
            ));
            continue;
        };
        eprintln!("{profile} inside: {inside}\n{profile} outside: {outside:?}");
        let failed: Vec<String> = inside["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] != true)
            .map(|c| format!("{}={}", c["name"], c["value"]))
            .collect();
        if !failed.is_empty() || inside["ok"] != true || status.code() != Some(0) {
            failures.push(format!(
                "{profile}: inside checks failed (exit {status:?}): {}",
                failed.join(", ")
            ));
        }
        let want = expected_outside_view(profile);
        if outside.as_ref() != Some(&want) {
            failures.push(format!(
                "{profile}: outside view\n    got  {}\n    want {want}",
                outside.unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "probe ({mode:?}):\n{}",
        failures.join("\n")
    );
}

#[test]
fn probe_in_every_profile_as_root() {
    if !is_root() {
        eprintln!("SKIPPED probe_in_every_profile_as_root: needs root");
        return;
    }
    probe_in_every_profile(Mode::Root);
}

#[test]
fn probe_in_every_profile_unprivileged() {
    probe_in_every_profile(Mode::Unprivileged);
}

/// The probe can fail: outside any sandbox it must report failure.
#[test]
fn probe_fails_outside_the_sandbox() {
    let bins = Bins::stage_with("probe-outside", None);
    for who in [As::Root, As::Unprivileged] {
        if who == As::Root && !is_root() {
            continue;
        }
        let out = command(who, &bins.probe).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(out.status.code(), Some(1), "{v}");
        let failed: BTreeSet<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] != true)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for must in [
            "no_new_privs",
            "seccomp_mode",
            "denied_syscall_eperm",
            "environment_empty",
            "proc_hidden",
        ] {
            assert!(
                failed.contains(must),
                "{must} should fail outside the sandbox: {v}"
            );
        }
    }
}

/// The probe's outside expectations are not vacuous: a plain process fails them.
#[test]
fn outside_view_rejects_an_unsandboxed_process() {
    let bins = Bins::stage_with("outside-view", None);
    let who = if is_root() {
        As::Root
    } else {
        As::Unprivileged
    };
    let mut child = command(who, &bins.probe)
        .args(["--pause", "3"])
        .env_remove(CANARY.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    let view = outside_view(v["pid"].as_u64().unwrap() as u32, me);
    let _ = child.kill();
    let _ = child.wait();
    for profile in PROFILES {
        assert_ne!(view, expected_outside_view(profile));
    }
    assert_eq!(view["seccomp"], "0");
    assert_eq!(view["no_new_privs"], "0");
}
