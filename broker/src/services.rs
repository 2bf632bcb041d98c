//! The service catalog: the REST services that `service` flow nodes may
//! call through the egress gateway, and the check of a flow's service nodes
//! against policy, catalog and credentials before it runs.
//!
//! The catalog is TOML, one `[[service]]` table per service (format:
//! `docs/services.md`; the built-in file is `deploy/services.toml`). A
//! user's `<config>/services.toml` adds entries; one with the id of a
//! built-in entry replaces it. Parsing is strict: an unknown key, a missing
//! key or a value outside its rule is an error naming `file:line:key`.
//!
//! **Invariant:** an entry names exactly one origin (`scheme://host:port`),
//! parsed here without any of the WHATWG URL parser's repairs (no userinfo,
//! no numeric host spellings other than a dotted quad, no query or
//! fragment), so the origin the gateway dials and the one a credential is
//! bound to are the one a person reads in the file.

use crate::policy::{Effective, Source};
use crate::toml_errors::{self, line_of};
use proto::egress::path::{self, BadPart};
use proto::egress::{Auth, ConnectionConfig, Limits, Method, Origin, PathPattern, Scheme, Secret};
use proto::flow::{Flow, FlowNodeKind};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The catalog shipped in the binary.
pub const BUILTIN: &str = include_str!("../../deploy/services.toml");

/// How errors name the built-in catalog.
pub const BUILTIN_ORIGIN: &str = "deploy/services.toml (built in)";

/// The user's catalog, in the config directory.
pub const USER_FILE: &str = "services.toml";

/// Longest `base_url`, in bytes.
pub const MAX_BASE_URL: usize = 2048;

/// Largest `limits.max_request_bytes`: the body and the rest of the request
/// must fit one frame on the egress channel.
pub const MAX_REQUEST_BYTES: u64 = proto::egress::EGRESS_MAX_FRAME as u64 - 64 * 1024;

/// Largest `limits.max_response_bytes`: what a service node holds at most.
pub const MAX_RESPONSE_BYTES: u64 = executor::run::MAX_SERVICE_RESPONSE_BYTES;

/// Largest `limits.timeout_ms` (10 minutes).
pub const MAX_TIMEOUT_MS: i64 = 600_000;

/// Largest `limits.rate_per_minute`.
pub const MAX_RATE_PER_MINUTE: i64 = 60_000;

/// Largest `limits.max_redirects`.
pub const MAX_REDIRECTS: i64 = 10;

/// Headers a catalog entry may not use for its credential: the ones the
/// holder sets (`content-type`, `accept`, `range`, `if-range`), the ones the
/// gateway sets (`host`, `user-agent`), and the ones that frame the message
/// or belong to one hop (the gateway refuses the same set).
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "expect",
    "host",
    "if-range",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
];

#[derive(Debug, thiserror::Error)]
pub enum ServiceCatalogError {
    #[error("cannot read service catalog {path}: {source}: fix its permissions or remove it", path = path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("service catalog {path} {problem}: it decides where credentials are sent; run '{fix}'", path = path.display())]
    Insecure {
        path: PathBuf,
        problem: String,
        fix: String,
    },

    #[error("{origin}:{line}:{key}: {message}: fix this key of the service catalog (the format is in docs/services.md)")]
    Invalid {
        /// The file (or `deploy/services.toml (built in)`).
        origin: String,
        /// 1-based line.
        line: usize,
        /// The key the error is about (`service` for a whole entry).
        key: String,
        message: String,
    },
}

/// How the credential is attached to each request: `header: prefix+secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSpec {
    pub header: String,
    pub prefix: String,
}

