//! Verification: walk the log line by line, stop at the first bad record, then
//! hold the result against the chain head file.

use crate::error::AuditError;
use crate::event::Digest;
use crate::record::{parse_line, ChainHead, LineError, Record, MAX_LINE};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// What `flow audit verify` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that verified, from record 1 on (all of them when `failure` is
    /// `None`).
    pub records: u64,
    /// The hash of the last record that verified ([`Digest::GENESIS`] if none).
    pub head_hash: Digest,
    /// The first bad record, if any.
    pub failure: Option<Failure>,
    /// What the chain head file beside the log said.
    pub head_file: HeadCheck,
}

impl VerifyReport {
    /// The chain verifies and agrees with its head file.
    pub fn is_intact(&self) -> bool {
        self.failure.is_none() && self.head_file.is_consistent(self.records)
    }
}

/// The first bad record: its 1-based number and the byte offset where its line
/// starts (for a record missing from the end: the length of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub record: u64,
    pub offset: u64,
    pub kind: FailureKind,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} (byte offset {}): {}",
            self.record, self.offset, self.kind
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The line is not a well-formed record.
    BadLine(LineError),
    /// The last line has no newline: a write was cut short or bytes were cut.
    MissingNewline,
    /// The sequence number is not the previous one plus one.
    BadSeq { expected: u64, found: u64 },
    /// `prev` is not the previous line's hash.
    BadPrev,
    /// The hash field is not `sha256(prev || body)`.
    BadHash,
    /// The head file names a record the log does not have.
    Truncated { log_ends_at: u64, head_says: u64 },
    /// The head file names this record with another hash.
    HeadMismatch,
    /// The log has records after the head file's that no head ever covered
    /// (one record past the head is the crash window and is accepted).
    HeadStale { head_says: u64, log_ends_at: u64 },
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureKind::BadLine(e) => write!(f, "malformed line: {e}"),
            FailureKind::MissingNewline => f.write_str(
                "the last line has no newline: the record is incomplete or bytes were cut",
            ),
            FailureKind::BadSeq { expected, found } => write!(
                f,
                "sequence number {found} where {expected} was expected: records were reordered, removed or inserted"
            ),
            FailureKind::BadPrev => f.write_str(
                "prev does not match the previous record's hash: a record before it was removed, replaced or reordered",
            ),
            FailureKind::BadHash => {
                f.write_str("the hash does not match the record: the line was modified")
            }
            FailureKind::Truncated {
                log_ends_at,
                head_says,
            } => write!(
                f,
                "the log ends at record {log_ends_at} but the chain head says {head_says}: records were removed from the end"
            ),
            FailureKind::HeadMismatch => f.write_str(
                "the chain head names this record with another hash: the log was rewritten",
            ),
            FailureKind::HeadStale {
                head_says,
                log_ends_at,
            } => write!(
                f,
                "the chain head says {head_says} but the log goes on to record {log_ends_at}: records were appended without the writer"
            ),
        }
    }
}

/// The chain head file (`audit.head`) as found beside the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadCheck {
    /// It names the last record, with its hash.
    Matches,
    /// It names the record before the last one, with its hash: the writer
    /// stopped between appending a record and replacing the head.
    OneBehind,
    /// There is no head file: truncation at the end cannot be detected (normal
    /// for a copied log; for the live log, someone removed it).
    Missing,
    /// The head file is not `<seq> <64 hex>\n`.
    Invalid,
    /// The chain broke before the head could be compared.
    NotChecked,
}

impl HeadCheck {
    /// Whether a log of `records` records is consistent with this outcome.
    pub fn is_consistent(&self, records: u64) -> bool {
        match self {
            HeadCheck::Matches | HeadCheck::OneBehind => true,
            HeadCheck::Missing => records == 0,
            HeadCheck::Invalid | HeadCheck::NotChecked => false,
        }
    }
}

/// Where the chain head of the log at `log` lives: the same name with the
/// extension `head` (`audit.log` -> `audit.head`).
pub fn head_path(log: &Path) -> PathBuf {
    log.with_extension("head")
}

/// A log named `*.head` would be its own head file (and the writer would
/// replace it with the head).
pub(crate) fn check_log_name(log: &Path) -> Result<(), AuditError> {
    if head_path(log) == log {
        return Err(AuditError::LogNamedLikeHead {
            path: log.to_owned(),
        });
    }
    Ok(())
}

/// Verify the log at `path` and its chain head file. `Err` only when a file
/// cannot be read; a broken chain is a report with a `failure`.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    check_log_name(path)?;
    // The head is read before the log: the writer appends to the log before it
    // replaces the head, so a concurrent append can leave the head read here one
    // behind the log (accepted) but never ahead of it.
    let file = std::fs::File::open(path).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    let head = read_head(&head_path(path))?;
    let (report, _) = verify_reader(file, head, |_| ()).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(report)
}

/// Every record of the log at `path`, for `flow audit show`. The whole log is
/// verified first; a broken log is an error naming the first bad record.
pub fn read_records(path: &Path) -> Result<Vec<Record>, AuditError> {
    check_log_name(path)?;
    let file = std::fs::File::open(path).map_err(|source| AuditError::Read {
        path: path.to_owned(),
        source,
    })?;
    let head = read_head(&head_path(path))?;
    let mut records = Vec::new();
    let (report, _) =
        verify_reader(file, head, |r| records.push(r)).map_err(|source| AuditError::Read {
            path: path.to_owned(),
            source,
        })?;
    check_intact(path, &report)?;
    Ok(records)
}

