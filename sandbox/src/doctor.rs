//! `flow doctor`: what this host offers each sandbox layer, probed live, and
//! for each profile whether `enter` would fail closed and how to fix it.
//! [`preflight`] is the same probe as a gate before a spawn.

use crate::profile::DEFAULT_RUN_AS;
use crate::{landlock_rules, ProfileName, SandboxError, Waivers};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub kernel_release: String,
    pub landlock_abi: i32,
    pub seccomp_filter_available: Probe,
    /// `/proc/sys/kernel/unprivileged_userns_clone` (absent: allowed).
    pub unprivileged_userns_clone: Option<String>,
    /// `/proc/sys/user/max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `/proc/sys/kernel/apparmor_restrict_unprivileged_userns` (absent: no restriction).
    pub apparmor_restrict_unprivileged_userns: Option<String>,
    pub container: ContainerHints,
    /// This process's `Seccomp` mode and `Seccomp_filters` (non-zero: an outer
    /// filter, e.g. a container runtime's, which children inherit).
    pub outer_seccomp_mode: u32,
    pub outer_seccomp_filters: u32,
    /// A forked child (as the sandbox uid when root) tried
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)`.
    pub userns_probe: Probe,
    pub profiles: Vec<ProfileReadiness>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub ok: bool,
    pub errno: i32,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerHints {
    pub in_container: bool,
    pub dockerenv: bool,
    pub containerenv: bool,
    pub cgroup_markers: Vec<String>,
    pub pid1_comm: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileReadiness {
    pub profile: ProfileName,
    /// `enter` would succeed without waivers.
    pub ready: bool,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub layer: &'static str,
    /// Entry fails closed (no process runs) rather than running weaker.
    pub fails_closed: bool,
    pub detail: String,
    pub fix: &'static str,
}

const FIX_LANDLOCK: &str = "boot a kernel with CONFIG_SECURITY_LANDLOCK=y and 'landlock' in the lsm= list, or waive landlock in policy (the mount namespace and seccomp still confine the filesystem)";
const FIX_USERNS: &str = "allow unprivileged user namespaces: sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ install an AppArmor profile granting 'userns' to flow or set kernel.apparmor_restrict_unprivileged_userns=0; in a container run with a seccomp profile that allows unshare/clone of user namespaces";
const FIX_SECCOMP: &str = "use a kernel built with CONFIG_SECCOMP_FILTER=y";
const FIX_LANDLOCK_NET: &str =
    "upgrade to linux 6.7+ (landlock ABI 4) so TCP connect/bind are restricted by landlock too";
const FIX_LANDLOCK_SCOPE: &str = "upgrade to linux 6.12+ (landlock ABI 6) so abstract unix sockets and signals are scoped to the sandbox";

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn status_field(name: &str) -> u32 {
    read_trim("/proc/self/status")
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

fn container_hints() -> ContainerHints {
    let mut h = ContainerHints {
        dockerenv: std::path::Path::new("/.dockerenv").exists(),
        containerenv: std::path::Path::new("/run/.containerenv").exists(),
        pid1_comm: read_trim("/proc/1/comm"),
        ..ContainerHints::default()
    };
    if let Some(cg) = read_trim("/proc/1/cgroup") {
        for m in [
            "docker",
            "kubepods",
            "containerd",
            "lxc",
            "libpod",
            "podman",
        ] {
            if cg.contains(m) {
                h.cgroup_markers.push(m.to_string());
            }
        }
    }
    h.in_container = h.dockerenv || h.containerenv || !h.cgroup_markers.is_empty();
    h
}

/// Run `f` in a forked child and return the child's exit status as an errno
/// (0 = success). `f` must only make raw syscalls: the parent may have
/// threads, so the child may only use async-signal-safe operations.
fn in_child(f: fn() -> i32) -> Probe {
    // SAFETY: the child runs only `f` (raw syscalls, no allocation, no locks)
    // and then _exit; the parent only waits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        return Probe {
            ok: false,
            errno: e.raw_os_error().unwrap_or(0),
            detail: format!("fork failed: {e}"),
        };
    }
    if pid == 0 {
        let code = f();
        // SAFETY: _exit is async-signal-safe and ends the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r < 0 || !libc::WIFEXITED(status) {
        return Probe {
            ok: false,
            errno: 0,
            detail: format!("probe child did not exit normally (status {status})"),
        };
    }
    let errno = libc::WEXITSTATUS(status);
    Probe {
        ok: errno == 0,
        errno,
        detail: if errno == 0 {
            "ok".to_string()
        } else {
            std::io::Error::from_raw_os_error(errno).to_string()
        },
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(255)
        .clamp(1, 255)
}

/// Child: become the sandbox uid when root (as `enter` does), then create a
/// user and a net namespace.
fn probe_userns() -> i32 {
    let (uid, gid) = DEFAULT_RUN_AS;
    // SAFETY: raw syscalls with integer arguments only (async-signal-safe).
    unsafe {
        if libc::geteuid() == 0
            && (libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0)
        {
            return errno();
        }
        if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER | libc::CLONE_NEWNET) < 0 {
            return errno();
        }
    }
    0
}

/// Child: install an allow-all seccomp filter.
fn probe_seccomp() -> i32 {
    let mut insn = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insn.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments; seccomp reads `prog`, which points
    // to a live one-instruction program on this stack.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return errno();
        }
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        ) < 0
        {
            return errno();
        }
    }
    0
}

fn problems_for(profile: ProfileName, abi: i32, userns: &Probe, seccomp: &Probe) -> Vec<Problem> {
    let mut v = Vec::new();
    if !seccomp.ok {
        v.push(Problem {
            layer: "seccomp",
            fails_closed: true,
            detail: format!("cannot install a seccomp filter: {}", seccomp.detail),
            fix: FIX_SECCOMP,
        });
    }
    if !userns.ok {
        v.push(Problem {
            layer: "user-namespace",
            fails_closed: true,
            detail: format!("cannot create a user namespace: {}", userns.detail),
            fix: FIX_USERNS,
        });
    }
    if abi <= 0 {
        v.push(Problem {
            layer: "landlock",
            fails_closed: true,
            detail: format!("landlock is not available (kernel ABI {abi})"),
            fix: FIX_LANDLOCK,
        });
    } else {
        if abi < 4 && profile == ProfileName::EgressGateway {
            v.push(Problem {
                layer: "landlock",
                fails_closed: false,
                detail: format!("landlock ABI {abi} cannot restrict TCP ports; the gateway relies on its own destination checks"),
                fix: FIX_LANDLOCK_NET,
            });
        }
        if abi < 6 {
            v.push(Problem {
                layer: "landlock",
                fails_closed: false,
                detail: format!(
                    "landlock ABI {abi} cannot scope abstract unix sockets and signals"
                ),
                fix: FIX_LANDLOCK_SCOPE,
            });
        }
    }
    v
}

/// Everything `flow doctor` shows. Forks two short-lived probe children.
pub fn host_report() -> HostReport {
    let abi = landlock_rules::kernel_abi();
    let userns = in_child(probe_userns);
    let seccomp = in_child(probe_seccomp);
    let profiles = ProfileName::ALL
        .into_iter()
        .map(|p| {
            let problems = problems_for(p, abi, &userns, &seccomp);
            ProfileReadiness {
                profile: p,
                ready: !problems.iter().any(|x| x.fails_closed),
                problems,
            }
        })
        .collect();
    HostReport {
        kernel_release: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
        landlock_abi: abi,
        seccomp_filter_available: seccomp,
        unprivileged_userns_clone: read_trim("/proc/sys/kernel/unprivileged_userns_clone"),
        max_user_namespaces: read_trim("/proc/sys/user/max_user_namespaces")
            .and_then(|s| s.parse().ok()),
        apparmor_restrict_unprivileged_userns: read_trim(
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        ),
        container: container_hints(),
        outer_seccomp_mode: status_field("Seccomp"),
        outer_seccomp_filters: status_field("Seccomp_filters"),
        userns_probe: userns,
        profiles,
    }
}

/// Gate before spawning `profile`: fails closed when a layer `enter` needs is
/// missing (landlock only unless waived).
pub fn preflight(profile: ProfileName, waivers: &Waivers) -> Result<(), SandboxError> {
    // Cheapest first, and landlock first: it is the one layer an operator
    // may waive, so its refusal names the waiver in the fix.
    let abi = landlock_rules::kernel_abi();
    if abi <= 0 && !waivers.landlock {
        return Err(SandboxError::LandlockUnavailable { abi });
    }
    let seccomp = in_child(probe_seccomp);
    if !seccomp.ok {
        return Err(SandboxError::SeccompUnavailable {
            detail: seccomp.detail,
        });
    }
    let userns = in_child(probe_userns);
    if !userns.ok {
        return Err(SandboxError::UserNamespace {
            source: std::io::Error::from_raw_os_error(userns.errno),
        });
    }
    let _ = profile;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_is_ready() {
        // The development and CI machines have landlock ABI >= 6, seccomp and
        // user namespaces; a regression in a probe shows here.
        let r = host_report();
        assert!(r.landlock_abi >= 6, "{r:?}");
        assert_eq!(
            r.userns_probe,
            Probe {
                ok: true,
                errno: 0,
                detail: "ok".into()
            }
        );
        assert!(r.seccomp_filter_available.ok);
        assert!(
            r.profiles.iter().all(|p| p.ready && p.problems.is_empty()),
            "{:?}",
            r.profiles
        );
        preflight(ProfileName::ReasoningWorker, &Waivers::default()).unwrap();
    }

    #[test]
    fn missing_landlock_fails_closed_with_a_fix() {
        let ok = Probe {
            ok: true,
            errno: 0,
            detail: "ok".into(),
        };
        let p = problems_for(ProfileName::Executor, 0, &ok, &ok);
        assert_eq!(p.len(), 1);
        assert!(p[0].fails_closed && p[0].layer == "landlock" && p[0].fix == FIX_LANDLOCK);
    }
}