/// One service of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// `[a-z0-9][a-z0-9._-]{0,63}`; also the connection's name.
    pub id: String,
    pub origin: Origin,
    /// Path prefix of every request (`/v1`), or empty; no trailing `/`.
    pub base_path: String,
    /// Sorted, without repeats.
    pub methods: Vec<Method>,
    /// Path patterns relative to `base_path`, each a valid [`PathPattern`].
    pub paths: Vec<String>,
    pub auth: Option<AuthSpec>,
    /// The keyring credential's name when it is not the id.
    pub credential: Option<String>,
    pub limits: Limits,
    /// CIDRs in canonical form (`10.0.0.0/8`, `::1/128`).
    pub allow_cidrs: Vec<String>,
}

impl ServiceEntry {
    /// The keyring credential this entry needs: `credential`, else the id;
    /// `None` when the entry has no `auth` (it sends no credential).
    pub fn credential_name(&self) -> Option<&str> {
        self.auth
            .as_ref()
            .map(|_| self.credential.as_deref().unwrap_or(&self.id))
    }

    /// The connection the gateway serves for this entry. `secret` is used
    /// only when the entry has `auth`; an entry with `auth` but no secret
    /// gets a connection without one (its nodes fail validation before they
    /// could use it: [`plan_services`] checks the credential's presence).
    pub fn connection_config(&self, secret: Option<Secret>) -> ConnectionConfig {
        let auth = match (&self.auth, secret) {
            (Some(a), Some(secret)) => Some(Auth {
                header: a.header.clone(),
                prefix: a.prefix.clone(),
                secret,
            }),
            _ => None,
        };
        ConnectionConfig {
            id: self.id.clone(),
            origin: self.origin.clone(),
            base_path: self.base_path.clone(),
            methods: self.methods.clone(),
            paths: self.paths.clone(),
            auth,
            allow_cidrs: self.allow_cidrs.clone(),
            limits: self.limits,
        }
    }

    /// Whether this entry allows `method` on a request path (relative to
    /// `base_path`; the query is ignored).
    pub fn allows(&self, method: Method, path: &str) -> bool {
        let before_query = path.split('?').next().unwrap_or("");
        self.methods.contains(&method)
            && self
                .paths
                .iter()
                .any(|p| PathPattern::parse(p).is_ok_and(|p| p.matches(before_query)))
    }
}

/// The built-in catalog with the user's entries over it.
#[derive(Debug, Clone, Default)]
pub struct ServiceCatalog {
    entries: Vec<ServiceEntry>,
    /// The user's catalog file (which may not exist), for hints.
    user_file: PathBuf,
}

impl ServiceCatalog {
    /// The built-in catalog, then `<config_dir>/services.toml` if it exists.
    /// The user's file must belong to the user (or root) and not be writable
    /// by group or others.
    pub fn load(config_dir: &Path) -> Result<ServiceCatalog, ServiceCatalogError> {
        let mut catalog = ServiceCatalog::parse(BUILTIN, BUILTIN_ORIGIN)?;
        let path = config_dir.join(USER_FILE);
        if let Some(text) = read_user_file(&path)? {
            let user = ServiceCatalog::parse(&text, &path.display().to_string())?;
            catalog.overlay(user);
        }
        catalog.user_file = path;
        Ok(catalog)
    }

    /// Parse catalog text; `origin` names it in errors (a path).
    pub fn parse(src: &str, origin: &str) -> Result<ServiceCatalog, ServiceCatalogError> {
        let raw: RawFile = toml::from_str(src).map_err(|e| toml_error(src, origin, &e))?;
        let mut entries: Vec<ServiceEntry> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for raw in raw.service {
            let id_line = line_of(src, raw.get_ref().id.span().start);
            let entry = check_entry(raw, src, origin)?;
            if let Some(i) = entries.iter().position(|e| e.id == entry.id) {
                return Err(ServiceCatalogError::Invalid {
                    origin: origin.to_owned(),
                    line: id_line,
                    key: "id".to_owned(),
                    message: format!(
                        "service '{}' is already defined at line {}: give each entry its own id",
                        entry.id, lines[i]
                    ),
                });
            }
            entries.push(entry);
            lines.push(id_line);
        }
        Ok(ServiceCatalog {
            entries,
            user_file: PathBuf::new(),
        })
    }

