//! The managed llama-server: one per user, started on demand for the model a
//! flow needs, under the `llama-server` profile (through `flow sandbox run`,
//! the same entry function auditors use), health-checked, restarted with
//! backoff, behind a circuit breaker that makes AI nodes skip.
//!
//! **Invariant:** the reasoning worker never connects to llama-server; the
//! broker opens each connection and passes it as a `ModelServer` capability.

use super::Shared;
use crate::models::store::StoredModel;
use proto::bootstrap::send_async;
use proto::msg::{
    AttestedState, BrokerMsg, CapGrant, CapId, CapKind, CapRole, Component, ComponentState, Right,
};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long llama-server may take to load a model and answer /health.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HEALTH_EVERY: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Parallel slots, and so connections granted to the worker.
pub const SLOTS: usize = 2;
const CONTEXT: u32 = 2048;
const BREAKER_FAILURES: usize = 4;
const BREAKER_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("llama-server is not installed ({path}): run deploy/install-llama.sh (the README's first command does)", path = path.display())]
    NotInstalled { path: PathBuf },
    #[error("the llama-server binary's sha256 is {found}, not the recorded {expected}: reinstall it with deploy/install-llama.sh")]
    DigestMismatch { expected: String, found: String },
    #[error("cannot read {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("llama-server did not become healthy (waited up to {secs} s): see {log}", log = log.display())]
    NotReady { secs: u64, log: PathBuf },
    #[error("llama-server failed {n} times: the circuit breaker is open, AI nodes are skipped until 'flow up' is restarted")]
    CircuitOpen { n: usize },
    #[error("cannot spawn llama-server: {0}")]
    Spawn(String),
    #[error("llama-server (pid {pid}) failed attestation and was killed: {source}; compare 'flow sandbox show --profile llama-server --exec' and run 'flow doctor'")]
    Attestation {
        pid: i32,
        source: sandbox::SandboxError,
    },
}

/// Where the installed binary and its recorded digest live.
pub fn install_paths(paths: &crate::paths::Paths) -> (PathBuf, PathBuf) {
    let dir = paths.data.join("llama");
    (dir.join("llama-server"), dir.join("llama-server.sha256"))
}

