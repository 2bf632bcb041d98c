//! The model store: verified copies of catalog models.
//!
//! ```text
//! $XDG_DATA_HOME/flow/models/            0700
//!   <id>/<version>/model.gguf            0444, sha256 = the entry's sha256
//!   <id>/<version>/entry.toml            0444, the catalog entry it was verified against
//!   .import-<pid>-<n>                    a copy being imported (removed on failure)
//!   .partial/                            0700, downloads in progress (kept for a resume)
//!     <id>@<version>.part                0600, the bytes received so far
//!     <id>@<version>.validator           0600, the hub's ETag (or Last-Modified) for them
//! ```
//!
//! Every way in ([`Store::import_file`] for a local file, [`Store::import_reader`]
//! for a stream, [`Store::install_partial`] for a resumable download) goes
//! through one path: check the GGUF header, write into a file in the store
//! while hashing, `fsync`, compare digest and size with the catalog entry,
//! write `entry.toml`, then `rename` the file into place. A model is in the
//! store only once both files are there; a crash leaves at most a temporary
//! file, which the next [`Store::open`] removes, or a partial download, which
//! the next pull of that model resumes.
//!
//! **Invariant:** a `model.gguf` is only ever created by that `rename`, after
//! its bytes were hashed and matched. Importing again replaces it with bytes
//! that matched again, so an import is idempotent and also repairs a damaged
//! copy.
//!
//! To run a model, use [`Store::open_verified`]: it hashes the open descriptor
//! it returns, so the file llama-server reads is the one that was checked.

use super::catalog::{newest, Catalog, CatalogEntry, CatalogError};
use super::gguf::{check_gguf_header, GgufError, GGUF_HEADER_LEN};
use crate::paths::{ensure_private_dir, PathError};
use audit::{Digest, ModelId, Version};
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MODEL_FILE: &str = "model.gguf";
const ENTRY_FILE: &str = "entry.toml";
const TEMP_PREFIX: &str = ".import-";
const PARTIAL_DIR: &str = ".partial";
/// Longest validator (ETag or Last-Modified) kept beside a partial download.
pub const MAX_VALIDATOR: usize = 512;
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the model store: {0}")]
    Dir(#[from] PathError),

    #[error("cannot {op} {path}: {source}: check the model store's free space and permissions")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open model file {path}: {source}: check the path and that it is readable")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot read model data from {from}: {source}: check the source and import again")]
    Read {
        from: String,
        source: std::io::Error,
    },

    #[error("{path} is a {kind}, not a regular file: import the .gguf file itself")]
    NotRegularFile { path: PathBuf, kind: &'static str },

    #[error("{from}: {source}")]
    NotGguf { from: String, source: GgufError },

    #[error("the model catalog is empty, so no file can be imported: add a [[models]] entry for the model to a catalog")]
    EmptyCatalog,

    #[error("{path} is {size} bytes, larger than any model in the catalog ({max} bytes): it is not a catalog model; add a [[models]] entry with its sha256 and size to a catalog first")]
    TooLarge { path: PathBuf, size: u64, max: u64 },

    #[error("{path} (sha256 {digest}, {size} bytes) matches no model in the catalog: if you trust this file, add a [[models]] entry with this sha256 and size to a catalog, then import it again")]
    NotInCatalog {
        path: PathBuf,
        digest: String,
        size: u64,
    },

    #[error("model {id} {version}: the data received has sha256 {actual}, the catalog says {expected}: it is damaged or another build; download it again, or correct the catalog entry")]
    DigestMismatch {
        id: ModelId,
        version: Version,
        expected: String,
        actual: String,
    },

    #[error("model {id} {version} from {from}: {actual} bytes instead of the catalog's {expected}: the file was cut short or is another build; get it again")]
    SizeMismatch {
        id: ModelId,
        version: Version,
        from: String,
        expected: u64,
        actual: u64,
    },

    #[error("model {id} {version} from {from}: more than the catalog's {expected} bytes: the file is another build; get the one the catalog names")]
    Oversize {
        id: ModelId,
        version: Version,
        from: String,
        expected: u64,
    },

    #[error("model {id} {version} is not in the store: run 'flow models list' to see what is, or import it with 'flow models import FILE'")]
    NotFound { id: ModelId, version: Version },

    #[error("stored model {id} {version} at {path} no longer matches its catalog entry ({detail}): remove it with 'flow models remove {id} {version}' and import it again")]
    Corrupt {
        id: ModelId,
        version: Version,
        path: PathBuf,
        detail: String,
    },

    #[error("stored model at {path} is damaged ({reason}): remove that directory and import the model again")]
    Damaged { path: PathBuf, reason: String },

    #[error("another download of model {id} {version} is in progress: wait for it to finish")]
    Busy { id: ModelId, version: Version },

    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

type Result<T> = std::result::Result<T, StoreError>;

/// A model in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModel {
    pub id: ModelId,
    pub version: Version,
    /// The stored file's size (equal to `entry.size` unless it was damaged).
    pub size: u64,
    /// The sha256 the file was verified against (the entry's).
    pub digest: Digest,
    /// `<store>/<id>/<version>/model.gguf`. For display; run the model through
    /// [`Store::open_verified`], not by this path.
    pub path: PathBuf,
    /// The catalog entry the file was verified against.
    pub entry: CatalogEntry,
}

/// The result of re-hashing a stored model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The file still has the entry's sha256 and size.
    Intact(StoredModel),
    /// It does not: it was changed on disk.
    Corrupt {
        model: StoredModel,
        actual_digest: Digest,
        actual_size: u64,
    },
}