    /// Adds `other`'s entries; one with the id of an entry here replaces it.
    fn overlay(&mut self, other: ServiceCatalog) {
        for entry in other.entries {
            match self.entries.iter_mut().find(|e| e.id == entry.id) {
                Some(old) => *old = entry,
                None => self.entries.push(entry),
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&ServiceEntry> {
        self.entries.iter().find(|e| e.id == id)
    }

    pub fn entries(&self) -> &[ServiceEntry] {
        &self.entries
    }

    /// The user's catalog file (`<config>/services.toml`).
    pub fn user_file(&self) -> &Path {
        &self.user_file
    }
}

fn read_user_file(path: &Path) -> Result<Option<String>, ServiceCatalogError> {
    let read_err = |source| ServiceCatalogError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let insecure = |problem: String, fix: String| ServiceCatalogError::Insecure {
        path: path.to_owned(),
        problem,
        fix,
    };
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(insecure(
            format!("is owned by uid {}, not by uid {euid}", meta.uid()),
            format!("chown {euid} {}", path.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(
            format!(
                "is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {}", path.display()),
        ));
    }
    std::fs::read_to_string(path).map(Some).map_err(read_err)
}

// ---------------------------------------------------------------------------
// The file schema.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: Spanned<String>,
    base_url: Spanned<String>,
    methods: Spanned<Vec<Spanned<String>>>,
    paths: Spanned<Vec<Spanned<String>>>,
    auth: Option<Spanned<RawAuth>>,
    credential: Option<Spanned<String>>,
    limits: Option<Spanned<RawLimits>>,
    allow_cidrs: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    scheme: Spanned<String>,
    header: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
}

/// Integers are `i64` so that negative values get a range message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_bytes: Option<Spanned<i64>>,
    max_response_bytes: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    rate_per_minute: Option<Spanned<i64>>,
    max_redirects: Option<Spanned<i64>>,
}

/// Whether `s` is a connection name / catalog id: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn is_service_id(s: &str) -> bool {
    executor::format::is_service_id(s)
}

/// The rules serde cannot express, with the line and key of the first
/// broken one.
fn check_entry(
    raw: Spanned<RawService>,
    src: &str,
    origin: &str,
) -> Result<ServiceEntry, ServiceCatalogError> {
    let r = raw.into_inner();
    let id = r.id.get_ref().clone();
    let invalid = |span: Range<usize>, key: &str, message: String| ServiceCatalogError::Invalid {
        origin: origin.to_owned(),
        line: line_of(src, span.start),
        key: key.to_owned(),
        message: if is_service_id(&id) {
            format!("service '{id}': {message}")
        } else {
            message
        },
    };
    if !is_service_id(&id) {
        return Err(invalid(
            r.id.span(),
            "id",
            format!("{id:?} is not a service id: use 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"),
        ));
    }
    let (origin_parsed, base_path) = parse_base_url(r.base_url.get_ref())
        .map_err(|m| invalid(r.base_url.span(), "base_url", m))?;

    let mut methods = Vec::new();
    if r.methods.get_ref().is_empty() {
        return Err(invalid(
            r.methods.span(),
            "methods",
            "list at least one method, e.g. [\"GET\"]".into(),
        ));
    }
    for m in r.methods.get_ref() {
        let Some(method) = Method::parse(m.get_ref()) else {
            return Err(invalid(
                m.span(),
                "methods",
                format!(
                    "{:?} is not a method: use GET, HEAD, POST, PUT, PATCH or DELETE",
                    m.get_ref()
                ),
            ));
        };
        if methods.contains(&method) {
            return Err(invalid(
                m.span(),
                "methods",
                format!("{} is listed twice: list it once", method.as_str()),
            ));
        }
        methods.push(method);
    }
    methods.sort();

    if r.paths.get_ref().is_empty() {
        return Err(invalid(
            r.paths.span(),
            "paths",
            "list at least one path pattern, e.g. [\"/items/*\"]".into(),
        ));
    }
    let mut paths = Vec::new();
    for p in r.paths.get_ref() {
        PathPattern::parse(p.get_ref()).map_err(|e| invalid(p.span(), "paths", e.to_string()))?;
        paths.push(p.get_ref().clone());
    }

    let auth = match &r.auth {
        None => None,
        Some(a) => Some(check_auth(a.get_ref(), &invalid)?),
    };
    let credential = match &r.credential {
        None => None,
        Some(c) => {
            if auth.is_none() {
                return Err(invalid(
                    c.span(),
                    "credential",
                    "a credential is sent only with auth: add auth = { scheme = \"bearer\" } or remove credential".into(),
                ));
            }
            if !is_service_id(c.get_ref()) {
                return Err(invalid(
                    c.span(),
                    "credential",
                    format!("{:?} is not a connection name: use 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit", c.get_ref()),
                ));
            }
            Some(c.get_ref().clone())
        }
    };

    let limits = match &r.limits {
        None => Limits::default(),
        Some(l) => check_limits(l.get_ref(), &invalid)?,
    };

    let mut allow_cidrs = Vec::new();
    if let Some(list) = &r.allow_cidrs {
        for c in list.get_ref() {
            let canonical =
                parse_cidr(c.get_ref()).map_err(|m| invalid(c.span(), "allow_cidrs", m))?;
            if !allow_cidrs.contains(&canonical) {
                allow_cidrs.push(canonical);
            }
        }
    }

    Ok(ServiceEntry {
        id,
        origin: origin_parsed,
        base_path,
        methods,
        paths,
        auth,
        credential,
        limits,
        allow_cidrs,
    })
}

fn check_auth(
    a: &RawAuth,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ServiceCatalogError,
) -> Result<AuthSpec, ServiceCatalogError> {
    let header = |default: Option<&str>| -> Result<String, ServiceCatalogError> {
        let (name, span) = match (&a.header, default) {
            (Some(h), _) => (h.get_ref().clone(), h.span()),
            (None, Some(d)) => return Ok(d.to_owned()),
            (None, None) => {
                return Err(invalid(
                    a.scheme.span(),
                    "auth.header",
                    "scheme \"header\" needs the header's name: add header = \"X-Api-Key\" (for example)".into(),
                ))
            }
        };
        let token = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'!' | b'#'
                            | b'$'
                            | b'%'
                            | b'&'
                            | b'\''
                            | b'*'
                            | b'+'
                            | b'-'
                            | b'.'
                            | b'^'
                            | b'_'
                            | b'`'
                            | b'|'
                            | b'~'
                    )
            });
        if !token {
            return Err(invalid(
                span,
                "auth.header",
                format!("{name:?} is not a header name: use 1 to 64 letters, digits and - (e.g. \"X-Api-Key\")"),
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                span,
                "auth.header",
                format!("{name} cannot carry a credential: it frames the request or is set by the node; use Authorization or an X- header"),
            ));
        }
        Ok(name)
    };
    match a.scheme.get_ref().as_str() {
        "bearer" => {
            if let Some(p) = &a.prefix {
                return Err(invalid(
                    p.span(),
                    "auth.prefix",
                    "scheme \"bearer\" always sends \"Bearer \": remove prefix, or use scheme = \"header\"".into(),
                ));
            }
            Ok(AuthSpec {
                header: header(Some("Authorization"))?,
                prefix: "Bearer ".to_owned(),
            })
        }
        "header" => {
            let prefix = match &a.prefix {
                None => String::new(),
                Some(p) => {
                    let v = p.get_ref();
                    if v.len() > 64 || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                        return Err(invalid(
                            p.span(),
                            "auth.prefix",
                            "the prefix must be at most 64 printable ASCII characters".into(),
                        ));
                    }
                    v.clone()
                }
            };
            Ok(AuthSpec {
                header: header(None)?,
                prefix,
            })
        }
        other => Err(invalid(
            a.scheme.span(),
            "auth.scheme",
            format!("unknown scheme {other:?}: use \"bearer\" (Authorization: Bearer <secret>) or \"header\" (a header of your choice)"),
        )),
    }
}

