// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use audit::{
    chain_hash, head_path, read_records, verify, AttestCheck, AuditError, CapKind, ChainHead,
    Component, Digest, Event, Failure, FailureKind, HeadCheck, HeadProtection, LineError, Right,
    VerifyReport, Waiver, Writer,
};
use common::{line_starts, TempDir};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn three_events() -> [Event; 3] {
    [
        Event::BrokerStarted { pid: 100, uid: 0 },
        Event::ComponentSpawned {
            component: Component::ReasoningWorker,
            pid: 4242,
        },
        Event::AttestationFailed {
            component: Component::ReasoningWorker,
            pid: 4242,
            check: AttestCheck::SeccompFilters,
        },
    ]
}

/// A log with the three events above in `dir`, writer closed.
fn write_log(dir: &TempDir, events: &[Event]) -> PathBuf {
    let log = dir.join("audit.log");
    let w = Writer::open(&log).unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(w.append(e.clone()).unwrap(), i as u64 + 1);
    }
    log
}

/// Copy of a log (with its head) as plain files, free of the append-only flag,
/// so a test can damage it.
fn copy_log(log: &Path, to: &TempDir) -> PathBuf {
    let copy = to.join("audit.log");
    std::fs::write(&copy, std::fs::read(log).unwrap()).unwrap();
    std::fs::write(head_path(&copy), std::fs::read(head_path(log)).unwrap()).unwrap();
    copy
}

fn failure(report: &VerifyReport) -> &Failure {
    report
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("expected a failure, got {report:?}"))
}

/// THE acceptance test: every byte of a three-record log, changed in several
/// ways, makes verification fail at the record whose line holds that byte (the
/// newline belongs to its record), at that line's offset, with the records
/// before it verified.
#[test]
fn every_byte_flip_is_caught_at_its_record() {
    let dir = TempDir::new("flip");
    let log = write_log(&dir, &three_events());
    let original = std::fs::read(&log).unwrap();
    let starts = line_starts(&original);
    assert_eq!(starts.len(), 3);
    assert_eq!(verify(&log).unwrap().failure, None);

    let work = TempDir::new("flip-work");
    let copy = copy_log(&log, &work);
    let mut cases = 0;
    for offset in 0..original.len() {
        let record = starts.iter().filter(|s| **s <= offset).count();
        let line_start = starts[record - 1] as u64;
        let byte = original[offset];
        for changed in [byte ^ 0x01, byte ^ 0x80, b'\n', b' ', b'0', b'}'] {
            if changed == byte {
                continue;
            }
            let mut damaged = original.clone();
            damaged[offset] = changed;
            std::fs::write(&copy, &damaged).unwrap();
            let report = verify(&copy).unwrap();
            let f = failure(&report);
            let what = format!("offset {offset}: {byte:#04x} -> {changed:#04x}: {f}");
            assert_eq!(f.record, record as u64, "{what}");
            assert_eq!(f.offset, line_start, "{what}");
            assert_eq!(report.records, record as u64 - 1, "{what}");
            assert!(!report.is_intact(), "{what}");
            cases += 1;
        }
    }
    assert!(cases > 5 * original.len(), "{cases}");
}

#[test]
fn truncation_is_caught_by_the_chain_head() {
    let dir = TempDir::new("trunc");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("trunc-work");
    let copy = copy_log(&log, &work);
    let bytes = std::fs::read(&copy).unwrap();
    let starts = line_starts(&bytes);
    std::fs::write(&copy, &bytes[..starts[2]]).unwrap();

    let report = verify(&copy).unwrap();
    assert_eq!(
        report.failure,
        Some(Failure {
            record: 3,
            offset: starts[2] as u64,
            kind: FailureKind::Truncated {
                log_ends_at: 2,
                head_says: 3
            },
        })
    );
    assert_eq!(report.records, 2);
    assert_eq!(
        failure(&report).kind.to_string(),
        "the log ends at record 2 but the chain head says 3: records were removed from the end"
    );

    // Emptying the log entirely is caught the same way.
    std::fs::write(&copy, b"").unwrap();
    let report = verify(&copy).unwrap();
    assert_eq!(
        failure(&report).kind,
        FailureKind::Truncated {
            log_ends_at: 0,
            head_says: 3
        }
    );
    assert!(matches!(
        Writer::open(&copy),
        Err(AuditError::Broken { .. })
    ));
}

