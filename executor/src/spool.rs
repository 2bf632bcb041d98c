//! The run spool: one directory per run under `<spool>/runs/<id>/`, holding
//! the outputs of the run's output nodes and `run.json`, its metadata.
//!
//! **Invariant:** nothing here touches a path outside the directory given
//! to [`Spool::open`] (the executor's sandbox allows nothing else), and
//! every name joined to it is validated first: run ids are 16 lowercase hex
//! digits, file names `[A-Za-z0-9._-]{1,128}` not starting with `.`.
//!
//! Files are written atomically: a temporary file (`.tmp.*`, a name no
//! result can have) in the same directory, fsync, rename, fsync of the
//! directory. A crash leaves at worst a temporary file, which is never
//! listed as a result and which [`Spool::prune`] removes. Directories are
//! 0700 and files 0600.

use proto::flow::{NodeStatus, NodeSummary, RunId};
use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metadata file of a run.
pub const SUMMARY_FILE: &str = "run.json";
/// Prefix of temporary files; valid result names cannot start with `.`.
const TEMP_PREFIX: &str = ".tmp.";
/// A temporary file in an unfinished run older than this is a crash's
/// leftover, not a write in progress.
pub const TEMP_GRACE: Duration = Duration::from_secs(3600);
const SUMMARY_VERSION: u32 = 1;
const MAX_NAME_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot {action} {}: {source}: check that the spool directory exists and belongs to you", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("spool path {} is not a directory: point the spool at a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("'{id}' is not a run id: use the 16 hex digits that 'flow runs list' shows")]
    BadRunId { id: String },
    #[error("'{name}' is not a spool file name: use 1 to 128 of A-Z a-z 0-9 . _ - not starting with '.'")]
    BadName { name: String },
    #[error("'{name}' is reserved for the run summary: give the output another name")]
    ReservedName { name: String },
    #[error("no run {id} in {}: see 'flow runs list'", root.display())]
    NoSuchRun { id: String, root: PathBuf },
    #[error("cannot encode the summary of run {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("no free run id in {} after {tries} tries: check the runs directory", root.display())]
    NoFreeId { root: PathBuf, tries: u32 },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> SpoolError + 'p {
    move |source| SpoolError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// How a run ended, from its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// No summary: running, or the executor died.
    Incomplete,
    /// Every node finished `Ok`.
    Ok,
    /// Some nodes were skipped, none failed.
    Partial,
    /// At least one node failed.
    Failed,
    /// The summary cannot be read.
    Damaged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: RunId,
    /// From the summary; `None` while the run is incomplete.
    pub flow: Option<String>,
    /// Seconds since the Unix epoch, from the run id.
    pub started_unix_s: u64,
    pub status: RunStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDetail {
    pub info: RunInfo,
    pub finished_unix_s: Option<u64>,
    pub nodes: Vec<NodeSummary>,
    /// Result files, sorted; never the summary or temporary files.
    pub outputs: Vec<String>,
}

/// What [`Spool::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed_runs: Vec<RunId>,
    pub removed_temp_files: usize,
}

/// `run.json`. Metadata only: node ids, statuses, counts and times.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    version: u32,
    flow: String,
    started_unix_s: u64,
    finished_unix_s: u64,
    nodes: Vec<NodeSummary>,
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    runs: PathBuf,
}

