//! Spawn, attest, grant, watch, restart: one task per component.

use super::{binary_of, profile_of, Shared};
use proto::bootstrap::{recv_async, recv_handshake_async, send_async, BOOTSTRAP_MAX_FRAME};
use proto::msg::{
    AttestedState, BrokerMsg, CapGrant, CapKind, CapRole, ChildMsg, Component, ComponentState,
    Handshake, Right, ServiceKind,
};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// How long a child has to enter its sandbox and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long is considered healthy: its backoff resets.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Circuit breaker: this many failures within the window open the circuit.
const BREAKER_FAILURES: usize = 5;
const BREAKER_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot spawn {component}: {source}")]
    Spawn {
        component: &'static str,
        source: std::io::Error,
    },
    #[error("{component} did not complete its bootstrap: {source}")]
    Bootstrap {
        component: &'static str,
        source: proto::ProtoError,
    },
    #[error("{component} did not say hello within {secs} s: it failed to enter its sandbox; see its log")]
    HelloTimeout { component: &'static str, secs: u64 },
    #[error("{component} is not a spawnable component: this is a bug, report it")]
    NotSpawnable { component: &'static str },
    #[error("{component} (pid {pid}) failed attestation and was killed: {source}")]
    Attestation {
        component: &'static str,
        pid: i32,
        source: sandbox::SandboxError,
    },
}

/// A running, attested child.
struct Running {
    pid: i32,
    pidfd: Arc<AsyncFd<OwnedFd>>,
    bootstrap: Arc<AsyncFd<OwnedFd>>,
    since: Instant,
}

pub async fn supervise(shared: Arc<Shared>, c: Component) {
    let mut failures: Vec<Instant> = Vec::new();
    let mut backoff = BACKOFF_START;
    let mut attempt: u32 = 0;
    loop {
        if shared.is_stopping() {
            return;
        }
        set_state(&shared, c, ComponentState::Starting);
        match start(&shared, c).await {
            Ok(run) => {
                let ran = watch(&shared, c, &run).await;
                if shared.is_stopping() {
                    return;
                }
                if ran >= STABLE_AFTER {
                    backoff = BACKOFF_START;
                    failures.clear();
                }
            }
            Err(e) => {
                eprintln!("flow: {e}");
            }
        }
        on_down(&shared, c);
        if shared.is_stopping() {
            return;
        }
        let now = Instant::now();
        failures.retain(|t| now.duration_since(*t) < BREAKER_WINDOW);
        failures.push(now);
        if failures.len() >= BREAKER_FAILURES {
            set_state(&shared, c, ComponentState::CircuitOpen);
            shared.audit.circuit_opened(c);
            eprintln!(
                "flow: {} failed {} times within {} s: circuit open, not restarting; fix the cause and run 'flow down' then 'flow up'",
                c.as_str(),
                failures.len(),
                BREAKER_WINDOW.as_secs()
            );
            let mut rx = shared.stopping.subscribe();
            let _ = rx.wait_for(|s| *s).await;
            return;
        }
        attempt += 1;
        set_state(&shared, c, ComponentState::Backoff);
        shared.audit.restarted(c, attempt, backoff);
        {
            let mut st = shared.state();
            if let Some(s) = st.comps.get_mut(&c) {
                s.restarts += 1;
            }
        }
        let mut rx = shared.stopping.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = async { let _ = rx.wait_for(|s| *s).await; } => { return; }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn set_state(shared: &Shared, c: Component, state: ComponentState) {
    let mut st = shared.state();
    if let Some(s) = st.comps.get_mut(&c) {
        s.state = state;
    }
}

fn component_args(shared: &Shared, c: Component) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if c == Component::Executor {
        args.push("--spool".into());
        args.push(shared.paths.spool().into_os_string());
    }
    args.push("--run-as".into());
    args.push(format!("{}:{}", shared.run_as.0, shared.run_as.1).into());
    for w in shared.waivers.names() {
        args.push("--waive".into());
        args.push(w.into());
    }
    if c == Component::EgressGateway {
        // Landlock's network rules: the only TCP ports it may connect to.
        for port in super::gateway::connect_ports(shared) {
            args.push("--connect-port".into());
            args.push(port.to_string().into());
        }
    }
    args
}

/// A child that entered its sandbox, said hello and passed attestation. It is
/// blocked waiting for the broker's first grant.
#[derive(Debug)]
pub struct Attested {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub boot: Arc<AsyncFd<OwnedFd>>,
    pub report: sandbox::AttestReport,
}

/// The production start path up to attestation: spawn through the spawner
/// thread, wait (bounded) for the handshake and hello, attest from the
/// outside. On failure the child is killed. Used by the supervisor and by
/// `flow bench spawn`, so the benchmark measures exactly this.
pub async fn spawn_attested(
    spawner: &super::spawn::Spawner,
    program: std::path::PathBuf,
    args: Vec<OsString>,
    c: Component,
    own_seccomp_filters: u32,
    on_spawn: impl FnOnce(i32, OwnedFd, OwnedFd),
) -> Result<Attested, StartError> {
    let name = c.as_str();
    let spawned = spawner
        .spawn(program, args)
        .await
        .map_err(|source| StartError::Spawn {
            component: name,
            source,
        })?;
    let pid = spawned.pid;
    on_spawn(pid, spawned.stdout, spawned.stderr);
    let kill = |pidfd: &OwnedFd| {
        let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
    };
    let pidfd = spawned.pidfd;
    let _ = rustix::io::ioctl_fionbio(&spawned.bootstrap, true);
    let boot = match proto::bootstrap::async_fd(spawned.bootstrap) {
        Ok(b) => Arc::new(b),
        Err(source) => {
            kill(&pidfd);
            return Err(StartError::Spawn {
                component: name,
                source,
            });
        }
    };
    // Handshake and hello, bounded in time.
    let hello = tokio::time::timeout(HELLO_TIMEOUT, async {
        recv_handshake_async(&boot).await?;
        let (msg, fds): (ChildMsg, Vec<OwnedFd>) = recv_async(&boot, BOOTSTRAP_MAX_FRAME).await?;
        drop(fds);
        Ok::<ChildMsg, proto::ProtoError>(msg)
    })
    .await;
    match hello {
        Ok(Ok(ChildMsg::Hello { component, .. })) if component == c => {}
        Ok(Ok(_)) => {
            kill(&pidfd);
            return Err(StartError::Bootstrap {
                component: name,
                source: proto::ProtoError::Decode {
                    type_name: "ChildMsg::Hello",
                    len: 0,
                    reason: "expected a hello from this component".into(),
                },
            });
        }
        Ok(Err(e)) => {
            kill(&pidfd);
            return Err(StartError::Bootstrap {
                component: name,
                source: e,
            });
        }
        Err(_) => {
            kill(&pidfd);
            return Err(StartError::HelloTimeout {
                component: name,
                secs: HELLO_TIMEOUT.as_secs(),
            });
        }
    }
    // Attest from the outside. The child is blocked waiting for our answer,
    // so its thread count and fd table are what it declared.
    let Some(profile) = profile_of(c) else {
        kill(&pidfd);
        return Err(StartError::NotSpawnable { component: name });
    };
    let expected = sandbox::attest::expected_for(
        profile,
        own_seccomp_filters,
        &[0, 1, 2, proto::bootstrap::BOOTSTRAP_FD],
    );
    match sandbox::attest(pidfd.as_fd(), pid, &expected) {
        Ok(report) => Ok(Attested {
            pid,
            pidfd,
            boot,
            report,
        }),
        Err(source) => {
            kill(&pidfd);
            Err(StartError::Attestation {
                component: name,
                pid,
                source,
            })
        }
    }
}

async fn start(shared: &Arc<Shared>, c: Component) -> Result<Running, StartError> {
    let name = c.as_str();
    let (Some(binary), Some(profile)) = (binary_of(c), profile_of(c)) else {
        return Err(StartError::NotSpawnable { component: name });
    };
    let attested = spawn_attested(
        &shared.spawner,
        shared.bin_dir.join(binary),
        component_args(shared, c),
        c,
        shared.own_seccomp_filters,
        |pid, stdout, stderr| {
            shared.audit.spawned(c, pid);
            super::auditing::capture_output(shared, c, stdout, stderr);
        },
    )
    .await;
    let Attested {
        pid,
        pidfd,
        boot,
        report: attested,
    } = match attested {
        Ok(a) => a,
        Err(e) => {
            match &e {
                StartError::Bootstrap { source, .. }
                    if !matches!(source, proto::ProtoError::Closed) =>
                {
                    shared.audit.malformed(c, source)
                }
                StartError::Attestation { pid, source, .. } => {
                    shared.audit.attestation_failed(c, *pid, source)
                }
                _ => {}
            }
            return Err(e);
        }
    };
    let expected_hash = sandbox::describe(profile, false).seccomp.base_sha256;
    shared.audit.attested(c, pid, &expected_hash);
    send_async(&boot, &Handshake::new(ServiceKind::Bootstrap), &[])
        .await
        .map_err(|source| StartError::Bootstrap {
            component: name,
            source,
        })?;
    send_async(&boot, &BrokerMsg::Grant(Vec::new()), &[])
        .await
        .map_err(|source| StartError::Bootstrap {
            component: name,
            source,
        })?;
    let pidfd = match proto::bootstrap::async_fd_readable(pidfd) {
        Ok(p) => Arc::new(p),
        Err(source) => {
            return Err(StartError::Spawn {
                component: name,
                source,
            })
        }
    };
    let since = Instant::now();
    {
        let mut st = shared.state();
        if let Some(s) = st.comps.get_mut(&c) {
            s.state = ComponentState::Running;
            s.pid = Some(pid);
            s.since = Some(since);
            s.bootstrap = Some(boot.clone());
            s.attested = Some(AttestedState {
                profile: profile.as_str().to_string(),
                // The child's self-report is informational; this is the
                // filter the broker's own spawn path applies.
                filter_sha256: expected_hash.clone(),
                no_new_privs: attested.no_new_privs,
                seccomp_mode: attested.seccomp_mode,
                seccomp_filters: attested.seccomp_filters,
                cap_inh: attested.cap_inh,
                cap_prm: attested.cap_prm,
                cap_eff: attested.cap_eff,
                cap_bnd: attested.cap_bnd,
                cap_amb: attested.cap_amb,
                host_uid: attested.host_uid,
                namespaces: attested.namespaces.clone(),
                fds: attested.fds.clone(),
                threads: attested.threads,
            });
        }
    }
    grant_reasoning_if_ready(shared).await;
    if c == Component::EgressGateway {
        if let Err(e) = super::gateway::configure(shared).await {
            eprintln!("flow: cannot configure the egress gateway: {e}");
        }
    }
    if c == Component::ReasoningWorker {
        super::llama::grant_model_conns(shared).await;
    }
    Ok(Running {
        pid,
        pidfd,
        bootstrap: boot,
        since,
    })
}

/// Mint the executor -> worker capability once both are attested and running.
pub async fn grant_reasoning_if_ready(shared: &Arc<Shared>) {
    let (exec_boot, worker_boot, id) = {
        let mut st = shared.state();
        if st.caps.live(CapKind::Reasoning).is_some() {
            return;
        }
        let ready = |c: Component| {
            st.comps
                .get(&c)
                .filter(|s| s.state == ComponentState::Running)
                .and_then(|s| s.bootstrap.clone())
        };
        let (Some(e), Some(w)) = (
            ready(Component::Executor),
            ready(Component::ReasoningWorker),
        ) else {
            return;
        };
        let id = st.caps.mint_id();
        (e, w, id)
    };
    let (client_end, server_end) = match proto::fdpass::stream_pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("flow: cannot mint a reasoning capability: {e}");
            return;
        }
    };
    let dup = |fd: &OwnedFd| fd.try_clone();
    let (Ok(client_dup), Ok(server_dup)) = (dup(&client_end), dup(&server_end)) else {
        eprintln!("flow: cannot duplicate a capability socket; not granting it");
        return;
    };
    let rights = vec![Right::Ping, Right::Infer];
    let server_grant = CapGrant {
        id,
        kind: CapKind::Reasoning,
        role: CapRole::Server,
        rights: rights.clone(),
    };
    let client_grant = CapGrant {
        role: CapRole::Client,
        ..server_grant.clone()
    };
    {
        let mut st = shared.state();
        st.caps.insert(
            id,
            CapKind::Reasoning,
            Component::Executor,
            Component::ReasoningWorker,
            rights.clone(),
            (client_dup, server_dup),
        );
        st.caps.prune();
    }
    let a = send_async(
        &worker_boot,
        &BrokerMsg::Grant(vec![server_grant]),
        &[server_end.as_fd()],
    )
    .await;
    let b = send_async(
        &exec_boot,
        &BrokerMsg::Grant(vec![client_grant]),
        &[client_end.as_fd()],
    )
    .await;
    if a.is_err() || b.is_err() {
        shared.state().caps.revoke(id);
        shared.audit.revoked(id);
        return;
    }
    shared.audit.granted(
        id,
        CapKind::Reasoning,
        Component::Executor,
        Component::ReasoningWorker,
        &rights,
    );
}