fn check_limits(
    l: &RawLimits,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ServiceCatalogError,
) -> Result<Limits, ServiceCatalogError> {
    let mut limits = Limits::default();
    let ranged = |v: &Spanned<i64>, key: &str, min: i64, max: i64| {
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(invalid(
                v.span(),
                key,
                format!("{n} is outside {min}..={max}: use a value in {min}..={max}"),
            ))
        }
    };
    // The casts below are in range by the checks.
    if let Some(v) = &l.max_request_bytes {
        limits.max_request_bytes =
            ranged(v, "limits.max_request_bytes", 0, MAX_REQUEST_BYTES as i64)? as u64;
    }
    if let Some(v) = &l.max_response_bytes {
        limits.max_response_bytes =
            ranged(v, "limits.max_response_bytes", 1, MAX_RESPONSE_BYTES as i64)? as u64;
    }
    if let Some(v) = &l.timeout_ms {
        limits.timeout_ms = ranged(v, "limits.timeout_ms", 1, MAX_TIMEOUT_MS)? as u32;
    }
    if let Some(v) = &l.rate_per_minute {
        limits.rate_per_minute =
            ranged(v, "limits.rate_per_minute", 1, MAX_RATE_PER_MINUTE)? as u32;
    }
    if let Some(v) = &l.max_redirects {
        limits.max_redirects = ranged(v, "limits.max_redirects", 0, MAX_REDIRECTS)? as u8;
    }
    Ok(limits)
}

