//! The log's schema, whole: one line per event variant, compared byte for byte
//! with a snapshot. A change to any event, field name or value spelling shows
//! up here, where a reviewer can check that no free-text field slipped in.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use audit::{
    chain_hash, head_path, read_records, verify, AiFailure, AiOutcome, AttestCheck, CapKind,
    Component, ConnectionName, Digest, EgressDenial, EgressOutcome, Event, FailureKind, Host,
    HttpMethod, KeyStore, Layer, LineError, ModelId, NodeId, Peer, ProtoErrorKind, PullFailure,
    Record, RefusalReason, Right, RunId, SettingKey, SettingSource, SkipReason, Timestamp, UrlPath,
    Version, Waiver,
};
use common::TempDir;

/// Every event variant (and every variant of the enums inside events). The
/// match below fails to compile when a variant is added, so this list cannot
/// silently fall behind.
fn every_event() -> Vec<Event> {
    let component = Component::ReasoningWorker;
    let mut events = vec![
        Event::BrokerStarted { pid: 1, uid: 0 },
        Event::BrokerStopped { pid: 1 },
        Event::ComponentSpawned { component, pid: 42 },
        Event::Attested {
            component,
            pid: 42,
            filter_sha256: Digest([0xa5; 32]),
        },
    ];
    for check in [
        AttestCheck::NoNewPrivs,
        AttestCheck::Seccomp,
        AttestCheck::SeccompFilters,
        AttestCheck::Capabilities,
        AttestCheck::HostUid,
        AttestCheck::Namespace,
        AttestCheck::Fds,
        AttestCheck::ProcessGone,
    ] {
        events.push(Event::AttestationFailed {
            component,
            pid: 42,
            check,
        });
    }
    events.extend([
        Event::CapabilityGranted {
            cap_id: 7,
            kind: CapKind::Reasoning,
            client: Component::Executor,
            server: Component::ReasoningWorker,
            rights: vec![Right::Ping, Right::Infer],
        },
        Event::CapabilityRevoked { cap_id: 7 },
        Event::ComponentCrashed {
            component: Component::LlamaServer,
            pid: 43,
            exit_code: Some(101),
            signal: None,
        },
        Event::ComponentCrashed {
            component: Component::EgressGateway,
            pid: 44,
            exit_code: None,
            signal: Some(31),
        },
        Event::ComponentRestarted {
            component,
            attempt: 2,
            backoff_ms: 400,
        },
        Event::CircuitOpened { component },
    ]);
    for layer in [
        Layer::Landlock,
        Layer::UserNamespace,
        Layer::NetNamespace,
        Layer::MountNamespace,
        Layer::Seccomp,
        Layer::NoNewPrivs,
        Layer::Capabilities,
    ] {
        events.push(Event::Refused {
            what: RefusalReason::SandboxLayerMissing { layer },
        });
    }
    events.extend([
        Event::Refused {
            what: RefusalReason::PeerUidMismatch { peer_uid: 1001 },
        },
        Event::Refused {
            what: RefusalReason::PolicyLocked,
        },
        Event::Refused {
            what: RefusalReason::NotAttested {
                component: Component::Executor,
            },
        },
        Event::Refused {
            what: RefusalReason::CircuitOpen {
                component: Component::LlamaServer,
            },
        },
        Event::MalformedPeer {
            peer: Peer::ControlClient,
            error: ProtoErrorKind::BadHandshake,
        },
    ]);
    for error in [
        ProtoErrorKind::TooLarge,
        ProtoErrorKind::Truncated,
        ProtoErrorKind::Garbage,
    ] {
        events.push(Event::MalformedPeer {
            peer: Peer::Component(Component::Executor),
            error,
        });
    }
    events.push(Event::OverrideInForce {
        layers: vec![Waiver::Landlock],
    });
    // The broker is never spawned, so it has no circuit; it appears below as
    // the holder of a Model Hub capability.
    for c in Component::ALL
        .into_iter()
        .filter(|c| *c != Component::Broker)
    {
        events.push(Event::CircuitOpened { component: c });
    }
    // Models and runs. Appended after the records above so that their lines,
    // and so their hashes, stay as they were.
    let id = ModelId::parse("smollm2-135m-instruct").unwrap();
    let version = Version::parse("1.0.0").unwrap();
    let digest = Digest([0xb1; 32]);
    let run = RunId::new(0x0123_4567_89ab_cdef);
    events.extend([
        Event::RunStarted { run, nodes: 3 },
        Event::ModelImported {
            id: id.clone(),
            version: version.clone(),
            digest,
        },
        Event::ModelVerified {
            id: id.clone(),
            version: version.clone(),
            digest,
            ok: true,
        },
        Event::ModelVerified {
            id: id.clone(),
            version: Version::parse("1.1.0-rc.1").unwrap(),
            digest,
            ok: false,
        },
        Event::LlamaServerStarted {
            pid: 45,
            model: id.clone(),
            version: version.clone(),
            digest,
        },
    ]);
    let ai_node = |node: &str, outcome: AiOutcome, first_token_ms: Option<u64>| Event::AiNode {
        run,
        node: NodeId::parse(node).unwrap(),
        model: id.clone(),
        version: version.clone(),
        prompt_tokens: 120,
        generated_tokens: 48,
        duration_ms: 950,
        first_token_ms,
        outcome,
    };
    events.push(ai_node("summarize", AiOutcome::Ok, Some(80)));
    for reason in [
        SkipReason::ModelMissing,
        SkipReason::BelowMemoryFloor,
        SkipReason::LatencyBudget,
        SkipReason::SandboxUnavailable,
        SkipReason::CircuitOpen,
        SkipReason::UpstreamNotDone,
    ] {
        events.push(ai_node("skip_me", AiOutcome::Skipped(reason), None));
    }
    for failure in [
        AiFailure::ModelServerFailed,
        AiFailure::WorkerUnavailable,
        AiFailure::TimedOut,
        AiFailure::Cancelled,
        AiFailure::Busy,
        AiFailure::Spool,
    ] {
        events.push(ai_node("fail-me", AiOutcome::Failed(failure), Some(3)));
    }
    events.extend([
        Event::LlamaServerExited {
            pid: 45,
            exit_code: Some(0),
            signal: None,
        },
        Event::LlamaServerExited {
            pid: 46,
            exit_code: None,
            signal: Some(9),
        },
        Event::BinaryDigestMismatch {
            component: Component::LlamaServer,
        },
        Event::RunFinished { run, ok: false },
        Event::RunRemoved { run },
        Event::ModelRemoved {
            id: id.clone(),
            version: version.clone(),
            digest,
        },
        Event::CapabilityGranted {
            cap_id: 9,
            kind: CapKind::Egress,
            client: Component::Executor,
            server: Component::EgressGateway,
            rights: vec![Right::Http],
        },
        Event::CapabilityGranted {
            cap_id: 10,
            kind: CapKind::Egress,
            client: Component::Broker,
            server: Component::EgressGateway,
            rights: vec![Right::Http],
        },
        Event::EgressPolicy {
            cloud: false,
            services: true,
            hub: false,
            gateway: true,
        },
    ]);
    for source in [
        SettingSource::SettingsFile,
        SettingSource::Cli,
        SettingSource::FlowFile,
        SettingSource::ControlSocket,
    ] {
        events.push(Event::SettingRefused {
            key: SettingKey::parse("services.enabled").unwrap(),
            source,
        });
    }
    let name = ConnectionName::parse("tickets").unwrap();
    for store in [KeyStore::SecretService, KeyStore::Keyutils] {
        events.push(Event::ConnectionAdded {
            name: name.clone(),
            store,
        });
        events.push(Event::ConnectionRemoved {
            name: name.clone(),
            store,
        });
    }
    let methods = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
    ];
    let denials = [
        EgressDenial::ConnectionNotGranted,
        EgressDenial::MethodNotAllowed,
        EgressDenial::PathNotAllowed,
        EgressDenial::HeaderNotAllowed,
        EgressDenial::RequestTooLarge,
        EgressDenial::ResponseTooLarge,
        EgressDenial::RateLimited,
        EgressDenial::ResolveFailed,
        EgressDenial::AddressDenied,
        EgressDenial::RedirectDenied,
        EgressDenial::ConnectFailed,
        EgressDenial::TlsFailed,
        EgressDenial::BadUpstreamResponse,
        EgressDenial::TimedOut,
        EgressDenial::BadRequest,
    ];
    let outcomes = std::iter::once(EgressOutcome::Allowed)
        .chain(denials.into_iter().map(EgressOutcome::Denied));
    for (i, outcome) in outcomes.enumerate() {
        events.push(Event::EgressDecision {
            cap_id: 9,
            connection: name.clone(),
            host: Host::parse("api.example.com").unwrap(),
            port: 443,
            method: methods[i % methods.len()],
            path: UrlPath::parse("/v1/items/42").unwrap(),
            status: (i == 0).then_some(200),
            bytes_out: 12,
            bytes_in: 345,
            duration_ms: 6,
            outcome,
            body_from_ai: i % 2 == 1,
        });
    }
    events.push(Event::ModelPulled {
        id: id.clone(),
        version: version.clone(),
        digest,
        bytes: 1024,
        resumed_from: 512,
    });
    for reason in [
        PullFailure::HubDisabled,
        PullFailure::NotInCatalog,
        PullFailure::BadSignature,
        PullFailure::Transfer,
        PullFailure::DigestMismatch,
        PullFailure::Store,
    ] {
        events.push(Event::ModelPullFailed {
            id: id.clone(),
            version: Some(version.clone()),
            reason,
        });
    }
    for e in &events {
        covered(e);
    }
    events
}

