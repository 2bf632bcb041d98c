//! Profiles: what each sandboxed component may do. Pure data; no side effects.

use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// The production profiles. Each has one seccomp allowlist and one landlock
/// rule set, reviewable in `flow sandbox show --profile NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// Zero capability: no socket creation, no filesystem, no exec, no children.
    ReasoningWorker,
    /// The reasoning worker's rules plus read/write of its spool directory.
    Executor,
    /// Keeps the host net namespace (it alone); may create TCP sockets only
    /// (`AF_INET`/`AF_INET6`, `SOCK_STREAM`, protocol 0 or `IPPROTO_TCP`),
    /// whose connects landlock limits to [`Spec::connect_ports`] (the ports
    /// the catalog and the DNS servers name, given at spawn). No UDP: the
    /// gateway resolves names over TCP.
    EgressGateway,
    /// Foreign binary: own empty net namespace, AF_UNIX only, read-only model,
    /// binary and libraries, one writable socket directory.
    LlamaServer,
}

impl ProfileName {
    pub const ALL: [ProfileName; 4] = [
        ProfileName::ReasoningWorker,
        ProfileName::Executor,
        ProfileName::EgressGateway,
        ProfileName::LlamaServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::ReasoningWorker => "reasoning-worker",
            ProfileName::Executor => "executor",
            ProfileName::EgressGateway => "egress-gateway",
            ProfileName::LlamaServer => "llama-server",
        }
    }

    pub fn parse(s: &str) -> Option<ProfileName> {
        ProfileName::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// What sockets the profile may create, for `flow sandbox show`. The
    /// seccomp allowlist ([`crate::seccomp`]) is what enforces it.
    pub fn sockets(self) -> &'static str {
        match self {
            ProfileName::ReasoningWorker | ProfileName::Executor => {
                "none: no socket creation; only descriptors the broker passed"
            }
            ProfileName::EgressGateway => {
                "TCP only: socket(AF_INET|AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP); \
                 connect and bind governed by landlock: connect only to the TCP ports \
                 given at spawn (from the catalog at spawn: the connections' ports and the DNS servers' port), \
                 bind to none; no UDP: the gateway resolves names over TCP to the DNS servers the broker names; \
                 no MPTCP/SCTP (landlock does not govern them)"
            }
            ProfileName::LlamaServer => {
                "socket(AF_UNIX, SOCK_STREAM) only, in its own empty net namespace"
            }
        }
    }

    /// Whether the profile keeps the host network namespace.
    pub fn keeps_host_net(self) -> bool {
        matches!(self, ProfileName::EgressGateway)
    }

    /// Namespaces `enter` creates (names as in `/proc/<pid>/ns/`).
    pub fn fresh_namespaces(self) -> Vec<&'static str> {
        let mut v = vec!["user", "mnt", "ipc", "uts"];
        if !self.keeps_host_net() {
            v.push("net");
        }
        v
    }

    /// Namespaces the process keeps sharing with the broker.
    pub fn shared_namespaces(self) -> Vec<&'static str> {
        if self.keeps_host_net() {
            vec!["net"]
        } else {
            Vec::new()
        }
    }

    /// Step 6. Soft and hard limits are set to the same value, so they can
    /// never be raised again. `RLIMIT_NPROC` is not used: it counts every
    /// process of the uid, sandboxed or not, and fork is refused by seccomp
    /// anyway. `RLIMIT_FSIZE` is left as inherited: the executor writes its
    /// spool, and the other profiles cannot open files for writing.
    pub fn rlimits(self) -> Vec<RlimitSpec> {
        vec![
            RlimitSpec {
                name: "RLIMIT_CORE",
                resource: libc::RLIMIT_CORE,
                value: 0,
            },
            RlimitSpec {
                name: "RLIMIT_NOFILE",
                resource: libc::RLIMIT_NOFILE,
                value: 1024,
            },
        ]
    }
}

/// One resource limit applied by `enter` (soft == hard == `value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RlimitSpec {
    pub name: &'static str,
    #[serde(skip)]
    pub resource: libc::__rlimit_resource_t,
    pub value: u64,
}

impl std::fmt::Display for ProfileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Layers of the sandbox that can be named in diagnostics and waivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Landlock,
    UserNamespace,
    NetNamespace,
    MountNamespace,
    Seccomp,
    NoNewPrivs,
    Capabilities,
}

/// Layers an override may waive. Only a layer that another layer covers can be
/// waived: landlock (the empty mount-namespace root and the seccomp allowlist
/// still keep the host filesystem out of reach). Seccomp, `no_new_privs` and the
/// net namespace can never be waived.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waivers {
    pub landlock: bool,
}

impl Waivers {
    pub fn any(&self) -> bool {
        self.landlock
    }
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.landlock {
            v.push("landlock");
        }
        v
    }
}

/// Everything [`crate::enter`] needs to put the calling process in a profile.
#[derive(Debug, Clone)]
pub struct Spec {
    pub profile: ProfileName,
    /// Descriptors beyond 0, 1 and 2 that survive step 1 (e.g. the bootstrap
    /// channel). 0 is replaced by `/dev/null`; 1 and 2 are kept as they are.
    pub keep_fds: Vec<RawFd>,
    /// Files or directories visible read-only inside the sandbox, at the same
    /// path (e.g. the model file). Landlock grants read on exactly these.
    pub read_paths: Vec<PathBuf>,
    /// Directories visible read-write inside the sandbox, at the same path
    /// (the executor's spool, llama-server's fresh socket directory).
    pub write_dirs: Vec<PathBuf>,
    /// The exec allowance: the one binary that may be executed after entry
    /// (`flow sandbox run`, llama-server). Its ELF interpreter and libraries
    /// are made readable; execute is granted on it (and its interpreter) only.
    /// `None` for Rust components, which never exec.
    pub exec: Option<PathBuf>,
    /// Host uid/gid to switch to when running as root (step 4).
    pub run_as: (u32, u32),
    /// TCP ports landlock lets the process connect to (step 9). Only the
    /// egress-gateway profile may have any: the broker passes the ports of
    /// the catalog's connections and of the DNS servers. Empty: every TCP
    /// connect is refused (on landlock ABI >= 4).
    pub connect_ports: Vec<u16>,
    pub waivers: Waivers,
}

/// Default non-root host identity for sandboxed components when the broker
/// runs as root (`nobody`/`nogroup` on Debian).
pub const DEFAULT_RUN_AS: (u32, u32) = (65534, 65534);

impl Spec {
    pub fn new(profile: ProfileName) -> Spec {
        Spec {
            profile,
            keep_fds: Vec::new(),
            read_paths: Vec::new(),
            write_dirs: Vec::new(),
            exec: None,
            run_as: DEFAULT_RUN_AS,
            connect_ports: Vec::new(),
            waivers: Waivers::default(),
        }
    }
}
