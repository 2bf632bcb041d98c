//! The one error type of the sandbox crate. Every message is lower-case, names
//! what failed with its context (path, syscall, errno) and says what to do next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("refusing to enter the sandbox from a process with {threads} threads: landlock binds only the calling thread, so enter before any thread (async runtime, logger) starts")]
    NotSingleThreaded { threads: u32 },

    #[error("{syscall} failed during sandbox {step}: {source} (errno {errno}): run 'flow doctor'", errno = source.raw_os_error().unwrap_or(0))]
    Syscall {
        step: &'static str,
        syscall: &'static str,
        source: std::io::Error,
    },

    #[error("{op} {path} failed: {source} (errno {errno}): check that the path exists and is readable by the sandbox uid", path = path.display(), errno = source.raw_os_error().unwrap_or(0))]
    Path {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("invalid sandbox path {path}: {reason}", path = path.display())]
    InvalidPath { path: PathBuf, reason: &'static str },

    #[error("cannot resolve the ELF dependencies of {path}: {reason}", path = path.display())]
    Elf { path: PathBuf, reason: String },

    #[error("cannot create a user namespace: {source} (errno {errno}): unprivileged user namespaces may be disabled (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, apparmor_restrict_unprivileged_userns); run 'flow doctor'", errno = source.raw_os_error().unwrap_or(0))]
    UserNamespace { source: std::io::Error },

    #[error("refusing to run sandboxed code as host root (run_as uid {uid}): configure a non-root run_as uid/gid")]
    RunAsRoot { uid: u32 },

    #[error("the parent process died during sandbox entry (parent pid was {expected}, now {found}): exiting")]
    ParentDied { expected: i32, found: i32 },

    #[error("landlock is not available (kernel ABI {abi}): boot a kernel with landlock enabled (see 'flow doctor'), or waive it with 'flow up --waive landlock' (the empty mount root and seccomp still confine the filesystem)")]
    LandlockUnavailable { abi: i32 },

    #[error("landlock ruleset for {path} could not be applied: {detail}: run 'flow doctor'")]
    Landlock { path: String, detail: String },

    #[error("landlock was only partially enforced ({status}): refusing to run; run 'flow doctor'")]
    LandlockPartial { status: String },

    #[error("seccomp filter for profile {profile} could not be built: {detail}: this is a bug in flow-sandbox, report it")]
    SeccompBuild { profile: String, detail: String },

    #[error(
        "seccomp filter for profile {profile} could not be installed: {detail}: run 'flow doctor'"
    )]
    SeccompInstall { profile: String, detail: String },

    #[error("exec-once supervision cannot {action}: {source} (errno {errno}): execve stays refused (fail closed); seccomp user notification needs linux 5.5+, run 'flow doctor'", errno = source.raw_os_error().unwrap_or(0))]
    ExecOnce {
        action: &'static str,
        source: std::io::Error,
    },

    #[error("seccomp is not available on this kernel ({detail}): run 'flow doctor'")]
    SeccompUnavailable { detail: String },

    #[error("dropping linux capabilities failed at {set}: {detail}: run 'flow doctor'")]
    Capabilities { set: &'static str, detail: String },

    #[error("attestation of pid {pid} failed at check {check}: found {found}, expected {expected}; the child must be killed")]
    Attestation {
        pid: i32,
        check: String,
        found: String,
        expected: String,
    },

    #[error("attestation of pid {pid} could not read {path}: {source} (errno {errno}): the child exited or /proc is not readable; kill the child", path = path.display(), errno = source.raw_os_error().unwrap_or(0))]
    AttestRead {
        pid: i32,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the {layer} layer is unavailable for profile {profile}: {detail}: {fix}")]
    Preflight {
        profile: String,
        layer: &'static str,
        detail: String,
        fix: &'static str,
    },
}

impl SandboxError {
    /// The last OS error, wrapped with the step and syscall that produced it.
    pub(crate) fn last_os(step: &'static str, syscall: &'static str) -> SandboxError {
        SandboxError::Syscall {
            step,
            syscall,
            source: std::io::Error::last_os_error(),
        }
    }

    pub(crate) fn io(step: &'static str, syscall: &'static str, source: std::io::Error) -> Self {
        SandboxError::Syscall {
            step,
            syscall,
            source,
        }
    }
}