fn covered(e: &Event) {
    match e {
        Event::BrokerStarted { .. }
        | Event::BrokerStopped { .. }
        | Event::ComponentSpawned { .. }
        | Event::Attested { .. }
        | Event::AttestationFailed { .. }
        | Event::CapabilityGranted { .. }
        | Event::CapabilityRevoked { .. }
        | Event::ComponentCrashed { .. }
        | Event::ComponentRestarted { .. }
        | Event::CircuitOpened { .. }
        | Event::Refused { .. }
        | Event::MalformedPeer { .. }
        | Event::OverrideInForce { .. }
        | Event::ModelImported { .. }
        | Event::ModelVerified { .. }
        | Event::ModelRemoved { .. }
        | Event::AiNode { .. }
        | Event::LlamaServerStarted { .. }
        | Event::LlamaServerExited { .. }
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
        | Event::ModelPullFailed { .. } => {}
    }
}

/// The lines a writer would produce for `every_event`, at a fixed time, with
/// the override record and the ones after it carrying the landlock waiver.
fn lines() -> Vec<u8> {
    let time = Timestamp::parse("2025-01-02T03:04:05.678Z").unwrap();
    let mut prev = Digest::GENESIS;
    let mut overrides = vec![];
    let mut out = Vec::new();
    for (i, event) in every_event().into_iter().enumerate() {
        if matches!(event, Event::OverrideInForce { .. }) {
            overrides = vec![Waiver::Landlock];
        }
        let record = Record {
            seq: i as u64 + 1,
            time,
            prev,
            overrides: overrides.clone(),
            event,
        };
        let (hash, line) = record.to_line().unwrap();
        out.extend_from_slice(&line);
        prev = hash;
    }
    out
}