impl VerifyOutcome {
    pub fn ok(&self) -> bool {
        matches!(self, VerifyOutcome::Intact(_))
    }

    pub fn model(&self) -> &StoredModel {
        match self {
            VerifyOutcome::Intact(model) | VerifyOutcome::Corrupt { model, .. } => model,
        }
    }
}

/// The model store in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store's directory in a Flow installation: `$XDG_DATA_HOME/flow/models`.
    pub fn default_dir(paths: &crate::paths::Paths) -> PathBuf {
        paths.data.join("models")
    }

    /// Open (creating, mode 0700) the store in `dir`, and remove what crashed
    /// imports left behind.
    pub fn open(dir: &Path) -> Result<Store> {
        if rustix::process::geteuid().is_root() {
            // A root broker's llama-server runs as the sandbox uid and must
            // traverse (never list) the store to open its model file.
            crate::paths::ensure_traversable_dir(dir)?;
        } else {
            ensure_private_dir(dir)?;
        }
        let store = Store {
            dir: dir.to_owned(),
        };
        store.remove_stale_temps();
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Import a local file: it must be a regular file holding a GGUF model whose
    /// sha256 and size are those of an entry of `catalog`.
    pub fn import_file(&self, path: &Path, catalog: &Catalog) -> Result<StoredModel> {
        // O_NONBLOCK: opening a FIFO must not hang; it is refused below.
        // O_NOCTTY: a terminal must not become ours.
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(StoreError::NotRegularFile {
                path: path.to_owned(),
                kind: file_kind(&meta.file_type()),
            });
        }
        let max = catalog.max_size().ok_or(StoreError::EmptyCatalog)?;
        let too_large = |size| StoreError::TooLarge {
            path: path.to_owned(),
            size,
            max,
        };
        if meta.len() > max {
            return Err(too_large(meta.len()));
        }
        let from = path.display().to_string();
        let copy = self.ingest(&mut file, max, &from)?;
        if copy.size > max {
            // It grew while being read.
            return Err(too_large(copy.size));
        }
        let Some(entry) = catalog.by_digest(&copy.digest) else {
            return Err(StoreError::NotInCatalog {
                path: path.to_owned(),
                digest: copy.digest.to_hex(),
                size: copy.size,
            });
        };
        check_size(entry, copy.size, &from)?;
        self.install(copy, entry)
    }

    /// Import a model from a stream (a download), verified against `entry`,
    /// which the caller took from the catalog. Reads at most one byte more than
    /// `entry.size`.
    pub fn import_reader(
        &self,
        mut reader: impl Read,
        entry: &CatalogEntry,
    ) -> Result<StoredModel> {
        let from = format!("the data received for {} {}", entry.id, entry.version);
        let copy = self.ingest(&mut reader, entry.size, &from)?;
        check_size(entry, copy.size, &from)?;
        if copy.digest != entry.sha256 {
            return Err(StoreError::DigestMismatch {
                id: entry.id.clone(),
                version: entry.version.clone(),
                expected: entry.sha256.to_hex(),
                actual: copy.digest.to_hex(),
            });
        }
        self.install(copy, entry)
    }

    /// Open (or start) the partial download of `entry`'s model, locked
    /// against a second download of the same model (even from this process),
    /// and hash the bytes it already holds. A partial longer than the entry,
    /// or whose first bytes are not a GGUF header, is emptied: it cannot be
    /// resumed.
    pub fn open_partial(&self, entry: &CatalogEntry) -> Result<Partial> {
        let dir = self.dir.join(PARTIAL_DIR);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io("create", &dir, source)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|source| io("read", &dir, source))?;
        if !meta.file_type().is_dir() {
            return Err(StoreError::Damaged {
                path: dir,
                reason: format!("it is a {}", file_kind(&meta.file_type())),
            });
        }
        let stem = format!("{}@{}", entry.id, entry.version);
        let path = dir.join(format!("{stem}.part"));
        let validator_path = dir.join(format!("{stem}.validator"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|source| io("open", &path, source))?;
        let meta = file
            .metadata()
            .map_err(|source| io("open", &path, source))?;
        if !meta.file_type().is_file() {
            return Err(StoreError::Damaged {
                path,
                reason: format!("it is a {}", file_kind(&meta.file_type())),
            });
        }
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Busy {
                    id: entry.id.clone(),
                    version: entry.version.clone(),
                })
            }
            Err(e) => return Err(io("lock", &path, e.into())),
        }
        let mut partial = Partial {
            file,
            path,
            validator_path,
            entry: entry.clone(),
            hasher: Sha256::new(),
            size: 0,
            head: Vec::with_capacity(GGUF_HEADER_LEN),
            validator: None,
        };
        // Hash what an earlier attempt left: the digest is over the whole
        // file. Read at most one byte more than the entry's size.
        let mut buf = vec![0u8; CHUNK];
        loop {
            let want = usize::try_from(entry.size.saturating_add(1) - partial.size)
                .unwrap_or(CHUNK)
                .min(CHUNK);
            if want == 0 {
                break;
            }
            let n = match partial.file.read_at(&mut buf[..want], partial.size) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(io("read", &partial.path, source)),
            };
            if partial.head.len() < GGUF_HEADER_LEN {
                let take = (GGUF_HEADER_LEN - partial.head.len()).min(n);
                partial.head.extend_from_slice(&buf[..take]);
            }
            partial.hasher.update(&buf[..n]);
            partial.size += n as u64;
        }
        let header_ok =
            partial.head.len() < GGUF_HEADER_LEN || check_gguf_header(&partial.head).is_ok();
        if partial.size > entry.size || !header_ok {
            partial.restart()?;
            return Ok(partial);
        }
        partial.validator = read_validator(&partial.validator_path);
        Ok(partial)
    }

    /// Verify a finished download (size, GGUF header, sha256 over every byte
    /// of the partial file, against the entry it was opened for) and move it
    /// into the store as that model. On a mismatch the partial file is
    /// deleted: those bytes can never become the model.
    pub fn install_partial(&self, mut partial: Partial) -> Result<StoredModel> {
        let entry = partial.entry.clone();
        let from = format!("the data received for {} {}", entry.id, entry.version);
        let checked = check_size(&entry, partial.size, &from)
            .and_then(|()| {
                check_gguf_header(&partial.head).map_err(|source| StoreError::NotGguf {
                    from: from.clone(),
                    source,
                })
            })
            .and_then(|_| {
                let digest = Digest(std::mem::take(&mut partial.hasher).finalize().into());
                if digest == entry.sha256 {
                    Ok(digest)
                } else {
                    Err(StoreError::DigestMismatch {
                        id: entry.id.clone(),
                        version: entry.version.clone(),
                        expected: entry.sha256.to_hex(),
                        actual: digest.to_hex(),
                    })
                }
            });
        let digest = match checked {
            Ok(digest) => digest,
            Err(e) => {
                partial.discard();
                return Err(e);
            }
        };
        partial
            .file
            .sync_all()
            .map_err(|source| io("sync", &partial.path, source))?;
        let _ = std::fs::remove_file(&partial.validator_path);
        let Partial {
            file, path, size, ..
        } = partial;
        let copy = Ingested {
            temp: TempFile {
                file,
                path,
                keep: false,
            },
            digest,
            size,
        };
        self.install(copy, &entry)
    }

    /// Every complete model in the store, by id then version. A damaged
    /// version directory is skipped with a warning.
    pub fn list(&self) -> Result<Vec<StoredModel>> {
        let mut out = Vec::new();
        for id in self.subdirs(&self.dir)? {
            let Ok(id) = ModelId::parse(&id) else {
                continue;
            };
            out.extend(self.versions(&id)?);
        }
        out.sort_by(|a, b| (&a.id, &a.version).cmp(&(&b.id, &b.version)));
        Ok(out)
    }

    /// The stored model `id` at `version`, or at its newest stored version
    /// (releases before pre-releases) when `version` is `None`. `None` when
    /// there is none, or `id`/`version` are not valid ids.
    pub fn get(&self, id: &str, version: Option<&str>) -> Option<StoredModel> {
        let id = ModelId::parse(id).ok()?;
        match version {
            Some(v) => {
                let v = Version::parse(v).ok()?;
                self.load(&id, &v).ok().flatten()
            }
            None => {
                let versions = self.versions(&id).ok()?;
                newest(versions.into_iter(), |m| &m.version)
            }
        }
    }

    /// Re-hash a stored model and compare it with its entry.
    pub fn verify(&self, id: &ModelId, version: &Version) -> Result<VerifyOutcome> {
        let model = self.require(id, version)?;
        let file = open_stored(&model.path)?;
        let hashed = hash_fd(&file, model.entry.size, &model.path)?;
        if hashed.digest == model.entry.sha256 && hashed.size == model.entry.size {
            Ok(VerifyOutcome::Intact(model))
        } else {
            Ok(VerifyOutcome::Corrupt {
                model,
                actual_digest: hashed.digest,
                actual_size: hashed.size,
            })
        }
    }

    /// Remove a stored model; returns what was removed.
    pub fn remove(&self, id: &ModelId, version: &Version) -> Result<StoredModel> {
        let model = self.require(id, version)?;
        let version_dir = self.dir.join(id.as_str()).join(version.as_str());
        // The model file first: without it the version is no longer listed,
        // whatever happens next.
        remove_file(&model.path)?;
        remove_file(&version_dir.join(ENTRY_FILE))?;
        std::fs::remove_dir(&version_dir).map_err(|source| io("remove", &version_dir, source))?;
        let id_dir = self.dir.join(id.as_str());
        // Left in place when other versions remain (or anything else is there).
        if std::fs::remove_dir(&id_dir).is_ok() {
            sync_dir(&self.dir)?;
        } else {
            sync_dir(&id_dir)?;
        }
        Ok(model)
    }

    /// Open a stored model for running: opens `model.gguf` once, hashes the
    /// contents of that open descriptor and returns the same descriptor
    /// (positioned at 0) when they match the entry. Hand llama-server this
    /// file (e.g. as `/dev/fd/N`), never the path: a file renamed over the path
    /// after this check is not the one the descriptor reads.
    ///
    /// The file is 0444, so changing its bytes in place needs the owner to
    /// `chmod` it first; the store cannot seal a regular file against that.
    pub fn open_verified(&self, id: &ModelId, version: &Version) -> Result<(File, StoredModel)> {
        let mut model = self.require(id, version)?;
        let file = open_stored(&model.path)?;
        let hashed = hash_fd(&file, model.entry.size, &model.path)?;
        let corrupt = |detail: String| StoreError::Corrupt {
            id: id.clone(),
            version: version.clone(),
            path: model.path.clone(),
            detail,
        };
        if hashed.size != model.entry.size {
            return Err(corrupt(format!(
                "{} bytes instead of {}",
                hashed.size, model.entry.size
            )));
        }
        if hashed.digest != model.entry.sha256 {
            return Err(corrupt(format!(
                "sha256 {} instead of {}",
                hashed.digest.to_hex(),
                model.entry.sha256.to_hex()
            )));
        }
        check_gguf_header(&hashed.head).map_err(|e| corrupt(e.to_string()))?;
        model.size = hashed.size;
        Ok((file, model))
    }

    fn require(&self, id: &ModelId, version: &Version) -> Result<StoredModel> {
        self.load(id, version)?.ok_or_else(|| StoreError::NotFound {
            id: id.clone(),
            version: version.clone(),
        })
    }

    /// The complete stored versions of `id`.
    fn versions(&self, id: &ModelId) -> Result<Vec<StoredModel>> {
        let id_dir = self.dir.join(id.as_str());
        let mut out = Vec::new();
        for name in self.subdirs(&id_dir)? {
            let Ok(version) = Version::parse(&name) else {
                continue;
            };
            match self.load(id, &version) {
                Ok(Some(model)) => out.push(model),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("flow: skipping stored model {id}@{version}: {e}")
                }
            }
        }
        Ok(out)
    }

    /// Names of the directories in `dir` (none if `dir` does not exist).
    fn subdirs(&self, dir: &Path) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(io("read", dir, source)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| io("read", dir, source))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// A complete stored version, `None` if either file is missing.
    fn load(&self, id: &ModelId, version: &Version) -> Result<Option<StoredModel>> {
        let version_dir = self.dir.join(id.as_str()).join(version.as_str());
        let entry_path = version_dir.join(ENTRY_FILE);
        let text = match std::fs::read_to_string(&entry_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io("read", &entry_path, source)),
        };
        let entry = CatalogEntry::parse(&text, &entry_path.display().to_string())?;
        if entry.id != *id || entry.version != *version {
            return Err(StoreError::Damaged {
                path: version_dir,
                reason: format!("{ENTRY_FILE} is for {} {}", entry.id, entry.version),
            });
        }
        let path = version_dir.join(MODEL_FILE);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io("read", &path, source)),
        };
        if !meta.file_type().is_file() {
            return Err(StoreError::Damaged {
                path: version_dir,
                reason: format!("{MODEL_FILE} is a {}", file_kind(&meta.file_type())),
            });
        }
        Ok(Some(StoredModel {
            id: id.clone(),
            version: version.clone(),
            size: meta.len(),
            digest: entry.sha256,
            path,
            entry,
        }))
    }

    /// Copy at most `limit + 1` bytes of `reader` into a new temporary file in
    /// the store, hashing them and checking the GGUF header on the way.
    fn ingest(&self, reader: &mut dyn Read, limit: u64, from: &str) -> Result<Ingested> {
        let mut temp = TempFile::create(&self.dir)?;
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(GGUF_HEADER_LEN);
        let mut size: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        let not_gguf = |source| StoreError::NotGguf {
            from: from.to_owned(),
            source,
        };
        loop {
            let want = usize::try_from(limit.saturating_add(1).saturating_sub(size))
                .unwrap_or(CHUNK)
                .min(CHUNK);
            if want == 0 {
                break;
            }
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Read {
                        from: from.to_owned(),
                        source,
                    })
                }
            };
            let chunk = &buf[..n];
            if head.len() < GGUF_HEADER_LEN {
                let take = (GGUF_HEADER_LEN - head.len()).min(n);
                head.extend_from_slice(&chunk[..take]);
                if head.len() == GGUF_HEADER_LEN {
                    check_gguf_header(&head).map_err(not_gguf)?;
                }
            }
            hasher.update(chunk);
            temp.file
                .write_all(chunk)
                .map_err(|source| io("write", &temp.path, source))?;
            size += n as u64;
        }
        if head.len() < GGUF_HEADER_LEN {
            check_gguf_header(&head).map_err(not_gguf)?;
        }
        temp.file
            .sync_all()
            .map_err(|source| io("sync", &temp.path, source))?;
        Ok(Ingested {
            temp,
            digest: Digest(hasher.finalize().into()),
            size,
        })
    }

    /// Put a verified copy in place as `entry`'s model: entry.toml first, then
    /// the model by rename, then sync the directories.
    fn install(&self, copy: Ingested, entry: &CatalogEntry) -> Result<StoredModel> {
        let id_dir = self.dir.join(entry.id.as_str());
        let version_dir = id_dir.join(entry.version.as_str());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&version_dir)
            .map_err(|source| io("create", &version_dir, source))?;

        let entry_path = version_dir.join(ENTRY_FILE);
        let mut entry_temp = TempFile::create(&version_dir)?;
        entry_temp
            .file
            .write_all(entry.to_toml()?.as_bytes())
            .and_then(|()| entry_temp.file.sync_all())
            .map_err(|source| io("write", &entry_temp.path, source))?;
        entry_temp.persist(&entry_path, 0o444)?;

        let model_path = version_dir.join(MODEL_FILE);
        let size = copy.size;
        copy.temp.persist(&model_path, 0o444)?;
        sync_dir(&version_dir)?;
        sync_dir(&id_dir)?;
        sync_dir(&self.dir)?;
        Ok(StoredModel {
            id: entry.id.clone(),
            version: entry.version.clone(),
            size,
            digest: entry.sha256,
            path: model_path,
            entry: entry.clone(),
        })
    }

    /// Remove `.import-<pid>-*` files whose process is gone (in the store and
    /// in its `.partial` directory; partial downloads themselves are kept).
    fn remove_stale_temps(&self) {
        remove_stale_temps_in(&self.dir);
        remove_stale_temps_in(&self.dir.join(PARTIAL_DIR));
    }
}

