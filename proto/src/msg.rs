//! Every message type that crosses a process boundary.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to a type in this module.
pub const PROTOCOL_VERSION: u16 = 1;

/// First four bytes of every handshake payload.
pub const MAGIC: [u8; 4] = *b"FLOW";

/// Which service a channel speaks; part of the handshake so that a channel
/// cannot be used for another service by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceKind {
    /// Broker <-> sandboxed child, over the inherited SOCK_SEQPACKET channel.
    Bootstrap,
    /// Executor (client) -> reasoning worker (server).
    Reasoning,
    /// `flow` CLI -> broker control socket.
    Control,
    /// Holder of an `Egress` capability (executor, broker) -> egress gateway.
    Egress,
}

/// The first frame on every channel, sent by both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    pub magic: [u8; 4],
    pub version: u16,
    pub service: ServiceKind,
}

impl Handshake {
    pub fn new(service: ServiceKind) -> Handshake {
        Handshake {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            service,
        }
    }
}

/// The sandboxed components the broker spawns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Component {
    Executor,
    ReasoningWorker,
    EgressGateway,
    LlamaServer,
    /// The broker itself, as the holder of a capability (the Egress
    /// capability of a Model Hub download). Never spawned.
    Broker,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Broker => "broker",
            Component::Executor => "executor",
            Component::ReasoningWorker => "reasoning-worker",
            Component::EgressGateway => "egress-gateway",
            Component::LlamaServer => "llama-server",
        }
    }
}

/// Broker-assigned capability id, unique for the broker's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CapId(pub u64);

/// What a capability is a channel to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CapKind {
    /// Executor -> reasoning worker: inference requests.
    Reasoning,
    /// Reasoning worker -> llama-server: one connection the broker opened
    /// to llama-server's socket. The worker never connects by itself.
    ModelServer,
    /// Executor (one per service node) or broker (Model Hub) -> egress
    /// gateway: HTTP requests on the connections the gateway was told this
    /// capability may use ([`crate::egress::EgressRights`]).
    Egress,
}

/// Which end of the channel the holder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CapRole {
    /// Sends requests.
    Client,
    /// Serves requests and enforces the rights below.
    Server,
}

/// One right on a capability. **Invariant:** rights are told to the serving side
/// by the broker; a client's messages never carry or widen them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Right {
    /// Liveness round trip with a payload.
    Ping,
    /// Run inference.
    Infer,
    /// Send HTTP requests through the egress gateway, on the connections
    /// named in the gateway's [`crate::egress::EgressRights`] for this cap.
    Http,
}

/// A capability as announced to its holder; the fd travels alongside with
/// `SCM_RIGHTS`, in the same order as the grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapGrant {
    pub id: CapId,
    pub kind: CapKind,
    pub role: CapRole,
    /// For `Server` grants: what the client on the other end may do.
    /// For `Client` grants: informational only.
    pub rights: Vec<Right>,
}

/// What a child reports about itself after entering its sandbox.
/// **Informational only:** the broker attests from the outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfReport {
    pub profile: String,
    pub filter_sha256: String,
    pub landlock_abi: u32,
    pub waivers: Vec<String>,
}

/// Child -> broker on the bootstrap channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildMsg {
    /// Sent once, right after entering the sandbox; the broker attests on receipt.
    Hello {
        component: Component,
        report: SelfReport,
    },
    /// Capabilities received and serving.
    Ready,
    /// Answer to [`BrokerMsg::Ping`]: `count` round trips over the reasoning
    /// capability took `total_nanos`, measured inside the executor.
    Pinged { count: u32, total_nanos: u64 },
    /// [`BrokerMsg::Ping`] could not be served.
    PingFailed(ServiceError),
    /// The peer on this capability sent a malformed frame; this side closed
    /// the channel. The broker audits it and revokes the capability.
    MalformedPeer { cap: CapId },
    /// Executor: progress of a run started with [`BrokerMsg::Run`].
    RunEvent(crate::flow::RunId, crate::flow::RunEvent),
    /// Reasoning worker: a model-server connection was closed or is not
    /// reusable; please grant a fresh one.
    NeedModelConn { closed: CapId },
    /// Egress gateway: one decision per request, for the audit log.
    EgressDecision(crate::egress::DecisionRecord),
}