#[test]
fn reordering_is_reported_at_the_first_moved_record() {
    let dir = TempDir::new("reorder");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("reorder-work");
    let copy = copy_log(&log, &work);
    let bytes = std::fs::read(&copy).unwrap();
    let starts = line_starts(&bytes);
    let mut swapped = bytes[..starts[1]].to_vec();
    swapped.extend_from_slice(&bytes[starts[2]..]);
    swapped.extend_from_slice(&bytes[starts[1]..starts[2]]);
    std::fs::write(&copy, &swapped).unwrap();

    let report = verify(&copy).unwrap();
    let f = failure(&report);
    assert_eq!(
        *f,
        Failure {
            record: 2,
            offset: starts[1] as u64,
            kind: FailureKind::BadSeq {
                expected: 2,
                found: 3
            },
        }
    );
    assert!(f.to_string().contains("reordered"), "{f}");
    assert_eq!(report.records, 1);
}

#[test]
fn reopen_continues_the_chain() {
    let dir = TempDir::new("reopen");
    let log = dir.join("audit.log");
    let first_head = {
        let w = Writer::open(&log).unwrap();
        assert_eq!(w.head().unwrap(), ChainHead::EMPTY);
        w.append(Event::BrokerStarted { pid: 1, uid: 1000 })
            .unwrap();
        w.append(Event::BrokerStopped { pid: 1 }).unwrap();
        w.head().unwrap()
    };
    assert_eq!(first_head.seq, 2);

    let w = Writer::open(&log).unwrap();
    assert_eq!(w.head().unwrap(), first_head);
    w.set_overrides(vec![Waiver::Landlock, Waiver::Landlock])
        .unwrap();
    assert_eq!(
        w.append(Event::BrokerStarted { pid: 2, uid: 1000 })
            .unwrap(),
        3
    );
    drop(w);

    let report = verify(&log).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 3);
    assert_eq!(report.head_file, HeadCheck::Matches);

    let records = read_records(&log).unwrap();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(records[0].prev, Digest::GENESIS);
    assert_eq!(records[2].prev, first_head.hash);
    assert_eq!(records[1].overrides, []);
    assert_eq!(records[2].overrides, [Waiver::Landlock]);
    assert_eq!(report.head_hash, records[2].to_line().unwrap().0);
    assert_eq!(records[2].summary().event, "broker-started");
}

