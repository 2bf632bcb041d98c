//! [`enter`]: the one function that puts the calling process in a profile.
//! Its body is the ordered list of steps in the crate doc, in the same order.
//!
//! **Contract for callers:** call it first thing in `main`, before any thread
//! exists, and exit on any `Err` (a half-entered sandbox is not a sandbox).
//! The caller must not hold Rust objects owning descriptors other than 0, 1,
//! 2 and `spec.keep_fds`: step 1 closes every other descriptor.

use crate::elfdeps;
use crate::exec_once;
use crate::landlock_rules::{self, Grant, LandlockApplied};
use crate::profile::RlimitSpec;
use crate::sys;
use crate::{seccomp, ProfileName, SandboxError, Spec};
use serde::Serialize;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Where the new root's tmpfs is mounted inside the new mount namespace
/// before `pivot_root`. It exists on every Linux host, and mounting over it
/// only hides it in the private copy of the tree.
const NEW_ROOT: &str = "/tmp";

/// What `enter` did; the child's self-report (informational: the broker
/// trusts only [`crate::attest`]).
///
/// Not `Clone`: in the exec variant it owns the exec-once listener, which
/// must exist exactly once and leave the sandboxed process before `execve`.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub profile: ProfileName,
    /// sha256 of the profile's production filter (no exec allowance), as
    /// printed by `flow sandbox show --profile P`.
    pub filter_sha256: String,
    /// sha256 of the exec-allowance filter, when `spec.exec` is set.
    pub exec_filter_sha256: Option<String>,
    /// sha256 of the filter actually installed (one of the two above).
    pub installed_filter_sha256: String,
    /// sha256 of the exec-once listener filter ([`crate::exec_once`]),
    /// installed after the exec-allowance filter when `spec.exec` is set.
    pub exec_once_filter_sha256: Option<String>,
    /// The exec-once listener (exec variant only). Hand it to a supervisor
    /// outside the sandbox ([`crate::exec_once::supervise`]) and close it
    /// before `execve`: until someone answers, every `execve` blocks; once
    /// nobody holds it, every `execve` fails with `ENOSYS`.
    #[serde(skip)]
    pub exec_listener: Option<OwnedFd>,
    pub landlock: LandlockApplied,
    /// Namespaces created by step 5.
    pub namespaces: Vec<String>,
    /// Host uid/gid the process runs as.
    pub host_uid: u32,
    pub host_gid: u32,
    /// Whether step 4 switched from host root to `spec.run_as`.
    pub switched_from_root: bool,
    pub rlimits: Vec<RlimitSpec>,
    /// What is visible in the sandbox's filesystem.
    pub mounts: Vec<MountDesc>,
    /// Descriptors left open: 0, 1, 2 and `spec.keep_fds`.
    pub fds: Vec<i32>,
    pub exec: Option<PathBuf>,
    pub waivers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountDesc {
    pub target: PathBuf,
    pub source: PathBuf,
    pub options: String,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "profile: {}", self.profile)?;
        writeln!(f, "base filter sha256: {}", self.filter_sha256)?;
        if let Some(h) = &self.exec_filter_sha256 {
            writeln!(f, "exec filter sha256: {h}")?;
        }
        writeln!(
            f,
            "installed filter sha256: {}",
            self.installed_filter_sha256
        )?;
        if let Some(h) = &self.exec_once_filter_sha256 {
            writeln!(f, "exec-once listener filter sha256: {h}")?;
        }
        if self.landlock.waived {
            writeln!(
                f,
                "landlock: WAIVED (kernel ABI {})",
                self.landlock.kernel_abi
            )?;
        } else {
            writeln!(
                f,
                "landlock: ABI {} (kernel {})",
                self.landlock.abi, self.landlock.kernel_abi
            )?;
        }
        for r in &self.landlock.rules {
            writeln!(f, "  rule {}: {}", r.path, r.rights.join("|"))?;
        }
        writeln!(f, "  tcp handled: {}", self.landlock.handled_net.join("|"))?;
        writeln!(f, "  scopes: {}", self.landlock.scopes.join("|"))?;
        writeln!(f, "namespaces: {}", self.namespaces.join(","))?;
        writeln!(f, "host uid/gid: {}/{}", self.host_uid, self.host_gid)?;
        for r in &self.rlimits {
            writeln!(f, "rlimit {}: {}", r.name, r.value)?;
        }
        for m in &self.mounts {
            writeln!(
                f,
                "mount {} <- {} ({})",
                m.target.display(),
                m.source.display(),
                m.options
            )?;
        }
        writeln!(f, "fds: {:?}", self.fds)?;
        write!(
            f,
            "waivers: {}",
            if self.waivers.is_empty() {
                "none".to_string()
            } else {
                self.waivers.join(",")
            }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountKind {
    /// read_paths: read-only, no exec, no suid, no devices
    Data,
    /// the exec allowance, its interpreter and libraries: read-only, exec
    Exec,
    /// write_dirs: read-write, no exec
    Writable,
}

impl MountKind {
    fn attrs(self) -> u64 {
        let base = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
        match self {
            MountKind::Data => base | sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOEXEC,
            MountKind::Exec => base | sys::MOUNT_ATTR_RDONLY,
            MountKind::Writable => base | sys::MOUNT_ATTR_NOEXEC,
        }
    }
    fn options(self) -> &'static str {
        match self {
            MountKind::Data => "ro,nosuid,nodev,noexec",
            MountKind::Exec => "ro,nosuid,nodev",
            MountKind::Writable => "rw,nosuid,nodev,noexec",
        }
    }
}

