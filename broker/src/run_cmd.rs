//! `flow run`, `flow runs …`, `flow models …` (with `pull`'s progress bar):
//! the CLI side.
//! Tokens go to stdout as they arrive; progress and the summary to stderr
//! (or one JSON document with `--json`).

use crate::client::{connect, describe_error, request};
use crate::paths::Paths;
use anyhow::{bail, Context};
use proto::flow::{NodeStatus, NodeSummary, RunEvent, RunId};
use proto::msg::{ControlRequest, ControlResponse};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn status_text(s: &NodeStatus) -> String {
    match s {
        NodeStatus::Ok => "ok".into(),
        NodeStatus::Skipped(r) => format!("skipped ({})", skip_text(*r)),
        NodeStatus::Failed(e) => format!("failed ({})", fail_text(*e)),
    }
}

fn skip_text(r: proto::flow::SkipReason) -> &'static str {
    use proto::flow::SkipReason as K;
    match r {
        K::ModelMissing => "model not in the store: run 'flow models pull MODEL' (Model Hub) or 'flow models import FILE'",
        K::BelowMemoryFloor => "available memory is below the model's floor",
        K::LatencyBudget => "the measured speed cannot meet the node's latency budget",
        K::SandboxUnavailable => {
            "llama-server cannot run sandboxed here: see 'flow doctor' and the llama-server log"
        }
        K::CircuitOpen => "llama-server failed repeatedly; restart with 'flow down' and 'flow up'",
        K::UpstreamNotDone => "an upstream node did not complete",
    }
}

fn fail_text(e: proto::flow::NodeError) -> &'static str {
    use proto::flow::NodeError as E;
    match e {
        E::ModelServerFailed => "llama-server failed during generation; it is being restarted, run the flow again",
        E::WorkerUnavailable => "the reasoning worker went away during the request; it is being restarted, run the flow again",
        E::TimedOut => "the request timed out",
        E::Cancelled => "cancelled",
        E::Busy => "all model slots are busy; try again",
        E::Spool => "the result could not be written to the spool",
        E::Egress(_) => "the egress gateway refused or failed the request (see 'flow audit' for the decision record)",
        E::HttpStatus(_) => "the service answered with an HTTP error status",
        E::GatewayUnavailable => "the egress gateway is not running; check 'flow policy show' and 'flow status'",
    }
}

fn status_json(s: &NodeStatus) -> serde_json::Value {
    match s {
        NodeStatus::Ok => serde_json::json!("ok"),
        NodeStatus::Skipped(r) => {
            serde_json::json!({"skipped": format!("{r:?}"), "reason": skip_text(*r)})
        }
        NodeStatus::Failed(e) => {
            serde_json::json!({"failed": format!("{e:?}"), "reason": fail_text(*e)})
        }
    }
}

