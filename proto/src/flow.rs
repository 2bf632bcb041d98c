//! Flow graphs and run events as they cross process boundaries (CLI →
//! broker → executor, and back). These are the *validated* forms: the file
//! format (TOML or JSON, `executor::format`) parses and validates into them.
//! **Invariant:** node ids are identifiers (`[a-z0-9_-]{1,64}`), never free
//! text, so they may appear in the audit log.

use crate::msg::InferParams;
use serde::{Deserialize, Serialize};

/// A validated flow graph: unique node ids, no cycles, every edge between
/// existing nodes, every required input bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub name: String,
    pub nodes: Vec<FlowNode>,
    pub edges: Vec<FlowEdge>,
    /// The flow's `[settings]` table: `key = "value"` strings sorted by key
    /// (`services.allow_ai_output = "true"`). Keys are setting keys
    /// (`[a-z0-9_.]{1,64}`); the broker applies them through the policy,
    /// which refuses any key the enterprise policy locks.
    pub settings: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowNode {
    pub id: String,
    pub kind: FlowNodeKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowNodeKind {
    /// A value given with `flow run --input ID=VALUE`, or its default.
    Input { default: Option<String> },
    /// Text with `{name}` placeholders, each bound by an edge whose `input`
    /// is `name`.
    Template { text: String },
    /// Local model inference. The prompt arrives on input `prompt`.
    Ai {
        /// Model id in the catalog.
        model: String,
        system: Option<String>,
        /// Chat (the model's template) or raw completion.
        chat: bool,
        params: InferParams,
        /// Skip the node if the measured speed cannot produce
        /// `params.max_tokens` within this budget.
        latency_budget_ms: Option<u32>,
    },
    /// Writes input `value` to the spool and/or stdout.
    Output { spool: bool, stdout: bool },
    /// One HTTP request to a catalog service through the egress gateway.
    /// Input `body` (optional) is the request body; placeholders `{name}`
    /// in `path` are bound by edges like a template's. The response body is
    /// the node's output.
    Service {
        /// Catalog id of the service (= the connection's name).
        service: String,
        method: crate::egress::Method,
        path: String,
        content_type: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEdge {
    pub from: String,
    pub to: String,
    /// The input name on `to` (`prompt` for ai nodes, `value` for outputs,
    /// a placeholder name for templates).
    pub input: String,
}

/// A run id: 16 lowercase hex digits, unique per spool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId(pub String);

/// The broker's decision for one AI node before the run starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodePlan {
    Run,
    Skip(SkipReason),
}

/// Why a node was skipped. A closed set: it is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// The model is not in the store.
    ModelMissing,
    /// Available memory is below the model's floor.
    BelowMemoryFloor,
    /// Measured speed cannot meet the node's latency budget.
    LatencyBudget,
    /// The sandbox for inference cannot be applied on this machine.
    SandboxUnavailable,
    /// llama-server failed repeatedly; the circuit breaker is open.
    CircuitOpen,
    /// An upstream node was skipped or failed, so this node has no input.
    UpstreamNotDone,
}

/// Why a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeError {
    ModelServerFailed,
    WorkerUnavailable,
    TimedOut,
    Cancelled,
    Busy,
    /// The spool could not be written.
    Spool,
    /// A service node's request was refused or failed at the gateway.
    Egress(crate::egress::EgressError),
    /// A service node's upstream answered with this HTTP error status.
    HttpStatus(u16),
    /// The egress capability for a service node was missing or closed.
    GatewayUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Ok,
    Skipped(SkipReason),
    Failed(NodeError),
}

/// Per-node summary at the end of a run (metadata only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub node: String,
    pub status: NodeStatus,
    pub duration_ms: u64,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// Time from sending the request to the first token (AI nodes).
    pub first_token_ms: Option<u64>,
}

/// Events of one run, streamed executor → broker → `flow run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEvent {
    Started {
        run: RunId,
        nodes: u32,
    },
    NodeStarted {
        node: String,
    },
    /// A piece of AI output, for live display. Content: never logged.
    Token {
        node: String,
        text: String,
    },
    /// An output node's value for stdout. Content: never logged.
    Output {
        node: String,
        text: String,
    },
    NodeFinished(NodeSummary),
    Finished {
        run: RunId,
        ok: bool,
    },
}