// ---------------------------------------------------------------------------
// URLs, paths and CIDRs.

/// Parses `http(s)://host[:port][/base/path]` strictly: scheme `http` or
/// `https`; no userinfo, query or fragment; the host a DNS name (lower-cased),
/// a dotted-quad IPv4 address or a bracketed IPv6 address; the port 1..=65535
/// (default 80 or 443). Returns the origin and the base path without a
/// trailing `/` (empty for none).
pub fn parse_base_url(url: &str) -> Result<(Origin, String), String> {
    if url.len() > MAX_BASE_URL {
        return Err(format!(
            "the URL is longer than {MAX_BASE_URL} bytes: shorten it"
        ));
    }
    if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{url:?} has {:?}: write the URL without spaces, control or non-ASCII characters (use %XX in the path, punycode in the host)",
            c
        ));
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("{url:?} is not an http(s) URL: write it as https://host[:port][/path]")
    })?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => {
            return Err(format!(
                "scheme {other:?} is not allowed: use https (or http)"
            ))
        }
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "{url:?} has a query or fragment: the base URL is scheme, host, port and path only"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "{url:?} has user information ('@'): credentials belong in the keyring ('flow connections add ID'), never in the URL"
        ));
    }
    let (host, port) = split_host_port(authority).map_err(|m| format!("{url:?}: {m}"))?;
    let port = match port {
        None => match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        },
        Some(p) => p,
    };
    let base_path = check_base_path(path).map_err(|m| format!("{url:?}: {m}"))?;
    Ok((Origin { scheme, host, port }, base_path))
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address must be closed with ']'")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("[{inside}] is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected ':port' after ']'")?),
        };
        (ip.to_string(), port)
    } else {
        let (h, p) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        (check_host(h)?, p)
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n: u32 = p
                .parse()
                .ok()
                .filter(|_| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("port {p:?} is not a number"))?;
            Some(
                u16::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("port {n} is outside 1..=65535"))?,
            )
        }
    };
    Ok((host, port))
}

