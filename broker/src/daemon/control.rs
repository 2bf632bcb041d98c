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
        if let ControlRequest::Run { flow, inputs } = req {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(super::runs::serve(shared.clone(), flow, inputs, tx));
            while let Some(resp) = rx.recv().await {
                if ch.send(&resp).await.is_err() {
                    // The CLI went away; the run task carries on.
                    return;
                }
            }
            continue;
        }
        if let ControlRequest::ModelPull { id, version } = req {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(super::pull::serve(shared.clone(), id, version, tx));
            while let Some(resp) = rx.recv().await {
                if ch.send(&resp).await.is_err() {
                    // The CLI went away; the download finishes (or stops
                    // with its partial file kept for a resume).
                    return;
                }
            }
            continue;
        }
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
        ControlRequest::Run { .. } => ControlResponse::Error(ControlError::Refused),
        ControlRequest::RunRemove(run) => super::runs::remove(shared, &run),
        ControlRequest::ModelsList => models_list(shared, None),
        // PLACEHOLDER(issue 4): filled in by the hub change.
        ControlRequest::ModelPull { .. } => ControlResponse::Error(ControlError::Refused),
        ControlRequest::ConnectionAdd { name, secret } => {
            super::settings_ctl::connection_add(shared, name, secret).await
        }
        ControlRequest::ConnectionList => super::settings_ctl::connection_list(shared).await,
        ControlRequest::ConnectionRemove { name } => {
            super::settings_ctl::connection_remove(shared, name).await
        }
        ControlRequest::SetSetting { key, value } => {
            super::settings_ctl::set_setting(shared, key, value).await
        }
        ControlRequest::ModelImport { path } => {
            let shared2 = shared.clone();
            let r = tokio::task::spawn_blocking(move || {
                shared2
                    .store
                    .import_file(std::path::Path::new(&path), &shared2.catalog)
            })
            .await;
            match r {
                Ok(Ok(m)) => {
                    shared.audit.model_imported(&m);
                    if rustix::process::geteuid().is_root() {
                        // llama-server (sandbox uid) must reach the file.
                        super::make_traversable(shared.store.dir());
                    }
                    ControlResponse::Models(vec![row(&m, None)])
                }
                Ok(Err(e)) => ControlResponse::Error(ControlError::Failed(e.to_string())),
                Err(_) => ControlResponse::Error(ControlError::Refused),
            }
        }
        ControlRequest::ModelVerify { id } => {
            let shared2 = shared.clone();
            let r = tokio::task::spawn_blocking(move || {
                let list = shared2.store.list().map_err(|e| e.to_string())?;
                let mut rows = Vec::new();
                for m in list
                    .into_iter()
                    .filter(|m| id.as_deref().is_none_or(|i| m.id.as_str() == i))
                {
                    let ok = shared2
                        .store
                        .verify(&m.id, &m.version)
                        .map(|o| o.ok())
                        .unwrap_or(false);
                    shared2.audit.model_verified(&m, ok);
                    rows.push(row(&m, Some(ok)));
                }
                Ok::<_, String>(rows)
            })
            .await;
            match r {
                Ok(Ok(rows)) => ControlResponse::Models(rows),
                Ok(Err(e)) => ControlResponse::Error(ControlError::Failed(e)),
                Err(_) => ControlResponse::Error(ControlError::Refused),
            }
        }
        ControlRequest::ModelRemove { id, version } => {
            let Some(m) = shared.store.get(&id, version.as_deref()) else {
                return ControlResponse::Error(ControlError::Failed(format!(
                    "model {id}{} is not in the store: see 'flow models list'",
                    version.map(|v| format!("@{v}")).unwrap_or_default()
                )));
            };
            let serving = shared
                .llama
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .model
                .as_ref()
                .is_some_and(|s| s.id == m.id && s.version == m.version);
            if serving {
                super::llama::stop(shared);
            }
            match shared.store.remove(&m.id, &m.version) {
                Ok(m) => {
                    shared.audit.model_removed(&m);
                    ControlResponse::Models(vec![row(&m, None)])
                }
                Err(e) => ControlResponse::Error(ControlError::Failed(e.to_string())),
            }
        }
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

pub(super) fn row(
    m: &crate::models::store::StoredModel,
    verified: Option<bool>,
) -> proto::msg::ModelRow {
    proto::msg::ModelRow {
        id: m.id.as_str().to_string(),
        version: m.version.as_str().to_string(),
        sha256: m.digest.to_hex(),
        size: m.size,
        memory_floor_mb: m.entry.memory_floor_mb,
        verified,
    }
}

fn models_list(shared: &Arc<Shared>, verified: Option<bool>) -> ControlResponse {
    match shared.store.list() {
        Ok(list) => ControlResponse::Models(list.iter().map(|m| row(m, verified)).collect()),
        Err(e) => ControlResponse::Error(ControlError::Failed(e.to_string())),
    }
}
