//! The egress gateway's contract: what the broker tells the gateway (the
//! connections a capability may use, with their credentials), what a holder
//! of an `Egress` capability may ask, and the decision record the gateway
//! reports back for the audit log.
//!
//! **Invariant:** a holder names a connection and a path, never a host: the
//! origin (scheme, host, port), the allowed methods and paths, the limits and
//! the credential come from the broker's grant, held by the gateway. A holder
//! cannot widen them by what it sends.

use serde::{Deserialize, Serialize};

use crate::msg::CapId;

pub mod path;
pub use path::{PathPattern, PatternError};

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Where a connection's requests go: `scheme://host:port`. A credential is
/// bound to exactly one origin and is never sent to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub scheme: Scheme,
    /// A DNS name (lower case) or an IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.scheme.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }
}

/// HTTP methods a catalog entry may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Parses the upper-case name (`GET`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A secret (an API token). Its `Debug` never shows the value, and its bytes
/// are zeroed when dropped. It travels only broker -> gateway, inside a
/// [`ConnectionConfig`], over the gateway's bootstrap channel.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into our own
            // buffer; a volatile write keeps the compiler from eliding the wipe.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// How the credential is attached to each request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The header that carries it, e.g. `Authorization` or `X-Api-Key`.
    pub header: String,
    /// Written before the secret, e.g. `Bearer ` (may be empty).
    pub prefix: String,
    pub secret: Secret,
}

/// Limits the gateway enforces per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_request_bytes: u64,
    /// Largest response body, bytes; a longer response is cut and fails.
    pub max_response_bytes: u64,
    /// Whole-request deadline (resolve, connect, TLS, send, receive), ms.
    pub timeout_ms: u32,
    /// Requests per minute across all holders of this connection (token
    /// bucket; 0 means no requests).
    pub rate_per_minute: u32,
    /// Redirects followed, each re-checked against this grant (0: none).
    pub max_redirects: u8,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            timeout_ms: 30_000,
            rate_per_minute: 60,
            max_redirects: 0,
        }
    }
}

/// One connection the gateway may serve: a catalog entry resolved by the
/// broker, with its credential (if the entry names one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionConfig {
    /// The connection's name (the catalog id for service nodes, `hub` for the
    /// Model Hub). `[a-z0-9][a-z0-9._-]{0,63}`.
    pub id: String,
    pub origin: Origin,
    /// Path prefix every request path is appended to (`/v1`, or empty).
    pub base_path: String,
    pub methods: Vec<Method>,
    /// Allowed request paths, relative to `base_path`: `/items/*` matches one
    /// segment per `*`, a trailing `/**` matches any rest ([`PathPattern`]).
    pub paths: Vec<String>,
    pub auth: Option<Auth>,
    /// CIDRs this connection may reach even though the special-purpose
    /// registries mark them not globally reachable (`10.0.0.0/8`,
    /// `127.0.0.1/32`). Empty for anything on the internet.
    pub allow_cidrs: Vec<String>,
    pub limits: Limits,
}

/// Gateway-wide settings, sent once before the first grant and again when
/// policy or settings change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// Name servers to query over TCP (the gateway has no filesystem; the
    /// broker reads `/etc/resolv.conf` or the `egress.dns_servers` setting).
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// PEM certificates of the enterprise CA bundle, trusted besides the
    /// bundled web PKI roots.
    pub extra_roots_pem: Vec<u8>,
    /// Every connection any capability may name, with its credential.
    pub connections: Vec<ConnectionConfig>,
}

/// What the gateway is told about one `Egress` capability it serves. Held by
/// the gateway; never sent by the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRights {
    pub cap: CapId,
    /// Connection ids (in [`GatewayConfig::connections`]) this holder may use.
    pub connections: Vec<String>,
    /// The broker found a path from an AI node's output or from spool content
    /// into the holder's request bodies; recorded on every decision.
    pub body_from_ai: bool,
}

/// Requests on an `Egress` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressRequest {
    /// One HTTP request; answered by one [`EgressResponse::Head`], zero or
    /// more `Body` chunks and one `End` — or by one `Error`.
    Http {
        id: u64,
        connection: String,
        method: Method,
        /// Path (and query) relative to the connection's `base_path`; must
        /// start with `/`.
        path: String,
        /// Only `content-type`, `accept`, `range` and `if-range` are
        /// accepted; any other header name is refused.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// Responses on an `Egress` capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressResponse {
    Head {
        id: u64,
        status: u16,
        /// Only `content-type`, `content-length`, `content-range`, `etag`,
        /// `last-modified` and `accept-ranges` are passed on.
        headers: Vec<(String, String)>,
    },
    Body {
        id: u64,
        chunk: Vec<u8>,
    },
    End {
        id: u64,
    },
    Error {
        id: u64,
        error: EgressError,
    },
}

