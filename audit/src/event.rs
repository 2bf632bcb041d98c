//! The closed set of audited events.
//!
//! **Invariant:** no type in this module has a free-text field. Every field is an
//! enum defined here, an id, a number or a hex digest, so nothing a user, a peer or
//! a model wrote (a prompt, spool content, a path, an error message) can reach the
//! log. Adding an event means adding a variant here, reviewed like any other
//! change to the log's schema.
//!
//! These types mirror the broker's own (`proto::Component`, `sandbox::Layer`, ...)
//! on purpose instead of depending on them: the log's schema changes only when this
//! crate changes, and the broker maps its types to these in one place.

use crate::id::{ConnectionName, Host, ModelId, NodeId, RunId, SettingKey, UrlPath, Version};
use serde::{Deserialize, Serialize};

/// A sandboxed component the broker spawns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Executor,
    ReasoningWorker,
    EgressGateway,
    LlamaServer,
    /// The broker itself, as a capability holder (Model Hub downloads).
    Broker,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Executor,
        Component::ReasoningWorker,
        Component::EgressGateway,
        Component::LlamaServer,
        Component::Broker,
    ];

    /// The name used in the log (kebab-case).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Executor => "executor",
            Component::ReasoningWorker => "reasoning-worker",
            Component::EgressGateway => "egress-gateway",
            Component::LlamaServer => "llama-server",
            Component::Broker => "broker",
        }
    }
}

/// A layer of the sandbox, as named in refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Landlock,
    UserNamespace,
    NetNamespace,
    MountNamespace,
    Seccomp,
    NoNewPrivs,
    Capabilities,
}

/// A sandbox layer that an operator override waived. Only layers that another
/// layer covers can be waived, so this set is deliberately smaller than [`Layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Waiver {
    Landlock,
}

/// What a capability is a channel to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapKind {
    /// Executor -> reasoning worker: inference requests.
    Reasoning,
    /// Reasoning worker -> llama-server: one connection opened by the broker.
    ModelServer,
    /// Executor or broker -> egress gateway: HTTP on granted connections.
    Egress,
}

/// One right on a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Right {
    Ping,
    Infer,
    Http,
}

/// Where an attempt to change a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingSource {
    /// The per-user settings file.
    SettingsFile,
    /// A command-line flag (`flow up --set`).
    Cli,
    /// A flow file's `[settings]` table.
    FlowFile,
    /// A request on the control socket (`flow settings set`).
    ControlSocket,
}

/// The credential store in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStore {
    SecretService,
    Keyutils,
}

/// An HTTP method of an egress request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// Why the gateway refused or failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressDenial {
    ConnectionNotGranted,
    MethodNotAllowed,
    PathNotAllowed,
    HeaderNotAllowed,
    RequestTooLarge,
    ResponseTooLarge,
    RateLimited,
    ResolveFailed,
    AddressDenied,
    RedirectDenied,
    ConnectFailed,
    TlsFailed,
    BadUpstreamResponse,
    TimedOut,
    BadRequest,
}

/// The gateway's decision on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EgressOutcome {
    Allowed,
    Denied(EgressDenial),
}

/// Why a Model Hub download failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFailure {
    /// The hub is disabled (setting or policy) or the gateway is not running.
    HubDisabled,
    /// The model or version is in no trusted catalog.
    NotInCatalog,
    /// The hub catalog's signature did not verify against the pinned key.
    BadSignature,
    /// The transfer failed (the partial file is kept for a resume).
    Transfer,
    /// The downloaded bytes did not hash to the catalog's digest; deleted.
    DigestMismatch,
    /// Writing to the store failed.
    Store,
}

/// The outside check of a child that failed (the first one that did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttestCheck {
    NoNewPrivs,
    Seccomp,
    SeccompFilters,
    Capabilities,
    HostUid,
    Namespace,
    Fds,
    ProcessGone,
}

/// Why the broker refused to do something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum RefusalReason {
    /// A component could not be started because a sandbox layer is unavailable
    /// and was not waived.
    SandboxLayerMissing { layer: Layer },
    /// A peer on the control socket runs under another uid than the broker.
    PeerUidMismatch { peer_uid: u32 },
    /// The enterprise policy is locked and a change to it was asked for.
    PolicyLocked,
    /// A capability was asked for on behalf of a component not yet attested.
    NotAttested { component: Component },
    /// A component was asked for while its restart circuit is open.
    CircuitOpen { component: Component },
}