#[derive(Debug, Clone)]
struct MountEntry {
    target: PathBuf,
    source: PathBuf,
    kind: MountKind,
    is_dir: bool,
    /// Landlock EXECUTE: only the exec allowance and its ELF interpreter.
    execute: bool,
}

fn step_err(step: &'static str, syscall: &'static str) -> impl Fn(io::Error) -> SandboxError {
    move |e| SandboxError::io(step, syscall, e)
}

fn path_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Path {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Put the calling process in `spec.profile`. See the crate doc for the steps.
pub fn enter(spec: &Spec) -> Result<Applied, SandboxError> {
    // 0. Precondition: single-threaded (landlock binds only the calling thread).
    let threads = own_threads()?;
    if threads != 1 {
        return Err(SandboxError::NotSingleThreaded { threads });
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };

    // 1. Close every descriptor but 0, 1, 2 and keep_fds; stdin from /dev/null.
    let fds = close_other_fds(&spec.keep_fds)?;
    stdio_from_dev_null()?;

    // 2. New session: no controlling terminal to inject input into.
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        let e = io::Error::last_os_error();
        // EPERM: already a process-group leader, which is fine.
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(SandboxError::io("session", "setsid", e));
        }
    }

    // 3. Empty environment (an exec'd command also gets an empty envp).
    // SAFETY: clearenv mutates the environment; the process has one thread
    // (step 0) and no other reference to environment strings is held.
    if unsafe { libc::clearenv() } != 0 {
        return Err(SandboxError::last_os("environment", "clearenv"));
    }

    // 4. Never host root. Plan the mounts first (the ELF closure is read
    //    here), and when root, clone the mount trees while root can still
    //    traverse every path (uid 65534 may not reach e.g. /root).
    let mounts = plan_mounts(spec)?;
    // SAFETY: geteuid has no preconditions.
    let switched_from_root = unsafe { libc::geteuid() } == 0;
    let mut trees: Option<Vec<OwnedFd>> = None;
    if switched_from_root {
        if spec.run_as.0 == 0 || spec.run_as.1 == 0 {
            return Err(SandboxError::RunAsRoot { uid: spec.run_as.0 });
        }
        // Without CAP_SYS_ADMIN (root in a restricted container) cloning
        // fails; the trees are then cloned by path after step 5.
        trees = clone_trees(&mounts).ok();
        switch_ids(spec.run_as)?;
    }
    // SAFETY: getuid/getgid have no preconditions.
    let (host_uid, host_gid) = unsafe { (libc::getuid(), libc::getgid()) };

    // 5. Namespaces, then the empty read-only root holding the declared paths.
    let keeps_net = spec.profile.keeps_host_net();
    let mut flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if !keeps_net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: the process is single-threaded (step 0), as unshare of a user
    // namespace requires; no memory is passed.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(SandboxError::UserNamespace {
            source: io::Error::last_os_error(),
        });
    }
    write_id_maps(host_uid, host_gid, switched_from_root)?;
    // Credential changes cleared the parent-death signal: set it again, then
    // make sure the parent did not die before it was set.
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        .map_err(step_err("namespaces", "prctl(PR_SET_PDEATHSIG)"))?;
    // SAFETY: getppid has no preconditions.
    let now_parent = unsafe { libc::getppid() };
    if now_parent != parent {
        return Err(SandboxError::ParentDied {
            expected: parent,
            found: now_parent,
        });
    }
    // SAFETY: the name is a valid buffer of the given length.
    if unsafe { libc::sethostname(c"flow-sandbox".as_ptr(), "flow-sandbox".len()) } < 0 {
        return Err(SandboxError::last_os("namespaces", "sethostname"));
    }
    build_root(&mounts, trees)?;
    let mut namespaces = vec!["user", "mnt", "ipc", "uts"];
    if !keeps_net {
        namespaces.push("net");
    }

    // 6. Resource limits.
    let rlimits = spec.profile.rlimits();
    for r in &rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.value,
            rlim_max: r.value,
        };
        // SAFETY: lim is a valid rlimit struct alive for the call.
        if unsafe { libc::setrlimit(r.resource, &lim) } < 0 {
            return Err(SandboxError::last_os("rlimits", "setrlimit"));
        }
    }

    // 7. Drop every capability: bounding, ambient, inheritable, permitted,
    //    effective (the user namespace gave a full set).
    drop_capabilities()?;

    // 8. no_new_privs: execve can never grant privileges again.
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
        .map_err(step_err("no_new_privs", "prctl(PR_SET_NO_NEW_PRIVS)"))?;

    // 9. Landlock, from the in-sandbox paths (same paths and inodes as the
    //    host's, through the bind mounts of step 5), and the TCP connect
    //    ports of the spec (egress gateway only).
    let read_paths: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.kind == MountKind::Data)
        .map(|m| m.target.clone())
        .collect();
    let write_dirs: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.kind == MountKind::Writable)
        .map(|m| m.target.clone())
        .collect();
    let exec_paths = exec_grants(&mounts);
    let landlock = landlock_rules::apply(
        spec.profile,
        &read_paths,
        &write_dirs,
        &exec_paths,
        &spec.connect_ports,
        &spec.waivers,
    )?;

    // 10. The seccomp allowlist: last, because the steps above need syscalls
    //     it refuses.
    let filter_sha256 = seccomp::sha256(spec.profile, false)?;
    let exec = spec.exec.is_some();
    let exec_filter_sha256 = if exec {
        Some(seccomp::sha256(spec.profile, true)?)
    } else {
        None
    };
    let installed_filter_sha256 = seccomp::install(spec.profile, exec)?;

    // 11. Exec variant only: the exec-once listener filter, so that the one
    //     `execve` the allowance grants is answered by a supervisor outside
    //     the sandbox, and every later one is refused.
    let exec_listener = if exec {
        Some(exec_once::install_listener()?)
    } else {
        None
    };

    Ok(Applied {
        profile: spec.profile,
        filter_sha256,
        exec_filter_sha256,
        installed_filter_sha256,
        exec_once_filter_sha256: exec.then(exec_once::sha256),
        exec_listener,
        landlock,
        namespaces: namespaces.into_iter().map(String::from).collect(),
        host_uid,
        host_gid,
        switched_from_root,
        rlimits,
        mounts: mounts
            .iter()
            .map(|m| MountDesc {
                target: m.target.clone(),
                source: m.source.clone(),
                options: m.kind.options().to_string(),
            })
            .collect(),
        fds,
        exec: spec.exec.clone(),
        waivers: spec.waivers.names().into_iter().map(String::from).collect(),
    })
}