/// A DNS name (lower-cased) or a dotted-quad IPv4 address. A name whose
/// last label is numeric must be a dotted quad, so that `2130706433`,
/// `0177.1` or `0x7f.1` (other spellings of 127.0.0.1) are refused.
fn check_host(host: &str) -> Result<String, String> {
    let host = host.to_ascii_lowercase();
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    let labels: Vec<&str> = host.split('.').collect();
    let last = labels.last().copied().unwrap_or("");
    let numeric_last = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    let hexish_last = last.starts_with("0x");
    if numeric_last || hexish_last {
        let quad = labels.len() == 4
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 3
                    && l.bytes().all(|b| b.is_ascii_digit())
                    && (l.len() == 1 || !l.starts_with('0'))
            });
        return match host.parse::<Ipv4Addr>() {
            Ok(ip) if quad => Ok(ip.to_string()),
            _ => Err(format!(
                "host {host:?} is not a DNS name or a dotted-quad IPv4 address (a.b.c.d, no leading zeros)"
            )),
        };
    }
    for label in &labels {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "host {host:?} is not a DNS name: labels of 1 to 63 of a-z 0-9 -, not starting or ending with - (punycode for other letters)"
            ));
        }
    }
    Ok(host)
}

fn check_base_path(path: &str) -> Result<String, String> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for seg in trimmed.split('/').skip(1) {
        if seg.is_empty() {
            return Err("the path has an empty segment ('//')".into());
        }
        if path::is_dot_segment(seg) {
            return Err("the path has a '.' or '..' segment".into());
        }
        match path::check_segment(seg) {
            Ok(()) => {}
            Err(BadPart::Character) => {
                return Err(format!(
                    "path segment {seg:?} has characters a URL path does not allow: use %XX"
                ))
            }
            Err(BadPart::Escape) => {
                return Err(format!(
                    "path segment {seg:?} escapes '/', '\\', a control character or NUL, which the gateway refuses in a path: write the segment without that escape"
                ))
            }
        }
    }
    Ok(trimmed.to_owned())
}

/// Parses `addr/len` (IPv4 or IPv6) with no host bits set; returns it in
/// canonical form.
pub fn parse_cidr(text: &str) -> Result<String, String> {
    let (addr, len) = text.split_once('/').ok_or_else(|| {
        format!("{text:?} is not a CIDR: write address/prefix-length, e.g. \"10.0.0.0/8\" or \"127.0.0.1/32\"")
    })?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max && !len.starts_with('+'))
        .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?;
    let host_bits_set = match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            len < 32 && bits & (u32::MAX >> len) != 0
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            len < 128 && bits & (u128::MAX >> len) != 0
        }
    };
    if host_bits_set {
        let net = match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & !(u32::MAX >> len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> len))),
        };
        return Err(format!(
            "{text:?} has host bits set: write the network, \"{net}/{len}\""
        ));
    }
    Ok(format!("{ip}/{len}"))
}

// ---------------------------------------------------------------------------
// TOML errors.

/// A toml error as `origin:line:key: message`.
fn toml_error(src: &str, origin: &str, e: &toml::de::Error) -> ServiceCatalogError {
    let at = toml_errors::locate(src, e);
    ServiceCatalogError::Invalid {
        origin: origin.to_owned(),
        line: at.line,
        key: at.key.unwrap_or_else(|| "service".to_owned()),
        message: at.message,
    }
}

// ---------------------------------------------------------------------------
// Planning a flow's service nodes.

/// The broker's decision for one service node: it may run, on one egress
/// capability naming one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub node: String,
    /// The catalog id (= the connection's name).
    pub service: String,
    /// A path leads from an ai node's output into the request (recorded on
    /// every decision of its capability).
    pub body_from_ai: bool,
}

