use super::*;
use proto::flow::{NodeError, SkipReason};
use std::collections::BTreeSet;

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "flow-spool-{tag}-{}-{:016x}",
            std::process::id(),
            random_u64()
        ));
        fs::create_dir(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn spool(tag: &str) -> (TempDir, Spool) {
    let dir = TempDir::new(tag);
    let s = Spool::open(&dir.0.join("spool")).unwrap();
    (dir, s)
}

fn node(id: &str, status: NodeStatus) -> NodeSummary {
    NodeSummary {
        node: id.into(),
        status,
        duration_ms: 5,
        prompt_tokens: 1,
        generated_tokens: 2,
        first_token_ms: Some(3),
    }
}

/// Directory entries, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn open_creates_private_dirs_and_tightens_existing_ones() {
    let dir = TempDir::new("open");
    let root = dir.0.join("spool");
    let s = Spool::open(&root).unwrap();
    assert_eq!(s.root(), root);
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("runs")), 0o700);

    let loose = dir.0.join("loose");
    fs::create_dir(&loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o755)).unwrap();
    Spool::open(&loose).unwrap();
    assert_eq!(mode(&loose), 0o700);

    let file = dir.0.join("file");
    fs::write(&file, "").unwrap();
    assert!(matches!(
        Spool::open(&file),
        Err(SpoolError::NotADirectory { path }) if path == file
    ));
    // Parents are not created: only the given directory is touched.
    let deep = dir.0.join("no/such/parent");
    assert!(matches!(
        Spool::open(&deep),
        Err(SpoolError::Io {
            action: "create",
            ..
        })
    ));
    assert!(!dir.0.join("no").exists());
}

#[test]
fn run_ids_are_unique_hex_and_dirs_private() {
    let (_d, s) = spool("ids");
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let id = s.new_run().unwrap();
        assert!(is_run_id(&id.0), "{id:?}");
        assert_eq!(mode(&s.runs.join(&id.0)), 0o700);
        assert!(seen.insert(id));
    }
    let now = unix_s(SystemTime::now());
    let id = s.new_run().unwrap();
    assert!(started_of(&id).abs_diff(now) <= 2);
}

#[test]
fn run_id_syntax() {
    assert!(is_run_id("0123456789abcdef"));
    for bad in [
        "",
        "0123456789abcde",
        "0123456789abcdef0",
        "0123456789ABCDEF",
        "../../../../etc/",
        "0123456789abcdeg",
    ] {
        assert!(!is_run_id(bad), "{bad}");
    }
}

#[test]
fn write_atomic_writes_private_files_and_leaves_no_temp() {
    let (_d, s) = spool("write");
    let run = s.new_run().unwrap();
    s.write_atomic(&run, "out.txt", b"first").unwrap();
    s.write_atomic(&run, "out.txt", b"second").unwrap();
    let dir = s.runs.join(&run.0);
    assert_eq!(fs::read(dir.join("out.txt")).unwrap(), b"second");
    assert_eq!(mode(&dir.join("out.txt")), 0o600);
    assert_eq!(entries(&dir), vec!["out.txt"]);
}

#[test]
fn names_and_ids_are_validated() {
    let (_d, s) = spool("names");
    let run = s.new_run().unwrap();
    for bad in [
        "",
        "..",
        "../x",
        "a/b",
        "/etc/passwd",
        ".hidden",
        ".tmp.out.txt.1",
        "a b",
        "é",
        &"x".repeat(129),
    ] {
        assert!(
            matches!(
                s.write_atomic(&run, bad, b""),
                Err(SpoolError::BadName { .. })
            ),
            "{bad:?}"
        );
    }
    s.write_atomic(&run, &"x".repeat(128), b"").unwrap();
    let err = s.write_atomic(&run, "run.json", b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "'run.json' is reserved for the run summary: give the output another name"
    );

    let escape = RunId("../../../../tmp".into());
    let err = s.write_atomic(&escape, "x", b"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "'../../../../tmp' is not a run id: use the 16 hex digits that 'flow runs list' shows"
    );
    assert!(matches!(s.show(&escape), Err(SpoolError::BadRunId { .. })));
    assert!(matches!(
        s.remove(&escape),
        Err(SpoolError::BadRunId { .. })
    ));

    let absent = RunId("0000000000000000".into());
    let err = s.write_atomic(&absent, "x", b"").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no run 0000000000000000 in {}: see 'flow runs list'",
            s.root().display()
        )
    );
}

