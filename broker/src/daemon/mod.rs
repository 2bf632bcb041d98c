//! `flow up`: the broker daemon.
//!
//! Start-up order: resolve paths, fail closed if a sandbox layer is missing,
//! open the audit log, (as root) drop every capability the broker does not
//! need, bind the control socket, start the spawner thread, then supervise
//! the executor and the reasoning worker, and the egress gateway only when
//! the effective policy enables an egress exception (`gateway.rs`).

mod auditing;
mod captable;
mod control;
pub mod gateway;
pub mod llama;
mod pull;
mod runs;
mod settings_ctl;
pub mod spawn;
pub mod supervise;

pub use auditing::Auditor;

use crate::paths::{ensure_private_dir, Paths};
use anyhow::Context;
use proto::msg::{Component, ComponentState, ComponentStatus};
use sandbox::{ProfileName, Waivers};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::io::unix::AsyncFd;

/// The components this version of the broker runs, in start order.
pub const COMPONENTS: [Component; 2] = [Component::ReasoningWorker, Component::Executor];

/// The sandbox profile of a spawned component; `None` for the broker.
pub fn profile_of(c: Component) -> Option<ProfileName> {
    match c {
        Component::Executor => Some(ProfileName::Executor),
        Component::ReasoningWorker => Some(ProfileName::ReasoningWorker),
        Component::EgressGateway => Some(ProfileName::EgressGateway),
        Component::LlamaServer => Some(ProfileName::LlamaServer),
        Component::Broker => None,
    }
}

/// The binary of a spawned component; `None` for the broker.
pub fn binary_of(c: Component) -> Option<&'static str> {
    match c {
        Component::Executor => Some("flow-executor"),
        Component::ReasoningWorker => Some("flow-reasoning-worker"),
        Component::EgressGateway => Some("flow-egress-gateway"),
        Component::LlamaServer => Some("llama-server"),
        Component::Broker => None,
    }
}

/// One supervised component as the broker sees it.
#[derive(Debug)]
pub struct CompState {
    pub state: ComponentState,
    pub pid: Option<i32>,
    pub since: Option<Instant>,
    pub restarts: u32,
    pub attested: Option<proto::msg::AttestedState>,
    pub bootstrap: Option<Arc<AsyncFd<OwnedFd>>>,
}

