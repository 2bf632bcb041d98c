//! `flow run` on the broker's side: decide for each AI node whether it can
//! run (model present, memory floor, latency budget, sandbox, circuit
//! breaker), make sure llama-server serves the model, hand the flow to the
//! executor and relay its events to the CLI. **Invariant:** the audit log
//! gets metadata only (run, node, model, tokens, durations, outcome); tokens
//! and outputs pass through memory to the requesting CLI and nowhere else.

use super::Shared;
use crate::models::store::StoredModel;
use proto::bootstrap::send_async;
use proto::flow::{Flow, FlowNodeKind, NodePlan, NodeStatus, RunEvent, RunId, SkipReason};
use proto::msg::{BrokerMsg, Component, ComponentState, ControlError, ControlResponse};
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::Arc;

fn failed(msg: impl Into<String>) -> ControlResponse {
    ControlResponse::Error(ControlError::Failed(msg.into()))
}

/// Plan every AI node. Returns the plan and the model each AI node uses.
async fn plan(
    shared: &Arc<Shared>,
    flow: &Flow,
) -> Result<(Vec<(String, NodePlan)>, HashMap<String, StoredModel>), String> {
    let mut plan = Vec::new();
    let mut models = HashMap::new();
    let mut serving: Option<StoredModel> = None;
    for node in &flow.nodes {
        let FlowNodeKind::Ai {
            model,
            params,
            latency_budget_ms,
            ..
        } = &node.kind
        else {
            continue;
        };
        if shared.store.get(model, None).is_none() && shared.effective().hub_enabled() {
            // First use of a missing model: pull it from the hub. A failure
            // is audited and the node is skipped as ModelMissing below.
            if let Err(e) = super::pull::pull(shared, model, None, |_, _| {}).await {
                eprintln!("flow: pulling model '{model}' on first use failed: {e}");
            }
        }
        let decision = match decide(
            shared,
            model,
            params.max_tokens,
            *latency_budget_ms,
            &serving,
        ) {
            Ok(stored) => {
                if serving.is_none() {
                    match super::llama::ensure(shared, &stored).await {
                        Ok(_) => {
                            serving = Some(stored.clone());
                            models.insert(node.id.clone(), stored);
                            NodePlan::Run
                        }
                        Err(super::llama::LlamaError::CircuitOpen { .. }) => {
                            NodePlan::Skip(SkipReason::CircuitOpen)
                        }
                        Err(e) => {
                            eprintln!("flow: llama-server unavailable: {e}");
                            NodePlan::Skip(SkipReason::SandboxUnavailable)
                        }
                    }
                } else {
                    models.insert(node.id.clone(), stored);
                    NodePlan::Run
                }
            }
            Err(reason) => NodePlan::Skip(reason),
        };
        if let (NodePlan::Skip(_), Some(m)) = (&decision, shared.store.get(model, None)) {
            models.insert(node.id.clone(), m);
        }
        plan.push((node.id.clone(), decision));
    }
    Ok((plan, models))
}

fn decide(
    shared: &Arc<Shared>,
    model: &str,
    max_tokens: u32,
    budget_ms: Option<u32>,
    serving: &Option<StoredModel>,
) -> Result<StoredModel, SkipReason> {
    let stored = shared
        .store
        .get(model, None)
        .ok_or(SkipReason::ModelMissing)?;
    if let Some(s) = serving {
        if s.id != stored.id || s.version != stored.version {
            // One llama-server per user serves one model at a time.
            return Err(SkipReason::ModelMissing);
        }
    }
    if !shared.llama_sandbox_ok {
        return Err(SkipReason::SandboxUnavailable);
    }
    let avail = crate::models::mem_available_mb().unwrap_or(0);
    let floor = shared
        .effective()
        .memory_floor_mb(stored.id.as_str(), stored.entry.memory_floor_mb);
    if avail < floor {
        return Err(SkipReason::BelowMemoryFloor);
    }
    let tps = shared
        .llama
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tokens_per_sec;
    if let (Some(budget), Some(tps)) = (budget_ms, tps) {
        if tps > 0.0 && f64::from(max_tokens) / tps * 1000.0 > f64::from(budget) {
            return Err(SkipReason::LatencyBudget);
        }
    }
    if shared.llama.lock().unwrap_or_else(|p| p.into_inner()).state
        == Some(ComponentState::CircuitOpen)
    {
        return Err(SkipReason::CircuitOpen);
    }
    Ok(stored)
}