#[test]
fn writer_refuses_a_broken_log_and_leaves_it_alone() {
    let dir = TempDir::new("refuse");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("refuse-work");
    let copy = copy_log(&log, &work);
    let mut bytes = std::fs::read(&copy).unwrap();
    let starts = line_starts(&bytes);
    bytes[starts[1] + 80] ^= 0x01;
    std::fs::write(&copy, &bytes).unwrap();
    let head_before = std::fs::read(head_path(&copy)).unwrap();

    let err = Writer::open(&copy).unwrap_err();
    match &err {
        AuditError::Broken { failure, .. } => {
            assert_eq!(failure.record, 2);
            assert_eq!(failure.offset, starts[1] as u64);
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("record 2"), "{msg}");
    assert!(msg.contains("flow audit verify"), "{msg}");
    assert!(msg.contains("aside"), "{msg}");
    assert!(msg.contains(&copy.display().to_string()), "{msg}");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    assert_eq!(std::fs::read(head_path(&copy)).unwrap(), head_before);
    assert!(matches!(
        read_records(&copy),
        Err(AuditError::Broken { .. })
    ));
}

#[test]
fn a_missing_head_is_refused_by_the_writer() {
    let dir = TempDir::new("nohead");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("nohead-work");
    let copy = copy_log(&log, &work);
    std::fs::remove_file(head_path(&copy)).unwrap();

    let report = verify(&copy).unwrap();
    assert_eq!(report.failure, None);
    assert_eq!(report.records, 3);
    assert_eq!(report.head_file, HeadCheck::Missing);
    assert!(!report.is_intact());
    let err = Writer::open(&copy).unwrap_err();
    assert!(
        matches!(err, AuditError::HeadMissing { records: 3, .. }),
        "{err}"
    );

    std::fs::write(head_path(&copy), b"3 not-a-hash\n").unwrap();
    assert_eq!(verify(&copy).unwrap().head_file, HeadCheck::Invalid);
    assert!(matches!(
        Writer::open(&copy),
        Err(AuditError::HeadInvalid { .. })
    ));
}

#[test]
fn head_one_behind_is_the_crash_window_and_is_repaired() {
    let dir = TempDir::new("behind");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("behind-work");
    let copy = copy_log(&log, &work);
    let records = read_records(&copy).unwrap();
    let second = records[1].to_line().unwrap().0;
    std::fs::write(head_path(&copy), format!("2 {}\n", second.to_hex())).unwrap();

    let report = verify(&copy).unwrap();
    assert_eq!(report.head_file, HeadCheck::OneBehind);
    assert!(report.is_intact());
    let w = Writer::open(&copy).unwrap();
    assert_eq!(w.head().unwrap().seq, 3);
    drop(w);
    assert_eq!(verify(&copy).unwrap().head_file, HeadCheck::Matches);
}

#[test]
fn head_further_behind_or_different_is_a_failure() {
    let dir = TempDir::new("stale");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("stale-work");
    let copy = copy_log(&log, &work);
    let starts = line_starts(&std::fs::read(&copy).unwrap());
    let records = read_records(&copy).unwrap();
    let first = records[0].to_line().unwrap().0;

    std::fs::write(head_path(&copy), format!("1 {}\n", first.to_hex())).unwrap();
    let report = verify(&copy).unwrap();
    assert_eq!(
        report.failure,
        Some(Failure {
            record: 3,
            offset: starts[2] as u64,
            kind: FailureKind::HeadStale {
                head_says: 1,
                log_ends_at: 3
            },
        })
    );

    std::fs::write(head_path(&copy), format!("3 {}\n", first.to_hex())).unwrap();
    let report = verify(&copy).unwrap();
    assert_eq!(
        report.failure,
        Some(Failure {
            record: 3,
            offset: starts[2] as u64,
            kind: FailureKind::HeadMismatch,
        })
    );
}

#[test]
fn a_last_line_without_newline_is_reported() {
    let dir = TempDir::new("nonl");
    let log = write_log(&dir, &three_events());
    let work = TempDir::new("nonl-work");
    let copy = copy_log(&log, &work);
    let bytes = std::fs::read(&copy).unwrap();
    let starts = line_starts(&bytes);
    std::fs::write(&copy, &bytes[..bytes.len() - 1]).unwrap();
    assert_eq!(
        verify(&copy).unwrap().failure,
        Some(Failure {
            record: 3,
            offset: starts[2] as u64,
            kind: FailureKind::MissingNewline,
        })
    );
}

/// A line whose hash is right but whose body says more than the schema allows
/// (an unknown field, an unknown event, a free-text value where an enum is
/// expected) does not verify: nothing can be smuggled into the log.
#[test]
fn bodies_outside_the_schema_do_not_verify() {
    let work = TempDir::new("schema-strict");
    let copy = work.join("audit.log");
    let t = "2025-01-02T03:04:05.678Z";
    let z = Digest::GENESIS.to_hex();
    let bodies = [
        format!(
            r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1,"note":"hi"}}}}}}"#
        ),
        format!(
            r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1}}}},"note":"hi"}}"#
        ),
        format!(
            r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"free-text":{{"text":"hi"}}}}}}"#
        ),
        format!(
            r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"circuit-opened":{{"component":"hi"}}}}}}"#
        ),
        format!(
            r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":["hi"],"event":{{"broker-stopped":{{"pid":1}}}}}}"#
        ),
        format!(
            r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1}},"circuit-opened":{{"component":"executor"}}}}}}"#
        ),
        format!(
            r#"{{"seq":1,"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1}}}}}}"#
        ),
        format!(
            r#"{{"seq":1,"time":"2025-01-02T03:04:05.678+01:00","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1}}}}}}"#
        ),
        format!(
            r#" {{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1}}}}}}"#
        ),
    ];
    for body in bodies {
        let hash = chain_hash(&Digest::GENESIS, body.as_bytes());
        std::fs::write(&copy, format!("{} {body}\n", hash.to_hex())).unwrap();
        let report = verify(&copy).unwrap();
        let f = failure(&report);
        assert_eq!(f.record, 1, "{body}");
        assert!(
            matches!(f.kind, FailureKind::BadLine(LineError::BadBody(_))),
            "{body}: {f}"
        );
    }
    // The same line with the body the schema allows verifies.
    let body = format!(
        r#"{{"seq":1,"time":"{t}","prev":"{z}","overrides":[],"event":{{"broker-stopped":{{"pid":1}}}}}}"#
    );
    let hash = chain_hash(&Digest::GENESIS, body.as_bytes());
    std::fs::write(&copy, format!("{} {body}\n", hash.to_hex())).unwrap();
    assert_eq!(verify(&copy).unwrap().failure, None);
}

