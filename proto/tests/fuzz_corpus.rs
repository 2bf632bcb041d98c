//! Replays the fuzz seed corpus (`fuzz/corpus/decode/`, plus any crash
//! reproducers saved under `fuzz/artifacts/decode/`) through the same function
//! as the fuzz target, so every input the fuzzer was ever given stays a
//! regression test under plain `cargo test`.
//!
//! `generate_seed_corpus` (ignored) rewrites the seed corpus:
//! `cargo test -p flow-proto --test fuzz_corpus -- --ignored generate_seed_corpus`.

#![allow(
    clippy::unwrap_used,
    reason = "test-only helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use proto::codec::{encode, encode_frame};
use proto::frame::DEFAULT_MAX_FRAME;
use proto::msg::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replay_corpus() {
    let corpus = files_under(&fuzz_dir().join("corpus/decode"));
    assert!(
        corpus.len() >= 20,
        "seed corpus missing: run the ignored generate_seed_corpus test"
    );
    let artifacts = files_under(&fuzz_dir().join("artifacts/decode"));
    for path in corpus.iter().chain(&artifacts) {
        let data = std::fs::read(path).unwrap();
        let replay = std::panic::catch_unwind(|| proto::fuzzing::decode_any(&data));
        assert!(replay.is_ok(), "decode_any panicked on {}", path.display());
    }
}