/// The chain head file's content: `Ok(None)` if absent, `Some(None)` if invalid.
pub(crate) fn read_head(path: &Path) -> Result<Option<Option<ChainHead>>, AuditError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(ChainHead::parse(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::ReadHead {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Turn a report that is not intact into the error the writer and
/// `read_records` give.
pub(crate) fn check_intact(path: &Path, report: &VerifyReport) -> Result<(), AuditError> {
    if let Some(failure) = &report.failure {
        return Err(AuditError::Broken {
            path: path.to_owned(),
            head: head_path(path),
            failure: failure.clone(),
        });
    }
    match report.head_file {
        _ if report.head_file.is_consistent(report.records) => Ok(()),
        HeadCheck::Missing => Err(AuditError::HeadMissing {
            path: path.to_owned(),
            head: head_path(path),
            records: report.records,
        }),
        _ => Err(AuditError::HeadInvalid {
            path: path.to_owned(),
            head: head_path(path),
        }),
    }
}

/// One verified line, kept to compare with the head file.
#[derive(Debug, Clone, Copy)]
struct Seen {
    seq: u64,
    hash: Digest,
    offset: u64,
}

impl Seen {
    const GENESIS: Seen = Seen {
        seq: 0,
        hash: Digest::GENESIS,
        offset: 0,
    };
}

/// Walk the log from `reader`, hand each verified record to `each`, and compare
/// the end with `head` (from [`read_head`]). Also returns the file's length.
pub(crate) fn verify_reader(
    reader: impl Read,
    head: Option<Option<ChainHead>>,
    mut each: impl FnMut(Record),
) -> std::io::Result<(VerifyReport, u64)> {
    let head_seq = match head {
        Some(Some(h)) => Some(h.seq),
        _ => None,
    };
    let mut reader = BufReader::new(reader);
    let mut offset: u64 = 0;
    let mut last = Seen::GENESIS;
    // The record the head file names, and the second one after it (the first
    // that no crash of the writer can explain).
    let mut at_head = (head_seq == Some(0)).then_some(Seen::GENESIS);
    let mut past_head = None;
    let mut buf = Vec::with_capacity(1024);
    let mut failure = None;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let record_no = last.seq + 1;
        let fail = |kind| Failure {
            record: record_no,
            offset,
            kind,
        };
        let Some(line) = buf.strip_suffix(b"\n") else {
            failure = Some(fail(if buf.len() > MAX_LINE {
                FailureKind::BadLine(LineError::TooLong)
            } else {
                FailureKind::MissingNewline
            }));
            break;
        };
        let parsed = match parse_line(line) {
            Ok(p) => p,
            Err(e) => {
                failure = Some(fail(FailureKind::BadLine(e)));
                break;
            }
        };
        let kind = if parsed.record.seq != record_no {
            Some(FailureKind::BadSeq {
                expected: record_no,
                found: parsed.record.seq,
            })
        } else if parsed.record.prev != last.hash {
            Some(FailureKind::BadPrev)
        } else if crate::record::chain_hash(&last.hash, parsed.body) != parsed.hash {
            Some(FailureKind::BadHash)
        } else {
            None
        };
        if let Some(kind) = kind {
            failure = Some(fail(kind));
            break;
        }
        last = Seen {
            seq: record_no,
            hash: parsed.hash,
            offset,
        };
        if head_seq == Some(record_no) {
            at_head = Some(last);
        } else if head_seq.and_then(|h| h.checked_add(2)) == Some(record_no) {
            past_head = Some(last);
        }
        each(parsed.record);
        offset += n as u64;
    }
    let head_file = if failure.is_some() {
        HeadCheck::NotChecked
    } else {
        match head {
            None => HeadCheck::Missing,
            Some(None) => HeadCheck::Invalid,
            Some(Some(h)) => {
                let (check, bad) = compare_head(h, last, at_head, past_head, offset);
                failure = bad;
                check
            }
        }
    };
    Ok((
        VerifyReport {
            records: last.seq,
            head_hash: last.hash,
            failure,
            head_file,
        },
        offset,
    ))
}

/// Hold the end of a verified chain against the head file. `at_head` is the
/// record the head names, `past_head` the second one after it.
fn compare_head(
    head: ChainHead,
    last: Seen,
    at_head: Option<Seen>,
    past_head: Option<Seen>,
    file_len: u64,
) -> (HeadCheck, Option<Failure>) {
    let broken = |record, offset, kind| {
        (
            HeadCheck::NotChecked,
            Some(Failure {
                record,
                offset,
                kind,
            }),
        )
    };
    let Some(at_head) = at_head else {
        return broken(
            last.seq + 1,
            file_len,
            FailureKind::Truncated {
                log_ends_at: last.seq,
                head_says: head.seq,
            },
        );
    };
    if at_head.hash != head.hash {
        return broken(at_head.seq, at_head.offset, FailureKind::HeadMismatch);
    }
    if let Some(past) = past_head {
        return broken(
            past.seq,
            past.offset,
            FailureKind::HeadStale {
                head_says: head.seq,
                log_ends_at: last.seq,
            },
        );
    }
    if at_head.seq == last.seq {
        (HeadCheck::Matches, None)
    } else {
        (HeadCheck::OneBehind, None)
    }
}