/// Broker -> child on the bootstrap channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerMsg {
    /// Attestation passed; these capabilities follow as fds in the same message.
    Grant(Vec<CapGrant>),
    /// The broker revoked (shut down) this capability.
    Revoke(CapId),
    /// Executor only: ping the reasoning worker `count` times over the
    /// reasoning capability with `payload` and report the time taken.
    Ping { count: u32, payload: Vec<u8> },
    /// Executor only: run a validated flow. `plan` has one entry per AI node,
    /// in node order, with the broker's run/skip decision.
    Run {
        run: crate::flow::RunId,
        flow: crate::flow::Flow,
        inputs: Vec<(String, String)>,
        plan: Vec<(String, crate::flow::NodePlan)>,
        /// Service nodes: the `Egress` capability (granted just before, with
        /// [`BrokerMsg::Grant`]) each node's requests go through.
        egress: Vec<(String, CapId)>,
    },
    /// Egress gateway only: the gateway-wide configuration with every
    /// connection and its credential. Replaces the previous one.
    GatewayConfig(crate::egress::GatewayConfig),
    /// Egress gateway only: serve these capabilities (server ends travel as
    /// fds in the same message, in the same order) with these rights.
    GrantEgress(Vec<crate::egress::EgressRights>),
    /// Exit cleanly.
    Shutdown,
}

/// Requests on a `Reasoning` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReasoningRequest {
    Ping {
        id: u64,
        payload: Vec<u8>,
    },
    /// Run inference; answered by a stream of `Token` frames and one `Done`
    /// (or one `Error`).
    Infer {
        id: u64,
        input: InferInput,
        params: InferParams,
        /// Whole-request deadline in milliseconds (0: the worker's default).
        timeout_ms: u32,
    },
    /// Stop request `id`; it ends with `Error { error: Cancelled }`.
    Cancel {
        id: u64,
    },
}

/// What to run. Prompt text lives only in these frames, the worker's memory
/// and llama-server; it is never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InferInput {
    /// Raw completion of `prompt` (llama-server `POST /completion`).
    Completion { prompt: String },
    /// Chat with the model's template (`POST /v1/chat/completions`).
    Chat {
        system: Option<String>,
        user: String,
    },
}

/// Sampling parameters. Fractions are in thousandths so the type stays `Eq`
/// and hashes exactly: `temperature_milli: 700` is 0.7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferParams {
    pub max_tokens: u32,
    pub temperature_milli: u32,
    pub top_p_milli: u32,
    pub top_k: u32,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    /// Benchmarks only: generate exactly `max_tokens` (llama.cpp `ignore_eos`).
    pub ignore_eos: bool,
    /// Let llama-server reuse the KV cache of an earlier prompt in the slot
    /// (llama.cpp `cache_prompt`); benchmarks turn it off.
    pub cache_prompt: bool,
}

impl Default for InferParams {
    fn default() -> InferParams {
        InferParams {
            max_tokens: 128,
            temperature_milli: 0,
            top_p_milli: 1000,
            top_k: 40,
            seed: None,
            stop: Vec::new(),
            ignore_eos: false,
            cache_prompt: true,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// End of sequence token.
    Eos,
    /// `max_tokens` reached.
    Length,
    /// A stop string matched.
    StopString,
}

/// Responses on a `Reasoning` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReasoningResponse {
    Pong {
        id: u64,
        payload: Vec<u8>,
    },
    /// One streamed piece of model output.
    Token {
        id: u64,
        text: String,
    },
    /// The request finished; metadata only.
    Done {
        id: u64,
        prompt_tokens: u32,
        generated_tokens: u32,
        stop: StopReason,
    },
    Error {
        id: u64,
        error: ServiceError,
    },
}

/// Typed service errors; no free text crosses the boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceError {
    /// The capability does not carry this right.
    NotPermitted(Right),
    /// The request was malformed or out of range.
    BadRequest,
    /// The service behind the capability is not available.
    Unavailable,
    /// The request was cancelled by its client.
    Cancelled,
    /// The request's deadline passed.
    TimedOut,
    /// All slots are busy and the queue is full: retry later.
    Busy,
    /// The inference server failed or died mid-request.
    ModelServerFailed,
}

