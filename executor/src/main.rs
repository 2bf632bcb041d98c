//! `flow-executor`: runs flow graphs. It holds the client end of the
//! reasoning capability, the client ends of the egress capabilities the
//! broker grants for a run's service nodes (one per node), and write access
//! to its spool directory, nothing else.
//!
//! **Invariant:** the sandbox is entered on the first line of `main`, before
//! any thread or runtime exists (`component::start`). Prompt text and model
//! output exist only in memory, in frames on its capabilities, and in the
//! spool; nothing here logs them.

use executor::run::{call_service, check_inputs, run_flow, AiDone, NodeEnv};
use executor::spool::{output_name, Spool};
use proto::bootstrap::{pair_grants, recv_async, send_async, BOOTSTRAP_MAX_FRAME};
use proto::channel::{Channel, SendHalf};
use proto::egress::EGRESS_MAX_FRAME;
use proto::flow::{Flow, FlowNode, FlowNodeKind, NodeError, NodePlan, RunEvent, RunId};
use proto::msg::{
    BrokerMsg, CapGrant, CapId, CapKind, CapRole, ChildMsg, Component, InferInput,
    ReasoningRequest, ReasoningResponse, ServiceError, ServiceKind,
};
use sandbox::ProfileName;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

fn main() {
    component::main_with(Component::Executor, ProfileName::Executor, run)
}

/// The client end of the reasoning capability, multiplexed by request id.
struct Reasoning {
    cap: CapId,
    writer: mpsc::UnboundedSender<ReasoningRequest>,
    pending: Rc<RefCell<HashMap<u64, mpsc::UnboundedSender<ReasoningResponse>>>>,
    next_id: Cell<u64>,
    alive: Rc<Cell<bool>>,
}

impl Reasoning {
    async fn connect(grant: &CapGrant, fd: OwnedFd) -> Option<Rc<Reasoning>> {
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
        let (mut rx, tx) = ch.into_split();
        let (writer, mut queue) = mpsc::unbounded_channel::<ReasoningRequest>();
        let pending: Rc<RefCell<HashMap<u64, mpsc::UnboundedSender<ReasoningResponse>>>> =
            Rc::default();
        let alive = Rc::new(Cell::new(true));
        tokio::task::spawn_local(async move {
            let mut tx: SendHalf<OwnedWriteHalf> = tx;
            while let Some(req) = queue.recv().await {
                if tx.send(&req).await.is_err() {
                    return;
                }
            }
        });
        {
            let pending = pending.clone();
            let alive = alive.clone();
            tokio::task::spawn_local(async move {
                loop {
                    match rx.recv::<ReasoningResponse>().await {
                        Ok(resp) => {
                            let id = response_id(&resp);
                            let done = !matches!(resp, ReasoningResponse::Token { .. });
                            let sender = pending.borrow().get(&id).cloned();
                            if let Some(s) = sender {
                                let _ = s.send(resp);
                            }
                            if done {
                                pending.borrow_mut().remove(&id);
                            }
                        }
                        Err(_) => {
                            // EOF (revoked, worker gone) or a malformed frame:
                            // every waiting request learns it by its channel closing.
                            alive.set(false);
                            pending.borrow_mut().clear();
                            return;
                        }
                    }
                }
            });
        }
        Some(Rc::new(Reasoning {
            cap: grant.id,
            writer,
            pending,
            next_id: Cell::new(0),
            alive,
        }))
    }