/// Serve one `flow run`: stream responses into `out` until the run
/// finishes. The run goes on if the CLI goes away; its results stay in the
/// spool.
pub async fn serve(
    shared: Arc<Shared>,
    flow: Flow,
    inputs: Vec<(String, String)>,
    out: tokio::sync::mpsc::UnboundedSender<ControlResponse>,
) {
    let shared = &shared;
    let send = |r: ControlResponse| {
        let ok = out.send(r).is_ok();
        async move { ok }
    };
    if let Err(p) = executor::format::validate(&flow) {
        send(failed(format!("invalid flow: {p}"))).await;
        return;
    }
    if let Err(e) = executor::run::check_inputs(&flow, &inputs) {
        send(failed(e.to_string())).await;
        return;
    }
    // A flow file's [settings] apply to this run only; a key the enterprise
    // policy locks is refused and audited.
    let with_flow = shared.effective().with_flow_settings(&flow.settings);
    let eff = match with_flow {
        Ok(e) => e,
        Err(e) => {
            // A locked key, or a flow trying to widen egress: both refused
            // and audited.
            if let crate::policy::PolicyError::Locked { key, .. }
            | crate::policy::PolicyError::FlowFileWidens { key, .. } = &e
            {
                shared.audit.setting_refused(
                    crate::policy::audit_key(key).as_str(),
                    audit::SettingSource::FlowFile,
                );
            }
            send(failed(format!("invalid flow: {e}"))).await;
            return;
        }
    };
    let services = match crate::services::plan_services(&flow, &eff, &shared.services, &|name| {
        shared.credential_present(name)
    }) {
        Ok(s) => s,
        Err(e) => {
            send(failed(format!("invalid flow: {e}"))).await;
            return;
        }
    };
    let Some(exec_boot) = shared
        .state()
        .comps
        .get(&Component::Executor)
        .filter(|s| s.state == ComponentState::Running)
        .and_then(|s| s.bootstrap.clone())
    else {
        send(ControlResponse::Error(ControlError::ComponentUnavailable(
            Component::Executor,
        )))
        .await;
        return;
    };
    let (plan, models) = match plan(shared, &flow).await {
        Ok(p) => p,
        Err(e) => {
            send(failed(e)).await;
            return;
        }
    };
    // One Egress capability per service node, on its one connection, with
    // the taint the broker computed (the holder cannot change either).
    let mut egress = Vec::new();
    if !services.is_empty() {
        // Credentials may have changed since the gateway was configured.
        if let Err(e) = super::gateway::configure(shared).await {
            send(failed(format!("service nodes cannot run: {e}"))).await;
            return;
        }
    }
    for sp in &services {
        let granted = super::gateway::grant(
            shared,
            Component::Executor,
            vec![sp.service.clone()],
            sp.body_from_ai,
        )
        .await;
        let (grant, fd) = match granted {
            Ok(g) => g,
            Err(e) => {
                revoke_all(shared, &egress).await;
                send(failed(format!(
                    "service node '{}' cannot run: {e}",
                    sp.node
                )))
                .await;
                return;
            }
        };
        let id = grant.id;
        egress.push((sp.node.clone(), id));
        if send_async(&exec_boot, &BrokerMsg::Grant(vec![grant]), &[fd.as_fd()])
            .await
            .is_err()
        {
            revoke_all(shared, &egress).await;
            send(ControlResponse::Error(ControlError::ComponentUnavailable(
                Component::Executor,
            )))
            .await;
            return;
        }
    }
    let run = executor::spool::fresh_run_id();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    shared.state().runs.insert(run.clone(), tx);
    let nodes = flow.nodes.len() as u32;
    let msg = BrokerMsg::Run {
        egress: egress.clone(),
        run: run.clone(),
        flow: flow.clone(),
        inputs,
        plan,
    };
    if send_async(&exec_boot, &msg, &[]).await.is_err() {
        shared.state().runs.remove(&run);
        revoke_all(shared, &egress).await;
        send(ControlResponse::Error(ControlError::ComponentUnavailable(
            Component::Executor,
        )))
        .await;
        return;
    }
    // Audited right after the hand-off, so the log's fsync overlaps the
    // executor's start instead of delaying the first token.
    shared.audit.run_started(&run, nodes);
    while let Some(ev) = rx.recv().await {
        if let RunEvent::NodeFinished(s) = &ev {
            if let Some(m) = models.get(&s.node) {
                shared.audit.ai_node(&run, (&m.id, &m.version), s);
                if s.status == NodeStatus::Ok && s.generated_tokens > 0 {
                    let gen_ms = s.duration_ms.saturating_sub(s.first_token_ms.unwrap_or(0));
                    if gen_ms > 0 {
                        let tps = f64::from(s.generated_tokens) * 1000.0 / gen_ms as f64;
                        shared
                            .llama
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .tokens_per_sec = Some(tps);
                    }
                }
            }
        }
        let finished = matches!(ev, RunEvent::Finished { .. });
        if let RunEvent::Finished { ok, .. } = &ev {
            shared.audit.run_finished(&run, *ok);
        }
        send(ControlResponse::RunEvent(ev)).await;
        if finished {
            break;
        }
    }
    shared.state().runs.remove(&run);
    revoke_all(shared, &egress).await;
    // Retention is applied after a run, off the path of its first token.
    let shared2 = shared.clone();
    let _ = tokio::task::spawn_blocking(move || prune_spool(&shared2)).await;
}

async fn revoke_all(shared: &Arc<Shared>, egress: &[(String, proto::msg::CapId)]) {
    for (_, id) in egress {
        super::gateway::revoke(shared, *id).await;
    }
}

/// Remove a run from the spool (the broker can read the executor's spool;
/// the executor is not involved).
pub fn remove(shared: &Arc<Shared>, run: &RunId) -> ControlResponse {
    let spool = match executor::spool::Spool::open(&shared.paths.spool()) {
        Ok(s) => s,
        Err(e) => return failed(e.to_string()),
    };
    match spool.remove(run) {
        Ok(()) => {
            shared.audit.run_removed(run);
            ControlResponse::Ok
        }
        Err(e) => failed(e.to_string()),
    }
}

/// Apply the retention setting before each run.
fn prune_spool(shared: &Arc<Shared>) {
    let days = shared.effective().retention_days();
    if days == 0 {
        return;
    }
    if let Ok(spool) = executor::spool::Spool::open(&shared.paths.spool()) {
        if let Ok(report) = spool.prune(std::time::Duration::from_secs(u64::from(days) * 86_400)) {
            for run in &report.removed_runs {
                shared.audit.run_removed(run);
            }
        }
    }
}