fn remove_stale_temps_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A download in progress: `.partial/<id>@<version>.part` in the store,
/// opened by [`Store::open_partial`] and locked while this value lives. Every
/// byte appended is hashed on the way in; [`Store::install_partial`] checks
/// the result and moves the file into the store.
pub struct Partial {
    file: File,
    path: PathBuf,
    validator_path: PathBuf,
    entry: CatalogEntry,
    /// Over bytes `0..size` of the file.
    hasher: Sha256,
    size: u64,
    /// The first [`GGUF_HEADER_LEN`] bytes (fewer while the file is shorter).
    head: Vec<u8>,
    validator: Option<String>,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("path", &self.path)
            .field(
                "model",
                &format_args!("{} {}", self.entry.id, self.entry.version),
            )
            .field("size", &self.size)
            .field("validator", &self.validator.is_some())
            .finish()
    }
}

impl Partial {
    /// Bytes held so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The entry this download is verified against.
    pub fn entry(&self) -> &CatalogEntry {
        &self.entry
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hub's validator (a strong ETag or a Last-Modified date) for the
    /// bytes held, if one was saved: what `If-Range` must carry to resume.
    pub fn validator(&self) -> Option<&str> {
        self.validator.as_deref()
    }

    /// Save the validator of the response being written (kept beside the
    /// partial file, 0600). A value that is not one line of printable ASCII
    /// of at most [`MAX_VALIDATOR`] bytes is not kept: the download can then
    /// only start over.
    pub fn set_validator(&mut self, value: Option<&str>) -> Result<()> {
        let value = value.filter(|v| valid_validator(v));
        if self.validator.as_deref() == value {
            return Ok(());
        }
        match value {
            Some(v) => {
                let dir = self.validator_path.parent().unwrap_or(Path::new("."));
                let mut temp = TempFile::create(dir)?;
                temp.file
                    .write_all(v.as_bytes())
                    .map_err(|source| io("write", &temp.path, source))?;
                temp.persist(&self.validator_path, 0o600)?;
            }
            None => match std::fs::remove_file(&self.validator_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io("remove", &self.validator_path, source)),
            },
        }
        self.validator = value.map(str::to_owned);
        Ok(())
    }

