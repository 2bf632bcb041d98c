//! The upstream side of one request: resolve once, classify every address,
//! dial a checked address, TLS, one HTTP/1.1 exchange per hop, and the
//! redirect rule.

use crate::dns;
use crate::host::{parse_host, Host};
use crate::policy::{check_path, Conn};
use crate::special_purpose;
use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use proto::egress::{EgressError, Method, Scheme};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The user agent of every request: nothing about the machine.
pub const USER_AGENT_VALUE: &str = "flow-egress-gateway";

/// Largest response head hyper buffers.
const MAX_HEAD: usize = 64 * 1024;

/// A byte stream to the upstream: plain TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// The addresses to try, all checked: an IP-literal host is itself; a name is
/// resolved exactly once. Any denied address denies the request (a mixed
/// answer is refused whole: which address a client "would" use is not a
/// decision to leave to chance).
pub async fn addresses(
    conn: &Conn,
    dns_servers: &[SocketAddr],
    deadline: Instant,
) -> Result<Vec<IpAddr>, EgressError> {
    let addrs = match &conn.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => dns::resolve(dns_servers, name, deadline)
            .await
            .map_err(|_| EgressError::ResolveFailed)?,
    };
    if addrs.is_empty() {
        return Err(EgressError::ResolveFailed);
    }
    for a in &addrs {
        if special_purpose::classify(*a, &conn.allow).is_err() {
            return Err(EgressError::AddressDenied);
        }
    }
    Ok(addrs)
}

/// Connects to the first checked address that accepts. Never a name.
pub async fn dial(
    addrs: &[IpAddr],
    port: u16,
) -> Result<(tokio::net::TcpStream, IpAddr), EgressError> {
    for a in addrs {
        if let Ok(s) = tokio::net::TcpStream::connect(SocketAddr::new(*a, port)).await {
            let _ = s.set_nodelay(true);
            return Ok((s, *a));
        }
    }
    Err(EgressError::ConnectFailed)
}

/// Wraps the TCP stream in TLS for `https` origins, verifying the
/// certificate against the origin's host name (or IP literal).
pub async fn secure(
    conn: &Conn,
    tcp: tokio::net::TcpStream,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Io>, EgressError> {
    match conn.origin.scheme {
        Scheme::Http => Ok(Box::new(tcp)),
        Scheme::Https => {
            let tls = tls.ok_or(EgressError::TlsFailed)?;
            let name = crate::tls::server_name(&conn.host).ok_or(EgressError::TlsFailed)?;
            let s = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|_| EgressError::TlsFailed)?;
            Ok(Box::new(s))
        }
    }
}

/// Aborts the task driving a hyper connection when dropped.
#[derive(Debug)]
pub struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sending half of a hyper HTTP/1.1 client connection.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An open HTTP/1.1 connection to a checked address of one connection's
/// origin.
#[derive(Debug)]
pub struct Upstream {
    pub sender: Sender,
    pub task: ConnTask,
    /// The checked address it was dialled to.
    pub addr: IpAddr,
    pub idle_since: std::time::Instant,
}

/// The HTTP/1.1 handshake on a fresh stream. Must run inside a `LocalSet`
/// (the connection is driven by a local task).
pub async fn handshake(io: Box<dyn Io>, addr: IpAddr) -> Result<Upstream, EgressError> {
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|_| EgressError::BadUpstreamResponse)?;
    let task = ConnTask(tokio::task::spawn_local(async move {
        let _ = connection.await;
    }));
    Ok(Upstream {
        sender,
        task,
        addr,
        idle_since: std::time::Instant::now(),
    })
}

/// The request as it goes upstream: `Host`, `User-Agent`, the holder's
/// checked headers and the connection's credential — nothing else.
pub fn build_request(
    conn: &Conn,
    method: Method,
    target: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, EgressError> {
    let mut b = Request::builder()
        .method(method.as_str())
        .uri(target)
        .header(HOST, conn.host_header.clone())
        .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (n, v) in headers {
        b = b.header(n, v);
    }
    if let Some((n, v)) = &conn.auth {
        b = b.header(n, v);
    }
    b.body(Full::new(body)).map_err(|_| EgressError::BadRequest)
}

/// Opens a fresh connection: dial a checked address, TLS for `https`, the
/// HTTP/1.1 handshake.
pub async fn open(
    conn: &Conn,
    addrs: &[IpAddr],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Upstream, EgressError> {
    let (tcp, addr) = dial(addrs, conn.origin.port).await?;
    let io = secure(conn, tcp, tls).await?;
    handshake(io, addr).await
}

/// Whether `status` is a redirect the gateway must decide on.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The method and whether the body is kept after a redirect: 303 (and 301/302
/// after POST, as every client does) become GET without a body; 307/308 keep
/// both. HEAD stays HEAD.
pub fn redirect_method(status: u16, method: Method) -> (Method, bool) {
    match (status, method) {
        (_, Method::Head) => (Method::Head, false),
        (303, _) => (Method::Get, false),
        (301 | 302, Method::Post) => (Method::Get, false),
        (_, m) => (m, true),
    }
}

/// Where a `Location` points, as a holder path (relative to the connection's
/// base path, with its query), when it may be followed: same scheme, host
/// and port as the connection's origin, no user info, an absolute URL or an
/// absolute path (a relative path reference is not followed), under the base
/// path, and passing the same path checks and catalog patterns as a holder's
/// request. `None`: refuse the redirect.
pub fn redirect_target(conn: &Conn, location: &str) -> Option<String> {
    let loc = location.trim();
    if loc.bytes().any(|b| !b.is_ascii_graphic()) {
        return None;
    }
    let lower = loc.to_ascii_lowercase();
    let after_scheme = if lower.starts_with("http://") || lower.starts_with("https://") {
        let scheme = if lower.starts_with("https") {
            Scheme::Https
        } else {
            Scheme::Http
        };
        if scheme != conn.origin.scheme {
            return None;
        }
        Some(&loc[scheme.as_str().len() + 3..])
    } else if let Some(rest) = loc.strip_prefix("//") {
        Some(rest)
    } else if loc.starts_with('/') {
        None
    } else {
        // Relative references and other schemes are not followed.
        return None;
    };
    let path_q = match after_scheme {
        Some(rest) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            if authority.contains('@') {
                return None;
            }
            let (host, port) = split_authority(authority)?;
            let default = match conn.origin.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            };
            let port = port.unwrap_or(default);
            if parse_host(host).ok()? != conn.host || port != conn.origin.port {
                return None;
            }
            if tail.is_empty() || tail.starts_with('?') || tail.starts_with('#') {
                format!("/{tail}")
            } else {
                tail.to_string()
            }
        }
        None => loc.to_string(),
    };
    // The fragment stays with the client; it is never sent.
    let path_q = path_q.split('#').next().unwrap_or("");
    let rel = if conn.base_path.is_empty() {
        path_q
    } else {
        let r = path_q.strip_prefix(conn.base_path.as_str())?;
        if !(r.starts_with('/')) {
            return None;
        }
        r
    };
    let (path, _) = check_path(rel).ok()?;
    conn.path_allowed(path).then(|| rel.to_string())
}

