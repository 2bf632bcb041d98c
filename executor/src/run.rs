//! The DAG runner. Nodes run in dependency order; AI and service nodes
//! whose inputs are ready run concurrently on the caller's (single-threaded)
//! runtime, polled together by a small join loop: no task is spawned, so
//! nothing here needs `Send` or `'static`.
//!
//! Service nodes run concurrently like AI nodes: one HTTP request through
//! the egress gateway ([`NodeEnv::run_service`]; the executor's side of the
//! channel is [`call_service`]); the response body is the node's value and
//! is written to the spool (`<node>.txt`).
//!
//! Events, per node: `NodeStarted`, then for AI nodes any number of
//! `Token`s, for output nodes with `stdout` one `Output`, then
//! `NodeFinished`. A node that never starts (skipped by the plan, or with an
//! upstream node that did not finish `Ok`) gets only `NodeFinished`. The
//! run-level `Started` and `Finished` events carry the run id, which the
//! caller owns: it emits them.

use crate::template::{Part, Template};
use proto::egress::{EgressCallError, EgressError, EgressRequest, Method};
use proto::flow::{
    Flow, FlowNode, FlowNodeKind, NodeError, NodePlan, NodeStatus, NodeSummary, RunEvent,
    SkipReason,
};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::time::Instant;

/// What an AI node produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiDone {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub first_token_ms: Option<u64>,
    pub text: String,
}

/// The runner's view of the world: inference, events and the spool.
///
/// `async fn` in this trait gives no `Send` bound on purpose: the executor
/// runs on a current-thread runtime and never moves these futures.
#[allow(async_fn_in_trait)]
pub trait NodeEnv {
    /// Run one AI node; stream tokens through `on_token`; return token
    /// counts, or an error.
    async fn run_ai(
        &self,
        node: &FlowNode,
        prompt: String,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<AiDone, NodeError>;
    /// Emit a run event (the caller forwards it to the broker).
    fn emit(&self, event: RunEvent);
    /// Persist an output node's value (atomically) in the spool.
    fn write_output(&self, node: &str, value: &str) -> Result<(), NodeError>;
    /// Run one service node: send its request (`path` with placeholders
    /// substituted, `body` if its body input is bound) through the node's
    /// egress capability and return the response body, or why it failed
    /// (see [`call_service`]).
    async fn run_service(
        &self,
        node: &FlowNode,
        path: String,
        body: Option<String>,
    ) -> Result<String, NodeError>;
}

/// Largest response body a service node accepts, whatever its catalog
/// entry's `max_response_bytes` (the gateway enforces that one): the value
/// is held in memory and copied into every downstream node.
pub const MAX_SERVICE_RESPONSE_BYTES: u64 = 64 << 20;

/// Why a service node's path could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRenderError {
    /// A placeholder has no value (its upstream node did not finish).
    Unbound,
    /// A value cannot be sent (see [`render_service_path`]), or the path
    /// became longer than [`crate::format::MAX_SERVICE_PATH`].
    BadValue,
}

/// Percent-encodes `value` as one path segment: every byte but the RFC 3986
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, so `/`, `?`,
/// `#` and `%` in a value cannot change the request's shape.
pub fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Substitutes a service node's path placeholders with the values `lookup`
/// gives, each encoded by [`encode_segment`].
///
/// Refused (`BadValue`), as the gateway would refuse the request: a value
/// that would make an empty, `.` or `..` segment (it could only name
/// another resource than the path's author meant); before the query, a
/// value with `/` or `\` (the gateway refuses encoded separators, since an
/// upstream that decodes them would see another path); anywhere, a value
/// with a control character; and a result longer than
/// [`crate::format::MAX_SERVICE_PATH`].
pub fn render_service_path<'v>(
    path: &str,
    lookup: impl Fn(&str) -> Option<&'v str>,
) -> Result<String, PathRenderError> {
    let template = Template::parse(path).map_err(|_| PathRenderError::BadValue)?;
    let mut out = String::with_capacity(path.len());
    let mut in_query = false;
    for part in template.parts() {
        match part {
            Part::Literal(l) => {
                in_query |= l.contains('?');
                out.push_str(l);
            }
            Part::Placeholder(name) => {
                let value = lookup(name).ok_or(PathRenderError::Unbound)?;
                let dot = value.is_empty() || value == "." || value == "..";
                let separator = !in_query && value.contains(['/', '\\']);
                if dot || separator || value.chars().any(char::is_control) {
                    return Err(PathRenderError::BadValue);
                }
                out.push_str(&encode_segment(value));
            }
        }
    }
    if out.len() > crate::format::MAX_SERVICE_PATH {
        return Err(PathRenderError::BadValue);
    }
    Ok(out)
}

