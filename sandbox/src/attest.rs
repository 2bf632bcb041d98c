//! Attestation from the outside: the broker reads `/proc/<pid>/task/*` of a
//! child it spawned (holding a pidfd since spawn) and checks that the sandbox
//! it applied is in force. The child's own report is informational only.
//!
//! Race-freedom: `/proc/<pid>` is opened first as a directory descriptor, then
//! the pidfd is signalled with 0. If the pidfd's process is still alive, the
//! pid cannot have been recycled, so the descriptor names the right process;
//! every later read goes through that descriptor, which fails (ESRCH) rather
//! than show another process if the child exits meanwhile.

use crate::{ProfileName, SandboxError};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// What the broker expects of a freshly entered child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expected {
    /// `Seccomp_filters` the child must show: the broker's own count + 1
    /// (+ 1 more for an exec-variant process: the exec-once listener filter).
    pub seccomp_filters: u32,
    /// Namespaces the child must NOT share with the broker (e.g. "user", "net").
    pub fresh_namespaces: Vec<String>,
    /// Namespaces the child must share with the broker (e.g. "net" for the gateway).
    pub shared_namespaces: Vec<String>,
    /// What its fd table may hold.
    pub fds: FdPolicy,
}

/// What a child's fd table may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdPolicy {
    /// Exactly these fd numbers (a Rust component, checked while it waits
    /// for the broker's first grant, so its table is what it declared).
    Exact(Vec<i32>),
    /// A foreign binary (llama-server) whose table changes as it runs: any
    /// number of fds, but each must be a socket, a pipe, an anonymous inode
    /// (eventfd, epoll, timerfd, ...; never a seccomp listener), `/dev/null`
    /// or one of `allowed_paths` (a file, or anything under a directory), as
    /// `readlink /proc/<pid>/fd/N` shows it from the outside.
    ForeignBinary { allowed_paths: Vec<PathBuf> },
}

impl Expected {
    /// The same expectations with the [`FdPolicy::ForeignBinary`] fd policy.
    pub fn foreign_binary(mut self, allowed_paths: Vec<PathBuf>) -> Expected {
        self.fds = FdPolicy::ForeignBinary { allowed_paths };
        self
    }
}

/// Why `target` (an fd's `readlink`) is acceptable under `allowed_paths`,
/// or `None` when it is not.
fn foreign_fd_ok(target: &Path, allowed_paths: &[PathBuf]) -> Option<&'static str> {
    let text = target.to_string_lossy();
    if text.starts_with("socket:[") {
        return Some("socket");
    }
    if text.starts_with("pipe:[") {
        return Some("pipe");
    }
    if let Some(kind) = text.strip_prefix("anon_inode:") {
        // A listener would let the holder answer seccomp notifications.
        return (!kind.contains("seccomp")).then_some("anon_inode");
    }
    if target == Path::new("/dev/null") {
        return Some("/dev/null");
    }
    // Path::starts_with compares whole components: /models/a is not under
    // /models/ab, and "x (deleted)" is not the file x.
    allowed_paths
        .iter()
        .any(|a| target.starts_with(a))
        .then_some("allowed path")
}

/// What the broker observed, shown by `flow status --json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttestReport {
    pub pid: i32,
    pub threads: u32,
    pub no_new_privs: bool,
    pub seccomp_mode: u32,
    pub seccomp_filters: u32,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub host_uid: u32,
    /// namespace name -> inode id, e.g. ("net", 4026532211)
    pub namespaces: Vec<(String, u64)>,
    pub fds: Vec<i32>,
}

/// What a child entered in `profile` must show. `broker_seccomp_filters` is
/// the broker's own `Seccomp_filters` (non-zero under a container's filter);
/// `fds` the descriptors the broker let it keep (0, 1, 2 and the bootstrap
/// channel).
pub fn expected_for(profile: ProfileName, broker_seccomp_filters: u32, fds: &[i32]) -> Expected {
    let mut fds = fds.to_vec();
    fds.sort_unstable();
    fds.dedup();
    Expected {
        seccomp_filters: broker_seccomp_filters.saturating_add(1),
        fresh_namespaces: profile
            .fresh_namespaces()
            .into_iter()
            .map(String::from)
            .collect(),
        shared_namespaces: profile
            .shared_namespaces()
            .into_iter()
            .map(String::from)
            .collect(),
        fds: FdPolicy::Exact(fds),
    }
}

/// The calling process's own `Seccomp_filters` (what `expected_for` needs).
pub fn own_seccomp_filters() -> Result<u32, SandboxError> {
    let path = Path::new("/proc/self/status");
    let text = std::fs::read_to_string(path).map_err(|source| SandboxError::AttestRead {
        pid: std::process::id() as i32,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(field(&text, "Seccomp_filters")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == name).then_some(v.trim())
    })
}