/// `flow` CLI -> broker on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    Status,
    Caps,
    Revoke(CapId),
    /// Ask the executor to ping the reasoning worker over its capability
    /// `count` times with `payload`; used by `flow ping` and the benchmark.
    Ping {
        count: u32,
        payload: Vec<u8>,
    },
    Down,
    /// Run a validated flow; answered by a stream of `RunEvent`s ending with
    /// `RunEvent::Finished` (or one `Error`).
    Run {
        flow: crate::flow::Flow,
        inputs: Vec<(String, String)>,
    },
    /// Delete a run from the spool.
    RunRemove(crate::flow::RunId),
    ModelsList,
    /// Import a model file; the broker reads it, checks its digest against
    /// the catalog and stores it.
    ModelImport {
        path: String,
    },
    /// Re-hash stored models (all, or one id).
    ModelVerify {
        id: Option<String>,
    },
    ModelRemove {
        id: String,
        version: Option<String>,
    },
    /// Download a model from the Model Hub through the egress gateway;
    /// answered by `PullProgress` frames and one `Models` (the stored row)
    /// or one `Error`.
    ModelPull {
        id: String,
        version: Option<String>,
    },
    /// Store a credential in the OS keyring for connection `name`, bound to
    /// the origin of its catalog entry. The secret never travels in argv.
    ConnectionAdd {
        name: String,
        secret: crate::egress::Secret,
    },
    ConnectionList,
    ConnectionRemove {
        name: String,
    },
    /// Change a setting for the running broker (until it stops). Refused and
    /// audited when the enterprise policy locks `key`.
    SetSetting {
        key: String,
        value: String,
    },
}

/// Broker -> `flow` CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    Status(BrokerStatus),
    Caps(Vec<CapRow>),
    Pinged {
        count: u32,
        total_nanos: u64,
    },
    Ok,
    Error(ControlError),
    RunEvent(crate::flow::RunEvent),
    Models(Vec<ModelRow>),
    /// Progress of a `ModelPull`: bytes stored so far (including a resumed
    /// part) of `total`.
    PullProgress {
        done: u64,
        total: u64,
    },
    Connections(ConnectionList),
}

/// `flow connections list`: the store in use and one row per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionList {
    /// `secret-service` or `keyutils`.
    pub store: String,
    /// What the user should know about the store (keyutils entries do not
    /// survive a reboot).
    pub store_note: String,
    pub rows: Vec<ConnectionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub name: String,
    /// `scheme://host:port` the credential is bound to.
    pub origin: String,
    /// A credential is present in the keyring.
    pub present: bool,
    /// The catalog still has an entry of this name.
    pub in_catalog: bool,
}

/// One stored model, as `flow models list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRow {
    pub id: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub memory_floor_mb: u64,
    /// Result of the last verification in this request, if one was asked for.
    pub verified: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlError {
    UnknownCapability(CapId),
    ComponentUnavailable(Component),
    Refused,
    /// A request about models, runs or flows failed; the text says why and
    /// what to do. It never carries prompt text or spool content.
    Failed(String),
}

/// One row of `flow caps`: who can talk to whom, with which rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapRow {
    pub id: CapId,
    pub kind: CapKind,
    pub client: Component,
    pub server: Component,
    pub rights: Vec<Right>,
    /// Seconds since the Unix epoch, UTC.
    pub granted_at: u64,
    pub revoked: bool,
}

/// `flow status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub broker_pid: u32,
    pub broker_uid: u32,
    pub uptime_secs: u64,
    /// Sandbox layers waived by an override; empty normally.
    pub waivers: Vec<String>,
    /// Why the egress gateway is not running (`None` when it should be):
    /// e.g. `cloud.enabled, services.enabled and hub.enabled are false
    /// (default)`.
    pub gateway_absent: Option<String>,
    pub components: Vec<ComponentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub component: Component,
    pub state: ComponentState,
    pub pid: Option<u32>,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub attested: Option<AttestedState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentState {
    Starting,
    Running,
    /// Waiting for the restart backoff to elapse.
    Backoff,
    /// Too many crashes in a short time: not restarted until `flow up` again.
    CircuitOpen,
}

/// What the broker observed from the outside at attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedState {
    pub profile: String,
    pub filter_sha256: String,
    pub no_new_privs: bool,
    pub seccomp_mode: u32,
    pub seccomp_filters: u32,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub host_uid: u32,
    pub namespaces: Vec<(String, u64)>,
    pub fds: Vec<i32>,
    pub threads: u32,
}