/// Why the gateway refused or failed a request. No free text crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressError {
    /// The capability does not name this connection.
    ConnectionNotGranted,
    /// The connection's catalog entry does not allow this method.
    MethodNotAllowed,
    /// The connection's catalog entry does not allow this path.
    PathNotAllowed,
    /// A header the gateway does not pass was asked for.
    HeaderNotAllowed,
    /// The request body is over the connection's limit.
    RequestTooLarge,
    /// The response body was over the connection's limit; it was cut.
    ResponseTooLarge,
    /// The connection's rate limit is exhausted: retry later.
    RateLimited,
    /// The name did not resolve.
    ResolveFailed,
    /// An address the name resolved to is not globally reachable (and no
    /// `allow_cidrs` entry of the connection covers it).
    AddressDenied,
    /// The redirect points outside the grant, or there were too many.
    RedirectDenied,
    /// TCP connect failed.
    ConnectFailed,
    /// TLS handshake or certificate check failed.
    TlsFailed,
    /// The upstream sent something that is not valid HTTP/1.1.
    BadUpstreamResponse,
    /// The whole-request deadline passed.
    TimedOut,
    /// The request was malformed (bad path, too many headers).
    BadRequest,
}

/// The gateway's decision on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Sent upstream (the response may still be an HTTP error).
    Allowed,
    /// Refused before or during the exchange; see the reason.
    Denied(EgressError),
}

/// One record per request, gateway -> broker on the bootstrap channel; the
/// broker writes it to the audit log. Metadata only: never a body, never a
/// header's value, never the query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub cap: CapId,
    pub connection: String,
    pub host: String,
    pub port: u16,
    /// The address dialled, when one was.
    pub addr: Option<std::net::IpAddr>,
    pub method: Method,
    /// The request path without its query string.
    pub path: String,
    pub status: Option<u16>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
    pub decision: Decision,
    pub body_from_ai: bool,
}

/// Largest frame on an `Egress` channel: a request with a body at the
/// largest allowed size, or a response chunk.
pub const EGRESS_MAX_FRAME: usize = 2 << 20;

/// Size of the body chunks the gateway streams back.
pub const EGRESS_CHUNK: usize = 64 * 1024;

/// What a holder gets back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl EgressHead {
    /// The first header of this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How one request on an `Egress` channel ended, from the holder's side.
#[derive(Debug, thiserror::Error)]
pub enum EgressCallError {
    #[error("the egress gateway refused or failed the request: {0:?}")]
    Gateway(EgressError),
    #[error("the egress channel failed: {0}")]
    Channel(#[from] crate::ProtoError),
    #[error("the egress gateway answered out of order (request {0})")]
    OutOfOrder(u64),
    /// The holder's chunk callback asked to stop.
    #[error("stopped by the caller")]
    Stopped,
}

/// Sends one [`EgressRequest::Http`] on `chan` and streams the answer: `on_head`
/// once, then `on_chunk` for each body chunk (return `false` to stop). One
/// request at a time per channel: the next frame must belong to `id`.
pub async fn call<S>(
    chan: &mut crate::channel::Channel<S>,
    req: EgressRequest,
    mut on_head: impl FnMut(&EgressHead),
    mut on_chunk: impl FnMut(&[u8]) -> bool,
) -> Result<EgressHead, EgressCallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let EgressRequest::Http { id, .. } = &req;
    let id = *id;
    chan.send(&req).await?;
    let mut head: Option<EgressHead> = None;
    loop {
        match chan.recv::<EgressResponse>().await? {
            EgressResponse::Head {
                id: got,
                status,
                headers,
            } if got == id && head.is_none() => {
                let h = EgressHead { status, headers };
                on_head(&h);
                head = Some(h);
            }
            EgressResponse::Body { id: got, chunk } if got == id && head.is_some() => {
                if !on_chunk(&chunk) {
                    return Err(EgressCallError::Stopped);
                }
            }
            EgressResponse::End { id: got } if got == id => {
                return head.ok_or(EgressCallError::OutOfOrder(id));
            }
            EgressResponse::Error { id: got, error } if got == id => {
                return Err(EgressCallError::Gateway(error));
            }
            _ => return Err(EgressCallError::OutOfOrder(id)),
        }
    }
}