fn fail(
    pid: i32,
    check: impl Into<String>,
    found: impl ToString,
    expected: impl ToString,
) -> SandboxError {
    SandboxError::Attestation {
        pid,
        check: check.into(),
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

fn ns_inode(link: &Path, pid: i32) -> Result<u64, SandboxError> {
    let target = std::fs::read_link(link).map_err(|source| SandboxError::AttestRead {
        pid,
        path: link.to_path_buf(),
        source,
    })?;
    // "net:[4026531840]"
    let s = target.to_string_lossy();
    s.split_once(":[")
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            fail(
                pid,
                format!("namespace link {}", link.display()),
                s,
                "name:[inode]",
            )
        })
}

/// Check a child from the outside. `Err` names the first failed check.
pub fn attest(
    pidfd: BorrowedFd<'_>,
    pid: i32,
    expected: &Expected,
) -> Result<AttestReport, SandboxError> {
    let proc_path = PathBuf::from(format!("/proc/{pid}"));
    let read_err = |path: PathBuf| move |source| SandboxError::AttestRead { pid, path, source };
    let proc_dir = std::fs::File::open(&proc_path).map_err(read_err(proc_path.clone()))?;
    crate::sys::pidfd_send_signal0(pidfd.as_raw_fd())
        .map_err(|e| fail(pid, "pidfd names a live process", e, "alive"))?;
    // Every path below goes through the descriptor opened above.
    let base = PathBuf::from(format!("/proc/self/fd/{}", proc_dir.as_raw_fd()));

    let mut report = AttestReport {
        pid,
        ..AttestReport::default()
    };
    let task_dir = base.join("task");
    let mut tids: Vec<String> = std::fs::read_dir(&task_dir)
        .map_err(read_err(task_dir.clone()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    tids.sort();
    if tids.is_empty() {
        return Err(fail(pid, "threads", 0, ">= 1"));
    }
    report.threads = u32::try_from(tids.len()).unwrap_or(u32::MAX);
    for tid in &tids {
        let path = task_dir.join(tid).join("status");
        let status = std::fs::read_to_string(&path).map_err(read_err(path.clone()))?;
        let get = |name: &str| -> Result<&str, SandboxError> {
            field(&status, name)
                .ok_or_else(|| fail(pid, format!("task {tid} {name}"), "missing", "present"))
        };
        let num = |name: &str| -> Result<u64, SandboxError> {
            let v = get(name)?;
            v.parse::<u64>()
                .map_err(|_| fail(pid, format!("task {tid} {name}"), v, "a number"))
        };
        let hex = |name: &str| -> Result<u64, SandboxError> {
            let v = get(name)?;
            u64::from_str_radix(v, 16)
                .map_err(|_| fail(pid, format!("task {tid} {name}"), v, "hex"))
        };
        let nnp = num("NoNewPrivs")?;
        if nnp != 1 {
            return Err(fail(pid, format!("task {tid} NoNewPrivs"), nnp, 1));
        }
        let mode = num("Seccomp")?;
        if mode != 2 {
            return Err(fail(pid, format!("task {tid} Seccomp"), mode, 2));
        }
        let filters = num("Seccomp_filters")?;
        if filters != u64::from(expected.seccomp_filters) {
            return Err(fail(
                pid,
                format!("task {tid} Seccomp_filters"),
                filters,
                expected.seccomp_filters,
            ));
        }
        let mut capv = [0u64; 5];
        for (i, name) in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
            .iter()
            .enumerate()
        {
            let v = hex(name)?;
            if v != 0 {
                return Err(fail(
                    pid,
                    format!("task {tid} {name}"),
                    format!("{v:016x}"),
                    "0000000000000000",
                ));
            }
            capv[i] = v;
        }
        // Real, effective, saved and filesystem uid as the host sees them
        // (the broker reads /proc from the host user namespace).
        let uids: Vec<u32> = get("Uid")?
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect();
        if uids.len() != 4 || uids.contains(&0) {
            return Err(fail(
                pid,
                format!("task {tid} Uid"),
                format!("{uids:?}"),
                "four non-zero host uids",
            ));
        }
        report.no_new_privs = true;
        report.seccomp_mode = 2;
        report.seccomp_filters = expected.seccomp_filters;
        [
            report.cap_inh,
            report.cap_prm,
            report.cap_eff,
            report.cap_bnd,
            report.cap_amb,
        ] = capv;
        report.host_uid = uids[0];
    }

    let mut names: Vec<&String> = expected
        .fresh_namespaces
        .iter()
        .chain(&expected.shared_namespaces)
        .collect();
    names.sort();
    names.dedup();
    for ns in names {
        let theirs = ns_inode(&base.join("ns").join(ns), pid)?;
        let ours = ns_inode(&Path::new("/proc/self/ns").join(ns), pid)?;
        if expected.fresh_namespaces.contains(ns) && theirs == ours {
            return Err(fail(
                pid,
                format!("{ns} namespace is fresh"),
                format!("shared ({theirs})"),
                "different from the broker's",
            ));
        }
        if expected.shared_namespaces.contains(ns) && theirs != ours {
            return Err(fail(pid, format!("{ns} namespace is shared"), theirs, ours));
        }
        report.namespaces.push((ns.clone(), theirs));
    }

    let fd_dir = base.join("fd");
    let mut fds: Vec<i32> = std::fs::read_dir(&fd_dir)
        .map_err(read_err(fd_dir.clone()))?
        .filter_map(|e| {
            e.ok()
                .and_then(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        })
        .collect();
    fds.sort_unstable();
    match &expected.fds {
        FdPolicy::Exact(want) => {
            let mut want = want.clone();
            want.sort_unstable();
            if fds != want {
                return Err(fail(
                    pid,
                    "fd table",
                    format!("{fds:?}"),
                    format!("{want:?}"),
                ));
            }
        }
        FdPolicy::ForeignBinary { allowed_paths } => {
            let mut open = Vec::with_capacity(fds.len());
            for fd in fds {
                let link = fd_dir.join(fd.to_string());
                let target = match std::fs::read_link(&link) {
                    Ok(t) => t,
                    // Closed between the listing and now: not in the table.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(source) => return Err(read_err(link)(source)),
                };
                if foreign_fd_ok(&target, allowed_paths).is_none() {
                    return Err(fail(
                        pid,
                        format!("fd {fd}"),
                        target.display(),
                        format!(
                            "a socket, pipe, anon_inode, /dev/null or one of {allowed_paths:?}"
                        ),
                    ));
                }
                open.push(fd);
            }
            fds = open;
        }
    }
    report.fds = fds;

    // Still the same, live process at the end of the reads.
    crate::sys::pidfd_send_signal0(pidfd.as_raw_fd())
        .map_err(|e| fail(pid, "pidfd names a live process", e, "alive"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_for_profiles() {
        let w = expected_for(ProfileName::ReasoningWorker, 0, &[3, 0, 1, 2, 3]);
        assert_eq!(
            (
                w.seccomp_filters,
                w.fresh_namespaces,
                w.shared_namespaces,
                w.fds
            ),
            (
                1,
                vec![
                    "user".to_string(),
                    "mnt".into(),
                    "ipc".into(),
                    "uts".into(),
                    "net".into()
                ],
                vec![],
                FdPolicy::Exact(vec![0, 1, 2, 3])
            )
        );
        let g = expected_for(ProfileName::EgressGateway, 2, &[0, 1, 2]);
        assert_eq!(
            (g.seccomp_filters, g.shared_namespaces),
            (3, vec!["net".to_string()])
        );
        assert!(!g.fresh_namespaces.contains(&"net".to_string()));
    }

    #[test]
    fn foreign_binary_fd_policy() {
        let allowed = vec![
            PathBuf::from("/models/m.gguf"),
            PathBuf::from("/run/flow/llama"),
        ];
        let ok = |t: &str| foreign_fd_ok(Path::new(t), &allowed);
        assert_eq!(ok("socket:[1234]"), Some("socket"));
        assert_eq!(ok("pipe:[99]"), Some("pipe"));
        assert_eq!(ok("anon_inode:[eventpoll]"), Some("anon_inode"));
        assert_eq!(ok("anon_inode:[eventfd]"), Some("anon_inode"));
        assert_eq!(ok("/dev/null"), Some("/dev/null"));
        assert_eq!(ok("/models/m.gguf"), Some("allowed path"));
        assert_eq!(ok("/run/flow/llama/llama.sock"), Some("allowed path"));
        for bad in [
            "anon_inode:seccomp notify",
            "/etc/passwd",
            "/models/m.gguf.bak",
            "/models/m.gguf (deleted)",
            "/run/flow/llama2/x",
            "/dev/tty",
            "/",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
        let e =
            expected_for(ProfileName::LlamaServer, 1, &[0, 1, 2]).foreign_binary(allowed.clone());
        assert_eq!(e.seccomp_filters, 2);
        assert_eq!(
            e.fds,
            FdPolicy::ForeignBinary {
                allowed_paths: allowed
            }
        );
    }

    #[test]
    fn attest_refuses_an_unsandboxed_process() {
        // This test process itself: no seccomp, so the first check fails.
        let pid = std::process::id() as i32;
        // SAFETY: pidfd_open on our own pid returns a new owned descriptor.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(raw >= 0);
        // SAFETY: raw was just returned by pidfd_open.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) };
        let exp = expected_for(
            ProfileName::ReasoningWorker,
            own_seccomp_filters().unwrap(),
            &[0, 1, 2],
        );
        let err = attest(std::os::fd::AsFd::as_fd(&fd), pid, &exp).unwrap_err();
        assert!(
            matches!(&err, SandboxError::Attestation { check, .. } if check.ends_with("NoNewPrivs") || check.ends_with("Seccomp")),
            "{err}"
        );
    }
}
