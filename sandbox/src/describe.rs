//! `flow sandbox show --profile P [--json]`: everything a profile allows, in
//! one value, with the sha256 of the same compiled filter `enter` installs.

use crate::landlock_rules::{self, Grant, RuleDesc};
use crate::profile::RlimitSpec;
use crate::seccomp::{self, SyscallRule};
use crate::{exec_once, ProfileName, SandboxError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ProfileDescription {
    pub profile: ProfileName,
    /// Whether this describes the exec-allowance variant.
    pub exec_allowance: bool,
    pub namespaces_fresh: Vec<String>,
    pub namespaces_shared: Vec<String>,
    pub filesystem: String,
    /// Which sockets the profile may create (every send call also refuses
    /// `MSG_FASTOPEN`, an implicit TCP connect).
    pub sockets: String,
    pub rlimits: Vec<RlimitSpec>,
    pub capabilities: String,
    pub no_new_privs: bool,
    pub landlock: LandlockDescription,
    pub seccomp: SeccompDescription,
}

#[derive(Debug, Clone, Serialize)]
pub struct LandlockDescription {
    /// The ABI this host would use (0: none; entry then fails closed unless
    /// landlock is waived).
    pub host_abi: i32,
    pub handled_fs: String,
    pub handled_net: Vec<String>,
    /// Ports known without a spawn (none: they come with the spec).
    pub connect_ports: Vec<u16>,
    /// Where the profile's TCP connect ports come from.
    pub connect_ports_source: String,
    pub scopes: Vec<String>,
    pub rules: Vec<RuleDesc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeccompDescription {
    pub default_action: String,
    pub prologue: Vec<String>,
    pub allowed: Vec<SyscallRule>,
    /// sha256 of the filter installed by this variant.
    pub sha256: String,
    /// sha256 of the profile's production filter (no exec allowance).
    pub base_sha256: String,
    /// sha256 of the profile's exec-allowance filter.
    pub exec_sha256: String,
    /// The exec variant's second filter: `execve` allowed once.
    pub exec_once: Option<ExecOnceDescription>,
}

/// The exec-once listener filter ([`crate::exec_once`]).
#[derive(Debug, Clone, Serialize)]
pub struct ExecOnceDescription {
    pub summary: String,
    pub program: Vec<String>,
    pub sha256: String,
}

/// Read paths (with is-dir), write dirs, exec paths (with grant).
type Placeholders = (
    Vec<(String, Option<bool>)>,
    Vec<String>,
    Vec<(String, Grant)>,
);

/// Paths given at spawn are shown as placeholders.
fn placeholders(profile: ProfileName, exec: bool) -> Placeholders {
    let (read, write): (Vec<&str>, Vec<&str>) = match profile {
        ProfileName::ReasoningWorker => (vec![], vec![]),
        ProfileName::Executor => (vec![], vec!["<spool>"]),
        // The gateway gets its CA bundle and DNS servers over its bootstrap
        // channel (GatewayConfig): no path at all.
        ProfileName::EgressGateway => (vec![], vec![]),
        ProfileName::LlamaServer => (vec!["<model file>"], vec!["<socket dir>"]),
    };
    let exec_paths = if exec {
        vec![
            ("<exec binary>".to_string(), Grant::Execute),
            ("<its ELF interpreter>".to_string(), Grant::Execute),
            ("<its libraries>".to_string(), Grant::Read),
        ]
    } else {
        Vec::new()
    };
    (
        read.into_iter().map(|p| (p.to_string(), None)).collect(),
        write.into_iter().map(String::from).collect(),
        exec_paths,
    )
}

/// Describe `profile` (with the exec allowance when `exec`).
///
/// The hashes come from [`seccomp::compile`], the code path `enter` installs
/// from. Compiling cannot fail for the built-in profiles (unit-tested); if it
/// ever did, the hash fields say so instead of showing a wrong value.
pub fn describe(profile: ProfileName, exec: bool) -> ProfileDescription {
    let host_abi = landlock_rules::kernel_abi();
    // Rights are listed for the newest ABI this crate knows; the kernel's
    // older ABI handles (and so denies) a subset.
    let shown_abi = landlock_rules::crate_abi(i32::MAX);
    let (read, write, exec_paths) = placeholders(profile, exec);
    let rules = landlock_rules::plan(profile, &read, &write, &exec_paths, shown_abi);
    let hash = |exec| {
        seccomp::sha256(profile, exec).unwrap_or_else(|e: SandboxError| format!("unavailable: {e}"))
    };
    let base_sha256 = hash(false);
    let exec_sha256 = hash(true);
    ProfileDescription {
        profile,
        exec_allowance: exec,
        namespaces_fresh: profile.fresh_namespaces().into_iter().map(String::from).collect(),
        namespaces_shared: profile.shared_namespaces().into_iter().map(String::from).collect(),
        filesystem: "empty read-only tmpfs root holding only the declared paths at their host paths; no /proc, /dev, /sys".to_string(),
        sockets: format!("{}; no send call may carry MSG_FASTOPEN", profile.sockets()),
        rlimits: profile.rlimits(),
        capabilities: "none: bounding, ambient, inheritable, permitted and effective sets all empty".to_string(),
        no_new_privs: true,
        landlock: LandlockDescription {
            host_abi,
            handled_fs: "every filesystem right of the kernel's ABI".to_string(),
            handled_net: if host_abi >= 4 {
                vec!["BindTcp".into(), "ConnectTcp".into()]
            } else {
                Vec::new()
            },
            connect_ports: Vec::new(),
            connect_ports_source: landlock_rules::connect_ports_source(profile).to_string(),
            scopes: if host_abi >= 6 {
                vec!["AbstractUnixSocket".into(), "Signal".into()]
            } else {
                Vec::new()
            },
            rules,
        },
        seccomp: SeccompDescription {
            default_action: seccomp::DEFAULT_ACTION.to_string(),
            prologue: seccomp::PROLOGUE.iter().map(|s| s.to_string()).collect(),
            allowed: seccomp::describe_rules(profile, exec),
            sha256: if exec { exec_sha256.clone() } else { base_sha256.clone() },
            base_sha256,
            exec_sha256,
            exec_once: exec.then(|| ExecOnceDescription {
                summary: exec_once::SUMMARY.to_string(),
                program: exec_once::PROGRAM_TEXT.iter().map(|s| s.to_string()).collect(),
                sha256: exec_once::sha256(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_hash_is_the_installed_hash() {
        for p in ProfileName::ALL {
            let d = describe(p, false);
            assert_eq!(d.seccomp.sha256, seccomp::sha256(p, false).unwrap());
            let e = describe(p, true);
            assert_eq!(e.seccomp.sha256, seccomp::sha256(p, true).unwrap());
            assert_eq!(d.seccomp.exec_sha256, e.seccomp.sha256);
        }
    }

    #[test]
    fn exec_variant_describes_exec_once() {
        for p in ProfileName::ALL {
            assert!(describe(p, false).seccomp.exec_once.is_none());
            let e = describe(p, true).seccomp.exec_once.unwrap();
            assert_eq!(e.summary, exec_once::SUMMARY);
            assert_eq!(e.sha256, exec_once::sha256());
        }
        let g = describe(ProfileName::EgressGateway, false);
        assert!(g.sockets.contains("no UDP"));
        assert!(g.sockets.contains("from the catalog at spawn"));
        assert!(g
            .landlock
            .connect_ports_source
            .starts_with("from the catalog at spawn"));
    }

    #[test]
    fn worker_has_no_landlock_rules() {
        let d = describe(ProfileName::ReasoningWorker, false);
        assert!(d.landlock.rules.is_empty());
        let e = describe(ProfileName::Executor, false);
        assert_eq!(e.landlock.rules.len(), 1);
        assert_eq!(e.landlock.rules[0].path, "<spool>");
        assert!(!e.landlock.rules[0].rights.contains(&"Execute".to_string()));
    }
}
