//! Landlock: which paths a profile may touch, and with which rights.
//!
//! Rules are applied AFTER `pivot_root`, from paths inside the sandbox: every
//! declared path is bind-mounted at the same absolute path as on the host, so
//! the in-sandbox path names the same inode, and nothing outside the new root
//! can be named at all. Every filesystem right the kernel knows is handled
//! (denied unless a rule grants it); on ABI >= 4 TCP bind/connect are handled,
//! with no bind port granted and connect granted only to the egress gateway's
//! ports from its spec ([`connect_ports`]); on ABI >= 6 abstract unix sockets and signals are
//! scoped to the sandbox.
//!
//! The ruleset requests exactly the kernel's ABI with a hard requirement, so a
//! partially enforced ruleset is an error, never a silent downgrade.

use crate::{ProfileName, SandboxError, Waivers};
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a rule grants, before it is narrowed to a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// read files, list directories
    Read,
    /// read and execute (the exec allowance's binary and its ELF interpreter)
    Execute,
    /// read, write, create and remove regular files and directories
    Write,
    /// `Write` plus creating unix socket files (llama-server's socket dir)
    WriteSockets,
}

/// One rule, as planned and as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleDesc {
    /// The path inside the sandbox (== host path), or a placeholder such as
    /// `<spool>` in `flow sandbox show`.
    pub path: String,
    pub grant: Grant,
    pub rights: Vec<String>,
}

/// What was enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockApplied {
    /// The kernel's landlock ABI (0: none).
    pub kernel_abi: i32,
    /// The ABI requested from the crate (== kernel ABI, capped at what the
    /// crate knows); 0 when waived.
    pub abi: i32,
    pub waived: bool,
    pub handled_fs: Vec<String>,
    pub handled_net: Vec<String>,
    pub scopes: Vec<String>,
    pub connect_ports: Vec<u16>,
    pub rules: Vec<RuleDesc>,
}

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The kernel's landlock ABI version; 0 when landlock is absent (ENOSYS) or
/// disabled at boot (EOPNOTSUPP).
pub fn kernel_abi() -> i32 {
    // SAFETY: landlock_create_ruleset with a NULL attr, size 0 and the VERSION
    // flag only returns the ABI version; it reads no memory and creates no fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        0
    } else {
        i32::try_from(r).unwrap_or(0)
    }
}

/// The crate's ABI enum for a kernel ABI number (capped at the newest the
/// crate knows).
pub fn crate_abi(n: i32) -> ABI {
    match n {
        i32::MIN..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        9 => ABI::V9,
        _ => ABI::V10,
    }
}

fn abi_number(abi: ABI) -> i32 {
    abi as i32
}

/// The TCP ports a profile may connect to: exactly `requested` (the spec's
/// [`crate::Spec::connect_ports`], sorted and deduplicated) for the egress
/// gateway, and none for every other profile, for which a non-empty request is
/// an error (fail closed rather than silently drop a grant). Port 0 is never a
/// connect target and is refused.
pub fn connect_ports(profile: ProfileName, requested: &[u16]) -> Result<Vec<u16>, SandboxError> {
    let refuse = |detail: String| SandboxError::Landlock {
        path: "<tcp connect ports>".to_string(),
        detail,
    };
    match profile {
        ProfileName::EgressGateway => {
            if requested.contains(&0) {
                return Err(refuse("port 0 is not a connect target".to_string()));
            }
            let mut ports = requested.to_vec();
            ports.sort_unstable();
            ports.dedup();
            Ok(ports)
        }
        ProfileName::ReasoningWorker | ProfileName::Executor | ProfileName::LlamaServer => {
            if requested.is_empty() {
                Ok(Vec::new())
            } else {
                Err(refuse(format!(
                    "the {profile} profile may not connect to any TCP port (asked for {requested:?}); only egress-gateway may"
                )))
            }
        }
    }
}

/// What `flow sandbox show` says about a profile's TCP connect ports, which
/// are only known at spawn.
pub fn connect_ports_source(profile: ProfileName) -> &'static str {
    match profile {
        ProfileName::EgressGateway => {
            "from the catalog at spawn: the ports of the enabled connections and of the DNS servers (--connect-port)"
        }
        ProfileName::ReasoningWorker | ProfileName::Executor | ProfileName::LlamaServer => {
            "none: every TCP connect is refused"
        }
    }
}

fn grant_rights(grant: Grant, is_dir: bool) -> BitFlags<AccessFs> {
    let read = if is_dir {
        AccessFs::ReadFile | AccessFs::ReadDir
    } else {
        BitFlags::from(AccessFs::ReadFile)
    };
    match grant {
        Grant::Read => read,
        Grant::Execute => read | AccessFs::Execute,
        Grant::Write | Grant::WriteSockets => {
            let mut w = read | AccessFs::WriteFile | AccessFs::Truncate;
            if is_dir {
                w |= AccessFs::RemoveFile
                    | AccessFs::RemoveDir
                    | AccessFs::MakeDir
                    | AccessFs::MakeReg
                    | AccessFs::Refer;
                if grant == Grant::WriteSockets {
                    w |= AccessFs::MakeSock;
                }
            }
            w
        }
    }
}

fn names<T: std::fmt::Debug + landlock::Access>(flags: BitFlags<T>) -> Vec<String> {
    flags.iter().map(|f| format!("{f:?}")).collect()
}

