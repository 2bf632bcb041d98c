//! What a request may ask, decided from the broker's grant alone: connection
//! entries validated once when the configuration arrives ([`Conn`]), and the
//! per-request checks on method, path and headers.
//!
//! Path rules (the holder's path, relative to the connection's `base_path`):
//! it starts with `/`; it has no fragment (`#`); every segment passes
//! [`path::check_segment`] (RFC 3986 path characters and `%XX` escapes, none
//! decoding to `/`, `\`, a control character or NUL: an upstream that
//! decodes them would see another path); no segment is `.` or `..`, spelled
//! plainly or escaped. The query (after the first `?`) passes
//! [`path::check_query`]; it is passed on but never matched against the
//! catalog. Then the path must match one of the catalog's patterns
//! ([`PathPattern`]: a literal segment matches itself, `*` exactly one
//! non-empty segment, a trailing `/**` one or more further segments, possibly
//! empty: `/files/**` matches `/files/` and `/files/a/b`, not `/files`).

use crate::cidr::Cidr;
use crate::host::{parse_host, Host};
use http::{HeaderName, HeaderValue};
use proto::egress::path;
use proto::egress::{ConnectionConfig, EgressError, Limits, Method, Origin, PathPattern, Scheme};

/// Request headers a holder may set; any other name is refused.
pub const REQUEST_HEADERS: [&str; 4] = ["content-type", "accept", "range", "if-range"];

/// Response headers passed back to the holder; every other one is dropped.
pub const RESPONSE_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "content-range",
    "etag",
    "last-modified",
    "accept-ranges",
];

/// Headers the gateway sets itself, which a catalog's auth header may not
/// replace.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "user-agent",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "trailer",
    "content-type",
    "accept",
    "range",
    "if-range",
];

/// Most headers a request may carry.
pub const MAX_REQUEST_HEADERS: usize = 8;
/// Longest header value a holder may send.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Longest path plus query.
pub const MAX_PATH: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("connection '{id}': {detail}: fix its catalog entry")]
    Invalid { id: String, detail: String },
}

fn invalid(id: &str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        id: id.chars().take(64).collect(),
        detail: detail.into(),
    }
}

/// Splits and checks a holder's `path[?query]`. `BadRequest` for anything
/// malformed (see the module doc).
pub fn check_path(path_q: &str) -> Result<(&str, Option<&str>), EgressError> {
    if path_q.len() > MAX_PATH || path_q.contains('#') {
        return Err(EgressError::BadRequest);
    }
    let (path, query) = match path_q.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_q, None),
    };
    let Some(body) = path.strip_prefix('/') else {
        return Err(EgressError::BadRequest);
    };
    for seg in body.split('/') {
        if path::check_segment(seg).is_err() || path::is_dot_segment(seg) {
            return Err(EgressError::BadRequest);
        }
    }
    if query.is_some_and(|q| path::check_query(q).is_err()) {
        return Err(EgressError::BadRequest);
    }
    Ok((path, query))
}

