//! Flow's sandbox: the only crate that knows namespaces, landlock, seccomp and
//! Linux capabilities.
//!
//! **Invariant:** every sandboxed process — production spawns and
//! `flow sandbox run` alike — enters its profile through [`enter`], which applies
//! the steps in this order (and nowhere else):
//!
//! 0. precondition: the process has exactly one thread (landlock binds only
//!    the calling thread), else fail closed
//! 1. close every fd but 0, 1, 2 and the declared ones; stdin from `/dev/null`
//! 2. `setsid`
//! 3. clear the environment
//! 4. plan the mounts (declared paths; for the exec allowance its ELF
//!    interpreter and libraries); when running as root, clone those mount
//!    trees while root can still reach them, then switch to the configured
//!    non-root host uid/gid (`setgroups([])`, `setresgid`, `setresuid`)
//! 5. new user, net (unless the profile keeps the host's), ipc, uts and mount
//!    namespaces with an identity uid/gid map; parent-death signal re-armed and
//!    the parent checked alive; hostname `flow-sandbox`; the mount namespace
//!    gets an empty read-only tmpfs root holding only the declared paths at
//!    their host paths (no `/proc`, `/dev`, `/sys`, no host filesystem)
//! 6. rlimits (`RLIMIT_CORE` 0, `RLIMIT_NOFILE` 1024)
//! 7. drop every Linux capability (all five sets zero)
//! 8. `no_new_privs`
//! 9. landlock at the highest ABI the kernel has (TCP bind/connect handled
//!    where ABI ≥ 4, connect granted only to the gateway's `connect_ports`,
//!    abstract-socket and signal scoping where ABI ≥ 6)
//! 10. the profile's seccomp allowlist ([`seccomp`])
//! 11. exec variant only: the exec-once listener filter ([`exec_once`]):
//!     `execve`/`execveat` become user notifications, answered by a
//!     supervisor outside the sandbox — the first (our own `execve` of the
//!     command) continues, every later one gets `EPERM`, and with no
//!     supervisor the kernel answers `ENOSYS`. The listener is returned in
//!     [`Applied::exec_listener`]; `flow sandbox run` passes it to its parent.
//!     An exec-variant process so shows two more `Seccomp_filters` than its
//!     parent.
//!
//! Attestation happens from the outside, in the broker, through [`attest`].
//! `flow sandbox show` prints [`describe`]; `flow doctor` prints
//! [`doctor::host_report`].

pub mod attest;
pub mod describe;
pub mod doctor;
pub mod elfdeps;
pub mod entry;
pub mod error;
pub mod exec_once;
pub mod landlock_rules;
pub mod profile;
pub mod seccomp;
mod sys;

pub use attest::{attest, expected_for, AttestReport, Expected, FdPolicy};
pub use describe::{describe, ProfileDescription};
pub use entry::{enter, exec_allowed, Applied};
pub use error::SandboxError;
pub use profile::{Layer, ProfileName, Spec, Waivers};