    /// Send a request; responses for it arrive on the returned receiver.
    fn request(
        &self,
        make: impl FnOnce(u64) -> ReasoningRequest,
    ) -> Option<(u64, mpsc::UnboundedReceiver<ReasoningResponse>)> {
        if !self.alive.get() {
            return None;
        }
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.borrow_mut().insert(id, tx);
        if self.writer.send(make(id)).is_err() {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        Some((id, rx))
    }
}

fn response_id(r: &ReasoningResponse) -> u64 {
    match r {
        ReasoningResponse::Pong { id, .. }
        | ReasoningResponse::Token { id, .. }
        | ReasoningResponse::Done { id, .. }
        | ReasoningResponse::Error { id, .. } => *id,
    }
}

type Current = Rc<RefCell<Option<Rc<Reasoning>>>>;

/// Client ends of `Egress` capabilities granted and not yet claimed by a
/// run, by capability id.
type EgressFds = Rc<RefCell<HashMap<CapId, OwnedFd>>>;

/// Keeps `fd` if `grant` is the client end of an `Egress` capability; the
/// channel over it is opened when its service node runs.
fn keep_egress(egress: &EgressFds, grant: &CapGrant, fd: OwnedFd) -> Option<OwnedFd> {
    if grant.kind == CapKind::Egress && grant.role == CapRole::Client {
        egress.borrow_mut().insert(grant.id, fd);
        None
    } else {
        Some(fd)
    }
}

async fn run(started: component::Granted, boot: AsyncFd<OwnedFd>) -> i32 {
    let boot = Rc::new(boot);
    let spool = match started.args.spool.as_deref().map(Spool::open) {
        Some(Ok(s)) => Rc::new(s),
        Some(Err(e)) => {
            eprintln!("flow-executor: cannot open the spool: {e}");
            return 2;
        }
        None => {
            eprintln!("flow-executor: no spool given");
            return 2;
        }
    };
    let current: Current = Rc::default();
    let egress: EgressFds = Rc::default();
    for (g, fd) in started.grants {
        let Some(fd) = keep_egress(&egress, &g, fd) else {
            continue;
        };
        if let Some(r) = Reasoning::connect(&g, fd).await {
            *current.borrow_mut() = Some(r);
        }
    }
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
                    let Some(fd) = keep_egress(&egress, &g, fd) else {
                        continue;
                    };
                    if let Some(r) = Reasoning::connect(&g, fd).await {
                        *current.borrow_mut() = Some(r);
                    }
                }
            }
            BrokerMsg::Revoke(id) => {
                egress.borrow_mut().remove(&id);
                let mut cur = current.borrow_mut();
                if cur.as_ref().is_some_and(|r| r.cap == id) {
                    *cur = None;
                }
            }
            BrokerMsg::Ping { count, payload } => {
                let client = current.borrow().clone();
                let reply = match client {
                    None => ChildMsg::PingFailed(ServiceError::Unavailable),
                    Some(r) => match ping(&r, count, &payload).await {
                        Ok(nanos) => ChildMsg::Pinged {
                            count,
                            total_nanos: nanos,
                        },
                        Err(e) => {
                            if matches!(e, ServiceError::BadRequest) {
                                let _ =
                                    send_async(&boot, &ChildMsg::MalformedPeer { cap: r.cap }, &[])
                                        .await;
                            }
                            ChildMsg::PingFailed(e)
                        }
                    },
                };
                if send_async(&boot, &reply, &[]).await.is_err() {
                    return 3;
                }
            }
            BrokerMsg::Run {
                run,
                flow,
                inputs,
                plan,
                egress: caps,
            } => {
                // Each service node's capability, claimed by this run: a
                // node whose capability never came fails when it runs.
                let services = caps
                    .into_iter()
                    .filter_map(|(node, cap)| egress.borrow_mut().remove(&cap).map(|fd| (node, fd)))
                    .collect();
                let env = ExecEnv {
                    run: run.clone(),
                    current: current.clone(),
                    services: RefCell::new(services),
                    spool: spool.clone(),
                    boot: boot.clone(),
                    events: RefCell::new(Vec::new()),
                    wake: tokio::sync::Notify::new(),
                };
                tokio::task::spawn_local(run_one(env, run, flow, inputs, plan));
            }
            BrokerMsg::Shutdown => return 0,
            // Gateway-only messages: not for the executor.
            BrokerMsg::GatewayConfig(_) | BrokerMsg::GrantEgress(_) => {}
        }
    }
}

/// `count` sequential round trips; returns the total time in nanoseconds.
async fn ping(r: &Reasoning, count: u32, payload: &[u8]) -> Result<u64, ServiceError> {
    let t0 = Instant::now();
    for _ in 0..count {
        let (id, mut rx) = r
            .request(|id| ReasoningRequest::Ping {
                id,
                payload: payload.to_vec(),
            })
            .ok_or(ServiceError::Unavailable)?;
        match rx.recv().await {
            Some(ReasoningResponse::Pong {
                id: got,
                payload: p,
            }) if got == id && p == payload => {}
            Some(ReasoningResponse::Error { error, .. }) => return Err(error),
            Some(_) => return Err(ServiceError::BadRequest),
            None => return Err(ServiceError::Unavailable),
        }
    }
    Ok(t0.elapsed().as_nanos() as u64)
}

/// The executor's side of one run: AI nodes go to the reasoning worker,
/// outputs to the spool, events to the broker.
struct ExecEnv {
    run: RunId,
    current: Current,
    /// Service node id → the client end of its `Egress` capability, taken
    /// (and its channel opened) when the node runs: one request per node.
    services: RefCell<HashMap<String, OwnedFd>>,
    spool: Rc<Spool>,
    boot: Rc<AsyncFd<OwnedFd>>,
    /// Events waiting to be sent, in order (emit is synchronous).
    events: RefCell<Vec<RunEvent>>,
    wake: tokio::sync::Notify,
}

fn node_error(e: ServiceError) -> NodeError {
    match e {
        ServiceError::Cancelled => NodeError::Cancelled,
        ServiceError::TimedOut => NodeError::TimedOut,
        ServiceError::Busy => NodeError::Busy,
        ServiceError::Unavailable => NodeError::WorkerUnavailable,
        ServiceError::ModelServerFailed
        | ServiceError::BadRequest
        | ServiceError::NotPermitted(_) => NodeError::ModelServerFailed,
    }
}

