//! `flow-reasoning-worker`: the zero-capability worker. It owns nothing: it
//! serves requests arriving on capability channels the broker handed it,
//! enforces the rights the broker attached to each channel, and forwards
//! inference to llama-server over connections the broker opened for it.
//!
//! **Invariant:** it never calls `socket` or `connect` (its seccomp allowlist
//! has neither); every channel it uses arrived by `SCM_RIGHTS`. Prompt text
//! and model output pass through its memory only; nothing here logs them.

use proto::bootstrap::{pair_grants, recv_async, send_async, BOOTSTRAP_MAX_FRAME};
use proto::channel::Channel;
use proto::msg::{
    BrokerMsg, CapGrant, CapId, CapKind, CapRole, ChildMsg, Component, ReasoningRequest,
    ReasoningResponse, Right, ServiceError, ServiceKind,
};
use reasoning_worker::llama;
use sandbox::ProfileName;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};

/// Default whole-request deadline when the client gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a request may wait for a free llama-server connection.
const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Requests waiting for a connection beyond this are refused with `Busy`.
const MAX_QUEUED: usize = 32;
/// Stale connections a request may discard before giving up.
const MAX_STALE_RETRIES: u32 = 4;

fn main() {
    component::main_with(
        Component::ReasoningWorker,
        ProfileName::ReasoningWorker,
        run,
    )
}

/// Connections to llama-server, each one a capability from the broker.
#[derive(Default)]
struct Pool {
    idle: RefCell<VecDeque<(CapId, UnixStream)>>,
    waiting: RefCell<usize>,
    ready: Notify,
}

impl Pool {
    fn put(&self, cap: CapId, conn: UnixStream) {
        self.idle.borrow_mut().push_back((cap, conn));
        self.ready.notify_one();
    }

    fn remove(&self, cap: CapId) {
        self.idle.borrow_mut().retain(|(c, _)| *c != cap);
    }

    async fn take(&self) -> Result<(CapId, UnixStream), ServiceError> {
        if let Some(c) = self.idle.borrow_mut().pop_front() {
            return Ok(c);
        }
        if *self.waiting.borrow() >= MAX_QUEUED {
            return Err(ServiceError::Busy);
        }
        *self.waiting.borrow_mut() += 1;
        let r = tokio::time::timeout(QUEUE_WAIT, async {
            loop {
                self.ready.notified().await;
                if let Some(c) = self.idle.borrow_mut().pop_front() {
                    return c;
                }
            }
        })
        .await;
        *self.waiting.borrow_mut() -= 1;
        r.map_err(|_| ServiceError::Unavailable)
    }
}

struct Worker {
    boot: AsyncFd<OwnedFd>,
    pool: Pool,
}

impl Worker {
    /// A llama-server connection was used up or broke: ask for a fresh one.
    async fn spent(&self, cap: CapId) {
        let _ = send_async(&self.boot, &ChildMsg::NeedModelConn { closed: cap }, &[]).await;
    }
}

async fn run(started: component::Granted, boot: AsyncFd<OwnedFd>) -> i32 {
    let w = Rc::new(Worker {
        boot,
        pool: Pool::default(),
    });
    for (g, fd) in started.grants {
        accept_grant(&w, g, fd);
    }
    loop {
        let (msg, fds) = match recv_async::<BrokerMsg>(&w.boot, BOOTSTRAP_MAX_FRAME).await {
            Ok(m) => m,
            Err(proto::ProtoError::Closed) => return 0,
            Err(e) => {
                eprintln!("flow-reasoning-worker: bootstrap channel: {e}");
                return 3;
            }
        };
        match msg {
            BrokerMsg::Grant(grants) => match pair_grants(grants, fds) {
                Ok(pairs) => {
                    for (g, fd) in pairs {
                        accept_grant(&w, g, fd);
                    }
                }
                Err(_) => {
                    eprintln!("flow-reasoning-worker: grant without matching descriptors; ignored")
                }
            },
            // The broker already shut the channel; whoever uses it sees EOF.
            // An idle llama-server connection is dropped from the pool now.
            BrokerMsg::Revoke(cap) => w.pool.remove(cap),
            BrokerMsg::Ping { .. }
            | BrokerMsg::Run { .. }
            | BrokerMsg::GatewayConfig(_)
            | BrokerMsg::GrantEgress(_) => {}
            BrokerMsg::Shutdown => return 0,
        }
    }
}

fn unix_stream(fd: OwnedFd) -> Option<UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true).ok()?;
    UnixStream::from_std(s).ok()
}

fn accept_grant(w: &Rc<Worker>, grant: CapGrant, fd: OwnedFd) {
    match (grant.kind, grant.role) {
        (CapKind::Reasoning, CapRole::Server) => {
            let w = w.clone();
            tokio::task::spawn_local(async move {
                if let Err(true) = serve(&w, grant.clone(), fd).await {
                    let _ =
                        send_async(&w.boot, &ChildMsg::MalformedPeer { cap: grant.id }, &[]).await;
                }
            });
        }
        (CapKind::ModelServer, CapRole::Client) => {
            if let Some(s) = unix_stream(fd) {
                w.pool.put(grant.id, s);
            }
        }
        _ => {}
    }
}