/// Watch a running child until it exits; returns how long it ran.
async fn watch(shared: &Arc<Shared>, c: Component, run: &Running) -> Duration {
    let mut stop_rx = shared.stopping.subscribe();
    loop {
        tokio::select! {
            r = run.pidfd.readable() => {
                if let Ok(mut g) = r { g.clear_ready(); }
                reap(shared, c, run);
                return run.since.elapsed();
            }
            msg = recv_async::<ChildMsg>(&run.bootstrap, BOOTSTRAP_MAX_FRAME) => {
                match msg {
                    Ok((m @ (ChildMsg::Pinged { .. } | ChildMsg::PingFailed(_)), _)) => {
                        let waiter = shared.state().ping_waiter.take();
                        if let Some(w) = waiter { let _ = w.send(m); }
                    }
                    Ok((ChildMsg::Ready, _)) => {}
                    Ok((ChildMsg::RunEvent(run, ev), _)) => {
                        let tx = shared.state().runs.get(&run).cloned();
                        if let Some(tx) = tx {
                            let _ = tx.send(ev);
                        }
                    }
                    Ok((ChildMsg::EgressDecision(record), _)) if c == Component::EgressGateway => {
                        shared.audit.egress_decision(&record);
                    }
                    Ok((ChildMsg::NeedModelConn { closed }, _)) => {
                        super::llama::replace_conn(shared, closed).await;
                    }
                    Ok((ChildMsg::MalformedPeer { cap }, _)) => {
                        // The other end of that capability misbehaved: cut it off.
                        let peer = if c == Component::ReasoningWorker { Component::Executor } else { Component::ReasoningWorker };
                        shared.audit.malformed(peer, &proto::ProtoError::EmptyFrame);
                        if shared.state().caps.revoke(cap) {
                            shared.audit.revoked(cap);
                        }
                    }
                    Ok((ChildMsg::Hello { .. } | ChildMsg::EgressDecision(_), _)) | Err(_) => {
                        if let Err(e) = &msg {
                            if !matches!(e, proto::ProtoError::Closed) {
                                shared.audit.malformed(c, e);
                            }
                        }
                        // A malformed or closed bootstrap channel: cut the peer off.
                        let _ = rustix::process::pidfd_send_signal(run.pidfd.get_ref(), rustix::process::Signal::KILL);
                        let _ = run.pidfd.readable().await.map(|mut g| g.clear_ready());
                        reap(shared, c, run);
                        return run.since.elapsed();
                    }
                }
            }
            _ = async { let _ = stop_rx.wait_for(|s| *s).await; } => {
                let _ = send_async(&run.bootstrap, &BrokerMsg::Shutdown, &[]).await;
                let exited = tokio::time::timeout(Duration::from_secs(2), run.pidfd.readable()).await;
                if exited.is_err() {
                    let _ = rustix::process::pidfd_send_signal(run.pidfd.get_ref(), rustix::process::Signal::KILL);
                }
                kill_group(run.pid);
                let _ = tokio::time::timeout(Duration::from_secs(2), run.pidfd.readable()).await;
                let _ = rustix::process::waitid(
                    rustix::process::WaitId::PidFd(run.pidfd.get_ref().as_fd()),
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
                );
                return run.since.elapsed();
            }
        }
    }
}