/// Who sent bytes that did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Peer {
    /// One of the sandboxed components, on its bootstrap channel.
    Component(Component),
    /// A client of the broker's control socket (the `flow` CLI or an impostor).
    ControlClient,
}

/// How a peer's bytes failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtoErrorKind {
    /// The length prefix exceeds the frame limit.
    TooLarge,
    /// The channel closed in the middle of a frame.
    Truncated,
    /// The frame did not decode as the expected type.
    Garbage,
    /// The first frame was not a valid handshake for this service.
    BadHandshake,
}

/// How one AI node of a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AiOutcome {
    /// The model answered.
    Ok,
    /// The node did not run; nothing was sent to a model.
    Skipped(SkipReason),
    /// The node ran and failed.
    Failed(AiFailure),
}

/// Why an AI node was skipped before it reached a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// The model is not in the store (and could not be fetched).
    ModelMissing,
    /// Available memory is below the model's memory floor.
    BelowMemoryFloor,
    /// The node's latency budget could not be met.
    LatencyBudget,
    /// A sandbox layer the model server needs is unavailable.
    SandboxUnavailable,
    /// The model server's restart circuit is open.
    CircuitOpen,
    /// A node this one depends on did not finish.
    UpstreamNotDone,
}

/// Why an AI node that ran failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AiFailure {
    /// llama-server failed or returned something unusable.
    ModelServerFailed,
    /// The reasoning worker was not there to take the request.
    WorkerUnavailable,
    /// The node ran past its deadline.
    TimedOut,
    /// The run was cancelled.
    Cancelled,
    /// The model server refused the request as busy.
    Busy,
    /// Reading or writing the node's spool failed.
    Spool,
}