/// The file name for an output node's value.
pub fn output_name(node: &str) -> String {
    format!("{node}.txt")
}

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 64 unpredictable-enough bits without a dependency: std's `RandomState`
/// is keyed from the OS random source once per thread and differs per
/// instance; the time and a counter make consecutive values distinct.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// Whether `id` is 16 lowercase hex digits.
pub fn is_run_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_name(name: &str) -> Result<(), SpoolError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SpoolError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Creates `dir` (not its parents) 0700, or tightens an existing one of
/// ours to 0700. A directory owned by someone else (a root broker may
/// prepare the spool for the sandbox uid) is left as its owner made it.
fn ensure_dir(dir: &Path, follow: bool) -> Result<(), SpoolError> {
    let meta = if follow {
        fs::metadata(dir)
    } else {
        fs::symlink_metadata(dir)
    };
    match meta {
        Ok(m) if m.is_dir() => {
            let ours = m.uid() == rustix::process::geteuid().as_raw();
            if ours && m.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("restrict to 0700", dir))?;
            }
            Ok(())
        }
        Ok(_) => Err(SpoolError::NotADirectory {
            path: dir.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir)),
        Err(e) => Err(io_err("inspect", dir)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

impl Spool {
    /// Opens the spool at `dir`, creating `dir` (its parent must exist) and
    /// `dir/runs`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        ensure_dir(dir, true)?;
        let runs = dir.join("runs");
        ensure_dir(&runs, false)?;
        Ok(Spool {
            root: dir.to_owned(),
            runs,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a new run directory. The id is the start time (8 hex digits
    /// of Unix seconds, so ids sort by time) and 8 random hex digits.
    pub fn new_run(&self) -> Result<RunId, SpoolError> {
        self.new_run_inner()
    }

    fn new_run_inner(&self) -> Result<RunId, SpoolError> {
        const TRIES: u32 = 16;
        for _ in 0..TRIES {
            let secs = unix_s(SystemTime::now()) as u32;
            let id = format!("{secs:08x}{:08x}", random_u64() as u32);
            let dir = self.runs.join(&id);
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    sync_dir(&self.runs)?;
                    return Ok(RunId(id));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &dir)(e)),
            }
        }
        Err(SpoolError::NoFreeId {
            root: self.root.clone(),
            tries: TRIES,
        })
    }

    /// The directory of an existing run.
    /// Create the directory of a run whose id the broker chose
    /// ([`fresh_run_id`]). An existing run with that id is refused.
    pub fn create_run(&self, run: &RunId) -> Result<(), SpoolError> {
        if !is_run_id(&run.0) {
            return Err(SpoolError::BadRunId { id: run.0.clone() });
        }
        let dir = self.runs.join(&run.0);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err("create", &dir))?;
        // No fsync here: it would sit on the path of the run's first token.
        // The run directory becomes durable with its first atomic write and
        // with `write_summary`, which sync the directories they write into.
        Ok(())
    }

    fn run_dir(&self, run: &RunId) -> Result<PathBuf, SpoolError> {
        if !is_run_id(&run.0) {
            return Err(SpoolError::BadRunId { id: run.0.clone() });
        }
        let dir = self.runs.join(&run.0);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(dir),
            Ok(_) => Err(self.no_such(run)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.no_such(run)),
            Err(e) => Err(io_err("inspect", &dir)(e)),
        }
    }

    fn no_such(&self, run: &RunId) -> SpoolError {
        SpoolError::NoSuchRun {
            id: run.0.clone(),
            root: self.root.clone(),
        }
    }

    /// Writes `bytes` as `name` in the run's directory, atomically.
    pub fn write_atomic(&self, run: &RunId, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
        check_name(name)?;
        if name == SUMMARY_FILE {
            return Err(SpoolError::ReservedName {
                name: name.to_owned(),
            });
        }
        let dir = self.run_dir(run)?;
        write_atomic_in(&dir, name, bytes)
    }

    /// Writes `run.json`: the flow name, start and finish times and the
    /// node summaries. This marks the run finished.
    pub fn write_summary(
        &self,
        run: &RunId,
        nodes: &[NodeSummary],
        flow: &str,
    ) -> Result<(), SpoolError> {
        let dir = self.run_dir(run)?;
        let file = RunFile {
            version: SUMMARY_VERSION,
            flow: flow.to_owned(),
            started_unix_s: started_of(run),
            finished_unix_s: unix_s(SystemTime::now()),
            nodes: nodes.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| SpoolError::Encode {
            id: run.0.clone(),
            source,
        })?;
        write_atomic_in(&dir, SUMMARY_FILE, &bytes)?;
        // The run directory's own entry in `runs/` (see `create_run`).
        sync_dir(&self.runs)
    }

    /// Every run, oldest first. Entries of `runs/` that are not run
    /// directories are ignored.
    pub fn list(&self) -> Result<Vec<RunInfo>, SpoolError> {
        let mut out = Vec::new();
        for id in self.run_ids()? {
            let dir = self.runs.join(&id.0);
            out.push(read_info(&dir, id).0);
        }
        Ok(out)
    }

    fn run_ids(&self) -> Result<Vec<RunId>, SpoolError> {
        let mut ids = Vec::new();
        let entries = fs::read_dir(&self.runs).map_err(io_err("list", &self.runs))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.runs))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && is_run_id(&name) {
                ids.push(RunId(name));
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// One run: its summary and the names of its results.
    pub fn show(&self, run: &RunId) -> Result<RunDetail, SpoolError> {
        let dir = self.run_dir(run)?;
        let (info, file) = read_info(&dir, run.clone());
        let mut outputs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && name != SUMMARY_FILE && check_name(&name).is_ok() {
                outputs.push(name);
            }
        }
        outputs.sort();
        let (finished_unix_s, nodes) = match file {
            Some(f) => (Some(f.finished_unix_s), f.nodes),
            None => (None, Vec::new()),
        };
        Ok(RunDetail {
            info,
            finished_unix_s,
            nodes,
            outputs,
        })
    }

    /// Removes a run and its files.
    pub fn remove(&self, run: &RunId) -> Result<(), SpoolError> {
        let dir = self.run_dir(run)?;
        fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        sync_dir(&self.runs)
    }

    /// Removes runs started more than `retention` ago, and the temporary
    /// files that crashes left in the others.
    pub fn prune(&self, retention: Duration) -> Result<PruneReport, SpoolError> {
        self.prune_at(SystemTime::now(), retention)
    }

    /// [`Spool::prune`] as if the time were `now`.
    pub fn prune_at(
        &self,
        now: SystemTime,
        retention: Duration,
    ) -> Result<PruneReport, SpoolError> {
        let now_s = unix_s(now);
        let cutoff = now_s.saturating_sub(retention.as_secs());
        let mut report = PruneReport::default();
        for id in self.run_ids()? {
            let dir = self.runs.join(&id.0);
            if started_of(&id) < cutoff {
                fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
                report.removed_runs.push(id);
                continue;
            }
            // In a finished run no write is in progress; in an unfinished
            // one only old temporary files are leftovers.
            let finished = dir.join(SUMMARY_FILE).is_file();
            for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
                let entry = entry.map_err(io_err("list", &dir))?;
                let is_temp = entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(TEMP_PREFIX));
                if !is_temp {
                    continue;
                }
                let stale = finished
                    || entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .map_or(true, |m| unix_s(m) + TEMP_GRACE.as_secs() < now_s);
                if stale {
                    let path = entry.path();
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                    report.removed_temp_files += 1;
                }
            }
        }
        if !report.removed_runs.is_empty() {
            sync_dir(&self.runs)?;
        }
        Ok(report)
    }
}