pub fn run(file: &Path, inputs: &[String], json: bool) -> anyhow::Result<i32> {
    let started = Instant::now();
    let flow = executor::format::parse_file(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut pairs = Vec::new();
    for i in inputs {
        let Some((k, v)) = i.split_once('=') else {
            bail!("--input {i}: expected ID=VALUE");
        };
        pairs.push((k.to_string(), v.to_string()));
    }
    executor::run::check_inputs(&flow, &pairs).map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = flow.nodes.len();
    let paths = Paths::from_env()?;
    let mut ch = connect(&paths)?;
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let t_req = Instant::now();
    ch.send(&ControlRequest::Run {
        flow,
        inputs: pairs,
    })?;
    let mut first_token: Option<f64> = None;
    let mut last_token: Option<f64> = None;
    let mut token_events = 0u64;
    let mut done = 0usize;
    let mut summaries: Vec<NodeSummary> = Vec::new();
    let mut run_id: Option<RunId> = None;
    let ok;
    let mut streaming: Option<String> = None;
    let out = std::io::stdout();
    loop {
        let resp: ControlResponse = ch
            .recv()
            .context("the broker closed the connection during the run")?;
        let ev = match resp {
            ControlResponse::RunEvent(ev) => ev,
            ControlResponse::Error(e) => bail!("{}", describe_error(&e)),
            _ => bail!("unexpected answer from the broker"),
        };
        match ev {
            RunEvent::Started { run, .. } => {
                if !json {
                    eprintln!("run {} started ({total} nodes)", run.0);
                }
                run_id = Some(run);
            }
            RunEvent::NodeStarted { node } => {
                if !json {
                    eprintln!("[{}/{total}] {node} …", done + 1);
                }
            }
            RunEvent::Token { node, text } => {
                let at = t_req.elapsed().as_secs_f64() * 1e3;
                first_token.get_or_insert(at);
                last_token = Some(at);
                token_events += 1;
                if !json {
                    let mut o = out.lock();
                    if streaming.as_deref() != Some(node.as_str()) {
                        let _ = writeln!(o);
                        let _ = write!(o, "{node}> ");
                        streaming = Some(node);
                    }
                    let _ = write!(o, "{text}");
                    let _ = o.flush();
                }
            }
            RunEvent::Output { node, text } => {
                if !json {
                    let mut o = out.lock();
                    let _ = writeln!(o);
                    let _ = writeln!(o, "== {node} ==");
                    let _ = writeln!(o, "{text}");
                    streaming = None;
                }
            }
            RunEvent::NodeFinished(s) => {
                done += 1;
                if !json {
                    if streaming.is_some() {
                        let _ = writeln!(out.lock());
                        streaming = None;
                    }
                    eprintln!("[{done}/{total}] {} {}", s.node, status_text(&s.status));
                }
                summaries.push(s);
            }
            RunEvent::Finished { ok: o, .. } => {
                ok = o;
                break;
            }
        }
    }
    let id = run_id.map(|r| r.0).unwrap_or_default();
    if json {
        let nodes: Vec<_> = summaries
            .iter()
            .map(|s| {
                serde_json::json!({
                    "node": s.node,
                    "status": status_json(&s.status),
                    "tokens": s.generated_tokens,
                    "prompt_tokens": s.prompt_tokens,
                    "duration_ms": s.duration_ms,
                    "first_token_ms": s.first_token_ms,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"run": id, "ok": ok, "startup_ms": startup_ms, "nodes": nodes,
                // Measured here, at the client, from writing the request.
                "client": {"first_token_ms": first_token, "last_token_ms": last_token, "token_events": token_events}})
        );
    } else {
        eprintln!();
        eprintln!(
            "run {id}: {}",
            if ok {
                "completed"
            } else {
                "completed with failures"
            }
        );
        eprintln!(
            "{:<20} {:<10} {:>10} {:>8} {:>8}",
            "node", "status", "duration", "tokens", "ttft"
        );
        for s in &summaries {
            let st = match s.status {
                NodeStatus::Ok => "ok".to_string(),
                NodeStatus::Skipped(_) => "skipped".into(),
                NodeStatus::Failed(_) => "FAILED".into(),
            };
            eprintln!(
                "{:<20} {:<10} {:>8}ms {:>8} {:>8}",
                s.node,
                st,
                s.duration_ms,
                s.generated_tokens,
                s.first_token_ms
                    .map(|t| format!("{t}ms"))
                    .unwrap_or_else(|| "-".into())
            );
            if !matches!(s.status, NodeStatus::Ok) {
                eprintln!("    {}", status_text(&s.status));
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn spool() -> anyhow::Result<executor::spool::Spool> {
    let paths = Paths::from_env()?;
    executor::spool::Spool::open(&paths.spool()).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn runs_list(json: bool) -> anyhow::Result<i32> {
    let runs = spool()?.list().map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        let v: Vec<_> = runs
            .iter()
            .map(|r| serde_json::json!({"run": r.id.0, "flow": r.flow, "started_unix_s": r.started_unix_s, "status": format!("{:?}", r.status).to_lowercase()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<18} {:<20} {:<12} started", "run", "flow", "status");
        for r in runs {
            println!(
                "{:<18} {:<20} {:<12} {}",
                r.id.0,
                r.flow.unwrap_or_else(|| "-".into()),
                format!("{:?}", r.status).to_lowercase(),
                r.started_unix_s
            );
        }
    }
    Ok(0)
}

pub fn runs_show(id: &str, json: bool) -> anyhow::Result<i32> {
    let d = spool()?
        .show(&RunId(id.to_string()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        let nodes: Vec<_> = d
            .nodes
            .iter()
            .map(|s| serde_json::json!({"node": s.node, "status": status_json(&s.status), "tokens": s.generated_tokens, "duration_ms": s.duration_ms}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"run": d.info.id.0, "flow": d.info.flow, "status": format!("{:?}", d.info.status).to_lowercase(), "nodes": nodes, "outputs": d.outputs})
            )?
        );
    } else {
        println!(
            "run {} ({})",
            d.info.id.0,
            d.info.flow.clone().unwrap_or_default()
        );
        for s in &d.nodes {
            println!(
                "  {:<20} {:<40} {:>6} tokens {:>8}ms",
                s.node,
                status_text(&s.status),
                s.generated_tokens,
                s.duration_ms
            );
        }
        for o in &d.outputs {
            println!("  output {o}");
        }
    }
    Ok(0)
}

pub fn runs_rm(id: &str) -> anyhow::Result<i32> {
    request(ControlRequest::RunRemove(RunId(id.to_string())))?;
    println!("run {id} removed");
    Ok(0)
}

fn print_models(rows: &[proto::msg::ModelRow]) {
    println!(
        "{:<26} {:<10} {:>12} {:>10}  sha256",
        "model", "version", "size", "floor"
    );
    for m in rows {
        println!(
            "{:<26} {:<10} {:>12} {:>8}MB  {}{}",
            m.id,
            m.version,
            m.size,
            m.memory_floor_mb,
            m.sha256,
            match m.verified {
                Some(true) => "  verified",
                Some(false) => "  CORRUPT: remove and import it again",
                None => "",
            }
        );
    }
}

pub fn models_list(json: bool) -> anyhow::Result<i32> {
    let ControlResponse::Models(rows) = request(ControlRequest::ModelsList)? else {
        bail!("unexpected answer from the broker")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_models(&rows);
    }
    Ok(0)
}

pub fn models_import(file: &Path) -> anyhow::Result<i32> {
    let abs =
        std::fs::canonicalize(file).with_context(|| format!("cannot read {}", file.display()))?;
    let path = abs
        .to_str()
        .context("the model path is not valid UTF-8: rename it")?
        .to_string();
    let ControlResponse::Models(rows) = request(ControlRequest::ModelImport { path })? else {
        bail!("unexpected answer from the broker")
    };
    print_models(&rows);
    Ok(0)
}

pub fn models_verify(id: Option<String>) -> anyhow::Result<i32> {
    let ControlResponse::Models(rows) = request(ControlRequest::ModelVerify { id })? else {
        bail!("unexpected answer from the broker")
    };
    print_models(&rows);
    Ok(if rows.iter().all(|r| r.verified == Some(true)) {
        0
    } else {
        1
    })
}

pub fn models_rm(model: &str) -> anyhow::Result<i32> {
    let (id, version) = match model.split_once('@') {
        Some((i, v)) => (i.to_string(), Some(v.to_string())),
        None => (model.to_string(), None),
    };
    let ControlResponse::Models(rows) = request(ControlRequest::ModelRemove { id, version })?
    else {
        bail!("unexpected answer from the broker")
    };
    for r in rows {
        println!("removed {}@{}", r.id, r.version);
    }
    Ok(0)
}

/// `flow models pull ID[@VERSION]`: the broker downloads through the egress
/// gateway and streams `PullProgress` frames; a bar on stderr shows bytes,
/// rate and ETA (hidden when stderr is not a terminal, and with `--json`).
pub fn models_pull(model: &str, json: bool) -> anyhow::Result<i32> {
    let (id, version) = match model.split_once('@') {
        Some((i, v)) => (i.to_string(), Some(v.to_string())),
        None => (model.to_string(), None),
    };
    let paths = Paths::from_env()?;
    let mut ch = connect(&paths)?;
    ch.send(&ControlRequest::ModelPull { id, version })?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(format!("pulling {model}"));
    let mut first = true;
    let rows = loop {
        let resp: ControlResponse = match ch.recv() {
            Ok(r) => r,
            Err(e) => {
                bar.abandon();
                bail!(
                    "the broker closed the connection during the pull ({e}): run 'flow models pull {model}' again to resume"
                )
            }
        };
        match resp {
            ControlResponse::PullProgress { done, total } => {
                if first {
                    first = false;
                    bar.set_length(total);
                    bar.set_position(done);
                    if done > 0 {
                        bar.println(format!("resuming {model} at byte {done} of {total}"));
                    }
                    // The rate and ETA count this transfer, not the resumed part.
                    bar.reset_eta();
                } else {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            }
            ControlResponse::Models(rows) => {
                bar.finish_and_clear();
                break rows;
            }
            ControlResponse::Error(e) => {
                bar.abandon();
                bail!("{}", describe_error(&e));
            }
            _ => {
                bar.abandon();
                bail!("unexpected answer from the broker")
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_models(&rows);
    }
    Ok(0)
}

pub fn llama_install(binary: &Path) -> anyhow::Result<i32> {
    use sha2::Digest as _;
    let paths = Paths::from_env()?;
    let (bin, sum) = crate::daemon::llama::install_paths(&paths);
    let dir = bin.parent().context("the install path has no directory")?;
    if rustix::process::geteuid().is_root() {
        // As `flow up` does: the sandbox uid must traverse the data dir.
        crate::paths::ensure_traversable_dir(&paths.data)?;
    } else {
        crate::paths::ensure_private_dir(&paths.data)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes =
        std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        bail!(
            "{} is not an ELF binary: give the llama-server that deploy/install-llama.sh built",
            binary.display()
        );
    }
    let tmp = dir.join(".llama-server.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    std::fs::rename(&tmp, &bin)?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    std::fs::write(&sum, format!("{digest}  llama-server\n"))?;
    println!("installed {} (sha256 {digest})", bin.display());
    Ok(0)
}