impl NodeEnv for ExecEnv {
    async fn run_ai(
        &self,
        node: &FlowNode,
        prompt: String,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<AiDone, NodeError> {
        let FlowNodeKind::Ai {
            system,
            chat,
            params,
            ..
        } = &node.kind
        else {
            return Err(NodeError::ModelServerFailed);
        };
        let client = self.current.borrow().clone();
        let client = client.ok_or(NodeError::WorkerUnavailable)?;
        let input = if *chat {
            InferInput::Chat {
                system: system.clone(),
                user: prompt,
            }
        } else {
            InferInput::Completion { prompt }
        };
        let t0 = Instant::now();
        let (_, mut rx) = client
            .request(|id| ReasoningRequest::Infer {
                id,
                input,
                params: params.clone(),
                timeout_ms: 0,
            })
            .ok_or(NodeError::WorkerUnavailable)?;
        let mut text = String::new();
        let mut first_token_ms = None;
        loop {
            match rx.recv().await {
                Some(ReasoningResponse::Token { text: t, .. }) => {
                    if first_token_ms.is_none() {
                        first_token_ms = Some(t0.elapsed().as_millis() as u64);
                    }
                    on_token(&t);
                    text.push_str(&t);
                }
                Some(ReasoningResponse::Done {
                    prompt_tokens,
                    generated_tokens,
                    ..
                }) => {
                    return Ok(AiDone {
                        prompt_tokens,
                        generated_tokens,
                        first_token_ms,
                        text,
                    })
                }
                Some(ReasoningResponse::Error { error, .. }) => return Err(node_error(error)),
                Some(ReasoningResponse::Pong { .. }) => return Err(NodeError::ModelServerFailed),
                // The channel closed mid-request: the worker died or was revoked.
                None => return Err(NodeError::WorkerUnavailable),
            }
        }
    }

    fn emit(&self, event: RunEvent) {
        self.events.borrow_mut().push(event);
        self.wake.notify_one();
    }

    fn write_output(&self, node: &str, value: &str) -> Result<(), NodeError> {
        self.spool
            .write_atomic(&self.run, &output_name(node), value.as_bytes())
            .map_err(|_| NodeError::Spool)
    }

    async fn run_service(
        &self,
        node: &FlowNode,
        path: String,
        body: Option<String>,
    ) -> Result<String, NodeError> {
        let fd = self
            .services
            .borrow_mut()
            .remove(&node.id)
            .ok_or(NodeError::GatewayUnavailable)?;
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        std_stream
            .set_nonblocking(true)
            .map_err(|_| NodeError::GatewayUnavailable)?;
        let stream = UnixStream::from_std(std_stream).map_err(|_| NodeError::GatewayUnavailable)?;
        let mut chan = tokio::time::timeout(
            Duration::from_secs(5),
            Channel::handshake_with_max_frame(stream, ServiceKind::Egress, EGRESS_MAX_FRAME),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(NodeError::GatewayUnavailable)?;
        call_service(&mut chan, 1, node, path, body).await
    }
}

impl ExecEnv {
    async fn flush(&self) -> bool {
        let pending: Vec<RunEvent> = std::mem::take(&mut *self.events.borrow_mut());
        for ev in pending {
            if send_async(&self.boot, &ChildMsg::RunEvent(self.run.clone(), ev), &[])
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

async fn run_one(
    env: ExecEnv,
    run: RunId,
    flow: Flow,
    inputs: Vec<(String, String)>,
    plan: Vec<(String, NodePlan)>,
) {
    let ok_flow = executor::format::validate(&flow).is_ok()
        && check_inputs(&flow, &inputs).is_ok()
        && env.spool.create_run(&run).is_ok();
    env.emit(RunEvent::Started {
        run: run.clone(),
        nodes: flow.nodes.len() as u32,
    });
    let ok = if ok_flow {
        // Drive the run and forward its events as they are emitted.
        let runner = run_flow(&flow, &inputs, &plan, &env);
        tokio::pin!(runner);
        let summaries = loop {
            tokio::select! {
                s = &mut runner => break s,
                _ = env.wake.notified() => { env.flush().await; }
            }
        };
        let ok = summaries
            .iter()
            .all(|s| !matches!(s.status, proto::flow::NodeStatus::Failed(_)));
        if env
            .spool
            .write_summary(&run, &summaries, &flow.name)
            .is_err()
        {
            eprintln!("flow-executor: cannot write a run summary to the spool");
        }
        ok
    } else {
        false
    };
    env.emit(RunEvent::Finished { run, ok });
    env.flush().await;
}