/// Start time in Unix seconds, from the first 8 hex digits of the id.
fn started_of(run: &RunId) -> u64 {
    run.0
        .get(..8)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

fn read_info(dir: &Path, id: RunId) -> (RunInfo, Option<RunFile>) {
    let started_unix_s = started_of(&id);
    let path = dir.join(SUMMARY_FILE);
    let (status, flow, file) = match fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => (RunStatus::Incomplete, None, None),
        Err(_) => (RunStatus::Damaged, None, None),
        Ok(bytes) => match serde_json::from_slice::<RunFile>(&bytes) {
            Ok(f) if f.version == SUMMARY_VERSION => {
                let status = status_of(&f.nodes);
                (status, Some(f.flow.clone()), Some(f))
            }
            _ => (RunStatus::Damaged, None, None),
        },
    };
    (
        RunInfo {
            id,
            flow,
            started_unix_s,
            status,
        },
        file,
    )
}

fn status_of(nodes: &[NodeSummary]) -> RunStatus {
    if nodes
        .iter()
        .any(|n| matches!(n.status, NodeStatus::Failed(_)))
    {
        RunStatus::Failed
    } else if nodes.iter().all(|n| n.status == NodeStatus::Ok) {
        RunStatus::Ok
    } else {
        RunStatus::Partial
    }
}

/// Temp file in `dir`, fsync, rename over `name`, fsync `dir`. `name` is
/// validated by the caller.
fn write_atomic_in(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = dir.join(format!("{TEMP_PREFIX}{name}.{:016x}", random_u64()));
    let target = dir.join(name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(bytes).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        drop(f);
        fs::rename(&tmp, &target).map_err(io_err("rename into place", &target))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: a leftover is never listed and prune removes it.
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;

/// A new run id: 8 hex digits of Unix seconds, then 8 random hex digits.
pub fn fresh_run_id() -> RunId {
    let secs = unix_s(SystemTime::now()) as u32;
    RunId(format!("{secs:08x}{:08x}", random_u64() as u32))
}