    /// Empty the file (and forget the validator): the download starts over.
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(|source| io("truncate", &self.path, source))?;
        self.hasher = Sha256::new();
        self.size = 0;
        self.head.clear();
        self.set_validator(None)
    }

    /// Append `chunk`, hashing it. Refused (nothing written) past the entry's
    /// size, and as soon as the first bytes are not a GGUF header.
    pub fn append(&mut self, chunk: &[u8]) -> Result<()> {
        let from = || {
            format!(
                "the data received for {} {}",
                self.entry.id, self.entry.version
            )
        };
        if self.size.saturating_add(chunk.len() as u64) > self.entry.size {
            return Err(StoreError::Oversize {
                id: self.entry.id.clone(),
                version: self.entry.version.clone(),
                from: from(),
                expected: self.entry.size,
            });
        }
        if self.head.len() < GGUF_HEADER_LEN {
            let take = (GGUF_HEADER_LEN - self.head.len()).min(chunk.len());
            let mut head = self.head.clone();
            head.extend_from_slice(&chunk[..take]);
            if head.len() == GGUF_HEADER_LEN {
                check_gguf_header(&head).map_err(|source| StoreError::NotGguf {
                    from: from(),
                    source,
                })?;
            }
            self.head = head;
        }
        self.file
            .write_all_at(chunk, self.size)
            .map_err(|source| io("write", &self.path, source))?;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Delete the partial file and its validator.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.validator_path);
    }
}

