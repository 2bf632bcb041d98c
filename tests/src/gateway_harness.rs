//! The real egress gateway under its real profile, with the broker's side of
//! its bootstrap played here, plus the test parts around it: loopback HTTP
//! and HTTPS upstreams that record what reached them, and a scripted DNS
//! server over TCP that counts queries.
//!
//! [`Gateway::spawn`] starts `target/<profile>/flow-egress-gateway` (build
//! it first: `cargo build -p flow-egress-gateway`) with a `SOCK_SEQPACKET`
//! socketpair end at fd 3, exactly as the broker does
//! (`broker/src/daemon/spawn.rs`, `supervise.rs`): it receives the
//! handshake and hello, checks from the outside that the process is
//! sandboxed (`NoNewPrivs`, seccomp filter mode, one thread), answers with
//! its handshake and an empty `Grant`, then sends `GatewayConfig` and
//! `GrantEgress` with the server ends of fresh capability socketpairs. The
//! gateway's `EgressDecision` records arrive on [`Gateway::decision`].
//!
//! This is test support: setup failures panic with a message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proto::bootstrap::{BOOTSTRAP_FD, BOOTSTRAP_MAX_FRAME};
use proto::channel::{check_handshake, Channel, HANDSHAKE_MAX_FRAME};
use proto::egress::{
    DecisionRecord, EgressCallError, EgressHead, EgressRequest, EgressRights, GatewayConfig,
    Method, EGRESS_MAX_FRAME,
};
use proto::fdpass::{recv_msg_with_fds, recv_with_fds, send_msg_with_fds};
use proto::msg::{BrokerMsg, CapId, ChildMsg, Component, Handshake, ServiceKind};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// `target/<profile>/flow-egress-gateway`, beside the running test or bench
/// binary.
pub fn gateway_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("flow-egress-gateway");
    assert!(
        bin.is_file(),
        "{} does not exist: run 'cargo build -p flow-egress-gateway' first",
        bin.display()
    );
    bin
}

/// What the gateway reports besides decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Decision(DecisionRecord),
    Malformed(CapId),
    Other(String),
}

/// A running gateway and the broker's end of its bootstrap channel.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    boot: Arc<OwnedFd>,
    reports: mpsc::Receiver<Report>,
    stderr: Arc<Mutex<String>>,
    rt: tokio::runtime::Runtime,
    next_cap: u64,
}

/// The holder's end of one `Egress` capability.
#[derive(Debug)]
pub struct Client {
    pub cap: CapId,
    chan: Channel<tokio::net::UnixStream>,
    next_id: u64,
}

/// What a request got back: the head and the whole body, or the error.
pub type Outcome = Result<(EgressHead, Vec<u8>), EgressCallError>;

