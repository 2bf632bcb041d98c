//! The broker's side of the audit log: maps broker types to the closed set of
//! audit events. **Invariant:** nothing here takes free text; an event that
//! cannot be written is reported on stderr and never blocks the broker.

use super::Shared;
use audit::{Event, Writer};
use proto::msg::{CapId, CapKind, Component, Right};
use sandbox::Waivers;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Auditor {
    writer: Writer,
}

pub fn component(c: Component) -> audit::Component {
    match c {
        Component::Executor => audit::Component::Executor,
        Component::ReasoningWorker => audit::Component::ReasoningWorker,
        Component::EgressGateway => audit::Component::EgressGateway,
        Component::LlamaServer => audit::Component::LlamaServer,
        Component::Broker => audit::Component::Broker,
    }
}

fn right(r: Right) -> audit::Right {
    match r {
        Right::Ping => audit::Right::Ping,
        Right::Infer => audit::Right::Infer,
        Right::Http => audit::Right::Http,
    }
}

fn kind(k: CapKind) -> audit::CapKind {
    match k {
        CapKind::Reasoning => audit::CapKind::Reasoning,
        CapKind::ModelServer => audit::CapKind::ModelServer,
        CapKind::Egress => audit::CapKind::Egress,
    }
}

fn waivers(w: &Waivers) -> Vec<audit::Waiver> {
    let mut v = Vec::new();
    if w.landlock {
        v.push(audit::Waiver::Landlock);
    }
    v
}

pub fn proto_error_kind(e: &proto::ProtoError) -> audit::ProtoErrorKind {
    use proto::ProtoError as P;
    match e {
        P::FrameTooLarge { .. }
        | P::TooManyFds { .. }
        | P::DatagramTruncated { .. }
        | P::FdsTruncated { .. } => audit::ProtoErrorKind::TooLarge,
        P::Truncated { .. } | P::Closed => audit::ProtoErrorKind::Truncated,
        P::BadMagic { .. } | P::VersionMismatch { .. } | P::WrongService { .. } => {
            audit::ProtoErrorKind::BadHandshake
        }
        _ => audit::ProtoErrorKind::Garbage,
    }
}

fn attest_check(e: &sandbox::SandboxError) -> audit::AttestCheck {
    use audit::AttestCheck as A;
    let sandbox::SandboxError::Attestation { check, .. } = e else {
        // The child's /proc entries vanished: it exited during the check.
        return A::ProcessGone;
    };
    let c = check.to_ascii_lowercase();
    if c.contains("nonewprivs") || c.contains("no_new_privs") {
        A::NoNewPrivs
    } else if c.contains("filters") {
        A::SeccompFilters
    } else if c.contains("seccomp") {
        A::Seccomp
    } else if c.contains("cap") {
        A::Capabilities
    } else if c.contains("uid") {
        A::HostUid
    } else if c.contains("ns") || c.contains("namespace") {
        A::Namespace
    } else if c.contains("fd") {
        A::Fds
    } else {
        A::ProcessGone
    }
}

/// Which layer a preflight refusal is about.
fn missing_layer(e: &sandbox::SandboxError) -> audit::Layer {
    let layer = match e {
        sandbox::SandboxError::Preflight { layer, .. } => layer.to_ascii_lowercase(),
        sandbox::SandboxError::LandlockUnavailable { .. } => "landlock".into(),
        sandbox::SandboxError::UserNamespace { .. } => "user".into(),
        _ => String::new(),
    };
    if layer.contains("landlock") {
        audit::Layer::Landlock
    } else if layer.contains("user") {
        audit::Layer::UserNamespace
    } else if layer.contains("net") {
        audit::Layer::NetNamespace
    } else if layer.contains("mount") {
        audit::Layer::MountNamespace
    } else if layer.contains("new_privs") || layer.contains("nnp") {
        audit::Layer::NoNewPrivs
    } else if layer.contains("cap") {
        audit::Layer::Capabilities
    } else {
        audit::Layer::Seccomp
    }
}

impl Auditor {
    pub fn open(path: &Path, w: &Waivers) -> Result<Auditor, audit::AuditError> {
        let writer = Writer::open(path)?;
        writer.set_overrides(waivers(w))?;
        Ok(Auditor { writer })
    }