fn valid_validator(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_VALIDATOR && v.bytes().all(|c| (0x20..0x7f).contains(&c))
}

/// The saved validator, if it is there and well-formed.
fn read_validator(path: &Path) -> Option<String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_VALIDATOR as u64 + 1)
        .read_to_string(&mut text)
        .ok()?;
    valid_validator(&text).then_some(text)
}

/// A hashed copy waiting in the store directory.
struct Ingested {
    temp: TempFile,
    digest: Digest,
    size: u64,
}

/// A temporary file, mode 0600, removed on drop unless persisted.
struct TempFile {
    file: File,
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<TempFile> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| io("create", &path, source))?;
        Ok(TempFile {
            file,
            path,
            keep: false,
        })
    }

    /// Set `mode` and rename over `to`.
    fn persist(mut self, to: &Path, mode: u32) -> Result<()> {
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|source| io("set the mode of", &self.path, source))?;
        std::fs::rename(&self.path, to).map_err(|source| io("move into place", to, source))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Hashed {
    digest: Digest,
    size: u64,
    head: Vec<u8>,
}

/// Hash `file` with positioned reads (its offset stays where it was), reading
/// at most `limit + 1` bytes.
fn hash_fd(file: &File, limit: u64, path: &Path) -> Result<Hashed> {
    let mut hasher = Sha256::new();
    let mut head = Vec::with_capacity(GGUF_HEADER_LEN);
    let mut buf = vec![0u8; CHUNK];
    let mut size: u64 = 0;
    while size <= limit {
        let want = usize::try_from(limit.saturating_add(1).saturating_sub(size))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let n = match file.read_at(&mut buf[..want], size) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(io("read", path, source)),
        };
        if head.len() < GGUF_HEADER_LEN {
            let take = (GGUF_HEADER_LEN - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Hashed {
        digest: Digest(hasher.finalize().into()),
        size,
        head,
    })
}

/// Open a store file read-only, refusing a symlink (the store makes none).
fn open_stored(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| io("open", path, source))?;
    let meta = file.metadata().map_err(|source| io("open", path, source))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: format!("it is a {}", file_kind(&meta.file_type())),
        });
    }
    Ok(file)
}

fn check_size(entry: &CatalogEntry, size: u64, from: &str) -> Result<()> {
    if size > entry.size {
        return Err(StoreError::Oversize {
            id: entry.id.clone(),
            version: entry.version.clone(),
            from: from.to_owned(),
            expected: entry.size,
        });
    }
    if size < entry.size {
        return Err(StoreError::SizeMismatch {
            id: entry.id.clone(),
            version: entry.version.clone(),
            from: from.to_owned(),
            expected: entry.size,
            actual: size,
        });
    }
    Ok(())
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symbolic link"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|source| io("remove", path, source))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("sync", dir, source))
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