impl CompState {
    fn new() -> CompState {
        CompState {
            state: ComponentState::Starting,
            pid: None,
            since: None,
            restarts: 0,
            attested: None,
            bootstrap: None,
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub comps: BTreeMap<Component, CompState>,
    pub caps: captable::CapTable,
    pub ping_waiter: Option<tokio::sync::oneshot::Sender<proto::msg::ChildMsg>>,
    /// Runs in progress: where their events go.
    pub runs: std::collections::HashMap<
        proto::flow::RunId,
        tokio::sync::mpsc::UnboundedSender<proto::flow::RunEvent>,
    >,
}

/// Everything the broker's tasks share.
#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    pub paths: Paths,
    pub waivers: Waivers,
    pub audit: Auditor,
    pub spawner: spawn::Spawner,
    /// Directory holding the component binaries (beside `flow`).
    pub bin_dir: std::path::PathBuf,
    /// Host uid/gid components switch to when the broker runs as root.
    pub run_as: (u32, u32),
    /// `Seccomp_filters` of the broker itself; children must show one more.
    pub own_seccomp_filters: u32,
    pub stopping: tokio::sync::watch::Sender<bool>,
    state: Mutex<State>,
    /// Serializes `flow ping` requests.
    pub ping_lock: tokio::sync::Mutex<()>,
    pub store: crate::models::store::Store,
    pub catalog: crate::models::catalog::Catalog,
    /// The effective settings (policy, settings file, `--set`, runtime
    /// changes): read through [`Shared::effective`], the only path to a
    /// setting.
    effective: Mutex<crate::policy::Effective>,
    /// The OS keyring holding connection credentials.
    pub credentials: crate::credentials::Credentials,
    /// The service catalog (built-in and the user's), read at start.
    pub services: crate::services::ServiceCatalog,
    /// Why the egress gateway is not running, decided at start: the
    /// effective policy, or its sandbox cannot be applied. `None`: it runs.
    gateway_absent: Option<String>,
    /// Whether the llama-server profile can be applied on this host, checked
    /// once at start (the probes fork); AI nodes are skipped if not.
    pub llama_sandbox_ok: bool,
    pub llama: Mutex<llama::LlamaState>,
    /// Serializes llama-server starts.
    pub llama_start: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving with the data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn effective(&self) -> MutexGuard<'_, crate::policy::Effective> {
        self.effective.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the egress gateway is not running (`flow status`), if it is not.
    pub fn gateway_absent(&self) -> Option<String> {
        self.gateway_absent.clone()
    }

    /// Whether connection `name` has a credential in the keyring, bound to
    /// the origin of a catalog entry that uses it.
    pub fn credential_present(&self, name: &str) -> bool {
        self.services
            .entries()
            .iter()
            .filter(|e| e.credential_name() == Some(name))
            .any(|e| matches!(self.credentials.get(name, &e.origin), Ok(Some(_))))
    }

    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    pub fn status(&self) -> proto::msg::BrokerStatus {
        let st = self.state();
        let components = st
            .comps
            .iter()
            .map(|(c, s)| ComponentStatus {
                component: *c,
                state: s.state,
                pid: s.pid.map(|p| p as u32),
                uptime_secs: s.since.map(|t| t.elapsed().as_secs()),
                restarts: s.restarts,
                attested: s.attested.clone(),
            })
            .collect::<Vec<_>>();
        let mut components = components;
        {
            let l = self.llama.lock().unwrap_or_else(|p| p.into_inner());
            // Listed only while it is meant to run.
            if let Some(state) = l.state {
                components.push(ComponentStatus {
                    component: Component::LlamaServer,
                    state,
                    pid: l.pid.map(|p| p as u32),
                    uptime_secs: l.since.map(|t| t.elapsed().as_secs()),
                    restarts: l.restarts,
                    attested: l.attested.clone(),
                });
            }
        }
        proto::msg::BrokerStatus {
            gateway_absent: self.gateway_absent(),
            broker_pid: std::process::id(),
            broker_uid: rustix::process::geteuid().as_raw(),
            uptime_secs: self.started.elapsed().as_secs(),
            waivers: self.waivers.names().into_iter().map(String::from).collect(),
            components,
        }
    }
}

fn own_seccomp_filters() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp_filters:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `flow up`. Returns the process exit code.
pub fn run(waivers: Waivers, sets: &[(String, String)]) -> anyhow::Result<i32> {
    // Still single-threaded: nothing below may start a thread before the
    // checks and the capability drop are done.
    let paths = Paths::from_env()?;
    let euid = rustix::process::geteuid().as_raw();
    if euid == 0 {
        // Sandboxed components run as the sandbox uid and must traverse
        // into the spool and the llama-server socket directory.
        crate::paths::ensure_traversable_dir(&paths.runtime)?;
        crate::paths::ensure_traversable_dir(&paths.data)?;
    } else {
        ensure_private_dir(&paths.runtime)?;
        ensure_private_dir(&paths.data)?;
    }
    ensure_private_dir(&paths.state)?;
    ensure_private_dir(&paths.logs())?;
    let (effective, refusals) = crate::policy::Effective::load(&paths.settings(), sets)?;
    let audit = Auditor::open(&paths.audit_log(), &waivers)
        .with_context(|| format!("cannot open the audit log {}", paths.audit_log().display()))?;
    // A locked key wins over the settings file and `--set`: the broker
    // starts with the policy's value, and each attempt is audited.
    // A locked key wins over the settings file: the broker starts with the
    // policy's value. Each attempt is audited; an explicit `flow up --set`
    // of a locked key is refused outright, since it cannot be honoured.
    let mut cli_refused = false;
    for r in &refusals {
        audit.setting_refused(r.audit_key().as_str(), r.audit_source());
        eprintln!("flow up: {}", effective.refusal_error(r));
        cli_refused |= r.source == crate::policy::Source::Cli;
    }
    if cli_refused {
        eprintln!("flow up: refusing to start: a --set names a key the enterprise policy locks; drop that --set");
        return Ok(2);
    }

    // Fail closed: refuse to start if a profile we need cannot be applied.
    for (c, profile) in COMPONENTS.map(|c| (c, profile_of(c))) {
        let Some(profile) = profile else { continue };
        if let Err(e) = sandbox::doctor::preflight(profile, &waivers) {
            audit.refused_layer(&e);
            eprintln!(
                "flow up: refusing to start: the {} sandbox cannot be applied: {e}",
                c.as_str()
            );
            return Ok(2);
        }
    }
    let llama_sandbox_ok = match sandbox::doctor::preflight(ProfileName::LlamaServer, &waivers) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("flow up: AI nodes will be skipped: the llama-server sandbox cannot be applied: {e}");
            false
        }
    };
    if crate::client::broker_running(&paths) {
        anyhow::bail!(
            "a broker is already running for this user (socket {}): use 'flow status', or 'flow down' first",
            paths.control_socket().display()
        );
    }
    let run_as = sandbox::profile::DEFAULT_RUN_AS;
    crate::paths::prepare_spool(&paths, run_as)?;
    if euid == 0 {
        drop_root_capabilities().context("cannot drop the broker's capabilities")?;
    }
    audit.broker_started();
    if waivers.any() {
        audit.override_in_force(&waivers);
    }

    let store =
        crate::models::store::Store::open(&crate::models::store::Store::default_dir(&paths))
            .context("cannot open the model store")?;
    if euid == 0 {
        // llama-server runs as the sandbox uid and reads its model by path.
        make_traversable(store.dir());
    }
    let services = crate::services::ServiceCatalog::load(&paths.config)
        .context("the service catalog is invalid")?;
    // The gateway exists only when an egress exception is on, and only if
    // its own sandbox can be applied (fail closed: egress off, not the
    // broker down).
    let gateway_absent = match effective.gateway_absent_reason() {
        Some(why) => Some(why),
        None => {
            match sandbox::doctor::preflight(ProfileName::EgressGateway, &waivers) {
                Ok(()) => None,
                Err(e) => {
                    audit.refused_layer(&e);
                    eprintln!("flow up: egress stays off: the egress-gateway sandbox cannot be applied: {e}");
                    Some(format!("the egress-gateway sandbox cannot be applied: {e}"))
                }
            }
        }
    };
    audit.egress_policy(
        effective.cloud_enabled(),
        effective.services_enabled(),
        effective.hub_enabled(),
        gateway_absent.is_none(),
    );
    let catalog = crate::models::catalog::Catalog::builtin()
        .context("the built-in model catalog is invalid")?;
    let bin_dir = std::env::current_exe()
        .context("cannot locate the flow binary")?
        .parent()
        .map(|p| p.to_path_buf())
        .context("the flow binary has no parent directory")?;
    // SIGTERM and SIGINT arrive on a signalfd, blocked before any thread
    // exists so every thread inherits the mask. (tokio's signal driver would
    // need a socketpair in every component, which their seccomp denies, and
    // cargo unifies features across the workspace.)
    let signals = termination_signalfd().context("cannot set up signal handling")?;
    let spawner = spawn::Spawner::start().context("cannot start the spawner thread")?;
    let (stopping, _) = tokio::sync::watch::channel(false);
    let mut state = State::default();
    for c in COMPONENTS {
        state.comps.insert(c, CompState::new());
    }
    if gateway_absent.is_none() {
        state
            .comps
            .insert(Component::EgressGateway, CompState::new());
    }
    let credentials = crate::credentials::Credentials::open().unwrap_or_else(|e| {
        eprintln!("flow up: connections that need a credential are unavailable: {e}");
        crate::credentials::Credentials::unavailable(&e)
    });
    let shared = Arc::new(Shared {
        started: Instant::now(),
        paths,
        waivers,
        audit,
        spawner,
        bin_dir,
        run_as,
        own_seccomp_filters: own_seccomp_filters(),
        stopping,
        state: Mutex::new(state),
        ping_lock: tokio::sync::Mutex::new(()),
        store,
        catalog,
        effective: Mutex::new(effective),
        credentials,
        services,
        gateway_absent,
        llama_sandbox_ok,
        llama: Mutex::new(llama::LlamaState::default()),
        llama_start: tokio::sync::Mutex::new(()),
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("flow-broker")
        .build()
        .context("cannot start the async runtime")?;
    let code = rt.block_on(serve(shared.clone(), signals))?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(code)
}

async fn serve(shared: Arc<Shared>, signals: OwnedFd) -> anyhow::Result<i32> {
    let listener = control::bind(&shared.paths)?;
    let _ = std::fs::write(shared.paths.pid_file(), format!("{}\n", std::process::id()));
    eprintln!(
        "flow: broker {} up; control socket {}",
        std::process::id(),
        shared.paths.control_socket().display()
    );
    let mut tasks = Vec::new();
    let supervised: Vec<Component> = shared.state().comps.keys().copied().collect();
    for c in supervised {
        tasks.push(tokio::spawn(supervise::supervise(shared.clone(), c)));
    }
    let ctl = tokio::spawn(control::serve(shared.clone(), listener));
    let signals = proto::bootstrap::async_fd_readable(signals)?;
    let mut stop_rx = shared.stopping.subscribe();
    tokio::select! {
        _ = signals.readable() => {}
        _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => {}
    }
    let _ = shared.stopping.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    ctl.abort();
    let _ = std::fs::remove_file(shared.paths.control_socket());
    let _ = std::fs::remove_file(shared.paths.pid_file());
    shared.audit.broker_stopped();
    eprintln!("flow: broker stopped");
    Ok(0)
}

/// Root broker: let the sandbox uid traverse (not list) the store's
/// directories so llama-server can open its model file (0444).
pub(crate) fn make_traversable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                make_traversable(&e.path());
            }
        }
    }
}