/// The rules of a profile for the given paths (host paths or placeholders).
/// `is_dir` decides file vs directory rights; for placeholders pass `None`
/// to list directory rights.
pub fn plan(
    profile: ProfileName,
    read_paths: &[(String, Option<bool>)],
    write_dirs: &[String],
    exec_paths: &[(String, Grant)],
    abi: ABI,
) -> Vec<RuleDesc> {
    let all = AccessFs::from_all(abi);
    let write_grant = if profile == ProfileName::LlamaServer {
        Grant::WriteSockets
    } else {
        Grant::Write
    };
    let mut out = Vec::new();
    let mut push = |path: &str, grant: Grant, is_dir: bool| {
        out.push(RuleDesc {
            path: path.to_string(),
            grant,
            rights: names(grant_rights(grant, is_dir) & all),
        });
    };
    for (p, d) in read_paths {
        push(p, Grant::Read, d.unwrap_or(true));
    }
    for p in write_dirs {
        push(p, write_grant, true);
    }
    for (p, g) in exec_paths {
        push(p, *g, false);
    }
    out
}

/// Build and enforce the ruleset on the calling thread. `rules` are paths
/// inside the sandbox (after `pivot_root`).
pub fn apply(
    profile: ProfileName,
    read_paths: &[PathBuf],
    write_dirs: &[PathBuf],
    exec_paths: &[(PathBuf, Grant)],
    connect: &[u16],
    waivers: &Waivers,
) -> Result<LandlockApplied, SandboxError> {
    let kabi = kernel_abi();
    let abi = crate_abi(kabi);
    let ports = connect_ports(profile, connect)?;
    let is_dir = |p: &Path| std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false);
    let read_desc: Vec<(String, Option<bool>)> = read_paths
        .iter()
        .map(|p| (p.display().to_string(), Some(is_dir(p))))
        .collect();
    let write_desc: Vec<String> = write_dirs.iter().map(|p| p.display().to_string()).collect();
    let exec_desc: Vec<(String, Grant)> = exec_paths
        .iter()
        .map(|(p, g)| (p.display().to_string(), *g))
        .collect();
    let rules = plan(profile, &read_desc, &write_desc, &exec_desc, abi);
    if kabi <= 0 {
        if waivers.landlock {
            return Ok(LandlockApplied {
                kernel_abi: kabi,
                abi: 0,
                waived: true,
                handled_fs: Vec::new(),
                handled_net: Vec::new(),
                scopes: Vec::new(),
                connect_ports: ports,
                rules,
            });
        }
        return Err(SandboxError::LandlockUnavailable { abi: kabi });
    }
    let ll_err = |path: &str, e: &dyn std::fmt::Display| SandboxError::Landlock {
        path: path.to_string(),
        detail: e.to_string(),
    };
    let handled_fs = AccessFs::from_all(abi);
    let handled_net = if abi_number(abi) >= 4 {
        AccessNet::from_all(abi)
    } else {
        BitFlags::EMPTY
    };
    let scopes = if abi_number(abi) >= 6 {
        Scope::from_all(abi)
    } else {
        BitFlags::EMPTY
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled_fs)
        .map_err(|e| ll_err("<ruleset>", &e))?;
    if !handled_net.is_empty() {
        ruleset = ruleset
            .handle_access(handled_net)
            .map_err(|e| ll_err("<ruleset>", &e))?;
    }
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(|e| ll_err("<ruleset>", &e))?;
    }
    let mut created = ruleset.create().map_err(|e| ll_err("<ruleset>", &e))?;
    let write_grant = if profile == ProfileName::LlamaServer {
        Grant::WriteSockets
    } else {
        Grant::Write
    };
    let mut grants: Vec<(&Path, Grant)> = Vec::new();
    grants.extend(read_paths.iter().map(|p| (p.as_path(), Grant::Read)));
    grants.extend(write_dirs.iter().map(|p| (p.as_path(), write_grant)));
    grants.extend(exec_paths.iter().map(|(p, g)| (p.as_path(), *g)));
    for (path, grant) in grants {
        let shown = path.display().to_string();
        let fd = PathFd::new(path).map_err(|e| ll_err(&shown, &e))?;
        let rights = grant_rights(grant, is_dir(path)) & handled_fs;
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| ll_err(&shown, &e))?;
    }
    for port in &ports {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|e| ll_err(&format!("tcp port {port}"), &e))?;
    }
    let status = created
        .restrict_self()
        .map_err(|e| ll_err("<restrict_self>", &e))?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(SandboxError::LandlockPartial {
            status: format!("{:?}", status.ruleset),
        });
    }
    Ok(LandlockApplied {
        kernel_abi: kabi,
        abi: abi_number(abi),
        waived: false,
        handled_fs: names(handled_fs),
        handled_net: names(handled_net),
        scopes: names(scopes),
        connect_ports: ports,
        rules,
    })
}

#[cfg(test)]
mod connect_port_tests {
    use super::*;

    #[test]
    fn gateway_gets_exactly_the_spec_ports() {
        assert_eq!(
            connect_ports(ProfileName::EgressGateway, &[443, 53, 443]).unwrap(),
            vec![53, 443]
        );
        assert!(connect_ports(ProfileName::EgressGateway, &[])
            .unwrap()
            .is_empty());
        assert!(connect_ports(ProfileName::EgressGateway, &[0]).is_err());
    }

    #[test]
    fn other_profiles_get_none_and_refuse_a_request() {
        for p in [
            ProfileName::ReasoningWorker,
            ProfileName::Executor,
            ProfileName::LlamaServer,
        ] {
            assert!(connect_ports(p, &[]).unwrap().is_empty());
            let e = connect_ports(p, &[443]).unwrap_err().to_string();
            assert!(e.contains("only egress-gateway may"), "{p}: {e}");
        }
    }
}
