//! The gateway after attestation: it takes configuration and capabilities
//! from the broker on the bootstrap channel, serves each `Egress` capability
//! (one request at a time per capability, many capabilities concurrently, on
//! one thread) and reports one [`DecisionRecord`] per request.
//!
//! Per request, in this order, the first failing check decides:
//!
//! 1. the capability's rights name the connection (`ConnectionNotGranted`);
//! 2. the connection allows the method (`MethodNotAllowed`);
//! 3. the path is well-formed (`BadRequest`) and matches the catalog
//!    (`PathNotAllowed`), see [`crate::policy`];
//! 4. only `content-type`, `accept`, `range`, `if-range` headers
//!    (`HeaderNotAllowed`);
//! 5. the body is within `max_request_bytes` (`RequestTooLarge`);
//! 6. the connection's token bucket has a token (`RateLimited`);
//! 7. the host resolves once (`ResolveFailed`) and every address passes the
//!    special-purpose table (`AddressDenied`), see [`crate::fetch`];
//! 8. connect to a checked address (`ConnectFailed`), TLS (`TlsFailed`), the
//!    exchange (`BadUpstreamResponse`), redirects (`RedirectDenied`), the
//!    response size (`ResponseTooLarge`), all within `timeout_ms`
//!    (`TimedOut`).

use crate::fetch;
use crate::policy::{check_headers, check_path, Conn, RESPONSE_HEADERS};
use crate::rate::Limiter;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use proto::bootstrap::{pair_grants, recv_async, send_async};
use proto::channel::Channel;
use proto::egress::{
    Decision, DecisionRecord, EgressError, EgressRequest, EgressResponse, EgressRights,
    GatewayConfig, EGRESS_CHUNK, EGRESS_MAX_FRAME,
};
use proto::msg::{BrokerMsg, CapId, ChildMsg, ServiceKind};
use proto::ProtoError;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Largest message the gateway accepts on its bootstrap channel: a
/// `GatewayConfig` carries every connection and the enterprise CA bundle.
/// (A `SOCK_SEQPACKET` datagram is also bounded by the socket's send
/// buffer, about 200 KiB by default.)
pub const GATEWAY_BOOT_MAX: usize = 256 * 1024;

/// How long a holder has to complete the channel handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest path kept in a decision record.
const AUDIT_PATH_MAX: usize = 256;

/// The configuration in force: validated connections, DNS servers, TLS.
#[derive(Debug)]
pub struct Config {
    pub dns_servers: Vec<SocketAddr>,
    /// `None` only if rustls could not be set up at all: HTTPS requests then
    /// fail with `TlsFailed`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub conns: HashMap<String, Rc<Conn>>,
}