/// Seeds are real frames of every message type, so the fuzzer starts from
/// inputs that get past the frame header and the enum tags.
#[test]
fn seed_frames_decode() {
    for (name, bytes) in seeds() {
        if !name.starts_with("ok-") {
            continue;
        }
        let (payload, consumed) = proto::frame::decode_frame(&bytes, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(consumed, bytes.len(), "{name}");
        assert!(!payload.is_empty(), "{name}");
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus/decode; run by hand"]
fn generate_seed_corpus() {
    let dir = fuzz_dir().join("corpus/decode");
    std::fs::create_dir_all(&dir).unwrap();
    for old in files_under(&dir) {
        std::fs::remove_file(old).unwrap();
    }
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn frame<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    encode_frame(msg, DEFAULT_MAX_FRAME).unwrap()
}

fn attested() -> AttestedState {
    AttestedState {
        profile: "reasoning-worker".into(),
        filter_sha256: "ab".repeat(32),
        no_new_privs: true,
        seccomp_mode: 2,
        seccomp_filters: 1,
        cap_inh: 0,
        cap_prm: 0,
        cap_eff: 0,
        cap_bnd: 0,
        cap_amb: 0,
        host_uid: 1000,
        namespaces: vec![("net".into(), 4026531840), ("user".into(), 4026531837)],
        fds: vec![0, 1, 2, 3],
        threads: 1,
    }
}

fn status() -> BrokerStatus {
    BrokerStatus {
        broker_pid: 4242,
        broker_uid: 1000,
        uptime_secs: 3600,
        waivers: vec![],
        gateway_absent: None,
        components: vec![
            ComponentStatus {
                component: Component::Executor,
                state: ComponentState::Running,
                pid: Some(4300),
                uptime_secs: Some(3590),
                restarts: 0,
                attested: Some(attested()),
            },
            ComponentStatus {
                component: Component::ReasoningWorker,
                state: ComponentState::CircuitOpen,
                pid: None,
                uptime_secs: None,
                restarts: 5,
                attested: None,
            },
        ],
    }
}

fn grants() -> Vec<CapGrant> {
    vec![
        CapGrant {
            id: CapId(1),
            kind: CapKind::Reasoning,
            role: CapRole::Client,
            rights: vec![Right::Ping, Right::Infer],
        },
        CapGrant {
            id: CapId(2),
            kind: CapKind::Reasoning,
            role: CapRole::Server,
            rights: vec![Right::Ping],
        },
    ]
}

/// `(file name, contents)`. Names starting with `ok-` are one valid frame.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut ok = |name: &str, bytes: Vec<u8>| seeds.push((format!("ok-{name}"), bytes));

    for (name, service) in [
        ("bootstrap", ServiceKind::Bootstrap),
        ("reasoning", ServiceKind::Reasoning),
        ("control", ServiceKind::Control),
    ] {
        ok(
            &format!("handshake-{name}"),
            frame(&Handshake::new(service)),
        );
    }
    let report = SelfReport {
        profile: "executor".into(),
        filter_sha256: "0f".repeat(32),
        landlock_abi: 6,
        waivers: vec!["userns".into()],
    };
    ok(
        "child-hello",
        frame(&ChildMsg::Hello {
            component: Component::Executor,
            report,
        }),
    );
    ok("child-ready", frame(&ChildMsg::Ready));
    ok("broker-grant", frame(&BrokerMsg::Grant(grants())));
    ok("broker-revoke", frame(&BrokerMsg::Revoke(CapId(7))));
    ok("broker-shutdown", frame(&BrokerMsg::Shutdown));
    ok(
        "reasoning-ping",
        frame(&ReasoningRequest::Ping {
            id: 1,
            payload: b"hello".to_vec(),
        }),
    );
    ok(
        "reasoning-pong",
        frame(&ReasoningResponse::Pong {
            id: 1,
            payload: b"hello".to_vec(),
        }),
    );
    ok(
        "reasoning-error",
        frame(&ReasoningResponse::Error {
            id: 2,
            error: ServiceError::NotPermitted(Right::Infer),
        }),
    );
    ok("control-status", frame(&ControlRequest::Status));
    ok("control-caps", frame(&ControlRequest::Caps));
    ok("control-revoke", frame(&ControlRequest::Revoke(CapId(3))));
    ok(
        "control-ping",
        frame(&ControlRequest::Ping {
            count: 1000,
            payload: vec![0xaa; 32],
        }),
    );
    ok("control-down", frame(&ControlRequest::Down));
    ok("response-status", frame(&ControlResponse::Status(status())));
    ok(
        "response-caps",
        frame(&ControlResponse::Caps(vec![CapRow {
            id: CapId(1),
            kind: CapKind::Reasoning,
            client: Component::Executor,
            server: Component::ReasoningWorker,
            rights: vec![Right::Ping, Right::Infer],
            granted_at: 1_700_000_000,
            revoked: false,
        }])),
    );
    ok(
        "response-pinged",
        frame(&ControlResponse::Pinged {
            count: 1000,
            total_nanos: 12_345_678,
        }),
    );
    ok("response-ok", frame(&ControlResponse::Ok));
    ok(
        "response-error",
        frame(&ControlResponse::Error(ControlError::ComponentUnavailable(
            Component::LlamaServer,
        ))),
    );
    ok("attested-state", frame(&attested()));

    let mut bad_magic = Handshake::new(ServiceKind::Control);
    bad_magic.magic = *b"HTTP";
    let mut bad_version = Handshake::new(ServiceKind::Control);
    bad_version.version = PROTOCOL_VERSION + 1;
    let grant = frame(&BrokerMsg::Grant(grants()));
    let mut two_frames = frame(&Handshake::new(ServiceKind::Reasoning));
    two_frames.extend_from_slice(&frame(&ReasoningRequest::Ping {
        id: 9,
        payload: vec![1, 2, 3],
    }));
    let mut trailing = encode(&ControlRequest::Down).unwrap();
    trailing.push(0);
    let mut huge_vec = vec![0u8, 1];
    huge_vec.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 2]);

    seeds.extend([
        ("bad-handshake-magic".into(), frame(&bad_magic)),
        ("bad-handshake-version".into(), frame(&bad_version)),
        ("bad-truncated-header".into(), vec![12, 0]),
        (
            "bad-truncated-body".into(),
            grant[..grant.len() / 2].to_vec(),
        ),
        ("bad-oversized".into(), {
            let mut b = 9_000_000u32.to_le_bytes().to_vec();
            b.extend_from_slice(&[0; 8]);
            b
        }),
        ("bad-zero-length".into(), vec![0, 0, 0, 0, 1]),
        (
            "bad-trailing-bytes".into(),
            encode_frame(&trailing, DEFAULT_MAX_FRAME).unwrap(),
        ),
        ("bad-unknown-variant".into(), vec![1, 0, 0, 0, 200]),
        (
            "bad-huge-vec-length".into(),
            encode_frame(&huge_vec, DEFAULT_MAX_FRAME).unwrap(),
        ),
        ("stream-two-frames".into(), two_frames),
        (
            "raw-broker-grant".into(),
            encode(&BrokerMsg::Grant(grants())).unwrap(),
        ),
        (
            "raw-status".into(),
            encode(&ControlResponse::Status(status())).unwrap(),
        ),
    ]);
    seeds
}