/// Replace the process with `spec.exec` (after [`enter`] with the exec
/// allowance), with an empty environment. Returns only on failure.
///
/// Before calling it, hand [`Applied::exec_listener`] to a supervisor outside
/// the sandbox and close it here: without a supervisor this `execve` fails
/// with `ENOSYS` (or blocks forever if this process still holds the listener).
pub fn exec_allowed(path: &Path, args: &[std::ffi::OsString]) -> SandboxError {
    use std::os::unix::ffi::OsStrExt;
    let Ok(prog) = sys::cstring(path) else {
        return SandboxError::InvalidPath {
            path: path.to_path_buf(),
            reason: "contains a NUL byte",
        };
    };
    let mut owned = vec![prog.clone()];
    for a in args {
        match std::ffi::CString::new(a.as_bytes()) {
            Ok(c) => owned.push(c),
            Err(_) => {
                return SandboxError::InvalidPath {
                    path: path.to_path_buf(),
                    reason: "an argument contains a NUL byte",
                }
            }
        }
    }
    let mut argv: Vec<*const libc::c_char> = owned.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: prog, argv and envp are NUL-terminated arrays of NUL-terminated
    // strings that outlive the call; execve returns only on failure.
    unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    SandboxError::Path {
        op: "execve",
        path: path.to_path_buf(),
        source: io::Error::last_os_error(),
    }
}

