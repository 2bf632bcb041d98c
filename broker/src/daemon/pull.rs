//! Model Hub downloads on the broker's side: `flow models pull` and the pull
//! of a missing model on first use. The broker is the holder: it mints
//! itself an `Egress` capability on the `hub` connection for one download,
//! streams the bytes into the store's partial file and revokes the
//! capability when done. The hub logic (trusted digests, resume, verify)
//! lives in `crate::models::hub`.

use super::gateway::{self, HUB_CONNECTION};
use super::Shared;
use crate::models::store::StoredModel;
use proto::msg::{Component, ControlError, ControlResponse};
use std::sync::Arc;

/// Download `id[@version]` from the hub; `progress` gets (done, total).
/// Audits the outcome (`model-pulled` or `model-pull-failed`).
pub async fn pull(
    shared: &Arc<Shared>,
    id: &str,
    version: Option<&str>,
    progress: impl FnMut(u64, u64) + Send + 'static,
) -> Result<StoredModel, String> {
    let fail = |reason: audit::PullFailure, msg: String| {
        shared.audit.model_pull_failed(id, version, reason);
        Err(msg)
    };
    if !shared.effective().hub_enabled() {
        return fail(
            audit::PullFailure::HubDisabled,
            format!(
                "the Model Hub is disabled ({}): import the model from a file with 'flow models import FILE'",
                shared.effective().describe_key("hub.enabled")
            ),
        );
    }
    let (grant, client_end) = match gateway::grant(
        shared,
        Component::Broker,
        vec![HUB_CONNECTION.into()],
        false,
    )
    .await
    {
        Ok(g) => g,
        Err(e) => return fail(audit::PullFailure::HubDisabled, e.to_string()),
    };
    let cap = grant.id;
    let shared2 = shared.clone();
    let (id2, version2) = (id.to_owned(), version.map(str::to_owned));
    // The hub client is written for a single-threaded runtime; run it on its
    // own, off the broker's worker threads.
    // Only the failure kind and its message cross back from the task.
    let io = |e: std::io::Error| (audit::PullFailure::Transfer, e.to_string());
    let result = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io)?;
        rt.block_on(async move {
            let std_stream = std::os::unix::net::UnixStream::from(client_end);
            std_stream.set_nonblocking(true).map_err(io)?;
            let stream = tokio::net::UnixStream::from_std(std_stream).map_err(io)?;
            let chan = proto::channel::Channel::handshake_with_max_frame(
                stream,
                proto::msg::ServiceKind::Egress,
                proto::egress::EGRESS_MAX_FRAME,
            )
            .await
            .map_err(|e| (audit::PullFailure::Transfer, e.to_string()))?;
            let mut transport = crate::models::hub::EgressHub::new(chan);
            let eff = shared2.effective().clone();
            let mut progress = progress;
            crate::models::hub::pull(
                &mut transport,
                &shared2.store,
                &shared2.catalog,
                &eff,
                &id2,
                version2.as_deref(),
                &mut progress,
            )
            .await
            .map_err(|e| (e.failure(), e.to_string()))
        })
    })
    .await;
    gateway::revoke(shared, cap).await;
    match result {
        Ok(Ok(outcome)) => {
            // Already in the store with the trusted digest: nothing moved.
            if !outcome.already_present {
                shared
                    .audit
                    .model_pulled(&outcome.model, outcome.bytes, outcome.resumed_from);
            }
            if rustix::process::geteuid().is_root() {
                // llama-server (sandbox uid) must reach the file.
                super::make_traversable(shared.store.dir());
            }
            Ok(outcome.model)
        }
        Ok(Err((failure, message))) => fail(failure, message),
        Err(_) => fail(
            audit::PullFailure::Transfer,
            "the download task failed: run 'flow models pull' again to resume".into(),
        ),
    }
}

/// `flow models pull`: progress frames, then the stored model's row.
pub async fn serve(
    shared: Arc<Shared>,
    id: String,
    version: Option<String>,
    out: tokio::sync::mpsc::UnboundedSender<ControlResponse>,
) {
    let tx = out.clone();
    let mut last = std::time::Instant::now();
    let progress = move |done: u64, total: u64| {
        // At most ~10 frames a second, and always the last one.
        if done == total || last.elapsed() >= std::time::Duration::from_millis(100) {
            last = std::time::Instant::now();
            let _ = tx.send(ControlResponse::PullProgress { done, total });
        }
    };
    let resp = match pull(&shared, &id, version.as_deref(), progress).await {
        Ok(m) => ControlResponse::Models(vec![super::control::row(&m, Some(true))]),
        Err(e) => ControlResponse::Error(ControlError::Failed(e)),
    };
    let _ = out.send(resp);
}