/// Hash the installed binary and compare with the recorded digest. Checked
/// before every spawn.
pub fn check_binary(paths: &crate::paths::Paths) -> Result<PathBuf, LlamaError> {
    let (bin, sum) = install_paths(paths);
    if !bin.is_file() {
        return Err(LlamaError::NotInstalled { path: bin });
    }
    let recorded = std::fs::read_to_string(&sum).map_err(|source| LlamaError::Io {
        path: sum.clone(),
        source,
    })?;
    let expected = recorded
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut f = std::fs::File::open(&bin).map_err(|source| LlamaError::Io {
        path: bin.clone(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|source| LlamaError::Io {
            path: bin.clone(),
            source,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let found = hex::encode(h.finalize());
    if found != expected {
        return Err(LlamaError::DigestMismatch { expected, found });
    }
    Ok(bin)
}

/// What the broker knows about the managed llama-server.
#[derive(Debug, Default)]
pub struct LlamaState {
    /// The model being served, when ready.
    pub model: Option<StoredModel>,
    pub socket: Option<PathBuf>,
    pub launcher_pid: Option<i32>,
    pub pid: Option<i32>,
    pub since: Option<Instant>,
    pub restarts: u32,
    pub state: Option<ComponentState>,
    pub failures: Vec<Instant>,
    /// Generation speed measured on the last AI node (tokens/s), for
    /// latency budgets.
    pub tokens_per_sec: Option<f64>,
    /// Bumped on every start, so a watcher of an old instance stops.
    pub generation: u64,
    /// What the broker observed from the outside when it attested the
    /// running instance (before granting any connection to it).
    pub attested: Option<AttestedState>,
}

fn socket_dir(shared: &Shared) -> PathBuf {
    shared.paths.runtime.join("llama")
}

/// Make sure llama-server serves `model` and is healthy; start or restart it
/// if needed. Returns the socket path.
pub fn ensure<'a>(
    shared: &'a Arc<Shared>,
    model: &'a StoredModel,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PathBuf, LlamaError>> + Send + 'a>> {
    // Boxed: the watcher restarts through `ensure`, which spawns a watcher.
    Box::pin(ensure_inner(shared, model))
}

async fn ensure_inner(shared: &Arc<Shared>, model: &StoredModel) -> Result<PathBuf, LlamaError> {
    let _one = shared.llama_start.lock().await;
    {
        let st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
        if st.state == Some(ComponentState::CircuitOpen) {
            return Err(LlamaError::CircuitOpen {
                n: st.failures.len(),
            });
        }
        if let (Some(m), Some(sock), Some(ComponentState::Running)) =
            (&st.model, &st.socket, st.state)
        {
            if m.id == model.id && m.version == model.version {
                return Ok(sock.clone());
            }
        }
    }
    stop(shared);
    start(shared, model).await
}

/// Kill the current instance (if any) and revoke its connections.
pub fn stop(shared: &Arc<Shared>) {
    let pids = {
        let mut st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
        st.generation += 1;
        st.state = None;
        st.model = None;
        st.attested = None;
        (st.launcher_pid.take(), st.pid.take())
    };
    if let (Some(l), p) = pids {
        // SAFETY: kill(2) on the launcher we spawned and on llama-server's
        // own process group (it called setsid); no memory is involved.
        unsafe {
            libc::kill(l, libc::SIGKILL);
            if let Some(p) = p {
                libc::kill(-p, libc::SIGKILL);
            }
        }
    }
    revoke_model_conns(shared);
}

fn revoke_model_conns(shared: &Arc<Shared>) {
    let (ids, worker) = {
        let mut st = shared.state();
        let ids = st.caps.live_of_kind(CapKind::ModelServer);
        for id in &ids {
            st.caps.revoke(*id);
        }
        let worker = st
            .comps
            .get(&Component::ReasoningWorker)
            .and_then(|s| s.bootstrap.clone());
        (ids, worker)
    };
    for id in &ids {
        shared.audit.revoked(*id);
    }
    // Tell the worker, so idle connections leave its pool at once.
    if let Some(boot) = worker {
        tokio::spawn(async move {
            for id in ids {
                let _ = send_async(&boot, &BrokerMsg::Revoke(id), &[]).await;
            }
        });
    }
}

async fn start(shared: &Arc<Shared>, model: &StoredModel) -> Result<PathBuf, LlamaError> {
    let bin = match check_binary(&shared.paths) {
        Ok(b) => b,
        Err(e) => {
            if matches!(e, LlamaError::DigestMismatch { .. }) {
                shared.audit.binary_mismatch(Component::LlamaServer);
            }
            return Err(e);
        }
    };
    let dir = socket_dir(shared);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|source| LlamaError::Io {
        path: dir.clone(),
        source,
    })?;
    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 {
        let _ = std::os::unix::fs::chown(&dir, Some(shared.run_as.0), Some(shared.run_as.1));
        crate::paths::check_traversable(&dir, shared.run_as.0, shared.run_as.1)
            .map_err(|e| LlamaError::Spawn(e.to_string()))?;
        crate::paths::check_traversable(&model.path, shared.run_as.0, shared.run_as.1)
            .map_err(|e| LlamaError::Spawn(e.to_string()))?;
    }
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    let sock = dir.join("llama.sock");
    // Verify the model's digest right before the load, on an open fd; after
    // the load we check that llama-server mapped that very file, unchanged.
    let (hashed, verified) = shared
        .store
        .open_verified(&model.id, &model.version)
        .map_err(|e| LlamaError::Spawn(e.to_string()))?;
    // Leave one core to the broker, executor and worker that stream the
    // tokens: with every core busy generating, llama.cpp's threads and the
    // forwarding processes slow each other down (LLAMA.md: threads from the
    // cores actually free).
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1).max(1))
        .unwrap_or(1)
        .to_string();
    let flow = std::env::current_exe().map_err(|e| LlamaError::Spawn(e.to_string()))?;
    let model_path = verified.path.clone();
    let args: Vec<std::ffi::OsString> = vec![
        "sandbox".into(),
        "run".into(),
        "--profile".into(),
        "llama-server".into(),
        "--read".into(),
        model_path.clone().into(),
        "--write-dir".into(),
        dir.clone().into(),
        "--".into(),
        bin.into(),
        "-m".into(),
        model_path.into(),
        "--host".into(),
        sock.clone().into(),
        "--offline".into(),
        "--no-webui".into(),
        "--no-slots".into(),
        "-t".into(),
        threads.into(),
        "-c".into(),
        CONTEXT.to_string().into(),
        "-np".into(),
        SLOTS.to_string().into(),
        "--log-disable".into(),
    ];
    let spawned = shared
        .spawner
        .spawn(flow, args)
        .await
        .map_err(|e| LlamaError::Spawn(e.to_string()))?;
    let launcher = spawned.pid;
    super::auditing::capture_output(
        shared,
        Component::LlamaServer,
        spawned.stdout,
        spawned.stderr,
    );
    drop(spawned.bootstrap);
    let generation = {
        let mut st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
        st.launcher_pid = Some(launcher);
        st.state = Some(ComponentState::Starting);
        st.generation += 1;
        st.generation
    };
    // Wait for /health.
    let t0 = Instant::now();
    let log = shared.paths.logs().join("llama-server.log");
    loop {
        if health(&sock).await == Some(true) {
            break;
        }
        if t0.elapsed() > READY_TIMEOUT || !alive(spawned.pidfd.as_fd()) {
            let _ =
                rustix::process::pidfd_send_signal(&spawned.pidfd, rustix::process::Signal::KILL);
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(spawned.pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED,
            );
            record_failure(shared);
            return Err(LlamaError::NotReady {
                secs: READY_TIMEOUT.as_secs(),
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = llama_pid(launcher);
    if let Err(why) = pid
        .ok_or_else(|| "llama-server's pid is unknown".to_string())
        .and_then(|p| check_loaded_model(p, &hashed, &verified.path))
    {
        let _ = rustix::process::pidfd_send_signal(&spawned.pidfd, rustix::process::Signal::KILL);
        if let Some(p) = pid {
            // SAFETY: kill(2) on llama-server's own process group.
            unsafe { libc::kill(-p, libc::SIGKILL) };
        }
        record_failure(shared);
        return Err(LlamaError::Spawn(why));
    }
    // Attest it from the outside before anything is granted to it: the
    // same checks as for the Rust components, with the fd policy of a
    // foreign binary.
    let attested = match pid {
        Some(p) => attest_llama(shared, launcher, p, &verified.path, &dir),
        None => Err(sandbox::SandboxError::Attestation {
            pid: launcher,
            check: "llama-server pid".into(),
            found: "unknown".into(),
            expected: "the one child of its flow sandbox run launcher".into(),
        }),
    };
    let attested = match attested {
        Ok(a) => a,
        Err(source) => {
            let failed = pid.unwrap_or(launcher);
            let _ =
                rustix::process::pidfd_send_signal(&spawned.pidfd, rustix::process::Signal::KILL);
            if let Some(p) = pid {
                // SAFETY: kill(2) on llama-server's own process group.
                unsafe { libc::kill(-p, libc::SIGKILL) };
            }
            shared
                .audit
                .attestation_failed(Component::LlamaServer, failed, &source);
            record_failure(shared);
            return Err(LlamaError::Attestation {
                pid: failed,
                source,
            });
        }
    };
    shared.audit.attested(
        Component::LlamaServer,
        pid.unwrap_or(launcher),
        &attested.filter_sha256,
    );
    shared
        .audit
        .llama_started(pid.unwrap_or(launcher), &verified);
    {
        let mut st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
        st.attested = Some(attested);
        st.pid = pid;
        st.socket = Some(sock.clone());
        st.model = Some(verified);
        st.since = Some(Instant::now());
        st.state = Some(ComponentState::Running);
    }
    tokio::spawn(watch(
        shared.clone(),
        spawned.pidfd,
        generation,
        sock.clone(),
    ));
    grant_model_conns(shared).await;
    Ok(sock)
}

fn alive(pidfd: std::os::fd::BorrowedFd<'_>) -> bool {
    rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd),
        rustix::process::WaitIdOptions::EXITED
            | rustix::process::WaitIdOptions::NOHANG
            | rustix::process::WaitIdOptions::NOWAIT,
    )
    .map(|s| s.is_none())
    .unwrap_or(false)
}

/// Attest llama-server (`pid`, the child of `launcher`) through a pidfd:
/// `NoNewPrivs`, seccomp mode 2 with the broker's filters + the profile's
/// exec-allowance filter + the exec-once listener filter, no capability,
/// a non-root host uid, fresh namespaces, and an fd table of sockets, pipes,
/// anonymous inodes, `/dev/null`, the model and the socket directory only.
fn attest_llama(
    shared: &Shared,
    launcher: i32,
    pid: i32,
    model: &Path,
    socket_dir: &Path,
) -> Result<AttestedState, sandbox::SandboxError> {
    use sandbox::{ProfileName, SandboxError};
    let open_err = |what: &str, e: String| SandboxError::Attestation {
        pid,
        check: what.into(),
        found: e,
        expected: "a live child of the launcher".into(),
    };
    let raw =
        rustix::process::Pid::from_raw(pid).ok_or_else(|| open_err("pid", format!("{pid}")))?;
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|e| open_err("pidfd_open", e.to_string()))?;
    // The pid could have been recycled between reading the launcher's
    // children and pidfd_open: the pidfd names our llama-server only if that
    // process is the launcher's child (the launcher is ours and unreaped).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| open_err("parent", e.to_string()))?;
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .map(str::trim)
        .unwrap_or("");
    if ppid != launcher.to_string() {
        return Err(SandboxError::Attestation {
            pid,
            check: "parent".into(),
            found: ppid.to_string(),
            expected: launcher.to_string(),
        });
    }
    let expected = sandbox::expected_for(
        ProfileName::LlamaServer,
        // + 1: the exec-once listener filter installed after the profile's.
        shared.own_seccomp_filters.saturating_add(1),
        &[],
    )
    .foreign_binary(vec![model.to_path_buf(), socket_dir.to_path_buf()]);
    let report = sandbox::attest(pidfd.as_fd(), pid, &expected)?;
    Ok(AttestedState {
        profile: ProfileName::LlamaServer.as_str().to_string(),
        // The filter `flow sandbox run` installs for this profile.
        filter_sha256: sandbox::describe(ProfileName::LlamaServer, true)
            .seccomp
            .sha256,
        no_new_privs: report.no_new_privs,
        seccomp_mode: report.seccomp_mode,
        seccomp_filters: report.seccomp_filters,
        cap_inh: report.cap_inh,
        cap_prm: report.cap_prm,
        cap_eff: report.cap_eff,
        cap_bnd: report.cap_bnd,
        cap_amb: report.cap_amb,
        host_uid: report.host_uid,
        namespaces: report.namespaces,
        fds: report.fds,
        threads: report.threads,
    })
}

/// llama-server's pid: the one child of the `flow sandbox run` launcher.
fn llama_pid(launcher: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn record_failure(shared: &Arc<Shared>) {
    let mut st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    st.failures
        .retain(|t| now.duration_since(*t) < BREAKER_WINDOW);
    st.failures.push(now);
    st.restarts += 1;
    if st.failures.len() >= BREAKER_FAILURES {
        st.state = Some(ComponentState::CircuitOpen);
        drop(st);
        shared.audit.circuit_opened(Component::LlamaServer);
    } else {
        st.state = Some(ComponentState::Backoff);
    }
}

/// Watch one instance: reap it when it exits, kill it when its health check
/// stalls, then restart it with backoff (unless the breaker opened).
async fn watch(shared: Arc<Shared>, pidfd: OwnedFd, generation: u64, sock: PathBuf) {
    let Ok(afd) = proto::bootstrap::async_fd_readable(pidfd) else {
        return;
    };
    let mut misses = 0;
    loop {
        tokio::select! {
            _ = afd.readable() => break,
            _ = tokio::time::sleep(HEALTH_EVERY) => {
                if health(&sock).await == Some(true) {
                    misses = 0;
                } else {
                    misses += 1;
                    if misses >= 2 {
                        let _ = rustix::process::pidfd_send_signal(afd.get_ref(), rustix::process::Signal::KILL);
                    }
                }
            }
        }
    }
    let status = rustix::process::waitid(
        rustix::process::WaitId::PidFd(afd.get_ref().as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    );
    let (code, signal) = match status {
        Ok(Some(s)) => (s.exit_status(), s.terminating_signal()),
        _ => (None, None),
    };
    let (current, pid, model) = {
        let st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
        (st.generation == generation, st.pid, st.model.clone())
    };
    if let Some(p) = pid {
        // SAFETY: kill(2) on llama-server's process group; no memory involved.
        unsafe { libc::kill(-p, libc::SIGKILL) };
    }
    shared.audit.llama_exited(pid.unwrap_or(0), code, signal);
    if !current || shared.is_stopping() {
        return;
    }
    revoke_model_conns(&shared);
    record_failure(&shared);
    let (open, restarts) = {
        let mut st = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
        st.pid = None;
        st.attested = None;
        st.launcher_pid = None;
        (st.state == Some(ComponentState::CircuitOpen), st.restarts)
    };
    if open {
        return;
    }
    let backoff = Duration::from_millis(200u64.saturating_mul(1 << restarts.min(6)));
    shared
        .audit
        .restarted(Component::LlamaServer, restarts, backoff);
    tokio::time::sleep(backoff).await;
    if let Some(m) = model {
        if let Err(e) = ensure(&shared, &m).await {
            eprintln!("flow: llama-server restart failed: {e}");
        }
    }
}

/// `GET /health` over a fresh connection: Some(true) when the model is loaded.
pub async fn health(sock: &Path) -> Option<bool> {
    let sock = sock.to_path_buf();
    let r = tokio::time::timeout(
        HEALTH_TIMEOUT,
        tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
            s.set_read_timeout(Some(HEALTH_TIMEOUT))?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: llama\r\nConnection: close\r\n\r\n")?;
            let mut head = [0u8; 16];
            let mut got = 0;
            while got < head.len() {
                let n = s.read(&mut head[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            Ok(head.starts_with(b"HTTP/1.1 200"))
        }),
    )
    .await;
    match r {
        Ok(Ok(Ok(ok))) => Some(ok),
        _ => None,
    }
}

/// Keep `SLOTS` live model-server connections granted to the worker.
pub async fn grant_model_conns(shared: &Arc<Shared>) {
    loop {
        let (sock, worker_boot, id) = {
            let llama = shared.llama.lock().unwrap_or_else(|p| p.into_inner());
            let (Some(sock), Some(ComponentState::Running)) = (llama.socket.clone(), llama.state)
            else {
                return;
            };
            drop(llama);
            let mut st = shared.state();
            if st.caps.live_of_kind(CapKind::ModelServer).len() >= SLOTS {
                return;
            }
            let Some(boot) = st
                .comps
                .get(&Component::ReasoningWorker)
                .filter(|s| s.state == ComponentState::Running)
                .and_then(|s| s.bootstrap.clone())
            else {
                return;
            };
            let id = st.caps.mint_id();
            (sock, boot, id)
        };
        let conn = match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(c) => OwnedFd::from(c),
            Err(e) => {
                eprintln!("flow: cannot connect to llama-server: {e}");
                return;
            }
        };
        let Ok(dup) = conn.try_clone() else { return };
        let Ok(dup2) = conn.try_clone() else { return };
        let rights = vec![Right::Infer];
        shared.state().caps.insert(
            id,
            CapKind::ModelServer,
            Component::ReasoningWorker,
            Component::LlamaServer,
            rights.clone(),
            (dup, dup2),
        );
        let grant = CapGrant {
            id,
            kind: CapKind::ModelServer,
            role: CapRole::Client,
            rights: rights.clone(),
        };
        if send_async(
            &worker_boot,
            &BrokerMsg::Grant(vec![grant]),
            &[conn.as_fd()],
        )
        .await
        .is_err()
        {
            shared.state().caps.revoke(id);
            return;
        }
        shared.audit.granted(
            id,
            CapKind::ModelServer,
            Component::ReasoningWorker,
            Component::LlamaServer,
            &rights,
        );
    }
}

/// The worker reports a connection closed or spent: revoke it, grant another.
pub async fn replace_conn(shared: &Arc<Shared>, closed: CapId) {
    let revoked = {
        let mut st = shared.state();
        st.caps.kind_of(closed) == Some(CapKind::ModelServer) && st.caps.revoke(closed)
    };
    if revoked {
        shared.audit.revoked(closed);
    }
    grant_model_conns(shared).await;
}

/// The model llama-server loaded must be the file the broker hashed: same
/// device and inode in `/proc/<pid>/maps` (read from the outside), and not
/// modified since the hash (same ctime). This closes the window between
/// hashing and llama-server opening the path.
fn check_loaded_model(pid: i32, hashed: &std::fs::File, path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = hashed
        .metadata()
        .map_err(|e| format!("cannot stat the verified model: {e}"))?;
    let now =
        std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if (now.dev(), now.ino(), now.ctime(), now.ctime_nsec())
        != (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
    {
        return Err(format!(
            "the model file {} changed after its digest was checked: refusing it; run 'flow models verify'",
            path.display()
        ));
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("cannot read llama-server's memory map: {e}"))?;
    let want = path.to_string_lossy();
    let (major, minor) = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
    let mut seen = false;
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5..].join(" ") != want {
            continue;
        }
        seen = true;
        let dev = f[3].split_once(':').and_then(|(a, b)| {
            Some((
                u32::from_str_radix(a, 16).ok()?,
                u32::from_str_radix(b, 16).ok()?,
            ))
        });
        let ino: Option<u64> = f[4].parse().ok();
        if dev != Some((major, minor)) || ino != Some(meta.ino()) {
            return Err(format!(
                "llama-server mapped another file at {} than the one whose digest was checked: killed it",
                path.display()
            ));
        }
    }
    if !seen {
        return Err(format!(
            "llama-server has not mapped the model {}: killed it; see its log",
            path.display()
        ));
    }
    Ok(())
}