/// Capabilities a root broker keeps: switching children to a non-root uid
/// (SETUID, SETGID), attesting and signalling children that run as another
/// uid (SYS_PTRACE for `/proc/<pid>/fd`, KILL), and handing directories to
/// that uid and reaching into them (CHOWN for llama-server's fresh socket
/// directory, DAC_OVERRIDE to clear it and connect to the socket inside).
/// Everything else is dropped from every set, including LINUX_IMMUTABLE, so
/// not even the broker can lift the audit log's append-only flag, and
/// SYS_ADMIN, so it cannot mount or create namespaces as root.
pub const ROOT_KEEP: [caps::Capability; 6] = [
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SYS_PTRACE,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
];

fn drop_root_capabilities() -> Result<(), caps::errors::CapsError> {
    use caps::{CapSet, Capability};
    let keep: caps::CapsHashSet = ROOT_KEEP.into_iter().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) && cap != Capability::CAP_SETPCAP {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    // SETPCAP last: it is what allows dropping from the bounding set.
    caps::drop(None, CapSet::Bounding, Capability::CAP_SETPCAP)?;
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())?;
    caps::clear(None, CapSet::Ambient)?;
    caps::set(None, CapSet::Effective, &keep)?;
    caps::set(None, CapSet::Permitted, &keep)?;
    Ok(())
}

/// Block SIGTERM and SIGINT and return a signalfd that reports them.
fn termination_signalfd() -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: sigset operations on a local, zero-initialised set; the mask
    // change affects this (still single) thread and is inherited by threads
    // created later. Children get a clean mask from std's spawn.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