/// The node error for how an egress call ended.
pub fn egress_node_error(e: &EgressCallError) -> NodeError {
    match e {
        EgressCallError::Gateway(g) => NodeError::Egress(*g),
        // Our chunk callback stops only at the size cap.
        EgressCallError::Stopped => NodeError::Egress(EgressError::ResponseTooLarge),
        EgressCallError::Channel(_) | EgressCallError::OutOfOrder(_) => {
            NodeError::GatewayUnavailable
        }
    }
}

/// Sends a service node's request as request `id` on an `Egress` channel and
/// returns the response body as text.
///
/// Fails with `HttpStatus(code)` for any status outside 200..=299 (a 3xx
/// reaching the holder is a redirect the grant did not follow), with
/// `Egress(ResponseTooLarge)` past [`MAX_SERVICE_RESPONSE_BYTES`], with
/// `Egress(BadUpstreamResponse)` when the body is not UTF-8, with the
/// gateway's error when it refused, and with `GatewayUnavailable` when the
/// channel broke. Bodies are never logged.
pub async fn call_service<S>(
    chan: &mut proto::channel::Channel<S>,
    id: u64,
    node: &FlowNode,
    path: String,
    body: Option<String>,
) -> Result<String, NodeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    call_service_capped(chan, id, node, path, body, MAX_SERVICE_RESPONSE_BYTES).await
}

async fn call_service_capped<S>(
    chan: &mut proto::channel::Channel<S>,
    id: u64,
    node: &FlowNode,
    path: String,
    body: Option<String>,
    max_bytes: u64,
) -> Result<String, NodeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let FlowNodeKind::Service {
        service,
        method,
        content_type,
        ..
    } = &node.kind
    else {
        return Err(NodeError::Egress(EgressError::BadRequest));
    };
    let mut headers = Vec::new();
    if let Some(ct) = content_type {
        headers.push(("content-type".to_owned(), ct.clone()));
    }
    let body = match method {
        Method::Get | Method::Head => Vec::new(),
        _ => body.map(String::into_bytes).unwrap_or_default(),
    };
    let req = EgressRequest::Http {
        id,
        connection: service.clone(),
        method: *method,
        path,
        headers,
        body,
    };
    let mut received: Vec<u8> = Vec::new();
    let on_chunk = |chunk: &[u8]| {
        if received.len() as u64 + chunk.len() as u64 > max_bytes {
            return false;
        }
        received.extend_from_slice(chunk);
        true
    };
    let head = proto::egress::call(chan, req, |_| {}, on_chunk)
        .await
        .map_err(|e| egress_node_error(&e))?;
    if !(200..=299).contains(&head.status) {
        return Err(NodeError::HttpStatus(head.status));
    }
    String::from_utf8(received).map_err(|_| NodeError::Egress(EgressError::BadUpstreamResponse))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("--input {name}: the flow has no input node '{name}': {known}")]
    Unknown { name: String, known: String },
    #[error("--input {name} is given twice: give it once")]
    Duplicate { name: String },
    #[error("input node '{node}' has no value and no default: pass --input {node}=VALUE")]
    Missing { node: String },
}

/// Resolves the value of every input node from `inputs` (`--input ID=VALUE`
/// pairs) or its default. Call it before starting a run: [`run_flow`]
/// treats an input node without a value as never finished.
pub fn check_inputs(
    flow: &Flow,
    inputs: &[(String, String)],
) -> Result<BTreeMap<String, String>, InputError> {
    let input_nodes: Vec<(&str, &Option<String>)> = flow
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            FlowNodeKind::Input { default } => Some((n.id.as_str(), default)),
            _ => None,
        })
        .collect();
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in inputs {
        if !input_nodes.iter().any(|(id, _)| id == name) {
            let known = if input_nodes.is_empty() {
                "it takes no inputs: leave --input out".to_owned()
            } else {
                let ids: Vec<&str> = input_nodes.iter().map(|(id, _)| *id).collect();
                format!("its inputs are {}", ids.join(", "))
            };
            return Err(InputError::Unknown {
                name: name.clone(),
                known,
            });
        }
        if given.insert(name.clone(), value.clone()).is_some() {
            return Err(InputError::Duplicate { name: name.clone() });
        }
    }
    let mut values = BTreeMap::new();
    for (id, default) in input_nodes {
        let value = match (given.remove(id), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.clone(),
            (None, None) => {
                return Err(InputError::Missing {
                    node: id.to_owned(),
                })
            }
        };
        values.insert(id.to_owned(), value);
    }
    Ok(values)
}

/// A finished node: its summary and, if it finished `Ok`, its value.
struct Done {
    index: usize,
    summary: NodeSummary,
    value: Option<String>,
}

