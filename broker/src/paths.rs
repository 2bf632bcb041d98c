//! Where Flow keeps things: the XDG base directories, and nothing else.
//!
//! **Invariant:** the XDG variables (and `HOME`, which their defaults derive
//! from) are the only environment variables Flow reads.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("cannot locate the {what} directory: {hint}")]
    Unset {
        what: &'static str,
        hint: &'static str,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is owned by uid {owner}, not by uid {uid}: remove it or fix its owner")]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path} has mode {mode:o}; it must be 0700: run 'chmod 700 {path}'", path = path.display())]
    BadMode { path: PathBuf, mode: u32 },
    #[error("the sandbox uid {uid} cannot reach {path}: {ancestor} is not traversable by it; use data directories outside a private home (a root broker without XDG variables uses /var/lib/flow)", path = path.display(), ancestor = ancestor.display())]
    NotTraversable {
        path: PathBuf,
        ancestor: PathBuf,
        uid: u32,
    },
}

/// The directories of one user's Flow installation.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `$XDG_RUNTIME_DIR/flow`, mode 0700: the control socket.
    pub runtime: PathBuf,
    /// `$XDG_STATE_HOME/flow`: audit log, component logs.
    pub state: PathBuf,
    /// `$XDG_DATA_HOME/flow`: spool, models.
    pub data: PathBuf,
    /// `$XDG_CONFIG_HOME/flow`: settings.
    pub config: PathBuf,
}

fn env_abs(name: &str) -> Option<PathBuf> {
    let v = std::env::var_os(name)?;
    let p = PathBuf::from(v);
    // The XDG spec says relative values are invalid and must be ignored.
    p.is_absolute().then_some(p)
}

impl Paths {
    pub fn from_env() -> Result<Paths, PathError> {
        let uid = rustix::process::getuid().as_raw();
        // Root without XDG variables is a system install: /var/lib/flow and
        // /run/flow, whose parents the sandbox uid can traverse (/root cannot).
        if uid == 0
            && ["XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"]
                .iter()
                .all(|v| env_abs(v).is_none())
        {
            let runtime = env_abs("XDG_RUNTIME_DIR").unwrap_or_else(|| PathBuf::from("/run"));
            return Ok(Paths {
                runtime: runtime.join("flow"),
                state: PathBuf::from("/var/lib/flow/state"),
                data: PathBuf::from("/var/lib/flow/data"),
                config: PathBuf::from("/var/lib/flow/config"),
            });
        }
        let home = env_abs("HOME");
        let under_home = |rel: &str| home.as_ref().map(|h| h.join(rel));
        let runtime_base = match env_abs("XDG_RUNTIME_DIR") {
            Some(p) => p,
            None => {
                let run_user = PathBuf::from(format!("/run/user/{uid}"));
                if run_user.is_dir() {
                    run_user
                } else if uid == 0 {
                    PathBuf::from("/run")
                } else {
                    return Err(PathError::Unset {
                        what: "runtime",
                        hint: "XDG_RUNTIME_DIR is not set and /run/user/<uid> does not exist: log in through a session that sets it, or export XDG_RUNTIME_DIR to a private directory",
                    });
                }
            }
        };
        let missing_home = PathError::Unset {
            what: "home",
            hint: "neither HOME nor the XDG_*_HOME variables are set",
        };
        let state = env_abs("XDG_STATE_HOME").or_else(|| under_home(".local/state"));
        let data = env_abs("XDG_DATA_HOME").or_else(|| under_home(".local/share"));
        let config = env_abs("XDG_CONFIG_HOME").or_else(|| under_home(".config"));
        match (state, data, config) {
            (Some(s), Some(d), Some(c)) => Ok(Paths {
                runtime: runtime_base.join("flow"),
                state: s.join("flow"),
                data: d.join("flow"),
                config: c.join("flow"),
            }),
            _ => Err(missing_home),
        }
    }

    pub fn control_socket(&self) -> PathBuf {
        self.runtime.join("control.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.runtime.join("broker.pid")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.state.join("audit.log")
    }
    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }
    pub fn spool(&self) -> PathBuf {
        self.data.join("spool")
    }
    pub fn settings(&self) -> PathBuf {
        self.config.join("settings.toml")
    }
}

/// Create `dir` (and parents) with mode 0700 and check it is ours and private.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PathError> {
    ensure_dir_mode(dir, 0o700)
}

/// Like [`ensure_private_dir`], but traversable (0711) by other uids: used
/// when the broker runs as root for the directories above what sandboxed
/// components (running as the non-root sandbox uid) must reach. Listing and
/// reading stay private.
pub fn ensure_traversable_dir(dir: &Path) -> Result<(), PathError> {
    ensure_dir_mode(dir, 0o711)
}

fn ensure_dir_mode(dir: &Path, want: u32) -> Result<(), PathError> {
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(want)
        .create(dir);
    if want != 0o700 {
        // An existing directory from an earlier run may be 0700.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(want));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PathError::Create {
            path: dir.to_owned(),
            source,
        })?;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| PathError::Create {
        path: dir.to_owned(),
        source,
    })?;
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(PathError::NotOwned {
            path: dir.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode != want {
        return Err(PathError::BadMode {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Check that `uid`/`gid` may traverse every ancestor of `path` (the path
/// itself is owned by or granted to the sandbox uid by the caller).
pub fn check_traversable(path: &Path, uid: u32, gid: u32) -> Result<(), PathError> {
    let mut cur = path.parent();
    while let Some(dir) = cur {
        let meta = std::fs::metadata(dir).map_err(|source| PathError::Create {
            path: dir.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode();
        let ok = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(PathError::NotTraversable {
                path: path.to_owned(),
                ancestor: dir.to_owned(),
                uid,
            });
        }
        cur = dir.parent();
    }
    Ok(())
}

/// The spool is the executor's only writable place. When Flow runs as root
/// the executor runs as `run_as`, so the spool belongs to that uid (and its
/// ancestors must be traversable by it); otherwise it is a private 0700
/// directory of the user.
pub fn prepare_spool(paths: &Paths, run_as: (u32, u32)) -> Result<PathBuf, PathError> {
    let spool = paths.spool();
    if rustix::process::geteuid().is_root() {
        let err = |source| PathError::Create {
            path: spool.clone(),
            source,
        };
        std::fs::create_dir_all(&spool).map_err(err)?;
        std::os::unix::fs::chown(&spool, Some(run_as.0), Some(run_as.1)).map_err(err)?;
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        check_traversable(&spool, run_as.0, run_as.1)?;
    } else {
        ensure_private_dir(&spool)?;
    }
    Ok(spool)
}