fn status_field(pid: u32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

impl Gateway {
    /// Spawns the gateway allowed (by landlock) to connect to `connect_ports`
    /// and completes its bootstrap.
    pub fn spawn(connect_ports: &[u16]) -> Gateway {
        Gateway::spawn_bin(&gateway_bin(), connect_ports)
    }

    pub fn spawn_bin(bin: &std::path::Path, connect_ports: &[u16]) -> Gateway {
        let (parent, child_end) = proto::fdpass::seqpacket_pair().expect("socketpair");
        let child_raw = child_end.as_raw_fd();
        let mut cmd = Command::new(bin);
        for p in connect_ports {
            cmd.arg("--connect-port").arg(p.to_string());
        }
        cmd.env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs between fork and exec in the child and
        // only makes async-signal-safe system calls (prctl, fcntl, dup2); it
        // allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if child_raw == BOOTSTRAP_FD {
                    if libc::fcntl(child_raw, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(child_raw, BOOTSTRAP_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn flow-egress-gateway");
        drop(child_end);
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr pipe");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        // The broker's side, as in supervise.rs: handshake and hello first.
        let (payload, _) = recv_with_fds(parent.as_fd(), HANDSHAKE_MAX_FRAME).unwrap_or_else(|e| {
            let _ = child.wait();
            panic!(
                "the gateway sent no handshake ({e}); stderr: {}",
                stderr.lock().unwrap()
            )
        });
        check_handshake(&payload, ServiceKind::Bootstrap).expect("bootstrap handshake");
        match recv_msg_with_fds::<ChildMsg>(parent.as_fd(), BOOTSTRAP_MAX_FRAME) {
            Ok((ChildMsg::Hello { component, report }, _)) => {
                assert_eq!(component, Component::EgressGateway);
                assert_eq!(report.profile, "egress-gateway");
            }
            other => panic!("expected a hello, got {other:?}"),
        }
        // Outside check (a subset of the broker's attestation): the process
        // really runs in a sandbox before it gets anything.
        let pid = child.id();
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "NoNewPrivs");
        assert_eq!(status_field(pid, "Seccomp"), "2", "seccomp filter mode");
        assert_eq!(status_field(pid, "Threads"), "1", "one thread");
        send_msg_with_fds(parent.as_fd(), &Handshake::new(ServiceKind::Bootstrap), &[])
            .expect("send handshake");
        send_msg_with_fds(parent.as_fd(), &BrokerMsg::Grant(Vec::new()), &[]).expect("send grant");
        let boot = Arc::new(parent);
        let (tx, reports) = mpsc::channel();
        {
            let boot = boot.clone();
            std::thread::spawn(move || loop {
                match recv_msg_with_fds::<ChildMsg>(boot.as_fd(), BOOTSTRAP_MAX_FRAME) {
                    Ok((ChildMsg::EgressDecision(r), _)) => {
                        let _ = tx.send(Report::Decision(r));
                    }
                    Ok((ChildMsg::MalformedPeer { cap }, _)) => {
                        let _ = tx.send(Report::Malformed(cap));
                    }
                    Ok((other, _)) => {
                        let _ = tx.send(Report::Other(format!("{other:?}")));
                    }
                    Err(_) => return,
                }
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Gateway {
            child,
            boot,
            reports,
            stderr,
            rt,
            next_cap: 1,
        }
    }

    pub fn send(&self, msg: &BrokerMsg) {
        send_msg_with_fds(self.boot.as_fd(), msg, &[]).expect("send to the gateway");
    }

    pub fn configure(&self, cfg: GatewayConfig) {
        self.send(&BrokerMsg::GatewayConfig(cfg));
    }

    /// Mints an `Egress` capability for `connections` and returns the
    /// holder's end, handshake done.
    pub fn grant(&mut self, connections: &[&str], body_from_ai: bool) -> Client {
        let cap = CapId(self.next_cap);
        self.next_cap += 1;
        let (client_end, server_end) = proto::fdpass::stream_pair().expect("stream pair");
        let rights = EgressRights {
            cap,
            connections: connections.iter().map(|s| s.to_string()).collect(),
            body_from_ai,
        };
        send_msg_with_fds(
            self.boot.as_fd(),
            &BrokerMsg::GrantEgress(vec![rights]),
            &[server_end.as_fd()],
        )
        .expect("send GrantEgress");
        drop(server_end);
        let chan = self.rt.block_on(async {
            let s = std::os::unix::net::UnixStream::from(client_end);
            s.set_nonblocking(true).unwrap();
            let s = tokio::net::UnixStream::from_std(s).unwrap();
            tokio::time::timeout(
                Duration::from_secs(10),
                Channel::handshake_with_max_frame(s, ServiceKind::Egress, EGRESS_MAX_FRAME),
            )
            .await
            .expect("egress handshake timed out")
            .expect("egress handshake")
        });
        Client {
            cap,
            chan,
            next_id: 1,
        }
    }

    /// Sends one request frame and returns without waiting for the answer
    /// (for tests that act while the request is in flight).
    pub fn send_request(&self, client: &mut Client, req: &EgressRequest) {
        self.rt
            .block_on(client.chan.send(req))
            .expect("send the request");
    }

    pub fn revoke(&self, cap: CapId) {
        self.send(&BrokerMsg::Revoke(cap));
    }

    /// Sends one request and collects the answer.
    pub fn request(
        &self,
        client: &mut Client,
        connection: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Outcome {
        let id = client.next_id;
        client.next_id += 1;
        let req = EgressRequest::Http {
            id,
            connection: connection.to_string(),
            method,
            path: path.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        };
        let mut got = Vec::new();
        let r = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                proto::egress::call(
                    &mut client.chan,
                    req,
                    |_| {},
                    |c| {
                        got.extend_from_slice(c);
                        true
                    },
                ),
            )
            .await
            .expect("the gateway did not answer within 30 s")
        });
        r.map(|h| (h, got))
    }

    /// The next decision record (other reports are skipped but kept in the
    /// panic message if none comes).
    pub fn decision(&self) -> DecisionRecord {
        let mut skipped = Vec::new();
        loop {
            match self.reports.recv_timeout(Duration::from_secs(10)) {
                Ok(Report::Decision(r)) => return r,
                Ok(other) => skipped.push(other),
                Err(_) => panic!(
                    "no decision record within 10 s (skipped {skipped:?}); gateway stderr: {}",
                    self.stderr()
                ),
            }
        }
    }

    /// The next report of any kind, if one comes within `wait`.
    pub fn report(&self, wait: Duration) -> Option<Report> {
        self.reports.recv_timeout(wait).ok()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it must never die from a
    /// request).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the gateway to exit and returns its exit status.
    pub fn shutdown(mut self) -> std::process::ExitStatus {
        let _ = send_msg_with_fds(self.boot.as_fd(), &BrokerMsg::Shutdown, &[]);
        for _ in 0..100 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Upstream HTTP(S) servers.

/// One request as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Names lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The address the request arrived at (which address was dialled).
    pub local: SocketAddr,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream answers.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body chunked (no Content-Length).
    pub chunked: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn ok(body: &[u8]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.to_vec(),
            ..Reply::default()
        }
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply {
            status,
            headers: vec![("location".into(), location.into())],
            ..Reply::default()
        }
    }
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server (TLS when given a rustls config) that records
/// every connection and request.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Upstream {
    /// Binds `ip:0`. `ip` must be a loopback address.
    pub fn start(ip: IpAddr, tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Upstream {
        Upstream::start_at(SocketAddr::new(ip, 0), tls, handler)
    }

    /// Binds `addr`, which must be a loopback address.
    pub fn start_at(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> Upstream {
        assert!(
            addr.ip().is_loopback(),
            "test upstreams listen on loopback only"
        );
        let listener = TcpListener::bind(addr).expect("bind upstream");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (seen, connections, stop) = (seen.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                for s in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(s) = s else { continue };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, handler, tls) = (seen.clone(), handler.clone(), tls.clone());
                    std::thread::spawn(move || {
                        let local = s.local_addr().expect("local");
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        let _ = s.set_nodelay(true);
                        match tls {
                            None => serve_http(s, local, &seen, &handler),
                            Some(cfg) => {
                                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                    return;
                                };
                                let tls = rustls::StreamOwned::new(conn, s);
                                serve_http(tls, local, &seen, &handler);
                            }
                        }
                    });
                }
            });
        }
        Upstream {
            addr,
            seen,
            connections,
            stop,
        }
    }

    /// A plain HTTP upstream on 127.0.0.1 answering every request with `reply`.
    pub fn fixed(reply: Reply) -> Upstream {
        Upstream::start(
            IpAddr::from([127, 0, 0, 1]),
            None,
            Arc::new(move |_| reply.clone()),
        )
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_http<S: Read + Write>(
    s: S,
    local: SocketAddr,
    seen: &Mutex<Vec<Seen>>,
    handler: &Handler,
) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let req = Seen {
            method,
            target,
            headers,
            body,
            local,
        };
        seen.lock().unwrap().push(req.clone());
        let reply = handler(&req);
        std::thread::sleep(reply.delay);
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (n, v) in &reply.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let w = r.get_mut();
        if reply.chunked {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            if w.write_all(head.as_bytes()).is_err() {
                return;
            }
            for c in reply.body.chunks(16 * 1024) {
                let _ = write!(w, "{:x}\r\n", c.len());
                let _ = w.write_all(c);
                let _ = w.write_all(b"\r\n");
            }
            if w.write_all(b"0\r\n\r\n").is_err() {
                return;
            }
        } else {
            if req.method != "HEAD" {
                head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
            }
            head.push_str("\r\n");
            // One write for head and body: no Nagle/delayed-ACK stall.
            let mut out = head.into_bytes();
            if req.method != "HEAD" {
                out.extend_from_slice(&reply.body);
            }
            if w.write_all(&out).is_err() {
                return;
            }
        }
        if w.flush().is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// A scripted DNS server over TCP.

#[derive(Debug, Default)]
struct DnsState {
    /// Per name, the answer sets: the n-th A query gets the A records of
    /// the n-th set, the n-th AAAA query the AAAA records (the last set
    /// repeats).
    script: HashMap<String, Vec<Vec<IpAddr>>>,
    served: HashMap<(String, u16), usize>,
    queries: Vec<(String, u16)>,
    wrong_id: bool,
    one_per_connection: bool,
}

/// A DNS server on 127.0.0.1 (TCP) that answers from a script and counts
/// queries. Unknown names get NXDOMAIN.
#[derive(Debug)]
pub struct Dns {
    pub addr: SocketAddr,
    state: Arc<Mutex<DnsState>>,
}

pub const QTYPE_A: u16 = 1;
pub const QTYPE_AAAA: u16 = 28;

impl Dns {
    pub fn start() -> Dns {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind dns");
        let addr = listener.local_addr().expect("dns addr");
        let state = Arc::new(Mutex::new(DnsState::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve_dns(s, &st));
            }
        });
        Dns { addr, state }
    }

    /// Answer `name` with these address sets, one per request (see
    /// [`DnsState`]); replaces the previous script for the name.
    pub fn script(&self, name: &str, sets: &[&[&str]]) {
        let sets = sets
            .iter()
            .map(|s| s.iter().map(|a| a.parse().expect("address")).collect())
            .collect();
        let mut st = self.state.lock().unwrap();
        st.script.insert(name.to_string(), sets);
        st.served.retain(|(n, _), _| n != name);
    }

    /// Answer with a query id that does not match.
    pub fn set_wrong_id(&self, on: bool) {
        self.state.lock().unwrap().wrong_id = on;
    }

    /// Close each connection after its first answer (a server without
    /// pipelining).
    pub fn set_one_per_connection(&self, on: bool) {
        self.state.lock().unwrap().one_per_connection = on;
    }

    /// Every query so far: (name, qtype).
    pub fn queries(&self) -> Vec<(String, u16)> {
        self.state.lock().unwrap().queries.clone()
    }

    /// How many queries of `qtype` for `name`.
    pub fn count(&self, name: &str, qtype: u16) -> usize {
        self.queries()
            .iter()
            .filter(|(n, t)| n == name && *t == qtype)
            .count()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn serve_dns(mut s: TcpStream, st: &Mutex<DnsState>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).is_err() || q.len() < 12 {
            return;
        }
        // The question: labels from offset 12 (our client never compresses).
        let mut pos = 12;
        let mut labels = Vec::new();
        while let Some(&l) = q.get(pos) {
            pos += 1;
            if l == 0 {
                break;
            }
            let Some(label) = q.get(pos..pos + l as usize) else {
                return;
            };
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            pos += l as usize;
        }
        let Some(qt) = q
            .get(pos..pos + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
        else {
            return;
        };
        let qend = pos + 4;
        if q.len() < qend {
            return;
        }
        let name = labels.join(".");
        let (answers, nx, wrong_id, one) = {
            let mut g = st.lock().unwrap();
            g.queries.push((name.clone(), qt));
            let wrong_id = g.wrong_id;
            let one = g.one_per_connection;
            match g.script.get(&name).cloned() {
                None => (Vec::new(), true, wrong_id, one),
                Some(sets) => {
                    let n = g.served.entry((name.clone(), qt)).or_insert(0);
                    let set = sets.get(*n).or(sets.last()).cloned().unwrap_or_default();
                    *n += 1;
                    let picked: Vec<IpAddr> = set
                        .into_iter()
                        .filter(|a| match a {
                            IpAddr::V4(_) => qt == QTYPE_A,
                            IpAddr::V6(_) => qt == QTYPE_AAAA,
                        })
                        .collect();
                    (picked, false, wrong_id, one)
                }
            }
        };
        let mut r = q[..qend].to_vec();
        if wrong_id {
            r[0] ^= 0x55;
        }
        let flags: u16 = 0x8180 | if nx { 3 } else { 0 };
        r[2..4].copy_from_slice(&flags.to_be_bytes());
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        r[8..12].copy_from_slice(&[0, 0, 0, 0]);
        for a in answers {
            r.extend_from_slice(&[0xc0, 12]);
            let (t, data): (u16, Vec<u8>) = match a {
                IpAddr::V4(v) => (QTYPE_A, v.octets().to_vec()),
                IpAddr::V6(v) => (QTYPE_AAAA, v.octets().to_vec()),
            };
            r.extend_from_slice(&t.to_be_bytes());
            r.extend_from_slice(&1u16.to_be_bytes());
            r.extend_from_slice(&60u32.to_be_bytes());
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(&data);
        }
        let mut out = (r.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&r);
        if s.write_all(&out).is_err() || one {
            return;
        }
    }
}

/// A small FIFO of scripted replies for an upstream handler: each request
/// takes the next one (the last repeats).
pub fn sequence(replies: Vec<Reply>) -> Handler {
    let q = Mutex::new(VecDeque::from(replies));
    Arc::new(move |_| {
        let mut q = q.lock().unwrap();
        if q.len() > 1 {
            q.pop_front().unwrap_or_default()
        } else {
            q.front().cloned().unwrap_or_default()
        }
    })
}