type Running<'a> = Vec<Pin<Box<dyn Future<Output = Done> + 'a>>>;

/// Runs `flow` and returns one summary per node, in the flow's node order.
///
/// `flow` should have passed [`crate::format::validate`] and `inputs`
/// [`check_inputs`]; if not, the runner still ends: nodes whose inputs never
/// arrive (an unbound input, a cycle) are `Skipped(UpstreamNotDone)`. AI
/// nodes absent from `plan` run; `plan` entries for other nodes are ignored.
pub async fn run_flow<E: NodeEnv>(
    flow: &Flow,
    inputs: &[(String, String)],
    plan: &[(String, NodePlan)],
    env: &E,
) -> Vec<NodeSummary> {
    let n = flow.nodes.len();
    let index: BTreeMap<&str, usize> = flow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.id.as_str(), i))
        .collect();
    // Per node: (input name, upstream node) and the downstream nodes, one
    // entry per edge.
    let mut incoming: Vec<Vec<(&str, usize)>> = vec![Vec::new(); n];
    let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); n];
    for e in &flow.edges {
        if let (Some(&f), Some(&t)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) {
            incoming[t].push((e.input.as_str(), f));
            outgoing[f].push(t);
        }
    }
    let mut given: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in inputs {
        given.entry(name.as_str()).or_insert(value.as_str());
    }

    let mut waiting: Vec<usize> = incoming.iter().map(Vec::len).collect();
    let mut results: Vec<Option<Done>> = (0..n).map(|_| None).collect();
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut running: Running<'_> = Vec::new();

    loop {
        while let Some(i) = ready.pop_front() {
            let node = &flow.nodes[i];
            let mut bound: BTreeMap<&str, &str> = BTreeMap::new();
            let mut upstream_done = true;
            for &(input, from) in &incoming[i] {
                match results[from].as_ref().and_then(|d| d.value.as_deref()) {
                    Some(v) => {
                        bound.insert(input, v);
                    }
                    None => upstream_done = false,
                }
            }
            let started = match start(node, i, upstream_done, &bound, &given, plan, env) {
                Start::Finished(done) => done,
                Start::Running(fut) => {
                    running.push(fut);
                    continue;
                }
            };
            finish(
                started,
                env,
                &outgoing,
                &mut waiting,
                &mut ready,
                &mut results,
            );
        }
        if running.is_empty() {
            break;
        }
        let done = next_done(&mut running).await;
        finish(done, env, &outgoing, &mut waiting, &mut ready, &mut results);
    }

    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(done) => done.summary,
            None => {
                // Never ready: part of a cycle or downstream of one.
                let summary = skipped(&flow.nodes[i], SkipReason::UpstreamNotDone);
                env.emit(RunEvent::NodeFinished(summary.clone()));
                summary
            }
        })
        .collect()
}

enum Start<'a> {
    Finished(Done),
    Running(Pin<Box<dyn Future<Output = Done> + 'a>>),
}

fn summary(node: &FlowNode, status: NodeStatus, since: Option<Instant>) -> NodeSummary {
    NodeSummary {
        node: node.id.clone(),
        status,
        duration_ms: since.map_or(0, elapsed_ms),
        prompt_tokens: 0,
        generated_tokens: 0,
        first_token_ms: None,
    }
}

