//! The control socket: `$XDG_RUNTIME_DIR/flow/control.sock` in a 0700
//! directory, served with `interprocess`. **Invariant:** only a peer with the
//! broker's own uid is served; anyone else is refused and audited.

use super::Shared;
use crate::paths::Paths;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::traits::StreamCommon as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use proto::bootstrap::send_async;
use proto::channel::Channel;
use proto::msg::{
    BrokerMsg, ChildMsg, Component, ControlError, ControlRequest, ControlResponse, ServiceKind,
};
use std::sync::Arc;
use std::time::Duration;

pub type Listener = interprocess::local_socket::tokio::Listener;

pub fn bind(paths: &Paths) -> anyhow::Result<Listener> {
    let path = paths.control_socket();
    // A stale socket from a broker that died; `flow up` already checked that
    // no broker answers on it.
    let _ = std::fs::remove_file(&path);
    let name = path.clone().to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    Ok(listener)
}

pub async fn serve(shared: Arc<Shared>, listener: Listener) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("flow: control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(shared, conn).await;
        });
    }
}

async fn handle(shared: Arc<Shared>, conn: Stream) {
    let own = rustix::process::geteuid().as_raw();
    let peer = conn.peer_creds().ok().and_then(|c| c.euid());
    if peer != Some(own) {
        shared.audit.refused_peer(peer.unwrap_or(u32::MAX));
        return;
    }
    let mut ch = match Channel::handshake(conn, ServiceKind::Control).await {
        Ok(ch) => ch,
        Err(e) => {
            shared.audit.malformed_control(&e);
            return;
        }
    };
    loop {
        let req: ControlRequest = match ch.recv().await {
            Ok(r) => r,
            Err(proto::ProtoError::Closed) => return,
            Err(e) => {
                shared.audit.malformed_control(&e);
                return;
            }
        };
        let down = matches!(req, ControlRequest::Down);
        let resp = answer(&shared, req).await;
        if ch.send(&resp).await.is_err() {
            return;
        }
        if down {
            let _ = shared.stopping.send(true);
            return;
        }
    }
}

async fn answer(shared: &Arc<Shared>, req: ControlRequest) -> ControlResponse {
    match req {
        ControlRequest::Status => ControlResponse::Status(shared.status()),
        ControlRequest::Caps => ControlResponse::Caps(shared.state().caps.rows()),
        ControlRequest::Revoke(id) => {
            let ok = shared.state().caps.revoke(id);
            if ok {
                shared.audit.revoked(id);
                ControlResponse::Ok
            } else {
                ControlResponse::Error(ControlError::UnknownCapability(id))
            }
        }
        ControlRequest::Down => ControlResponse::Ok,
        ControlRequest::Ping { count, payload } => ping(shared, count, payload).await,
        ControlRequest::Run { .. }
        | ControlRequest::RunRemove(_)
        | ControlRequest::ModelsList
        | ControlRequest::ModelImport { .. }
        | ControlRequest::ModelVerify { .. }
        | ControlRequest::ModelRemove { .. } => ControlResponse::Error(ControlError::Failed(
            "this broker version does not serve flows or models".into(),
        )),
    }
}

async fn ping(shared: &Arc<Shared>, count: u32, payload: Vec<u8>) -> ControlResponse {
    let _one_at_a_time = shared.ping_lock.lock().await;
    let (boot, rx) = {
        let mut st = shared.state();
        let Some(boot) = st
            .comps
            .get(&Component::Executor)
            .and_then(|s| s.bootstrap.clone())
        else {
            return ControlResponse::Error(ControlError::ComponentUnavailable(Component::Executor));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        st.ping_waiter = Some(tx);
        (boot, rx)
    };
    if send_async(&boot, &BrokerMsg::Ping { count, payload }, &[])
        .await
        .is_err()
    {
        return ControlResponse::Error(ControlError::ComponentUnavailable(Component::Executor));
    }
    match tokio::time::timeout(Duration::from_secs(120), rx).await {
        Ok(Ok(ChildMsg::Pinged { count, total_nanos })) => {
            ControlResponse::Pinged { count, total_nanos }
        }
        Ok(Ok(ChildMsg::PingFailed(_))) | Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
            ControlResponse::Error(ControlError::ComponentUnavailable(
                Component::ReasoningWorker,
            ))
        }
    }
}
