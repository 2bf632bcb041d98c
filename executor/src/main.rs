//! `flow-executor`: runs flow graphs. At this stage it holds one capability,
//! the client end of the reasoning channel, and serves the broker's ping
//! requests over it.
//!
//! **Invariant:** the sandbox is entered on the first line of `main`, before
//! any thread or runtime exists (`component::start`).

use proto::bootstrap::{pair_grants, recv_async, send_async, BOOTSTRAP_MAX_FRAME};
use proto::channel::Channel;
use proto::msg::{
    BrokerMsg, CapGrant, CapId, CapKind, CapRole, ChildMsg, Component, ReasoningRequest,
    ReasoningResponse, ServiceError, ServiceKind,
};
use sandbox::ProfileName;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

fn main() {
    let started = match component::start(Component::Executor, ProfileName::Executor) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flow-executor: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow-executor: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(run(started));
    std::process::exit(code);
}

struct Reasoning {
    id: CapId,
    ch: Channel<UnixStream>,
}

async fn connect(grant: &CapGrant, fd: OwnedFd) -> Option<Reasoning> {
    if grant.kind != CapKind::Reasoning || grant.role != CapRole::Client {
        return None;
    }
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream.set_nonblocking(true).ok()?;
    let stream = UnixStream::from_std(std_stream).ok()?;
    let ch = tokio::time::timeout(
        Duration::from_secs(5),
        Channel::handshake(stream, ServiceKind::Reasoning),
    )
    .await
    .ok()?
    .ok()?;
    Some(Reasoning { id: grant.id, ch })
}

async fn run(started: component::Started) -> i32 {
    let Ok(boot) = rustix::io::ioctl_fionbio(&started.bootstrap, true)
        .map_err(std::io::Error::from)
        .and_then(|()| proto::bootstrap::async_fd(started.bootstrap))
    else {
        eprintln!("flow-executor: cannot watch the bootstrap channel");
        return 2;
    };
    let mut reasoning: Option<Reasoning> = None;
    for (g, fd) in started.grants {
        if let Some(r) = connect(&g, fd).await {
            reasoning = Some(r);
        }
    }
    let mut next_id: u64 = 0;
    loop {
        let (msg, fds) = match recv_async::<BrokerMsg>(&boot, BOOTSTRAP_MAX_FRAME).await {
            Ok(m) => m,
            Err(proto::ProtoError::Closed) => return 0,
            Err(e) => {
                eprintln!("flow-executor: bootstrap channel: {e}");
                return 3;
            }
        };
        match msg {
            BrokerMsg::Grant(grants) => {
                let Ok(pairs) = pair_grants(grants, fds) else {
                    eprintln!("flow-executor: grant without matching descriptors; ignored");
                    continue;
                };
                for (g, fd) in pairs {
                    if let Some(r) = connect(&g, fd).await {
                        reasoning = Some(r);
                    }
                }
            }
            BrokerMsg::Revoke(id) => {
                if reasoning.as_ref().is_some_and(|r| r.id == id) {
                    reasoning = None;
                }
            }
            BrokerMsg::Ping { count, payload } => {
                let reply = match reasoning.as_mut() {
                    None => ChildMsg::PingFailed(ServiceError::Unavailable),
                    Some(r) => match ping(r, count, &payload, &mut next_id).await {
                        Ok(nanos) => ChildMsg::Pinged {
                            count,
                            total_nanos: nanos,
                        },
                        Err(e) => {
                            if matches!(e, ServiceError::BadRequest) {
                                let _ = send_async(&boot, &ChildMsg::MalformedPeer { cap: r.id }, &[]).await;
                            }
                            reasoning = None;
                            ChildMsg::PingFailed(e)
                        }
                    },
                };
                if send_async(&boot, &reply, &[]).await.is_err() {
                    return 3;
                }
            }
            BrokerMsg::Run { .. } => {}
            BrokerMsg::Shutdown => return 0,
        }
    }
}

/// `count` sequential round trips; returns the total time in nanoseconds.
async fn ping(
    r: &mut Reasoning,
    count: u32,
    payload: &[u8],
    next_id: &mut u64,
) -> Result<u64, ServiceError> {
    let t0 = Instant::now();
    for _ in 0..count {
        *next_id += 1;
        let id = *next_id;
        r.ch
            .send(&ReasoningRequest::Ping {
                id,
                payload: payload.to_vec(),
            })
            .await
            .map_err(|_| ServiceError::Unavailable)?;
        match r.ch.recv::<ReasoningResponse>().await {
            Ok(ReasoningResponse::Pong { id: got, payload: p }) if got == id && p == payload => {}
            Ok(ReasoningResponse::Error { error, .. }) => return Err(error),
            Ok(_) => return Err(ServiceError::BadRequest),
            Err(proto::ProtoError::Closed) | Err(proto::ProtoError::Io { .. }) => {
                return Err(ServiceError::Unavailable)
            }
            Err(_) => return Err(ServiceError::BadRequest),
        }
    }
    Ok(t0.elapsed().as_nanos() as u64)
}
