//! The broker: the one process that holds authority. It spawns and attests the
//! sandboxed components, mints capabilities (socketpair ends passed with
//! `SCM_RIGHTS`), keeps their table, revokes them, supervises and audits.
//! The `flow` CLI lives here too; it talks to a running broker over the
//! control socket.

pub mod bench;
pub mod cli;
pub mod client;
pub mod connections_cmd;
pub mod credentials;
pub mod daemon;
pub mod doctor;
pub mod models;
pub mod paths;
pub mod policy;
pub mod policy_cmd;
pub mod run_cmd;
pub mod sandbox_cmd;
pub mod services;
pub mod settings;
mod toml_errors;

/// True when `/proc/self/status` says this process has exactly one thread.
pub fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines().any(|l| {
                l.trim() == "Threads:\t1"
                    || l.split_whitespace().collect::<Vec<_>>() == ["Threads:", "1"]
            })
        })
        .unwrap_or(false)
}