fn own_threads() -> Result<u32, SandboxError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(path_err("read", Path::new("/proc/self/status")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(SandboxError::InvalidPath {
            path: PathBuf::from("/proc/self/status"),
            reason: "has no Threads: line; is /proc mounted?",
        })
}

/// Close everything above 2 except `keep`; returns the sorted open set.
fn close_other_fds(keep: &[i32]) -> Result<Vec<i32>, SandboxError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|fd| u32::try_from(*fd).ok())
        .filter(|fd| *fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut next = 3u32;
    for k in &keep {
        if *k > next {
            sys::close_range(next, k - 1).map_err(step_err("close fds", "close_range"))?;
        }
        next = k + 1;
    }
    sys::close_range(next, u32::MAX).map_err(step_err("close fds", "close_range"))?;
    let mut fds = vec![0, 1, 2];
    fds.extend(keep.iter().filter_map(|k| i32::try_from(*k).ok()));
    Ok(fds)
}

/// stdin becomes /dev/null; stdout/stderr too if they were closed, so the
/// fd table is exactly what attestation expects.
fn stdio_from_dev_null() -> Result<(), SandboxError> {
    // No O_CLOEXEC: if this lands on a closed 0..2 slot it stays as that slot.
    // SAFETY: the path is a static NUL-terminated string.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if null < 0 {
        return Err(SandboxError::last_os("close fds", "open(/dev/null)"));
    }
    for fd in 0..=2 {
        // SAFETY: F_GETFD on an integer descriptor has no memory effects.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
        if (fd == 0 || !open) && fd != null {
            // SAFETY: dup2 between two integer descriptors we control.
            if unsafe { libc::dup2(null, fd) } < 0 {
                return Err(SandboxError::last_os("close fds", "dup2"));
            }
        }
    }
    if null > 2 {
        // SAFETY: null was opened above and nothing else refers to it.
        unsafe { libc::close(null) };
    }
    Ok(())
}

fn switch_ids((uid, gid): (u32, u32)) -> Result<(), SandboxError> {
    // SAFETY: setgroups with size 0 reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
        return Err(SandboxError::last_os("drop root", "setgroups"));
    }
    // SAFETY: setresgid/setresuid take integers only.
    if unsafe { libc::setresgid(gid, gid, gid) } < 0 {
        return Err(SandboxError::last_os("drop root", "setresgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } < 0 {
        return Err(SandboxError::last_os("drop root", "setresuid"));
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut s) } < 0 || [r, e, s] != [uid; 3] {
        return Err(SandboxError::RunAsRoot { uid: e });
    }
    Ok(())
}