impl Config {
    /// Validates a `GatewayConfig`. Invalid connections are left out (each
    /// named in `problems`); an unusable enterprise CA bundle is named and
    /// only the bundled roots are trusted.
    pub fn build(c: &GatewayConfig) -> (Config, Vec<String>) {
        let mut problems = Vec::new();
        let tls = match crate::tls::client_config(&c.extra_roots_pem) {
            Ok((t, _)) => Some(t),
            Err(e) => {
                problems.push(e.to_string());
                match crate::tls::client_config(&[]) {
                    Ok((t, _)) => Some(t),
                    Err(e) => {
                        problems.push(e.to_string());
                        None
                    }
                }
            }
        };
        let mut conns = HashMap::new();
        for cc in &c.connections {
            match Conn::validate(cc) {
                Ok(v) => {
                    conns.insert(v.id.clone(), Rc::new(v));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        (
            Config {
                dns_servers: c.dns_servers.clone(),
                tls,
                conns,
            },
            problems,
        )
    }
}

/// The gateway's state on its one thread.
#[derive(Debug)]
pub struct Gateway {
    boot: AsyncFd<OwnedFd>,
    config: RefCell<Option<Rc<Config>>>,
    limiter: RefCell<Limiter>,
    pool: RefCell<crate::pool::Pool>,
    caps: RefCell<HashMap<CapId, tokio::task::AbortHandle>>,
}

impl Gateway {
    pub fn new(boot: AsyncFd<OwnedFd>) -> Rc<Gateway> {
        Rc::new(Gateway {
            boot,
            config: RefCell::new(None),
            limiter: RefCell::new(Limiter::default()),
            pool: RefCell::new(crate::pool::Pool::default()),
            caps: RefCell::new(HashMap::new()),
        })
    }

    fn set_config(&self, c: &GatewayConfig) {
        let (cfg, problems) = Config::build(c);
        for p in problems {
            eprintln!("flow-egress-gateway: {p}");
        }
        self.limiter
            .borrow_mut()
            .retain(|id| cfg.conns.contains_key(id));
        self.pool.borrow_mut().clear();
        *self.config.borrow_mut() = Some(Rc::new(cfg));
    }

    async fn report(&self, rec: DecisionRecord) {
        if let Err(e) = send_async(&self.boot, &ChildMsg::EgressDecision(rec), &[]).await {
            eprintln!("flow-egress-gateway: cannot report a decision to the broker: {e}");
        }
    }

    /// Reads broker messages until `Shutdown` or the broker goes away.
    /// Returns the process exit code.
    pub async fn run(self: &Rc<Gateway>) -> i32 {
        loop {
            let (msg, fds) = match recv_async::<BrokerMsg>(&self.boot, GATEWAY_BOOT_MAX).await {
                Ok(m) => m,
                Err(ProtoError::Closed) => return 0,
                Err(e) => {
                    eprintln!("flow-egress-gateway: bootstrap channel: {e}");
                    return 3;
                }
            };
            match msg {
                BrokerMsg::GatewayConfig(c) => self.set_config(&c),
                BrokerMsg::GrantEgress(rights) => {
                    if rights.len() != fds.len() {
                        eprintln!(
                            "flow-egress-gateway: {} egress grants arrived with {} descriptors; ignored",
                            rights.len(),
                            fds.len()
                        );
                        continue;
                    }
                    for (r, fd) in rights.into_iter().zip(fds) {
                        self.serve(r, fd);
                    }
                }
                BrokerMsg::Grant(grants) => {
                    // The gateway holds no capability of the generic kind;
                    // close whatever arrives.
                    drop(pair_grants(grants, fds));
                }
                BrokerMsg::Revoke(cap) => {
                    if let Some(h) = self.caps.borrow_mut().remove(&cap) {
                        h.abort();
                    }
                }
                BrokerMsg::Ping { .. } | BrokerMsg::Run { .. } => {}
                BrokerMsg::Shutdown => return 0,
            }
        }
    }

    fn serve(self: &Rc<Gateway>, rights: EgressRights, fd: OwnedFd) {
        let cap = rights.cap;
        let gw = self.clone();
        let task = tokio::task::spawn_local(async move {
            if let Err(true) = gw.serve_cap(&rights, fd).await {
                let _ = send_async(&gw.boot, &ChildMsg::MalformedPeer { cap }, &[]).await;
            }
            gw.caps.borrow_mut().remove(&cap);
        });
        if let Some(old) = self.caps.borrow_mut().insert(cap, task.abort_handle()) {
            old.abort();
        }
    }

    /// Serves one capability until EOF. `Err(true)`: the holder sent a
    /// malformed frame and was cut off.
    async fn serve_cap(&self, rights: &EgressRights, fd: OwnedFd) -> Result<(), bool> {
        let std_stream = std::os::unix::net::UnixStream::from(fd);
        std_stream.set_nonblocking(true).map_err(|_| false)?;
        let stream = UnixStream::from_std(std_stream).map_err(|_| false)?;
        let mut chan = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            Channel::handshake_with_max_frame(stream, ServiceKind::Egress, EGRESS_MAX_FRAME),
        )
        .await
        .map_err(|_| false)?
        .map_err(|_| true)?;
        loop {
            let req: EgressRequest = match chan.recv().await {
                Ok(r) => r,
                Err(ProtoError::Closed) | Err(ProtoError::Io { .. }) => return Ok(()),
                Err(_) => return Err(true),
            };
            if !self.handle(rights, req, &mut chan).await {
                return Ok(());
            }
        }
    }

    /// One request, answered and reported. `false`: the holder's channel
    /// failed and the capability is done.
    async fn handle(
        &self,
        rights: &EgressRights,
        req: EgressRequest,
        chan: &mut Channel<UnixStream>,
    ) -> bool {
        let EgressRequest::Http {
            id,
            connection,
            method,
            path,
            headers,
            body,
        } = req;
        let started = Instant::now();
        let config = self.config.borrow().clone();
        let conn = config
            .as_ref()
            .and_then(|c| c.conns.get(&connection).cloned())
            .filter(|_| rights.connections.contains(&connection));
        let mut rec = Pending::new(
            &self.boot,
            started,
            DecisionRecord {
                cap: rights.cap,
                connection: audit_text(&connection, 64),
                host: conn
                    .as_ref()
                    .map(|c| c.origin.host.clone())
                    .unwrap_or_default(),
                port: conn.as_ref().map(|c| c.origin.port).unwrap_or(0),
                addr: None,
                method,
                // The path as sent upstream (base path included), so the record
                // matches the upstream's own access log.
                path: match &conn {
                    Some(c) => audit_path(&format!("{}{}", c.base_path, path)),
                    None => audit_path(&path),
                },
                status: None,
                bytes_out: 0,
                bytes_in: 0,
                duration_ms: 0,
                decision: Decision::Allowed,
                body_from_ai: rights.body_from_ai,
            },
        );
        let outcome = match (config, conn) {
            (Some(config), Some(conn)) => {
                let ask = Ask {
                    id,
                    method,
                    path: &path,
                    headers: &headers,
                    body,
                };
                self.process(&config, &conn, ask, chan, &mut rec).await
            }
            _ => Err(Fail::Denied(EgressError::ConnectionNotGranted)),
        };
        let alive = match outcome {
            Ok(()) => true,
            Err(Fail::Denied(e)) => {
                rec.decision = Decision::Denied(e);
                chan.send(&EgressResponse::Error { id, error: e })
                    .await
                    .is_ok()
            }
            Err(Fail::Holder) => false,
        };
        let mut rec = rec.finish();
        rec.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.report(rec).await;
        alive
    }

    async fn process(
        &self,
        config: &Config,
        conn: &Conn,
        ask: Ask<'_>,
        chan: &mut Channel<UnixStream>,
        rec: &mut DecisionRecord,
    ) -> Result<(), Fail> {
        let Ask {
            id,
            mut method,
            path,
            headers,
            body,
        } = ask;
        if !conn.methods.contains(&method) {
            return Err(Fail::Denied(EgressError::MethodNotAllowed));
        }
        let (p, _) = check_path(path).map_err(Fail::Denied)?;
        if !conn.path_allowed(p) {
            return Err(Fail::Denied(EgressError::PathNotAllowed));
        }
        let mut headers = check_headers(headers).map_err(Fail::Denied)?;
        if body.len() as u64 > conn.limits.max_request_bytes {
            return Err(Fail::Denied(EgressError::RequestTooLarge));
        }
        let now = std::time::Instant::now();
        if !self
            .limiter
            .borrow_mut()
            .take(&conn.id, conn.limits.rate_per_minute, now)
        {
            return Err(Fail::Denied(EgressError::RateLimited));
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(conn.limits.timeout_ms));
        let addrs = timed(
            tokio::time::timeout_at(
                deadline,
                fetch::addresses(conn, &config.dns_servers, deadline),
            )
            .await,
        )?;
        let mut body = Bytes::from(body);
        let mut target = format!("{}{}", conn.base_path, path);
        let mut redirects_left = conn.limits.max_redirects;
        let mut checked: Vec<std::net::IpAddr> = addrs;
        let mut hops = 0u32;
        let (resp, up) = loop {
            // Only the first hop may reuse a pooled connection; it must go to
            // an address this request's resolution just checked.
            let pooled = if hops == 0 {
                self.pool.borrow_mut().take(&conn.id, &checked)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(u) => u,
                None => timed(
                    tokio::time::timeout_at(
                        deadline,
                        fetch::open(conn, &checked, config.tls.as_ref()),
                    )
                    .await,
                )?,
            };
            // Redirects go to the address already checked: one resolution
            // per request.
            rec.addr = Some(up.addr);
            checked = vec![up.addr];
            let req = fetch::build_request(conn, method, &target, &headers, body.clone())
                .map_err(Fail::Denied)?;
            let sent = tokio::time::timeout_at(deadline, up.sender.try_send_request(req)).await;
            let resp = match sent {
                Err(_) => return Err(Fail::Denied(EgressError::TimedOut)),
                Ok(Ok(r)) => r,
                Ok(Err(mut e)) => match (reused, e.take_message()) {
                    // The pooled connection closed before the request left:
                    // a fresh connection to the same checked address.
                    (true, Some(req)) => {
                        let retry = async {
                            up = fetch::open(conn, &checked, config.tls.as_ref()).await?;
                            up.sender
                                .send_request(req)
                                .await
                                .map_err(|_| EgressError::BadUpstreamResponse)
                        };
                        timed(tokio::time::timeout_at(deadline, retry).await)?
                    }
                    _ => return Err(Fail::Denied(EgressError::BadUpstreamResponse)),
                },
            };
            hops += 1;
            rec.bytes_out += body.len() as u64;
            let status = resp.status().as_u16();
            rec.status = Some(status);
            if !fetch::is_redirect(status) {
                break (resp, up);
            }
            let location = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // The redirect's body is not read: this connection is closed.
            drop(resp);
            drop(up);
            let next = location.and_then(|l| fetch::redirect_target(conn, &l));
            let (next_method, keep_body) = fetch::redirect_method(status, method);
            let (Some(rel), true) = (next, redirects_left > 0) else {
                return Err(Fail::Denied(EgressError::RedirectDenied));
            };
            if !conn.methods.contains(&next_method) {
                return Err(Fail::Denied(EgressError::RedirectDenied));
            }
            redirects_left -= 1;
            method = next_method;
            if !keep_body {
                body = Bytes::new();
                headers.retain(|(n, _)| n != http::header::CONTENT_TYPE);
            }
            target = format!("{}{}", conn.base_path, rel);
        };
        self.stream_back(id, conn, resp, deadline, chan, rec)
            .await?;
        // Read to the end: the connection can serve the next request.
        self.pool.borrow_mut().put(&conn.id, up);
        Ok(())
    }

    /// Sends the head and the body in `EGRESS_CHUNK` pieces, cutting the body
    /// at `max_response_bytes`. Upstream reads are bounded by the deadline;
    /// sends to the holder are not cancelled midway (a half-sent frame would
    /// break the channel).
    async fn stream_back(
        &self,
        id: u64,
        conn: &Conn,
        resp: hyper::Response<Incoming>,
        deadline: Instant,
        chan: &mut Channel<UnixStream>,
        rec: &mut DecisionRecord,
    ) -> Result<(), Fail> {
        let max = conn.limits.max_response_bytes;
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(Fail::Denied(EgressError::ResponseTooLarge));
        }
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .filter(|(n, _)| RESPONSE_HEADERS.contains(&n.as_str()))
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let status = resp.status().as_u16();
        chan.send(&EgressResponse::Head {
            id,
            status,
            headers,
        })
        .await
        .map_err(|_| Fail::Holder)?;
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::with_capacity(EGRESS_CHUNK);
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(Fail::Denied(EgressError::TimedOut)),
                Ok(None) => break,
                Ok(Some(Err(_))) => return Err(Fail::Denied(EgressError::BadUpstreamResponse)),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if rec.bytes_in + data.len() as u64 > max {
                return Err(Fail::Denied(EgressError::ResponseTooLarge));
            }
            rec.bytes_in += data.len() as u64;
            let mut rest: &[u8] = &data;
            while !rest.is_empty() {
                let take = (EGRESS_CHUNK - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if buf.len() == EGRESS_CHUNK {
                    let chunk = std::mem::replace(&mut buf, Vec::with_capacity(EGRESS_CHUNK));
                    chan.send(&EgressResponse::Body { id, chunk })
                        .await
                        .map_err(|_| Fail::Holder)?;
                }
            }
        }
        if !buf.is_empty() {
            chan.send(&EgressResponse::Body { id, chunk: buf })
                .await
                .map_err(|_| Fail::Holder)?;
        }
        chan.send(&EgressResponse::End { id })
            .await
            .map_err(|_| Fail::Holder)
    }
}

/// A holder's request, borrowed for [`Gateway::process`].
struct Ask<'a> {
    id: u64,
    method: proto::egress::Method,
    path: &'a str,
    headers: &'a [(String, String)],
    body: Vec<u8>,
}