/// One audited event. The set is closed: a log line whose event is not one of
/// these, or that carries a field not listed here, does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Event {
    /// The broker is up. Written first by every broker run.
    BrokerStarted { pid: u32, uid: u32 },
    /// The broker is shutting down cleanly.
    BrokerStopped { pid: u32 },
    /// A component was spawned (not yet attested).
    ComponentSpawned { component: Component, pid: u32 },
    /// The outside check of the component passed; `filter_sha256` is the digest
    /// of the seccomp program the broker expected it to run.
    Attested {
        component: Component,
        pid: u32,
        filter_sha256: Digest,
    },
    /// The outside check failed; the component was killed.
    AttestationFailed {
        component: Component,
        pid: u32,
        check: AttestCheck,
    },
    /// A capability was minted and handed to both ends.
    CapabilityGranted {
        cap_id: u64,
        kind: CapKind,
        client: Component,
        server: Component,
        rights: Vec<Right>,
    },
    /// A capability was revoked (its channel shut).
    CapabilityRevoked { cap_id: u64 },
    /// A component exited unexpectedly: with `exit_code` if it exited, with
    /// `signal` if a signal killed it.
    ComponentCrashed {
        component: Component,
        pid: u32,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// A crashed component is being restarted after `backoff_ms`.
    ComponentRestarted {
        component: Component,
        attempt: u32,
        backoff_ms: u64,
    },
    /// A component crashed too often; it stays down until an operator acts.
    CircuitOpened { component: Component },
    /// The broker refused something.
    Refused { what: RefusalReason },
    /// A peer sent bytes that did not decode; its channel was closed.
    MalformedPeer { peer: Peer, error: ProtoErrorKind },
    /// An operator override waives these sandbox layers from now on.
    OverrideInForce { layers: Vec<Waiver> },
    /// A model file was verified against its catalog entry and stored.
    ModelImported {
        id: ModelId,
        version: Version,
        digest: Digest,
    },
    /// A stored model was re-hashed; `ok` is false when it no longer matches
    /// `digest`, the digest its catalog entry records.
    ModelVerified {
        id: ModelId,
        version: Version,
        digest: Digest,
        ok: bool,
    },
    /// A stored model was removed.
    ModelRemoved {
        id: ModelId,
        version: Version,
        digest: Digest,
    },
    /// One AI node of a run finished (or was skipped). Counts and times only:
    /// never the prompt or the answer.
    AiNode {
        run: RunId,
        node: NodeId,
        model: ModelId,
        version: Version,
        prompt_tokens: u32,
        generated_tokens: u32,
        duration_ms: u64,
        /// Time to the first generated token, when one was generated.
        first_token_ms: Option<u64>,
        outcome: AiOutcome,
    },
    /// llama-server was started on a verified model file.
    LlamaServerStarted {
        pid: u32,
        model: ModelId,
        version: Version,
        digest: Digest,
    },
    /// llama-server exited: with `exit_code` if it exited, with `signal` if a
    /// signal killed it.
    LlamaServerExited {
        pid: u32,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// A component's binary hashed to something other than its recorded sha256;
    /// it was not spawned.
    BinaryDigestMismatch { component: Component },
    /// A run of a flow started with `nodes` nodes.
    RunStarted { run: RunId, nodes: u32 },
    /// A run finished; `ok` is false when any node failed.
    RunFinished { run: RunId, ok: bool },
    /// A run's records (spool) were removed.
    RunRemoved { run: RunId },
    /// The effective egress switches at broker start (after policy, settings
    /// and flags); `gateway` is whether the egress gateway is started.
    EgressPolicy {
        cloud: bool,
        services: bool,
        hub: bool,
        gateway: bool,
    },
    /// An attempt to change `key`, which the enterprise policy locks, was
    /// refused.
    SettingRefused {
        key: SettingKey,
        source: SettingSource,
    },
    /// A credential was stored for a connection (name only, never the secret).
    ConnectionAdded {
        name: ConnectionName,
        store: KeyStore,
    },
    /// A connection's credential was removed.
    ConnectionRemoved {
        name: ConnectionName,
        store: KeyStore,
    },
    /// One request through the egress gateway: metadata only, never a body,
    /// a header's value or the query string.
    EgressDecision {
        cap_id: u64,
        connection: ConnectionName,
        host: Host,
        port: u16,
        method: HttpMethod,
        path: UrlPath,
        status: Option<u16>,
        bytes_out: u64,
        bytes_in: u64,
        duration_ms: u64,
        outcome: EgressOutcome,
        /// The request body could derive from AI output or spool content.
        body_from_ai: bool,
    },
    /// A model was downloaded from the Model Hub, verified and stored;
    /// `resumed_from` is the byte offset a resumed download started at.
    ModelPulled {
        id: ModelId,
        version: Version,
        digest: Digest,
        bytes: u64,
        resumed_from: u64,
    },
    /// A Model Hub download failed.
    ModelPullFailed {
        id: ModelId,
        version: Option<Version>,
        reason: PullFailure,
    },
}

impl Event {
    /// The event's name as written in the log (kebab-case).
    pub fn name(&self) -> &'static str {
        match self {
            Event::BrokerStarted { .. } => "broker-started",
            Event::BrokerStopped { .. } => "broker-stopped",
            Event::ComponentSpawned { .. } => "component-spawned",
            Event::Attested { .. } => "attested",
            Event::AttestationFailed { .. } => "attestation-failed",
            Event::CapabilityGranted { .. } => "capability-granted",
            Event::CapabilityRevoked { .. } => "capability-revoked",
            Event::ComponentCrashed { .. } => "component-crashed",
            Event::ComponentRestarted { .. } => "component-restarted",
            Event::CircuitOpened { .. } => "circuit-opened",
            Event::Refused { .. } => "refused",
            Event::MalformedPeer { .. } => "malformed-peer",
            Event::OverrideInForce { .. } => "override-in-force",
            Event::ModelImported { .. } => "model-imported",
            Event::ModelVerified { .. } => "model-verified",
            Event::ModelRemoved { .. } => "model-removed",
            Event::AiNode { .. } => "ai-node",
            Event::LlamaServerStarted { .. } => "llama-server-started",
            Event::LlamaServerExited { .. } => "llama-server-exited",
            Event::BinaryDigestMismatch { .. } => "binary-digest-mismatch",
            Event::RunStarted { .. } => "run-started",
            Event::RunFinished { .. } => "run-finished",
            Event::RunRemoved { .. } => "run-removed",
            Event::EgressPolicy { .. } => "egress-policy",
            Event::SettingRefused { .. } => "setting-refused",
            Event::ConnectionAdded { .. } => "connection-added",
            Event::ConnectionRemoved { .. } => "connection-removed",
            Event::EgressDecision { .. } => "egress-decision",
            Event::ModelPulled { .. } => "model-pulled",
            Event::ModelPullFailed { .. } => "model-pull-failed",
        }
    }

    /// The component the event is about, if it is about one.
    pub fn component(&self) -> Option<Component> {
        match self {
            Event::ComponentSpawned { component, .. }
            | Event::Attested { component, .. }
            | Event::AttestationFailed { component, .. }
            | Event::ComponentCrashed { component, .. }
            | Event::ComponentRestarted { component, .. }
            | Event::CircuitOpened { component }
            | Event::BinaryDigestMismatch { component } => Some(*component),
            Event::LlamaServerStarted { .. } | Event::LlamaServerExited { .. } => {
                Some(Component::LlamaServer)
            }
            Event::Refused {
                what:
                    RefusalReason::NotAttested { component } | RefusalReason::CircuitOpen { component },
            } => Some(*component),
            Event::MalformedPeer {
                peer: Peer::Component(component),
                ..
            } => Some(*component),
            Event::BrokerStarted { .. }
            | Event::BrokerStopped { .. }
            | Event::CapabilityGranted { .. }
            | Event::CapabilityRevoked { .. }
            | Event::Refused { .. }
            | Event::MalformedPeer { .. }
            | Event::OverrideInForce { .. }
            | Event::ModelImported { .. }
            | Event::ModelVerified { .. }
            | Event::ModelRemoved { .. }
            | Event::AiNode { .. }
            | Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::RunRemoved { .. }
            | Event::EgressPolicy { .. }
            | Event::SettingRefused { .. }
            | Event::ConnectionAdded { .. }
            | Event::ConnectionRemoved { .. }
            | Event::ModelPulled { .. }
            | Event::ModelPullFailed { .. } => None,
            Event::EgressDecision { .. } => Some(Component::EgressGateway),
        }
    }

    /// The process the event is about, if it names one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Event::BrokerStarted { pid, .. }
            | Event::BrokerStopped { pid }
            | Event::ComponentSpawned { pid, .. }
            | Event::Attested { pid, .. }
            | Event::AttestationFailed { pid, .. }
            | Event::ComponentCrashed { pid, .. }
            | Event::LlamaServerStarted { pid, .. }
            | Event::LlamaServerExited { pid, .. } => Some(*pid),
            Event::CapabilityGranted { .. }
            | Event::CapabilityRevoked { .. }
            | Event::ComponentRestarted { .. }
            | Event::CircuitOpened { .. }
            | Event::Refused { .. }
            | Event::MalformedPeer { .. }
            | Event::OverrideInForce { .. }
            | Event::ModelImported { .. }
            | Event::ModelVerified { .. }
            | Event::ModelRemoved { .. }
            | Event::AiNode { .. }
            | Event::BinaryDigestMismatch { .. }
            | Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::RunRemoved { .. }
            | Event::EgressPolicy { .. }
            | Event::SettingRefused { .. }
            | Event::ConnectionAdded { .. }
            | Event::ConnectionRemoved { .. }
            | Event::EgressDecision { .. }
            | Event::ModelPulled { .. }
            | Event::ModelPullFailed { .. } => None,
        }
    }

    /// The model the event is about, if it names one.
    pub fn model(&self) -> Option<(&ModelId, &Version)> {
        match self {
            Event::ModelImported { id, version, .. }
            | Event::ModelVerified { id, version, .. }
            | Event::ModelRemoved { id, version, .. }
            | Event::AiNode {
                model: id, version, ..
            }
            | Event::LlamaServerStarted {
                model: id, version, ..
            }
            | Event::ModelPulled { id, version, .. } => Some((id, version)),
            _ => None,
        }
    }

    /// The run the event is about, if it names one.
    pub fn run(&self) -> Option<RunId> {
        match self {
            Event::AiNode { run, .. }
            | Event::RunStarted { run, .. }
            | Event::RunFinished { run, .. }
            | Event::RunRemoved { run } => Some(*run),
            _ => None,
        }
    }

    /// The capability the event is about, if it names one.
    pub fn cap_id(&self) -> Option<u64> {
        match self {
            Event::CapabilityGranted { cap_id, .. }
            | Event::CapabilityRevoked { cap_id }
            | Event::EgressDecision { cap_id, .. } => Some(*cap_id),
            _ => None,
        }
    }
}

/// A SHA-256 digest, written as 64 lowercase hex digits. Parsing accepts exactly
/// that form (no upper case, no prefix), so a digest has one spelling in the log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The `prev` of the first record.
    pub const GENESIS: Digest = Digest([0; 32]);

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse exactly 64 lowercase hex digits.
    pub fn from_hex(s: &[u8]) -> Option<Digest> {
        if s.len() != 64 || !s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::from_hex(v.as_bytes())
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}