#[test]
fn summary_list_and_show() {
    let (_d, s) = spool("list");
    let ok = s.new_run().unwrap();
    let partial = s.new_run().unwrap();
    let failed = s.new_run().unwrap();
    let running = s.new_run().unwrap();
    let ok_nodes = vec![node("a", NodeStatus::Ok), node("out", NodeStatus::Ok)];
    s.write_atomic(&ok, "out.txt", b"hello").unwrap();
    s.write_atomic(&ok, "b.txt", b"b").unwrap();
    s.write_summary(&ok, &ok_nodes, "hello").unwrap();
    s.write_summary(
        &partial,
        &[
            node("a", NodeStatus::Ok),
            node("m", NodeStatus::Skipped(SkipReason::ModelMissing)),
        ],
        "haiku",
    )
    .unwrap();
    s.write_summary(
        &failed,
        &[
            node("m", NodeStatus::Failed(NodeError::TimedOut)),
            node("o", NodeStatus::Skipped(SkipReason::UpstreamNotDone)),
        ],
        "haiku",
    )
    .unwrap();
    // Junk in runs/ is ignored.
    fs::create_dir(s.runs.join("not-a-run")).unwrap();
    fs::write(s.runs.join("0123456789abcdef"), "a file, not a run").unwrap();

    let mut list = s.list().unwrap();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    let info = |id: &RunId, flow: Option<&str>, status| RunInfo {
        id: id.clone(),
        flow: flow.map(str::to_owned),
        started_unix_s: started_of(id),
        status,
    };
    let mut want = vec![
        info(&ok, Some("hello"), RunStatus::Ok),
        info(&partial, Some("haiku"), RunStatus::Partial),
        info(&failed, Some("haiku"), RunStatus::Failed),
        info(&running, None, RunStatus::Incomplete),
    ];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(list, want);

    let detail = s.show(&ok).unwrap();
    let finished = detail.finished_unix_s.unwrap();
    assert!(finished >= started_of(&ok));
    assert_eq!(
        detail,
        RunDetail {
            info: info(&ok, Some("hello"), RunStatus::Ok),
            finished_unix_s: Some(finished),
            nodes: ok_nodes,
            outputs: vec!["b.txt".into(), "out.txt".into()],
        }
    );
    assert_eq!(mode(&s.runs.join(&ok.0).join(SUMMARY_FILE)), 0o600);
    assert_eq!(
        s.show(&running).unwrap(),
        RunDetail {
            info: info(&running, None, RunStatus::Incomplete),
            finished_unix_s: None,
            nodes: vec![],
            outputs: vec![],
        }
    );
}

#[test]
fn damaged_summary_is_reported_not_fatal() {
    let (_d, s) = spool("damaged");
    let run = s.new_run().unwrap();
    fs::write(s.runs.join(&run.0).join(SUMMARY_FILE), "{ not json").unwrap();
    assert_eq!(s.list().unwrap()[0].status, RunStatus::Damaged);
    assert_eq!(s.show(&run).unwrap().info.status, RunStatus::Damaged);
}

#[test]
fn remove_deletes_the_run() {
    let (_d, s) = spool("remove");
    let run = s.new_run().unwrap();
    let keep = s.new_run().unwrap();
    s.write_atomic(&run, "out.txt", b"x").unwrap();
    s.remove(&run).unwrap();
    assert_eq!(entries(&s.runs), vec![keep.0.clone()]);
    assert!(matches!(s.remove(&run), Err(SpoolError::NoSuchRun { .. })));
    assert!(matches!(s.show(&run), Err(SpoolError::NoSuchRun { .. })));
}