fn kill_group(pid: i32) {
    // The child called setsid(): its process group id is its pid.
    // SAFETY: kill(2) with a negative pid signals that process group only.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

fn reap(shared: &Arc<Shared>, c: Component, run: &Running) {
    kill_group(run.pid);
    let status = rustix::process::waitid(
        rustix::process::WaitId::PidFd(run.pidfd.get_ref().as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    );
    let (code, signal) = match status {
        Ok(Some(s)) => (s.exit_status(), s.terminating_signal()),
        _ => (None, None),
    };
    if !shared.is_stopping() {
        shared.audit.crashed(c, run.pid, code, signal);
        eprintln!(
            "flow: {} (pid {}) exited ({}); restarting",
            c.as_str(),
            run.pid,
            match (code, signal) {
                (Some(c), _) => format!("code {c}"),
                (_, Some(s)) => format!("signal {s}"),
                _ => "unknown status".into(),
            }
        );
    }
    let _ = run.pidfd.as_raw_fd();
}

/// A component went down: revoke every capability it held an end of.
fn on_down(shared: &Arc<Shared>, c: Component) {
    let revoked = {
        let mut st = shared.state();
        if c == Component::Executor {
            // Runs in flight end now: their waiters learn it as a failed finish.
            for (run, tx) in st.runs.drain() {
                let _ = tx.send(proto::flow::RunEvent::Finished { run, ok: false });
            }
        }
        if let Some(s) = st.comps.get_mut(&c) {
            s.pid = None;
            s.since = None;
            s.attested = None;
            s.bootstrap = None;
        }
        let ids = st.caps.held_by(c);
        for id in &ids {
            st.caps.revoke(*id);
        }
        ids
    };
    for id in revoked {
        shared.audit.revoked(id);
    }
}