/// Serve one reasoning channel until EOF. `Err(true)` means the client sent a
/// malformed frame and was cut off.
async fn serve(w: &Rc<Worker>, grant: CapGrant, fd: OwnedFd) -> Result<(), bool> {
    let stream = unix_stream(fd).ok_or(false)?;
    let ch = tokio::time::timeout(
        Duration::from_secs(5),
        Channel::handshake(stream, ServiceKind::Reasoning),
    )
    .await
    .map_err(|_| false)?
    .map_err(|_| true)?;
    let (mut rx, mut tx) = ch.into_split();
    // One writer: responses of concurrent requests are queued here.
    let (out, mut queue) = mpsc::unbounded_channel::<ReasoningResponse>();
    tokio::task::spawn_local(async move {
        while let Some(r) = queue.recv().await {
            if tx.send(&r).await.is_err() {
                return;
            }
        }
    });
    // Rights come from the broker's grant, never from the client's messages.
    let rights = grant.rights;
    let running: Rc<RefCell<HashMap<u64, tokio::task::AbortHandle>>> = Rc::default();
    loop {
        let req: ReasoningRequest = match rx.recv().await {
            Ok(r) => r,
            Err(proto::ProtoError::Closed) | Err(proto::ProtoError::Io { .. }) => {
                for (_, h) in running.borrow_mut().drain() {
                    h.abort();
                }
                return Ok(());
            }
            Err(_) => return Err(true),
        };
        match req {
            ReasoningRequest::Ping { id, payload } => {
                let r = if rights.contains(&Right::Ping) {
                    ReasoningResponse::Pong { id, payload }
                } else {
                    ReasoningResponse::Error {
                        id,
                        error: ServiceError::NotPermitted(Right::Ping),
                    }
                };
                let _ = out.send(r);
            }
            ReasoningRequest::Infer {
                id,
                input,
                params,
                timeout_ms,
            } => {
                if !rights.contains(&Right::Infer) {
                    let _ = out.send(ReasoningResponse::Error {
                        id,
                        error: ServiceError::NotPermitted(Right::Infer),
                    });
                    continue;
                }
                if running.borrow().contains_key(&id) {
                    let _ = out.send(ReasoningResponse::Error {
                        id,
                        error: ServiceError::BadRequest,
                    });
                    continue;
                }
                let deadline = if timeout_ms == 0 {
                    DEFAULT_TIMEOUT
                } else {
                    Duration::from_millis(u64::from(timeout_ms))
                };
                let (w2, out2, running2) = (w.clone(), out.clone(), running.clone());
                let h = tokio::task::spawn_local(async move {
                    let r = infer_one(&w2, id, &input, &params, deadline, &out2).await;
                    running2.borrow_mut().remove(&id);
                    let _ = out2.send(r);
                });
                running.borrow_mut().insert(id, h.abort_handle());
            }
            ReasoningRequest::Cancel { id } => {
                if let Some(h) = running.borrow_mut().remove(&id) {
                    h.abort();
                    let _ = out.send(ReasoningResponse::Error {
                        id,
                        error: ServiceError::Cancelled,
                    });
                }
            }
        }
    }
}

/// Gives the connection's capability back to the broker for replacement
/// however the request ends (done, failed, timed out, aborted).
struct Spent {
    w: Rc<Worker>,
    cap: CapId,
    /// False once the connection went back to the pool for reuse.
    armed: bool,
}

impl Drop for Spent {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let w = self.w.clone();
        let cap = self.cap;
        tokio::task::spawn_local(async move { w.spent(cap).await });
    }
}

async fn infer_one(
    w: &Rc<Worker>,
    id: u64,
    input: &proto::msg::InferInput,
    params: &proto::msg::InferParams,
    deadline: Duration,
    out: &mpsc::UnboundedSender<ReasoningResponse>,
) -> ReasoningResponse {
    let fail = |error| ReasoningResponse::Error { id, error };
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    let (r, conn, mut spent) = loop {
        attempt += 1;
        let (cap, mut conn) = match w.pool.take().await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let spent = Spent {
            w: w.clone(),
            cap,
            armed: true,
        };
        let mut streamed = false;
        let left = deadline.saturating_sub(started.elapsed());
        let r = tokio::time::timeout(
            left,
            llama::infer_with(
                &mut conn,
                input,
                params,
                &llama::InferOptions {
                    cache_prompt: params.cache_prompt,
                },
                |t: &str| {
                    streamed = true;
                    let _ = out.send(ReasoningResponse::Token {
                        id,
                        text: t.to_string(),
                    });
                },
            ),
        )
        .await;
        // llama-server closes connections idle for 5 s, and a connection to
        // an instance that has since been replaced is dead too: such a
        // connection fails before any response byte. Drop it (the broker
        // grants a fresh one) and try the next, a bounded number of times.
        if let Ok(Err(llama::LlamaError::ClosedBeforeResponse { .. })) = &r {
            if !streamed && attempt <= MAX_STALE_RETRIES {
                drop(spent);
                continue;
            }
        }
        break (r, conn, spent);
    };
    let cap = spent.cap;
    let resp = match r {
        Ok(Ok(done)) => {
            if done.keep_alive {
                spent.armed = false;
                w.pool.put(cap, conn);
            }
            ReasoningResponse::Done {
                id,
                prompt_tokens: done.prompt_tokens,
                generated_tokens: done.generated_tokens,
                stop: done.stop,
            }
        }
        Ok(Err(e)) => fail(e.service_error()),
        Err(_) => fail(ServiceError::TimedOut),
    };
    drop(spent);
    resp
}
