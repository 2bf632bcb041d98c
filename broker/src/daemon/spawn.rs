//! The spawner: one long-lived thread that performs every fork of the broker.
//!
//! **Why one thread:** `PR_SET_PDEATHSIG` fires when the *thread* that forked
//! the child exits, not the process. All children are forked here and this
//! thread lives as long as the broker, so a broker that dies (even by SIGKILL)
//! takes every component with it.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

/// A child that was just forked and exec'd; nothing granted yet.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// Held since spawn: attestation and signals go through it, so a recycled
    /// pid can never be confused with our child.
    pub pidfd: OwnedFd,
    /// The broker's end of the child's bootstrap channel.
    pub bootstrap: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

#[derive(Debug)]
pub struct SpawnRequest {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub reply: tokio::sync::oneshot::Sender<std::io::Result<Spawned>>,
}

/// Handle to the spawner thread.
#[derive(Debug, Clone)]
pub struct Spawner {
    tx: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    pub fn start() -> std::io::Result<Spawner> {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("flow-spawner".into())
            .spawn(move || {
                // Lives until every sender is gone, i.e. until the broker exits.
                while let Ok(req) = rx.recv() {
                    let r = spawn_one(&req.program, &req.args);
                    let _ = req.reply.send(r);
                }
                // Keep the thread (and so the children's parent-death binding)
                // alive until the process exits.
                loop {
                    std::thread::park();
                }
            })?;
        Ok(Spawner { tx })
    }

    pub async fn spawn(&self, program: PathBuf, args: Vec<OsString>) -> std::io::Result<Spawned> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(SpawnRequest {
                program,
                args,
                reply,
            })
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
    }
}

fn spawn_one(program: &PathBuf, args: &[OsString]) -> std::io::Result<Spawned> {
    let (parent_end, child_end) =
        proto::fdpass::seqpacket_pair().map_err(|e| std::io::Error::other(e.to_string()))?;
    let child_raw = child_end.as_raw_fd();
    let broker_pid = std::process::id() as libc::pid_t;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs between fork and exec in the child and only
    // makes async-signal-safe system calls (prctl, getppid, dup2, fcntl, _exit);
    // it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The broker may have died between fork and prctl.
            if libc::getppid() != broker_pid {
                libc::_exit(1);
            }
            if child_raw == proto::bootstrap::BOOTSTRAP_FD {
                if libc::fcntl(child_raw, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(child_raw, proto::bootstrap::BOOTSTRAP_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(child_end);
    let pid = child.id() as i32;
    let pidfd = match rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).ok_or_else(|| std::io::Error::other("pid 0"))?,
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
    };
    let stdout = child
        .stdout
        .take()
        .map(OwnedFd::from)
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    let stderr = child
        .stderr
        .take()
        .map(OwnedFd::from)
        .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
    // Dropping `Child` neither kills nor waits: the broker reaps through the
    // pidfd (waitid P_PIDFD).
    drop(child);
    Ok(Spawned {
        pid,
        pidfd,
        bootstrap: parent_end,
        stdout,
        stderr,
    })
}