/// A deadline-bounded step: its own error, or `TimedOut`.
fn timed<T>(r: Result<Result<T, EgressError>, tokio::time::error::Elapsed>) -> Result<T, Fail> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Fail::Denied(e)),
        Err(_) => Err(Fail::Denied(EgressError::TimedOut)),
    }
}

enum Fail {
    /// Refused or failed: the holder gets this error, the record says so.
    Denied(EgressError),
    /// The holder's channel broke while answering.
    Holder,
}

/// Keeps printable ASCII (no spaces), escapes the rest as `%XX`, cut at
/// `max` bytes: what a holder sent can never inject into the audit log.
pub fn audit_text(s: &str, max: usize) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if out.len() >= max {
            break;
        }
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A decision record for a request in progress. If the request's task is
/// dropped before it finishes (the broker revoked the capability mid-request,
/// or the gateway is stopping), the record is still reported, as denied
/// (`ConnectionNotGranted`: the grant was withdrawn), with a synchronous send
/// on the bootstrap channel: every request that reached the gateway leaves a
/// record.
struct Pending<'a> {
    boot: &'a AsyncFd<OwnedFd>,
    started: Instant,
    rec: DecisionRecord,
    finished: bool,
}

impl<'a> Pending<'a> {
    fn new(boot: &'a AsyncFd<OwnedFd>, started: Instant, rec: DecisionRecord) -> Pending<'a> {
        Pending {
            boot,
            started,
            rec,
            finished: false,
        }
    }

    /// The finished record, for the caller to report.
    fn finish(mut self) -> DecisionRecord {
        self.finished = true;
        self.rec.clone()
    }
}

impl std::ops::Deref for Pending<'_> {
    type Target = DecisionRecord;
    fn deref(&self) -> &DecisionRecord {
        &self.rec
    }
}

impl std::ops::DerefMut for Pending<'_> {
    fn deref_mut(&mut self) -> &mut DecisionRecord {
        &mut self.rec
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut rec = self.rec.clone();
        rec.decision = Decision::Denied(EgressError::ConnectionNotGranted);
        rec.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let msg = ChildMsg::EgressDecision(rec);
        if let Err(e) = proto::fdpass::send_msg_with_fds(self.boot.get_ref().as_fd(), &msg, &[]) {
            eprintln!(
                "flow-egress-gateway: cannot report an interrupted request to the broker: {e}"
            );
        }
    }
}

/// The path for the audit record: without query or fragment, escaped.
pub fn audit_path(path: &str) -> String {
    let p = path.split(['?', '#']).next().unwrap_or("");
    audit_text(p, AUDIT_PATH_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_paths_drop_the_query_and_escape() {
        assert_eq!(audit_path("/items/1?token=abc"), "/items/1");
        assert_eq!(audit_path("/a#frag"), "/a");
        assert_eq!(audit_path("/a b\n\u{e4}"), "/a%20b%0A%C3%A4");
        assert_eq!(audit_path("/100%"), "/100%25");
        assert!(audit_path(&"a".repeat(1000)).len() <= AUDIT_PATH_MAX);
    }
}