/// `host[:port]` or `[v6][:port]`.
fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if a.starts_with('[') {
        let close = a.find(']')?;
        let (h, rest) = a.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if rest.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::egress::{ConnectionConfig, Limits, Origin};

    fn conn(scheme: Scheme, host: &str, port: u16, base: &str) -> Conn {
        Conn::validate(&ConnectionConfig {
            id: "svc".into(),
            origin: Origin {
                scheme,
                host: host.into(),
                port,
            },
            base_path: base.into(),
            methods: vec![Method::Get],
            paths: vec!["/items/*".into(), "/files/**".into()],
            auth: None,
            allow_cidrs: vec![],
            limits: Limits::default(),
        })
        .unwrap()
    }

    #[test]
    fn same_origin_redirects() {
        let c = conn(Scheme::Https, "svc.test", 443, "");
        assert_eq!(redirect_target(&c, "/items/2"), Some("/items/2".into()));
        assert_eq!(
            redirect_target(&c, "/items/2?x=1#frag"),
            Some("/items/2?x=1".into())
        );
        assert_eq!(
            redirect_target(&c, "https://svc.test/items/2"),
            Some("/items/2".into())
        );
        assert_eq!(
            redirect_target(&c, "HTTPS://SVC.TEST:443/items/2"),
            Some("/items/2".into())
        );
        assert_eq!(
            redirect_target(&c, "//svc.test/files/a/b"),
            Some("/files/a/b".into())
        );
        let p = conn(Scheme::Http, "127.0.0.1", 8080, "/v1");
        assert_eq!(
            redirect_target(&p, "http://127.0.0.1:8080/v1/items/3"),
            Some("/items/3".into())
        );
        assert_eq!(
            redirect_target(&p, "http://0x7f.1:8080/v1/items/3"),
            Some("/items/3".into())
        );
        assert_eq!(redirect_target(&p, "/v1/items/3"), Some("/items/3".into()));
    }

    #[test]
    fn everything_else_is_refused() {
        let c = conn(Scheme::Https, "svc.test", 443, "");
        for loc in [
            "http://svc.test/items/2",
            "https://svc.test:8443/items/2",
            "https://other.test/items/2",
            "https://svc.test.evil/items/2",
            "https://user@svc.test/items/2",
            "https://svc.test@evil.test/items/2",
            "//evil.test/items/2",
            "/admin",
            "/items/2/3",
            "/items/../admin",
            "/items/%2e%2e",
            "items/2",
            "../items/2",
            "ftp://svc.test/items/2",
            "javascript:alert(1)",
            "/items/2 x",
            "https://svc.test:/items/2",
            "https://svc.test:99999/items/2",
            "https://[::1]/items/2",
            "",
        ] {
            assert_eq!(redirect_target(&c, loc), None, "{loc}");
        }
        let p = conn(Scheme::Http, "127.0.0.1", 8080, "/v1");
        assert_eq!(redirect_target(&p, "/v1x/items/3"), None);
        assert_eq!(redirect_target(&p, "/items/3"), None);
        assert_eq!(
            redirect_target(&p, "http://127.0.0.2:8080/v1/items/3"),
            None
        );
        assert_eq!(redirect_target(&p, "http://127.0.0.1/v1/items/3"), None);
    }

    #[test]
    fn redirect_methods() {
        assert_eq!(redirect_method(303, Method::Post), (Method::Get, false));
        assert_eq!(redirect_method(302, Method::Post), (Method::Get, false));
        assert_eq!(redirect_method(307, Method::Post), (Method::Post, true));
        assert_eq!(redirect_method(308, Method::Put), (Method::Put, true));
        assert_eq!(redirect_method(301, Method::Get), (Method::Get, true));
        assert_eq!(redirect_method(303, Method::Head), (Method::Head, false));
    }
}
