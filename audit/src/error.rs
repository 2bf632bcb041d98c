use crate::verify::Failure;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create audit directory {path}: {source}: check that its parent exists and is writable by the broker")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open audit log {path}: {source}: check its owner and permissions (the broker's uid, mode 0600)")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("audit log {path} has the extension 'head', which names its chain head file: name the log audit.log")]
    LogNamedLikeHead { path: PathBuf },

    #[error("audit log {path} is not a regular file: move it aside and restart the broker")]
    NotRegularFile { path: PathBuf },

    #[error("audit log {path} is locked by another process: stop the other broker before starting this one")]
    Locked { path: PathBuf },

    #[error("cannot read audit log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot read chain head {path}: {source}: check its owner and permissions")]
    ReadHead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("audit log {path} is broken at {failure}: run 'flow audit verify' for the report, then move {path} and {head} aside to start a new log")]
    Broken {
        path: PathBuf,
        head: PathBuf,
        failure: Failure,
    },

    #[error("chain head {head} is missing but audit log {path} has {records} records, so removal of records from its end cannot be ruled out: run 'flow audit verify', then move {path} aside to start a new log")]
    HeadMissing {
        path: PathBuf,
        head: PathBuf,
        records: u64,
    },

    #[error("chain head {head} of audit log {path} is not '<seq> <64 hex>': run 'flow audit verify', then move {path} and {head} aside to start a new log")]
    HeadInvalid { path: PathBuf, head: PathBuf },

    #[error("cannot encode audit record {seq}: {source}")]
    Encode { seq: u64, source: serde_json::Error },

    #[error("cannot write audit record {seq} to {path}: {source}: the writer has stopped; free space or fix the disk, then restart the broker (it re-verifies the log)")]
    Write {
        path: PathBuf,
        seq: u64,
        source: std::io::Error,
    },

    #[error("cannot replace chain head {path} after record {seq}: {source}: the writer has stopped; fix the directory, then restart the broker (it re-verifies the log)")]
    WriteHead {
        path: PathBuf,
        seq: u64,
        source: std::io::Error,
    },

    #[error("audit writer for {path} stopped after a failed write and accepts no more records: restart the broker (it re-verifies the log)")]
    Stopped { path: PathBuf },

    #[error("audit log {path} has reached the largest sequence number: move it and its head aside to start a new log")]
    SeqExhausted { path: PathBuf },
}