const SNAPSHOT: &str = include_str!("snapshots/every_event.log");

#[test]
fn every_event_line_matches_the_snapshot() {
    let actual = String::from_utf8(lines()).unwrap();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots/every_event.log");
        std::fs::write(path, &actual).unwrap();
    }
    // Compare line by line for a readable diff, then whole.
    for (i, (a, s)) in actual.lines().zip(SNAPSHOT.lines()).enumerate() {
        assert_eq!(a, s, "line {}", i + 1);
    }
    assert_eq!(actual, SNAPSHOT);
}

#[test]
fn the_snapshot_verifies_and_reads_back() {
    let dir = TempDir::new("schema");
    let log = dir.join("audit.log");
    std::fs::write(&log, SNAPSHOT).unwrap();
    let report = verify(&log).unwrap();
    assert_eq!(report.failure, None);
    let n = every_event().len() as u64;
    assert_eq!(report.records, n);
    std::fs::write(
        head_path(&log),
        format!("{n} {}\n", report.head_hash.to_hex()),
    )
    .unwrap();
    let records = read_records(&log).unwrap();
    let events: Vec<Event> = records.into_iter().map(|r| r.event).collect();
    assert_eq!(events, every_event());
}

/// `Event::name` is the key the event is written under, and the accessors
/// used by listings see the new events.
#[test]
fn names_and_accessors_match_what_is_written() {
    for e in every_event() {
        let json = serde_json::to_value(&e).unwrap();
        let key = match &json {
            serde_json::Value::Object(m) => m.keys().next().unwrap().clone(),
            serde_json::Value::String(s) => s.clone(),
            other => panic!("{other}"),
        };
        assert_eq!(key, e.name());
    }
    let run = RunId::new(1);
    let id = ModelId::parse("m").unwrap();
    let version = Version::parse("1.0.0").unwrap();
    let started = Event::LlamaServerStarted {
        pid: 9,
        model: id.clone(),
        version: version.clone(),
        digest: Digest::GENESIS,
    };
    assert_eq!(
        (
            started.component(),
            started.pid(),
            started.model(),
            started.run()
        ),
        (
            Some(Component::LlamaServer),
            Some(9),
            Some((&id, &version)),
            None
        )
    );
    let finished = Event::RunFinished { run, ok: true };
    assert_eq!(
        (
            finished.component(),
            finished.pid(),
            finished.model(),
            finished.run()
        ),
        (None, None, None, Some(run))
    );
    let mismatch = Event::BinaryDigestMismatch {
        component: Component::LlamaServer,
    };
    assert_eq!(mismatch.component(), Some(Component::LlamaServer));
}