/// What a crash between create and rename leaves behind.
fn crash_leftover(s: &Spool, run: &RunId, name: &str) -> PathBuf {
    let p = s
        .runs
        .join(&run.0)
        .join(format!("{TEMP_PREFIX}{name}.00000000deadbeef"));
    fs::write(&p, "half a res").unwrap();
    p
}

#[test]
fn crash_leftovers_are_never_results_and_prune_removes_them() {
    let (_d, s) = spool("crash");
    let now = SystemTime::now();
    let week = Duration::from_secs(7 * 24 * 3600);

    // An unfinished run (the executor died mid-write).
    let died = s.new_run().unwrap();
    let died_tmp = crash_leftover(&s, &died, "out.txt");
    // A finished run whose summary write was retried after a crash.
    let done = s.new_run().unwrap();
    s.write_atomic(&done, "out.txt", b"ok").unwrap();
    s.write_summary(&done, &[node("out", NodeStatus::Ok)], "hello")
        .unwrap();
    let done_tmp = crash_leftover(&s, &done, "run.json");

    assert_eq!(s.show(&died).unwrap().outputs, Vec::<String>::new());
    assert_eq!(s.show(&done).unwrap().outputs, vec!["out.txt"]);
    assert_eq!(s.show(&done).unwrap().info.status, RunStatus::Ok);

    // Now: the finished run's leftover goes; the unfinished run's is young
    // and may be a write in progress, so it stays.
    let report = s.prune_at(now, week).unwrap();
    assert_eq!(
        report,
        PruneReport {
            removed_runs: vec![],
            removed_temp_files: 1
        }
    );
    assert!(!done_tmp.exists());
    assert!(died_tmp.exists());

    // Past the grace period it is a leftover; the run itself is kept.
    let later = now + TEMP_GRACE + Duration::from_secs(120);
    let report = s.prune_at(later, week).unwrap();
    assert_eq!(report.removed_temp_files, 1);
    assert!(report.removed_runs.is_empty());
    assert_eq!(entries(&s.runs.join(&died.0)), Vec::<String>::new());
    assert_eq!(entries(&s.runs.join(&done.0)), vec!["out.txt", "run.json"]);
}

#[test]
fn prune_removes_runs_older_than_the_retention() {
    let (_d, s) = spool("prune");
    let now = SystemTime::now();
    let week = Duration::from_secs(7 * 24 * 3600);
    let young = s.new_run().unwrap();
    s.write_atomic(&young, "out.txt", b"x").unwrap();
    // A run from 1970, made by hand.
    let ancient = RunId("00000001abcdef01".into());
    fs::create_dir(s.runs.join(&ancient.0)).unwrap();
    fs::write(s.runs.join(&ancient.0).join("out.txt"), "old").unwrap();

    let report = s.prune_at(now, week).unwrap();
    assert_eq!(report.removed_runs, vec![ancient.clone()]);
    assert_eq!(entries(&s.runs), vec![young.0.clone()]);

    // Eight days later the young run has aged out too.
    let report = s.prune(Duration::from_secs(3600)).unwrap();
    assert!(report.removed_runs.is_empty());
    let report = s
        .prune_at(now + Duration::from_secs(8 * 24 * 3600), week)
        .unwrap();
    assert_eq!(report.removed_runs, vec![young]);
    assert_eq!(entries(&s.runs), Vec::<String>::new());
    assert_eq!(s.list().unwrap(), vec![]);
}

#[test]
fn output_names_are_valid_spool_names() {
    assert_eq!(output_name("out"), "out.txt");
    assert!(check_name(&output_name(&"a".repeat(64))).is_ok());
}