    fn write(&self, e: Event) {
        if let Err(err) = self.writer.append(e) {
            eprintln!("flow: cannot append to the audit log: {err}");
        }
    }

    pub fn broker_started(&self) {
        self.write(Event::BrokerStarted {
            pid: std::process::id(),
            uid: rustix::process::geteuid().as_raw(),
        });
    }
    pub fn broker_stopped(&self) {
        self.write(Event::BrokerStopped {
            pid: std::process::id(),
        });
    }
    pub fn override_in_force(&self, w: &Waivers) {
        self.write(Event::OverrideInForce { layers: waivers(w) });
    }
    pub fn refused_layer(&self, e: &sandbox::SandboxError) {
        let layer = missing_layer(e);
        self.write(Event::Refused {
            what: audit::RefusalReason::SandboxLayerMissing { layer },
        });
    }
    pub fn refused_peer(&self, uid: u32) {
        self.write(Event::Refused {
            what: audit::RefusalReason::PeerUidMismatch { peer_uid: uid },
        });
    }
    pub fn spawned(&self, c: Component, pid: i32) {
        self.write(Event::ComponentSpawned {
            component: component(c),
            pid: pid as u32,
        });
    }
    pub fn attested(&self, c: Component, pid: i32, filter_sha256: &str) {
        let digest =
            audit::Digest::from_hex(filter_sha256.as_bytes()).unwrap_or(audit::Digest::GENESIS);
        self.write(Event::Attested {
            component: component(c),
            pid: pid as u32,
            filter_sha256: digest,
        });
    }
    pub fn attestation_failed(&self, c: Component, pid: i32, e: &sandbox::SandboxError) {
        self.write(Event::AttestationFailed {
            component: component(c),
            pid: pid as u32,
            check: attest_check(e),
        });
    }
    pub fn granted(
        &self,
        id: CapId,
        k: CapKind,
        client: Component,
        server: Component,
        rights: &[Right],
    ) {
        self.write(Event::CapabilityGranted {
            cap_id: id.0,
            kind: kind(k),
            client: component(client),
            server: component(server),
            rights: rights.iter().copied().map(right).collect(),
        });
    }
    /// One egress decision record from the gateway. Fields that break the
    /// log's id rules (a hostile gateway, an odd path) are recorded redacted,
    /// never as they are.
    pub fn egress_decision(&self, r: &proto::egress::DecisionRecord) {
        use proto::egress::{Decision, EgressError as G, Method as M};
        let method = match r.method {
            M::Get => audit::HttpMethod::Get,
            M::Head => audit::HttpMethod::Head,
            M::Post => audit::HttpMethod::Post,
            M::Put => audit::HttpMethod::Put,
            M::Patch => audit::HttpMethod::Patch,
            M::Delete => audit::HttpMethod::Delete,
        };
        let outcome = match r.decision {
            Decision::Allowed => audit::EgressOutcome::Allowed,
            Decision::Denied(e) => audit::EgressOutcome::Denied(match e {
                G::ConnectionNotGranted => audit::EgressDenial::ConnectionNotGranted,
                G::MethodNotAllowed => audit::EgressDenial::MethodNotAllowed,
                G::PathNotAllowed => audit::EgressDenial::PathNotAllowed,
                G::HeaderNotAllowed => audit::EgressDenial::HeaderNotAllowed,
                G::RequestTooLarge => audit::EgressDenial::RequestTooLarge,
                G::ResponseTooLarge => audit::EgressDenial::ResponseTooLarge,
                G::RateLimited => audit::EgressDenial::RateLimited,
                G::ResolveFailed => audit::EgressDenial::ResolveFailed,
                G::AddressDenied => audit::EgressDenial::AddressDenied,
                G::RedirectDenied => audit::EgressDenial::RedirectDenied,
                G::ConnectFailed => audit::EgressDenial::ConnectFailed,
                G::TlsFailed => audit::EgressDenial::TlsFailed,
                G::BadUpstreamResponse => audit::EgressDenial::BadUpstreamResponse,
                G::TimedOut => audit::EgressDenial::TimedOut,
                G::BadRequest => audit::EgressDenial::BadRequest,
            }),
        };
        let redacted = || audit::ConnectionName::parse("redacted");
        let (Ok(connection), Ok(unknown_host)) = (
            audit::ConnectionName::parse(&r.connection).or_else(|_| redacted()),
            audit::Host::parse("redacted"),
        ) else {
            return;
        };
        self.write(Event::EgressDecision {
            cap_id: r.cap.0,
            connection,
            host: audit::Host::parse(&r.host).unwrap_or(unknown_host),
            port: r.port,
            method,
            path: audit::UrlPath::or_redacted(&r.path),
            status: r.status,
            bytes_out: r.bytes_out,
            bytes_in: r.bytes_in,
            duration_ms: r.duration_ms,
            outcome,
            body_from_ai: r.body_from_ai,
        });
    }
    pub fn revoked(&self, id: CapId) {
        self.write(Event::CapabilityRevoked { cap_id: id.0 });
    }
    pub fn crashed(&self, c: Component, pid: i32, exit_code: Option<i32>, signal: Option<i32>) {
        self.write(Event::ComponentCrashed {
            component: component(c),
            pid: pid as u32,
            exit_code,
            signal,
        });
    }
    pub fn restarted(&self, c: Component, attempt: u32, backoff: Duration) {
        self.write(Event::ComponentRestarted {
            component: component(c),
            attempt,
            backoff_ms: backoff.as_millis() as u64,
        });
    }
    pub fn circuit_opened(&self, c: Component) {
        self.write(Event::CircuitOpened {
            component: component(c),
        });
    }
    pub fn malformed(&self, c: Component, e: &proto::ProtoError) {
        self.write(Event::MalformedPeer {
            peer: audit::Peer::Component(component(c)),
            error: proto_error_kind(e),
        });
    }
    pub fn binary_mismatch(&self, c: Component) {
        self.write(Event::BinaryDigestMismatch {
            component: component(c),
        });
    }
    pub fn llama_started(&self, pid: i32, m: &crate::models::store::StoredModel) {
        self.write(Event::LlamaServerStarted {
            pid: pid as u32,
            model: m.id.clone(),
            version: m.version.clone(),
            digest: m.digest,
        });
    }
    pub fn llama_exited(&self, pid: i32, exit_code: Option<i32>, signal: Option<i32>) {
        self.write(Event::LlamaServerExited {
            pid: pid as u32,
            exit_code,
            signal,
        });
    }
    /// The effective egress switches at start.
    pub fn egress_policy(&self, cloud: bool, services: bool, hub: bool, gateway: bool) {
        self.write(Event::EgressPolicy {
            cloud,
            services,
            hub,
            gateway,
        });
    }
    /// An attempt to change a locked key. Keys come from a closed list; one
    /// that breaks the id rule is not written (it cannot be a real key).
    pub fn setting_refused(&self, key: &str, source: audit::SettingSource) {
        if let Ok(key) = audit::SettingKey::parse(key) {
            self.write(Event::SettingRefused { key, source });
        }
    }
    pub fn connection_added(&self, name: &str, store: audit::KeyStore) {
        if let Ok(name) = audit::ConnectionName::parse(name) {
            self.write(Event::ConnectionAdded { name, store });
        }
    }
    pub fn connection_removed(&self, name: &str, store: audit::KeyStore) {
        if let Ok(name) = audit::ConnectionName::parse(name) {
            self.write(Event::ConnectionRemoved { name, store });
        }
    }
    pub fn model_pulled(
        &self,
        m: &crate::models::store::StoredModel,
        bytes: u64,
        resumed_from: u64,
    ) {
        self.write(Event::ModelPulled {
            id: m.id.clone(),
            version: m.version.clone(),
            digest: m.digest,
            bytes,
            resumed_from,
        });
    }
    /// A failed pull; an id or version that breaks the id rules (the user
    /// typed it) is not written as it is.
    pub fn model_pull_failed(&self, id: &str, version: Option<&str>, reason: audit::PullFailure) {
        let Ok(id) = audit::ModelId::parse(id) else {
            return;
        };
        let version = version.and_then(|v| audit::Version::parse(v).ok());
        self.write(Event::ModelPullFailed {
            id,
            version,
            reason,
        });
    }
    pub fn model_imported(&self, m: &crate::models::store::StoredModel) {
        self.write(Event::ModelImported {
            id: m.id.clone(),
            version: m.version.clone(),
            digest: m.digest,
        });
    }
    pub fn model_verified(&self, m: &crate::models::store::StoredModel, ok: bool) {
        self.write(Event::ModelVerified {
            id: m.id.clone(),
            version: m.version.clone(),
            digest: m.digest,
            ok,
        });
    }
    pub fn model_removed(&self, m: &crate::models::store::StoredModel) {
        self.write(Event::ModelRemoved {
            id: m.id.clone(),
            version: m.version.clone(),
            digest: m.digest,
        });
    }
    pub fn run_started(&self, run: &proto::flow::RunId, nodes: u32) {
        if let Ok(run) = audit::RunId::parse(&run.0) {
            self.write(Event::RunStarted { run, nodes });
        }
    }
    pub fn run_finished(&self, run: &proto::flow::RunId, ok: bool) {
        if let Ok(run) = audit::RunId::parse(&run.0) {
            self.write(Event::RunFinished { run, ok });
        }
    }
    pub fn run_removed(&self, run: &proto::flow::RunId) {
        if let Ok(run) = audit::RunId::parse(&run.0) {
            self.write(Event::RunRemoved { run });
        }
    }
    /// One AI node's metadata: never its prompt or output.
    pub fn ai_node(
        &self,
        run: &proto::flow::RunId,
        m: (&audit::ModelId, &audit::Version),
        s: &proto::flow::NodeSummary,
    ) {
        use proto::flow::{NodeError as E, NodeStatus, SkipReason as K};
        let (Ok(run), Ok(node)) = (audit::RunId::parse(&run.0), audit::NodeId::parse(&s.node))
        else {
            return;
        };
        let outcome = match s.status {
            NodeStatus::Ok => audit::AiOutcome::Ok,
            NodeStatus::Skipped(k) => audit::AiOutcome::Skipped(match k {
                K::ModelMissing => audit::SkipReason::ModelMissing,
                K::BelowMemoryFloor => audit::SkipReason::BelowMemoryFloor,
                K::LatencyBudget => audit::SkipReason::LatencyBudget,
                K::SandboxUnavailable => audit::SkipReason::SandboxUnavailable,
                K::CircuitOpen => audit::SkipReason::CircuitOpen,
                K::UpstreamNotDone => audit::SkipReason::UpstreamNotDone,
            }),
            NodeStatus::Failed(e) => audit::AiOutcome::Failed(match e {
                E::ModelServerFailed => audit::AiFailure::ModelServerFailed,
                E::WorkerUnavailable => audit::AiFailure::WorkerUnavailable,
                E::TimedOut => audit::AiFailure::TimedOut,
                E::Cancelled => audit::AiFailure::Cancelled,
                E::Busy => audit::AiFailure::Busy,
                E::Spool => audit::AiFailure::Spool,
                // Service-node failures; an AI node never ends with these.
                E::Egress(_) | E::HttpStatus(_) | E::GatewayUnavailable => {
                    audit::AiFailure::WorkerUnavailable
                }
            }),
        };
        self.write(Event::AiNode {
            run,
            node,
            model: m.0.clone(),
            version: m.1.clone(),
            prompt_tokens: s.prompt_tokens,
            generated_tokens: s.generated_tokens,
            duration_ms: s.duration_ms,
            first_token_ms: s.first_token_ms,
            outcome,
        });
    }
    pub fn malformed_control(&self, e: &proto::ProtoError) {
        self.write(Event::MalformedPeer {
            peer: audit::Peer::ControlClient,
            error: proto_error_kind(e),
        });
    }
}

/// Copy a component's stdout and stderr into `$XDG_STATE_HOME/flow/logs/`
/// (0600). Components never print prompt text or spool content; these logs
/// hold their diagnostics only.
pub fn capture_output(shared: &Arc<Shared>, c: Component, stdout: OwnedFd, stderr: OwnedFd) {
    let path = shared.paths.logs().join(format!("{}.log", c.as_str()));
    for fd in [stdout, stderr] {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            use std::os::unix::fs::OpenOptionsExt;
            let Ok(mut out) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
            else {
                return;
            };
            let mut src = std::fs::File::from(fd);
            let mut buf = [0u8; 4096];
            loop {
                match src.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
    }
}
