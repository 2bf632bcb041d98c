//! The log's schema, whole: one line per event variant, compared byte for byte
//! with a snapshot. A change to any event, field name or value spelling shows
//! up here, where a reviewer can check that no free-text field slipped in.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use audit::{
    head_path, read_records, verify, AttestCheck, CapKind, Component, Digest, Event, Layer, Peer,
    ProtoErrorKind, Record, RefusalReason, Right, Timestamp, Waiver,
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
    for c in Component::ALL {
        events.push(Event::CircuitOpened { component: c });
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
        | Event::OverrideInForce { .. } => {}
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