fn write_id_maps(uid: u32, gid: u32, switched: bool) -> Result<(), SandboxError> {
    // After a uid change the kernel marks the process non-dumpable, which
    // makes /proc/self/* root-owned and the maps unwritable for the new uid.
    if switched {
        sys::prctl(libc::PR_SET_DUMPABLE, 1)
            .map_err(step_err("namespaces", "prctl(PR_SET_DUMPABLE)"))?;
    }
    let write = |path: &'static str, data: String| -> Result<(), SandboxError> {
        std::fs::write(path, data).map_err(path_err("write", Path::new(path)))
    };
    write("/proc/self/setgroups", "deny".to_string())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    if switched {
        // Back to non-dumpable: other processes of the run_as uid (nobody)
        // must not ptrace or read the memory of a sandboxed process. The root
        // broker can still attest it.
        sys::prctl(libc::PR_SET_DUMPABLE, 0)
            .map_err(step_err("namespaces", "prctl(PR_SET_DUMPABLE)"))?;
    }
    Ok(())
}

fn check_declared(path: &Path) -> Result<(), SandboxError> {
    if !path.is_absolute() {
        return Err(SandboxError::InvalidPath {
            path: path.to_path_buf(),
            reason: "sandbox paths must be absolute",
        });
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || path == Path::new("/")
    {
        return Err(SandboxError::InvalidPath {
            path: path.to_path_buf(),
            reason: "sandbox paths must not be '/' or contain '.' or '..'",
        });
    }
    Ok(())
}

fn plan_mounts(spec: &Spec) -> Result<Vec<MountEntry>, SandboxError> {
    let mut out: Vec<MountEntry> = Vec::new();
    let mut add = |target: PathBuf,
                   source: PathBuf,
                   kind: MountKind,
                   execute: bool|
     -> Result<(), SandboxError> {
        check_declared(&target)?;
        let meta = std::fs::metadata(&source).map_err(path_err("stat", &source))?;
        if kind == MountKind::Writable && !meta.is_dir() {
            return Err(SandboxError::InvalidPath {
                path: target,
                reason: "write_dirs entries must be directories",
            });
        }
        if let Some(prev) = out.iter().find(|m| m.target == target) {
            if prev.source == source && prev.kind == kind {
                return Ok(());
            }
            return Err(SandboxError::InvalidPath {
                path: target,
                reason: "declared twice with different sources or modes",
            });
        }
        out.push(MountEntry {
            target,
            source,
            kind,
            is_dir: meta.is_dir(),
            execute,
        });
        Ok(())
    };
    for p in &spec.read_paths {
        add(p.clone(), p.clone(), MountKind::Data, false)?;
    }
    for p in &spec.write_dirs {
        add(p.clone(), p.clone(), MountKind::Writable, false)?;
    }
    if let Some(exec) = &spec.exec {
        check_declared(exec)?;
        let meta = std::fs::metadata(exec).map_err(path_err("stat", exec))?;
        if !meta.is_file() {
            return Err(SandboxError::InvalidPath {
                path: exec.clone(),
                reason: "the exec allowance must be a regular file",
            });
        }
        add(exec.clone(), exec.clone(), MountKind::Exec, true)?;
        let deps = elfdeps::resolve(exec)?;
        if let Some(i) = deps.interpreter {
            add(i.target, i.source, MountKind::Exec, true)?;
        }
        for l in deps.libraries {
            add(l.target, l.source, MountKind::Exec, false)?;
        }
    }
    // A mount point cannot be created inside another (read-only) bind mount.
    for a in &out {
        for b in &out {
            if a.target != b.target && b.target.starts_with(&a.target) {
                return Err(SandboxError::InvalidPath {
                    path: b.target.clone(),
                    reason: "lies inside another declared sandbox path; declare only one of them",
                });
            }
        }
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

fn clone_trees(mounts: &[MountEntry]) -> Result<Vec<OwnedFd>, SandboxError> {
    mounts
        .iter()
        .map(|m| {
            let fd = sys::open_tree_clone(&m.source).map_err(path_err("open_tree", &m.source))?;
            sys::mount_setattr_tree(fd.as_raw_fd(), m.kind.attrs())
                .map_err(path_err("mount_setattr", &m.source))?;
            Ok(fd)
        })
        .collect()
}

/// Top-level host directories shown in the sandbox root as empty, mode-000
/// directories (unless a declared path lives beneath one of them).
const DECOY_DIRS: [&str; 16] = [
    "bin", "boot", "dev", "etc", "home", "lib64", "media", "mnt", "opt", "proc", "root", "run",
    "srv", "sys", "tmp", "var",
];

/// Inside the new mount namespace: a tmpfs root holding only the declared
/// paths, pivoted to, with the old root detached and the tmpfs read-only.
fn build_root(mounts: &[MountEntry], trees: Option<Vec<OwnedFd>>) -> Result<(), SandboxError> {
    const STEP: &str = "mount namespace";
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(step_err(STEP, "mount(/, MS_REC|MS_PRIVATE)"))?;
    // Clone before the tmpfs covers NEW_ROOT (a declared path may lie there).
    let trees = match trees {
        Some(t) => t,
        None => clone_trees(mounts)?,
    };
    let root = Path::new(NEW_ROOT);
    sys::mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(step_err(STEP, "mount(tmpfs)"))?;
    for (m, tree) in mounts.iter().zip(trees.iter()) {
        let rel = m.target.strip_prefix("/").unwrap_or(&m.target);
        let point = root.join(rel);
        if let Some(parent) = point.parent() {
            std::fs::create_dir_all(parent)
                .map_err(path_err("create mount point parent", parent))?;
        }
        if m.is_dir {
            std::fs::create_dir(&point).map_err(path_err("create mount point", &point))?;
        } else {
            std::fs::File::create(&point).map_err(path_err("create mount point", &point))?;
        }
        sys::move_mount_to(tree.as_raw_fd(), &point).map_err(path_err("move_mount", &m.target))?;
    }
    drop(trees);
    // Well-known host directories that the declared paths did not bring in
    // exist as empty mode-000 directories: reaching for /etc, /proc, /tmp …
    // then fails with EACCES, an unambiguous denial, instead of ENOENT.
    for name in DECOY_DIRS {
        let d = root.join(name);
        if std::fs::symlink_metadata(&d).is_err() {
            std::fs::create_dir(&d).map_err(path_err("create decoy", &d))?;
            std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o000))
                .map_err(path_err("chmod decoy", &d))?;
        }
    }
    std::env::set_current_dir(root).map_err(path_err("chdir", root))?;
    sys::pivot_root_dot().map_err(step_err(STEP, "pivot_root"))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH).map_err(step_err(STEP, "umount2(old root)"))?;
    std::env::set_current_dir("/").map_err(path_err("chdir", Path::new("/")))?;
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        None,
    )
    .map_err(step_err(STEP, "mount(/, MS_REMOUNT|MS_RDONLY)"))?;
    Ok(())
}