/// Why a flow's service node may not run. Each message names the node, and
/// the policy key and its source where policy decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("node '{node}': service nodes are disabled by policy key services.enabled ({origin}): {fix}")]
    Disabled {
        node: String,
        origin: String,
        fix: String,
    },
    #[error("node '{node}': service '{service}' is not allowed by policy key services.allowed_ids ({origin}): {fix}")]
    NotAllowed {
        node: String,
        service: String,
        origin: String,
        fix: String,
    },
    #[error("node '{node}': field 'service': there is no service '{service}' in the service catalog: add a [[service]] entry with id = \"{service}\" to {} (see docs/services.md)", user_file.display())]
    Unknown {
        node: String,
        service: String,
        user_file: PathBuf,
    },
    #[error("node '{node}': field 'method': service '{service}' does not allow {method}: its catalog entry allows {allowed}")]
    MethodNotAllowed {
        node: String,
        service: String,
        method: &'static str,
        allowed: String,
    },
    #[error("node '{node}': field 'path': service '{service}' does not allow path '{path}': its catalog entry allows {allowed}")]
    PathNotAllowed {
        node: String,
        service: String,
        path: String,
        allowed: String,
    },
    #[error("node '{node}': connection '{name}' has no credential: add it with 'flow connections add {name}'")]
    NoCredential { node: String, name: String },
    #[error("node '{node}': its request would carry AI output (from ai node '{ai}'), which policy key services.allow_ai_output forbids ({origin}): {fix}")]
    AiOutput {
        node: String,
        ai: String,
        origin: String,
        fix: String,
    },
}

/// What `plan_services` needs from the effective policy. [`Effective`]
/// is the one implementation outside tests.
pub trait ServicePolicy {
    fn services_enabled(&self) -> bool;
    fn service_allowed(&self, id: &str) -> bool;
    fn allow_ai_output_to_services(&self) -> bool;
    /// Where `key`'s value came from, for messages: `locked by PATH`,
    /// `default`, `set in settings.toml`, ...
    fn origin_of(&self, key: &str) -> KeyOrigin;
}

/// Where a policy key's effective value came from, as messages say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The enterprise policy locks it: only the administrator can change it.
    Locked(PathBuf),
    /// The enterprise policy's `[set]` table.
    PolicySet(PathBuf),
    Default,
    Settings,
    Cli,
    Runtime,
    /// The flow's own `[settings]` (which may only narrow).
    FlowFile,
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::Locked(p) => write!(f, "locked by {}", p.display()),
            KeyOrigin::PolicySet(p) => write!(f, "set by {}", p.display()),
            KeyOrigin::Default => f.write_str("default"),
            KeyOrigin::Settings => f.write_str("set in settings.toml"),
            KeyOrigin::Cli => f.write_str("set by 'flow up --set'"),
            KeyOrigin::Runtime => f.write_str("set by 'flow settings set'"),
            KeyOrigin::FlowFile => f.write_str("set by the flow's [settings]"),
        }
    }
}

impl KeyOrigin {
    /// What to do, given how the key would be changed in settings.toml.
    fn fix(&self, settings_change: String) -> String {
        match self {
            KeyOrigin::Locked(_) => {
                "the enterprise policy decides this: ask your administrator".to_owned()
            }
            KeyOrigin::FlowFile => "remove it from the flow's [settings]".to_owned(),
            _ => settings_change,
        }
    }
}

impl ServicePolicy for Effective {
    fn services_enabled(&self) -> bool {
        Effective::services_enabled(self)
    }
    fn service_allowed(&self, id: &str) -> bool {
        Effective::service_allowed(self, id)
    }
    fn allow_ai_output_to_services(&self) -> bool {
        Effective::allow_ai_output_to_services(self)
    }
    fn origin_of(&self, key: &str) -> KeyOrigin {
        if self.locked(key) {
            return KeyOrigin::Locked(self.policy_path().to_owned());
        }
        match self.source(key).unwrap_or(Source::Default) {
            Source::Default => KeyOrigin::Default,
            Source::Policy => KeyOrigin::PolicySet(self.policy_path().to_owned()),
            Source::Settings => KeyOrigin::Settings,
            Source::Cli => KeyOrigin::Cli,
            Source::Runtime => KeyOrigin::Runtime,
            Source::FlowFile => KeyOrigin::FlowFile,
        }
    }
}