#[test]
fn appends_from_many_threads_form_one_chain() {
    let dir = TempDir::new("threads");
    let log = dir.join("audit.log");
    let w = Arc::new(Writer::open(&log).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let w = Arc::clone(&w);
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|i| {
                        w.append(Event::CapabilityGranted {
                            cap_id: t * 100 + i,
                            kind: CapKind::Reasoning,
                            client: Component::Executor,
                            server: Component::ReasoningWorker,
                            rights: vec![Right::Ping, Right::Infer],
                        })
                        .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    drop(w);
    let report = verify(&log).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.records, 100);
}

#[test]
fn a_second_writer_is_refused_while_the_first_is_open() {
    let dir = TempDir::new("lock");
    let log = dir.join("audit.log");
    let w = Writer::open(&log).unwrap();
    let err = Writer::open(&log).unwrap_err();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    drop(w);
    Writer::open(&log).unwrap();
}

#[test]
fn files_are_private_and_protected_when_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("modes");
    let log = dir.path().join("nested").join("audit.log");
    let w = Writer::open(&log).unwrap();
    w.append(Event::BrokerStopped { pid: 1 }).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(log.parent().unwrap()), 0o700);
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(&head_path(&log)), 0o600);

    let root = rustix::process::geteuid().is_root();
    match w.head_protection() {
        HeadProtection::NotRoot => assert!(!root),
        HeadProtection::AppendOnlyInode => {
            assert!(root);
            // Even root cannot open it for rewriting, truncate or remove it
            // without first clearing the flag.
            let err = std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc_eperm()));
            assert!(std::fs::remove_file(&log).is_err());
            assert!(std::fs::rename(&log, dir.join("moved")).is_err());
        }
        HeadProtection::Unsupported | HeadProtection::Denied => assert!(root),
    }
    drop(w);
    assert!(verify(&log).unwrap().is_intact());
}

fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}

#[test]
fn a_log_named_like_its_head_is_refused() {
    let dir = TempDir::new("name");
    let log = dir.join("audit.head");
    assert!(matches!(
        Writer::open(&log),
        Err(AuditError::LogNamedLikeHead { .. })
    ));
    assert!(!log.exists());
    assert!(matches!(
        verify(&log),
        Err(AuditError::LogNamedLikeHead { .. })
    ));
}

#[test]
fn an_existing_log_with_a_wide_mode_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("widemode");
    let log = dir.join("audit.log");
    std::fs::write(&log, b"").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let w = Writer::open(&log).unwrap();
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(w.append(Event::BrokerStopped { pid: 9 }).unwrap(), 1);
}