fn drop_capabilities() -> Result<(), SandboxError> {
    use caps::CapSet;
    let cerr = |set: &'static str| {
        move |e: caps::errors::CapsError| SandboxError::Capabilities {
            set,
            detail: e.to_string(),
        }
    };
    caps::clear(None, CapSet::Bounding).map_err(cerr("bounding"))?;
    // Capabilities newer than the caps crate knows: drop by number until the
    // kernel says the number is past its last capability.
    for cap in 0..64 {
        if let Err(e) = sys::prctl(libc::PR_CAPBSET_DROP, cap) {
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(SandboxError::Capabilities {
                set: "bounding",
                detail: format!("PR_CAPBSET_DROP {cap}: {e}"),
            });
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(cerr("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(cerr("inheritable"))?;
    caps::clear(None, CapSet::Permitted).map_err(cerr("permitted"))?;
    caps::clear(None, CapSet::Effective).map_err(cerr("effective"))?;
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Bounding, "bounding"),
    ] {
        let left = caps::read(None, set).map_err(cerr(name))?;
        if !left.is_empty() {
            return Err(SandboxError::Capabilities {
                set: name,
                detail: format!("still holds {left:?}"),
            });
        }
    }
    Ok(())
}

/// Execute on the binary and its interpreter (the kernel opens both with
/// FMODE_EXEC); libraries are only read (the loader mmaps them).
fn exec_grants(mounts: &[MountEntry]) -> Vec<(PathBuf, Grant)> {
    mounts
        .iter()
        .filter(|m| m.kind == MountKind::Exec)
        .map(|m| {
            (
                m.target.clone(),
                if m.execute {
                    Grant::Execute
                } else {
                    Grant::Read
                },
            )
        })
        .collect()
}