fn skipped(node: &FlowNode, reason: SkipReason) -> NodeSummary {
    summary(node, NodeStatus::Skipped(reason), None)
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Starts node `i`: finishes it at once unless it is an AI node that runs
/// or a service node.
fn start<'a, E: NodeEnv>(
    node: &'a FlowNode,
    index: usize,
    upstream_done: bool,
    bound: &BTreeMap<&str, &str>,
    given: &BTreeMap<&str, &str>,
    plan: &[(String, NodePlan)],
    env: &'a E,
) -> Start<'a> {
    let not_done = |reason| {
        Start::Finished(Done {
            index,
            summary: skipped(node, reason),
            value: None,
        })
    };
    if !upstream_done {
        return not_done(SkipReason::UpstreamNotDone);
    }
    // Everything a node needs is resolved before `NodeStarted`, so a node
    // that cannot start is reported as skipped, not as started and failed.
    let value = match &node.kind {
        FlowNodeKind::Input { default } => given
            .get(node.id.as_str())
            .copied()
            .or(default.as_deref())
            .map(str::to_owned),
        FlowNodeKind::Template { text } => Template::parse(text)
            .and_then(|t| t.render(|name| bound.get(name).copied()))
            .ok(),
        FlowNodeKind::Output { .. } => bound.get("value").map(|v| (*v).to_owned()),
        FlowNodeKind::Service { path, .. } => {
            let path = match render_service_path(path, |name| bound.get(name).copied()) {
                Ok(p) => Ok(p),
                Err(PathRenderError::Unbound) => return not_done(SkipReason::UpstreamNotDone),
                Err(PathRenderError::BadValue) => Err(NodeError::Egress(EgressError::BadRequest)),
            };
            let body = bound
                .get(crate::format::BODY_INPUT)
                .map(|b| (*b).to_owned());
            env.emit(RunEvent::NodeStarted {
                node: node.id.clone(),
            });
            return Start::Running(Box::pin(run_service(node, index, path, body, env)));
        }
        FlowNodeKind::Ai { .. } => {
            let planned = plan.iter().find(|(id, _)| *id == node.id).map(|(_, p)| p);
            if let Some(NodePlan::Skip(reason)) = planned {
                return not_done(*reason);
            }
            let Some(prompt) = bound.get("prompt").map(|p| (*p).to_owned()) else {
                return not_done(SkipReason::UpstreamNotDone);
            };
            env.emit(RunEvent::NodeStarted {
                node: node.id.clone(),
            });
            return Start::Running(Box::pin(run_ai(node, index, prompt, env)));
        }
    };
    let Some(value) = value else {
        return not_done(SkipReason::UpstreamNotDone);
    };
    env.emit(RunEvent::NodeStarted {
        node: node.id.clone(),
    });
    let since = Instant::now();
    let mut status = NodeStatus::Ok;
    if let FlowNodeKind::Output { spool, stdout } = node.kind {
        if stdout {
            env.emit(RunEvent::Output {
                node: node.id.clone(),
                text: value.clone(),
            });
        }
        if spool {
            if let Err(e) = env.write_output(&node.id, &value) {
                status = NodeStatus::Failed(e);
            }
        }
    }
    let ok = status == NodeStatus::Ok;
    Start::Finished(Done {
        index,
        summary: summary(node, status, Some(since)),
        value: ok.then_some(value),
    })
}

async fn run_ai<E: NodeEnv>(node: &FlowNode, index: usize, prompt: String, env: &E) -> Done {
    let since = Instant::now();
    let mut on_token = |text: &str| {
        env.emit(RunEvent::Token {
            node: node.id.clone(),
            text: text.to_owned(),
        })
    };
    match env.run_ai(node, prompt, &mut on_token).await {
        Ok(ai) => Done {
            index,
            summary: NodeSummary {
                prompt_tokens: ai.prompt_tokens,
                generated_tokens: ai.generated_tokens,
                first_token_ms: ai.first_token_ms,
                ..summary(node, NodeStatus::Ok, Some(since))
            },
            value: Some(ai.text),
        },
        Err(e) => Done {
            index,
            summary: summary(node, NodeStatus::Failed(e), Some(since)),
            value: None,
        },
    }
}

async fn run_service<E: NodeEnv>(
    node: &FlowNode,
    index: usize,
    path: Result<String, NodeError>,
    body: Option<String>,
    env: &E,
) -> Done {
    let since = Instant::now();
    let result = match path {
        Ok(path) => env.run_service(node, path, body).await,
        Err(e) => Err(e),
    };
    // The response is kept in the spool like an output's value, so that
    // `flow runs show` lists what each request brought back.
    let result = result.and_then(|text| env.write_output(&node.id, &text).map(|()| text));
    match result {
        Ok(text) => Done {
            index,
            summary: summary(node, NodeStatus::Ok, Some(since)),
            value: Some(text),
        },
        Err(e) => Done {
            index,
            summary: summary(node, NodeStatus::Failed(e), Some(since)),
            value: None,
        },
    }
}

fn finish<E: NodeEnv>(
    done: Done,
    env: &E,
    outgoing: &[Vec<usize>],
    waiting: &mut [usize],
    ready: &mut VecDeque<usize>,
    results: &mut [Option<Done>],
) {
    env.emit(RunEvent::NodeFinished(done.summary.clone()));
    let i = done.index;
    for &t in &outgoing[i] {
        waiting[t] = waiting[t].saturating_sub(1);
        if waiting[t] == 0 {
            ready.push_back(t);
        }
    }
    results[i] = Some(done);
}

/// Waits for the first of `running` to finish and removes it. Futures are
/// polled in start order, so the order of results is deterministic when
/// several are ready at once. `running` must not be empty.
async fn next_done(running: &mut Running<'_>) -> Done {
    std::future::poll_fn(|cx| {
        for i in 0..running.len() {
            if let Poll::Ready(done) = running[i].as_mut().poll(cx) {
                drop(running.remove(i));
                return Poll::Ready(done);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests;