/// Checks every service node of `flow` against policy, catalog and
/// credentials, in node order; the first node that may not run is the
/// error. Per node, in this order: `services.enabled`,
/// `services.allowed_ids`, the catalog entry, its methods and paths, the
/// credential's presence (`present(name)`: "gated by connection presence"),
/// and a path from an ai node's output into the request against
/// `services.allow_ai_output`. `eff` is the effective policy with the
/// flow's `[settings]` applied. A flow without service nodes passes
/// whatever the policy says.
pub fn plan_services(
    flow: &Flow,
    eff: &Effective,
    catalog: &ServiceCatalog,
    present: &dyn Fn(&str) -> bool,
) -> Result<Vec<ServicePlan>, ServiceError> {
    plan_services_with(flow, eff, catalog, present)
}

/// [`plan_services`] against any [`ServicePolicy`].
pub fn plan_services_with(
    flow: &Flow,
    policy: &dyn ServicePolicy,
    catalog: &ServiceCatalog,
    present: &dyn Fn(&str) -> bool,
) -> Result<Vec<ServicePlan>, ServiceError> {
    let mut plans = Vec::new();
    for node in &flow.nodes {
        let FlowNodeKind::Service {
            service,
            method,
            path,
            ..
        } = &node.kind
        else {
            continue;
        };
        let id = node.id.clone();
        if !policy.services_enabled() {
            let origin = policy.origin_of("services.enabled");
            return Err(ServiceError::Disabled {
                node: id,
                fix: origin
                    .fix("enable them with [services] enabled = true in settings.toml".into()),
                origin: origin.to_string(),
            });
        }
        if !policy.service_allowed(service) {
            let origin = policy.origin_of("services.allowed_ids");
            return Err(ServiceError::NotAllowed {
                node: id,
                service: service.clone(),
                fix: origin.fix(format!(
                    "add \"{service}\" to [services] allowed_ids in settings.toml"
                )),
                origin: origin.to_string(),
            });
        }
        let Some(entry) = catalog.get(service) else {
            return Err(ServiceError::Unknown {
                node: id,
                service: service.clone(),
                user_file: catalog.user_file().to_owned(),
            });
        };
        if !entry.methods.contains(method) {
            let allowed: Vec<&str> = entry.methods.iter().map(|m| m.as_str()).collect();
            return Err(ServiceError::MethodNotAllowed {
                node: id,
                service: service.clone(),
                method: method.as_str(),
                allowed: allowed.join(", "),
            });
        }
        let segs = executor::format::service_path_segments(path);
        let allowed = |p: &String| PathPattern::parse(p).is_ok_and(|p| p.matches_segments(&segs));
        if !entry.paths.iter().any(allowed) {
            return Err(ServiceError::PathNotAllowed {
                node: id,
                service: service.clone(),
                path: path.clone(),
                allowed: entry.paths.join(", "),
            });
        }
        if let Some(name) = entry.credential_name() {
            if !present(name) {
                return Err(ServiceError::NoCredential {
                    node: id,
                    name: name.to_owned(),
                });
            }
        }
        let ai = executor::format::ai_source(flow, &node.id);
        if let Some(ai) = ai {
            if !policy.allow_ai_output_to_services() {
                let origin = policy.origin_of("services.allow_ai_output");
                return Err(ServiceError::AiOutput {
                    fix: origin.fix(format!(
                        "remove the path from '{ai}' to '{}', or, if AI output may leave this machine, set [services] allow_ai_output = true in settings.toml",
                        node.id
                    )),
                    node: id,
                    ai: ai.to_owned(),
                    origin: origin.to_string(),
                });
            }
        }
        plans.push(ServicePlan {
            node: node.id.clone(),
            service: service.clone(),
            body_from_ai: ai.is_some(),
        });
    }
    Ok(plans)
}

#[cfg(test)]
mod tests;
