//! `flow-reasoning-worker`: the zero-capability worker. It owns nothing: it
//! serves requests arriving on capability channels the broker handed it, and
//! enforces the rights the broker attached to each channel.
//!
//! **Invariant:** it never calls `socket` or `connect` (its seccomp allowlist
//! has neither); every channel it uses arrived by `SCM_RIGHTS`.

use proto::bootstrap::{pair_grants, recv_async, send_async, BOOTSTRAP_MAX_FRAME};
use proto::channel::Channel;
use proto::msg::{
    BrokerMsg, CapGrant, CapKind, CapRole, ChildMsg, Component, ReasoningRequest,
    ReasoningResponse, Right, ServiceError, ServiceKind,
};
use sandbox::ProfileName;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;

fn main() {
    let started = match component::start(Component::ReasoningWorker, ProfileName::ReasoningWorker) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flow-reasoning-worker: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow-reasoning-worker: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(run(started));
    std::process::exit(code);
}

async fn run(started: component::Started) -> i32 {
    let Ok(boot) = rustix::io::ioctl_fionbio(&started.bootstrap, true)
        .map_err(std::io::Error::from)
        .and_then(|()| proto::bootstrap::async_fd(started.bootstrap))
    else {
        eprintln!("flow-reasoning-worker: cannot watch the bootstrap channel");
        return 2;
    };
    let boot = std::rc::Rc::new(boot);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            for (g, fd) in started.grants {
                serve_grant(&boot, g, fd);
            }
            loop {
                let (msg, fds) = match recv_async::<BrokerMsg>(&boot, BOOTSTRAP_MAX_FRAME).await {
                    Ok(m) => m,
                    Err(proto::ProtoError::Closed) => return 0,
                    Err(e) => {
                        eprintln!("flow-reasoning-worker: bootstrap channel: {e}");
                        return 3;
                    }
                };
                match msg {
                    BrokerMsg::Grant(grants) => match pair_grants(grants, fds) {
                        Ok(pairs) => {
                            for (g, fd) in pairs {
                                serve_grant(&boot, g, fd);
                            }
                        }
                        Err(_) => eprintln!(
                            "flow-reasoning-worker: grant without matching descriptors; ignored"
                        ),
                    },
                    // The broker already shut the channel; its task sees EOF.
                    BrokerMsg::Revoke(_) => {}
                    BrokerMsg::Ping { .. } | BrokerMsg::Run { .. } => {}
                    BrokerMsg::Shutdown => return 0,
                }
            }
        })
        .await
}

fn serve_grant(boot: &std::rc::Rc<AsyncFd<OwnedFd>>, grant: CapGrant, fd: OwnedFd) {
    if grant.kind != CapKind::Reasoning || grant.role != CapRole::Server {
        return;
    }
    let boot = boot.clone();
    tokio::task::spawn_local(async move {
        if let Err(malformed) = serve(grant.clone(), fd).await {
            if malformed {
                let _ = send_async(&boot, &ChildMsg::MalformedPeer { cap: grant.id }, &[]).await;
            }
        }
    });
}

/// Serve one reasoning channel until EOF. `Err(true)` means the client sent a
/// malformed frame and was cut off.
async fn serve(grant: CapGrant, fd: OwnedFd) -> Result<(), bool> {
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true).map_err(|_| false)?;
    let stream = UnixStream::from_std(std_stream).map_err(|_| false)?;
    let mut ch = tokio::time::timeout(
        Duration::from_secs(5),
        Channel::handshake(stream, ServiceKind::Reasoning),
    )
    .await
    .map_err(|_| false)?
    .map_err(|_| true)?;
    // Rights come from the broker's grant, never from the client's messages.
    let rights = grant.rights;
    loop {
        let req: ReasoningRequest = match ch.recv().await {
            Ok(r) => r,
            Err(proto::ProtoError::Closed) | Err(proto::ProtoError::Io { .. }) => return Ok(()),
            Err(_) => return Err(true),
        };
        let resp = match req {
            ReasoningRequest::Ping { id, payload } => {
                if rights.contains(&Right::Ping) {
                    ReasoningResponse::Pong { id, payload }
                } else {
                    ReasoningResponse::Error {
                        id,
                        error: ServiceError::NotPermitted(Right::Ping),
                    }
                }
            }
            ReasoningRequest::Infer { id, .. } | ReasoningRequest::Cancel { id } => {
                ReasoningResponse::Error {
                    id,
                    error: ServiceError::Unavailable,
                }
            }
        };
        if ch.send(&resp).await.is_err() {
            return Ok(());
        }
    }
}