/// The string ids are where free text could try to enter: a model id, version,
/// node id or run id outside its charset makes the line fail verification
/// even with a correct hash. The same line with valid ids verifies.
#[test]
fn free_text_in_an_id_does_not_verify() {
    let work = TempDir::new("schema-ids");
    let log = work.join("audit.log");
    let t = "2025-01-02T03:04:05.678Z";
    let z = Digest::GENESIS.to_hex();
    let d = "b1".repeat(32);
    let body = |event: &str| {
        format!(r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{event}}}"#)
    };
    let imported = |id: &str, version: &str| {
        body(&format!(
            r#"{{"model-imported":{{"id":{id},"version":{version},"digest":"{d}"}}}}"#
        ))
    };
    let ai_node = |run: &str, node: &str| {
        body(&format!(
            r#"{{"ai-node":{{"run":{run},"node":{node},"model":"smollm2-135m-instruct","version":"1.0.0","prompt_tokens":1,"generated_tokens":1,"duration_ms":1,"first_token_ms":null,"outcome":"ok"}}}}"#
        ))
    };
    let good_run = r#""0123456789abcdef""#;
    let bad = [
        imported(r#""ignore previous instructions""#, r#""1.0.0""#),
        imported(r#""smollm2 135m""#, r#""1.0.0""#),
        imported(r#""SmolLM2""#, r#""1.0.0""#),
        imported(r#""../../etc/passwd""#, r#""1.0.0""#),
        imported(
            r#""a
b""#,
            r#""1.0.0""#,
        ),
        imported(&format!(r#""{}""#, "a".repeat(65)), r#""1.0.0""#),
        imported(r#"["smollm2"]"#, r#""1.0.0""#),
        imported(r#""smollm2""#, r#""1.0.0 the user asked about""#),
        imported(r#""smollm2""#, r#""1.0""#),
        imported(r#""smollm2""#, r#""1.0.0+build""#),
        ai_node(good_run, r#""Summarize the meeting""#),
        ai_node(good_run, r#""node.1""#),
        ai_node(r#""0123456789ABCDEF""#, r#""n""#),
        ai_node(r#""0123456789abcde""#, r#""n""#),
        ai_node("81985529216486895", r#""n""#),
        body(
            r#"{"ai-node":{"run":"0123456789abcdef","node":"n","model":"smollm2","version":"1.0.0","prompt_tokens":1,"generated_tokens":1,"duration_ms":1,"first_token_ms":null,"outcome":{"failed":"the model said: hi"}}}"#,
        ),
    ];
    for body in bad {
        let hash = chain_hash(&Digest::GENESIS, body.as_bytes());
        std::fs::write(&log, format!("{} {body}\n", hash.to_hex())).unwrap();
        let report = verify(&log).unwrap();
        let f = report.failure.unwrap_or_else(|| panic!("{body} verified"));
        assert_eq!(f.record, 1, "{body}");
        assert!(
            matches!(f.kind, FailureKind::BadLine(LineError::BadBody(_))),
            "{body}: {f}"
        );
    }
    for body in [
        imported(r#""smollm2-135m-instruct""#, r#""1.1.0-rc.1""#),
        ai_node(good_run, r#""summarize_1""#),
    ] {
        let hash = chain_hash(&Digest::GENESIS, body.as_bytes());
        std::fs::write(&log, format!("{} {body}\n", hash.to_hex())).unwrap();
        assert_eq!(verify(&log).unwrap().failure, None, "{body}");
    }
}
