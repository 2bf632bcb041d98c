//! The broker's appender: one open file, one lock, one fsync per record.

use crate::error::AuditError;
use crate::event::{Event, Waiver};
use crate::record::{ChainHead, Record, Timestamp};
use crate::verify::{check_intact, check_log_name, head_path, read_head, verify_reader, HeadCheck};
use rustix::fs::{FlockOperation, IFlags};
use rustix::io::Errno;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// How well the log is protected against being rolled back by its own writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadProtection {
    /// The log's inode is append-only (`chattr +a`): once the broker has dropped
    /// `CAP_LINUX_IMMUTABLE`, nobody below full root can truncate or rewrite it.
    AppendOnlyInode,
    /// The broker does not run as root, so the flag cannot be set: only the
    /// chain head file guards the end of the log, against accidents and naive
    /// truncation, not against the log's own uid.
    NotRoot,
    /// The filesystem does not support the append-only flag (tmpfs on older
    /// kernels, some network filesystems).
    Unsupported,
    /// Running as root but the kernel refused the flag: the process lacks
    /// `CAP_LINUX_IMMUTABLE` (e.g. a container that dropped it).
    Denied,
}

/// Appends records to one log. Clone-free and `Sync`: share it behind an `Arc`;
/// appends from several tasks are serialized by the lock inside.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    head_path: PathBuf,
    protection: HeadProtection,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    log: File,
    dir: File,
    head: ChainHead,
    overrides: Vec<Waiver>,
    /// Set when a write failed part-way: the file's end is then unknown, and
    /// appending more would hide the damage. Only a reopen (which verifies)
    /// clears it.
    stopped: bool,
}

impl Writer {
    /// Open (or create) the log at `path` for appending. Creates its directory
    /// with mode 0700 and the log with mode 0600, takes an exclusive lock on it,
    /// verifies the whole existing log against its chain head and refuses a
    /// broken one. When running as root, sets the append-only inode flag on the
    /// log (see [`Writer::head_protection`]).
    pub fn open(path: &Path) -> Result<Writer, AuditError> {
        check_log_name(path)?;
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir_path)
            .map_err(|source| AuditError::CreateDir {
                path: dir_path.clone(),
                source,
            })?;
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(open_err)?;
        let meta = log.metadata().map_err(open_err)?;
        if !meta.file_type().is_file() {
            return Err(AuditError::NotRegularFile {
                path: path.to_owned(),
            });
        }
        // An existing log may have been created or copied with a wider mode.
        if meta.permissions().mode() & 0o077 != 0 {
            rustix::fs::fchmod(&log, rustix::fs::Mode::from_raw_mode(0o600))
                .map_err(|e| open_err(e.into()))?;
        }
        match rustix::fs::flock(&log, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(AuditError::Locked {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(open_err(e.into())),
        }
        let dir = File::open(&dir_path).map_err(|source| AuditError::Open {
            path: dir_path.clone(),
            source,
        })?;

        let head_path = head_path(path);
        let head_file = read_head(&head_path)?;
        let (report, _) =
            verify_reader(&log, head_file, |_| ()).map_err(|source| AuditError::Read {
                path: path.to_owned(),
                source,
            })?;
        check_intact(path, &report)?;
        let head = ChainHead {
            seq: report.records,
            hash: report.head_hash,
        };

        let protection = protect(&log);
        let writer = Writer {
            path: path.to_owned(),
            head_path,
            protection,
            inner: Mutex::new(Inner {
                log,
                dir,
                head,
                overrides: Vec::new(),
                stopped: false,
            }),
        };
        // A new log gets its head at once (so that a log with records never
        // lacks one); a head one behind (the writer stopped between the two
        // writes) is brought up to date.
        if report.head_file != HeadCheck::Matches {
            let inner = writer.lock()?;
            write_head(&writer.head_path, &inner.dir, head).map_err(|source| {
                AuditError::WriteHead {
                    path: writer.head_path.clone(),
                    seq: head.seq,
                    source,
                }
            })?;
        }
        Ok(writer)
    }

    /// Append one record and make it durable (`fdatasync`), then replace the
    /// chain head. Returns the record's sequence number.
    ///
    /// After an I/O failure the writer stops: every later append fails until the
    /// log is reopened, which verifies it.
    pub fn append(&self, event: Event) -> Result<u64, AuditError> {
        let mut inner = self.lock()?;
        if inner.stopped {
            return Err(AuditError::Stopped {
                path: self.path.clone(),
            });
        }
        let seq = inner
            .head
            .seq
            .checked_add(1)
            .ok_or_else(|| AuditError::SeqExhausted {
                path: self.path.clone(),
            })?;
        let record = Record {
            seq,
            time: Timestamp::now(),
            prev: inner.head.hash,
            overrides: inner.overrides.clone(),
            event,
        };
        let (hash, line) = record
            .to_line()
            .map_err(|source| AuditError::Encode { seq, source })?;
        // Stop first: any early return below leaves the writer stopped.
        inner.stopped = true;
        let write_err = |source| AuditError::Write {
            path: self.path.clone(),
            seq,
            source,
        };
        inner.log.write_all(&line).map_err(write_err)?;
        rustix::fs::fdatasync(&inner.log).map_err(|e| write_err(e.into()))?;
        let head = ChainHead { seq, hash };
        write_head(&self.head_path, &inner.dir, head).map_err(|source| AuditError::WriteHead {
            path: self.head_path.clone(),
            seq,
            source,
        })?;
        inner.head = head;
        inner.stopped = false;
        Ok(seq)
    }

    /// The sandbox layers waived from now on; every later record carries them.
    pub fn set_overrides(&self, mut overrides: Vec<Waiver>) -> Result<(), AuditError> {
        overrides.sort_unstable();
        overrides.dedup();
        self.lock()?.overrides = overrides;
        Ok(())
    }

    /// The last record written (seq 0 and the genesis hash for an empty log).
    pub fn head(&self) -> Result<ChainHead, AuditError> {
        Ok(self.lock()?.head)
    }

    /// What keeps the log's own writer from rolling it back.
    pub fn head_protection(&self) -> HeadProtection {
        self.protection
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, AuditError> {
        // A panic while holding the lock leaves the file's end unknown, like a
        // failed write: refuse further records.
        self.inner.lock().map_err(|_| AuditError::Stopped {
            path: self.path.clone(),
        })
    }
}

/// Set `FS_APPEND_FL` on the log when running as root.
fn protect(log: &File) -> HeadProtection {
    if !rustix::process::geteuid().is_root() {
        return HeadProtection::NotRoot;
    }
    let classify = |e: Errno| match e {
        Errno::PERM | Errno::ACCESS => HeadProtection::Denied,
        _ => HeadProtection::Unsupported,
    };
    let flags = match rustix::fs::ioctl_getflags(log) {
        Ok(f) => f,
        Err(e) => return classify(e),
    };
    if flags.contains(IFlags::APPEND) {
        return HeadProtection::AppendOnlyInode;
    }
    match rustix::fs::ioctl_setflags(log, flags | IFlags::APPEND) {
        Ok(()) => HeadProtection::AppendOnlyInode,
        Err(e) => classify(e),
    }
}

/// Replace the head file atomically: write a temporary file, sync it, rename
/// it over the head, sync the directory (so a crash cannot leave the head
/// further behind than the one record the verifier tolerates).
fn write_head(head_path: &Path, dir: &File, head: ChainHead) -> std::io::Result<()> {
    let tmp = head_path.with_extension("head.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    f.write_all(&head.to_bytes())?;
    rustix::fs::fdatasync(&f)?;
    drop(f);
    std::fs::rename(&tmp, head_path)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}