/// Checks the holder's headers: a name outside [`REQUEST_HEADERS`] is
/// `HeaderNotAllowed`; too many headers or a value that is not visible ASCII
/// is `BadRequest`.
pub fn check_headers(
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, EgressError> {
    if headers.len() > MAX_REQUEST_HEADERS {
        return Err(EgressError::BadRequest);
    }
    let mut out = Vec::with_capacity(headers.len());
    for (n, v) in headers {
        let lower = n.to_ascii_lowercase();
        let Some(name) = REQUEST_HEADERS.iter().find(|h| **h == lower) else {
            return Err(EgressError::HeaderNotAllowed);
        };
        if v.len() > MAX_HEADER_VALUE
            || !v
                .bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        {
            return Err(EgressError::BadRequest);
        }
        let value = HeaderValue::from_str(v).map_err(|_| EgressError::BadRequest)?;
        out.push((HeaderName::from_static(name), value));
    }
    Ok(out)
}

/// A connection entry, validated once when the configuration arrives.
#[derive(Debug, Clone)]
pub struct Conn {
    pub id: String,
    pub origin: Origin,
    pub host: Host,
    /// Empty, or `/x/y` (no trailing slash).
    pub base_path: String,
    pub methods: Vec<Method>,
    pub patterns: Vec<PathPattern>,
    /// Header name and `prefix + secret` (marked sensitive).
    pub auth: Option<(HeaderName, HeaderValue)>,
    pub allow: Vec<Cidr>,
    pub limits: Limits,
    /// `host[:port]`, the port omitted when it is the scheme's default.
    pub host_header: HeaderValue,
}

impl Conn {
    pub fn validate(c: &ConnectionConfig) -> Result<Conn, ConfigError> {
        let id = c.id.as_str();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && id.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !id_ok {
            return Err(invalid(id, "the id must match [a-z0-9][a-z0-9._-]{0,63}"));
        }
        let host = parse_host(&c.origin.host).map_err(|e| invalid(id, e.to_string()))?;
        if c.origin.port == 0 {
            return Err(invalid(id, "port 0 is not a destination"));
        }
        let base_path = c.base_path.trim_end_matches('/').to_string();
        if !base_path.is_empty() {
            match check_path(&base_path) {
                Ok((_, None)) => {}
                _ => {
                    return Err(invalid(
                        id,
                        format!("base path '{}' is not a plain absolute path", c.base_path),
                    ))
                }
            }
        }
        let patterns = c
            .paths
            .iter()
            .map(|p| PathPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(id, format!("path pattern {e}")))?;
        let allow = c
            .allow_cidrs
            .iter()
            .map(|s| Cidr::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(id, e.to_string()))?;
        let auth = match &c.auth {
            None => None,
            Some(a) => {
                let name = HeaderName::from_bytes(a.header.to_ascii_lowercase().as_bytes())
                    .map_err(|_| {
                        invalid(
                            id,
                            format!("auth header '{}' is not a header name", a.header),
                        )
                    })?;
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(invalid(
                        id,
                        format!("auth header '{}' is set by the gateway itself", a.header),
                    ));
                }
                let mut v = a.prefix.as_bytes().to_vec();
                v.extend_from_slice(a.secret.expose());
                let value = HeaderValue::from_bytes(&v);
                // Wipe the scratch copy of the secret.
                for b in v.iter_mut() {
                    // SAFETY: `b` is a valid, aligned, exclusive reference
                    // into our own buffer; a volatile write keeps the
                    // compiler from eliding the wipe.
                    unsafe { std::ptr::write_volatile(b, 0) };
                }
                let mut value = value.map_err(|_| {
                    invalid(
                        id,
                        "the credential contains characters a header cannot carry: re-add it with 'flow connections add'",
                    )
                })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let default_port = match c.origin.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let hh = if c.origin.port == default_port {
            host.authority_form()
        } else {
            format!("{}:{}", host.authority_form(), c.origin.port)
        };
        let host_header = HeaderValue::from_str(&hh)
            .map_err(|_| invalid(id, "the host cannot be a Host header"))?;
        Ok(Conn {
            id: id.to_string(),
            origin: c.origin.clone(),
            host,
            base_path,
            methods: c.methods.clone(),
            patterns,
            auth,
            allow,
            limits: c.limits,
            host_header,
        })
    }

    /// Whether the (checked) relative path matches a catalog pattern.
    pub fn path_allowed(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check_path("/a/b"), Ok(("/a/b", None)));
        assert_eq!(check_path("/a?x=1&y=/z?"), Ok(("/a", Some("x=1&y=/z?"))));
        assert_eq!(check_path("/a%20b"), Ok(("/a%20b", None)));
        assert_eq!(check_path("/"), Ok(("/", None)));
        for bad in [
            "",
            "a",
            "/a#b",
            "/a b",
            "/a\tb",
            "/a\nb",
            "/../etc",
            "/a/..",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E./b",
            "/a/.%2e",
            "/a/%2e",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a%00",
            "/a%0d%0a",
            "/a%",
            "/a%zz",
            "/a\\b",
            "/a\"b",
            "/a<b>",
            "/\u{e4}",
            "/a?b c",
            "/a?b#c",
            "/a?\u{1}",
            "/a?%",
        ] {
            assert_eq!(check_path(bad), Err(EgressError::BadRequest), "{bad:?}");
        }
        assert_eq!(
            check_path(&format!("/{}", "a".repeat(MAX_PATH))),
            Err(EgressError::BadRequest)
        );
    }

    #[test]
    fn headers() {
        let ok = check_headers(&[
            ("Content-Type".into(), "application/json".into()),
            ("accept".into(), "*/*".into()),
            ("Range".into(), "bytes=0-99".into()),
            ("if-range".into(), "\"etag\"".into()),
        ])
        .unwrap();
        assert_eq!(ok.len(), 4);
        assert_eq!(ok[0].0.as_str(), "content-type");
        for name in [
            "authorization",
            "cookie",
            "host",
            "x-forwarded-for",
            "user-agent",
            "content-length",
        ] {
            assert_eq!(
                check_headers(&[(name.into(), "x".into())]),
                Err(EgressError::HeaderNotAllowed),
                "{name}"
            );
        }
        assert_eq!(
            check_headers(&[("accept".into(), "a\r\nx-evil: 1".into())]),
            Err(EgressError::BadRequest)
        );
        assert_eq!(
            check_headers(&vec![
                ("accept".into(), "x".into());
                MAX_REQUEST_HEADERS + 1
            ]),
            Err(EgressError::BadRequest)
        );
    }

    fn cfg() -> ConnectionConfig {
        ConnectionConfig {
            id: "svc".into(),
            origin: Origin {
                scheme: Scheme::Https,
                host: "svc.test".into(),
                port: 443,
            },
            base_path: "/v1/".into(),
            methods: vec![Method::Get],
            paths: vec!["/items/*".into()],
            auth: Some(proto::egress::Auth {
                header: "Authorization".into(),
                prefix: "Bearer ".into(),
                secret: proto::egress::Secret::new(b"s3cret".to_vec()),
            }),
            allow_cidrs: vec!["127.0.0.0/8".into()],
            limits: Limits::default(),
        }
    }

    #[test]
    fn conn_validation() {
        let c = Conn::validate(&cfg()).unwrap();
        assert_eq!(c.base_path, "/v1");
        assert!(c.path_allowed("/items/1"));
        assert!(!c.path_allowed("/items/"));
        assert!(!c.path_allowed("/items"));
        assert_eq!(c.host_header, "svc.test");
        let (n, v) = c.auth.unwrap();
        assert_eq!(n.as_str(), "authorization");
        assert!(v.is_sensitive());
        assert_eq!(v, "Bearer s3cret");
        let mut other = cfg();
        other.origin.port = 8443;
        assert_eq!(Conn::validate(&other).unwrap().host_header, "svc.test:8443");
        let mut bad = cfg();
        bad.auth.as_mut().unwrap().header = "Host".into();
        assert!(Conn::validate(&bad).is_err());
        let mut bad = cfg();
        bad.auth.as_mut().unwrap().secret = proto::egress::Secret::new(b"a\r\nb".to_vec());
        let e = Conn::validate(&bad).unwrap_err().to_string();
        assert!(!e.contains("a\r\nb"));
        let mut bad = cfg();
        bad.allow_cidrs = vec!["10.1.2.3/8".into()];
        assert!(Conn::validate(&bad).is_err());
        let mut bad = cfg();
        bad.origin.host = "1.2.3.256".into();
        assert!(Conn::validate(&bad).is_err());
        let mut bad = cfg();
        bad.paths = vec!["/items/*".into(), "/a/**/b".into()];
        assert_eq!(
            Conn::validate(&bad).unwrap_err().to_string(),
            "connection 'svc': path pattern \"/a/**/b\": '**' may only be the last segment: fix its catalog entry"
        );
        let mut bad = cfg();
        bad.id = "Svc".into();
        assert!(Conn::validate(&bad).is_err());
        let mut num = cfg();
        num.origin.host = "0x7f.1".into();
        let c = Conn::validate(&num).unwrap();
        assert_eq!(c.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(c.host_header, "127.0.0.1");
    }
}
