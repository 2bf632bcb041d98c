//! Model Hub downloads: `flow models pull ID[@VERSION]` and the pull of a
//! missing model on first use. The protocol is in `docs/hub.md`.
//!
//! The broker is the holder of an `Egress` capability on the `hub`
//! connection; every request goes through the egress gateway
//! ([`EgressHub`]). The pull logic is written against [`HubTransport`], so
//! tests drive it with an in-memory hub.
//!
//! **Invariant:** the digest a download is verified against comes from a
//! catalog the broker already trusts (the built-in, user or policy catalog),
//! or from the hub's catalog only after its ed25519 signature verified with
//! the key pinned in `hub.signing_key`; never from the response that carries
//! the bytes. No trusted digest, no download.
//!
//! **Invariant:** a request names the model only by its id and version (in
//! the path); the only headers ever sent are `range` and `if-range`.

use super::catalog::{Catalog, CatalogEntry};
use super::store::{Partial, Store, StoreError, StoredModel};
use audit::{ModelId, PullFailure, Version};
use proto::egress::{
    ConnectionConfig, EgressCallError, EgressError, EgressHead, EgressRequest, Limits, Method,
    Origin, Scheme,
};
use std::cell::RefCell;

/// The egress connection id of the Model Hub.
pub const CONNECTION: &str = "hub";

/// Hub paths, relative to the hub URL's path.
pub const CATALOG_PATH: &str = "/catalog.toml";
pub const SIGNATURE_PATH: &str = "/catalog.toml.sig";

/// Largest hub catalog read (bytes).
pub const MAX_CATALOG_BYTES: usize = 4 << 20;
/// Largest signature file read: 64 bytes raw, or 128 hex digits and a
/// newline; some slack for trailing whitespace.
const MAX_SIGNATURE_BYTES: usize = 512;

/// Largest model the hub connection lets through the gateway.
pub const MAX_MODEL_BYTES: u64 = 64 << 30;
/// Whole-request deadline of one hub request (a large model on a slow link
/// may need longer; the partial file is kept and the next pull resumes).
pub const HUB_TIMEOUT_MS: u32 = 6 * 60 * 60 * 1000;
/// Requests per minute on the hub connection (a pull makes at most three).
pub const HUB_RATE_PER_MINUTE: u32 = 30;

/// How one request on the hub connection failed before an HTTP answer was
/// complete.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the egress gateway refused or failed the request: {}", describe_egress(.0))]
    Gateway(EgressError),
    #[error("the channel to the egress gateway failed: {0}")]
    Channel(String),
    /// The caller's chunk callback asked to stop.
    #[error("the transfer was stopped")]
    Stopped,
}

impl From<EgressCallError> for HubError {
    fn from(e: EgressCallError) -> HubError {
        match e {
            EgressCallError::Gateway(g) => HubError::Gateway(g),
            EgressCallError::Stopped => HubError::Stopped,
            other => HubError::Channel(other.to_string()),
        }
    }
}

fn describe_egress(e: &EgressError) -> &'static str {
    use EgressError as E;
    match e {
        E::ConnectionNotGranted => "the hub connection is not granted (is hub.enabled set?): run 'flow policy show'",
        E::MethodNotAllowed | E::PathNotAllowed | E::HeaderNotAllowed | E::BadRequest => {
            "the gateway's grant for the hub does not allow this request: this is a bug, please report it"
        }
        E::RequestTooLarge => "the request was over the hub connection's limit",
        E::ResponseTooLarge => "the answer was over the hub connection's size limit",
        E::RateLimited => "too many hub requests in the last minute: wait a minute",
        E::ResolveFailed => "the hub's name did not resolve: check hub.url and the name servers",
        E::AddressDenied => {
            "the hub's address is not globally reachable and hub.allow_cidrs does not cover it: check hub.url, or ask your administrator to allow the hub's network"
        }
        E::RedirectDenied => "the hub redirected outside the hub URL: ask the hub's operator",
        E::ConnectFailed => "the hub could not be reached (TCP connect failed)",
        E::TlsFailed => {
            "the TLS handshake with the hub failed (certificate not trusted?): check hub.url and the enterprise CA bundle"
        }
        E::BadUpstreamResponse => "the hub's answer was cut off or not valid HTTP/1.1",
        E::TimedOut => "the hub request timed out",
    }
}

/// Why a pull failed. [`PullError::failure`] is what the audit log records.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the Model Hub is disabled ({why}): import the model from a file with 'flow models import FILE', or see 'flow policy show'")]
    HubDisabled { why: String },

    #[error("{0}")]
    BadModel(String),

    #[error("model {model} is in no trusted catalog: {detail}")]
    NotInCatalog { model: String, detail: String },

    #[error("the hub catalog is not trusted: {detail}")]
    BadSignature { detail: String },

    #[error("the hub catalog cannot be used: {detail}")]
    HubCatalog { detail: String },

    #[error("downloading model {model} failed: {detail}: run 'flow models pull {model}' again to resume")]
    Transfer { model: String, detail: String },

    #[error("the hub sent another file for model {model} ({detail}); the partial download was deleted: check hub.url, or ask the hub's operator")]
    Rejected { model: String, detail: String },

    #[error("model {model}: {source}")]
    Store { model: String, source: StoreError },

    /// The caller could not set up the transport.
    #[error("the download could not start: {0}: run 'flow models pull' again")]
    Io(String),
}

impl PullError {
    /// What the audit log says about this failure.
    pub fn failure(&self) -> PullFailure {
        match self {
            PullError::HubDisabled { .. } => PullFailure::HubDisabled,
            PullError::BadModel(_)
            | PullError::NotInCatalog { .. }
            | PullError::HubCatalog { .. } => PullFailure::NotInCatalog,
            PullError::BadSignature { .. } => PullFailure::BadSignature,
            PullError::Transfer { .. } | PullError::Io(_) => PullFailure::Transfer,
            PullError::Rejected { .. } => PullFailure::DigestMismatch,
            PullError::Store { source, .. } => match source {
                StoreError::DigestMismatch { .. }
                | StoreError::SizeMismatch { .. }
                | StoreError::Oversize { .. }
                | StoreError::NotGguf { .. } => PullFailure::DigestMismatch,
                _ => PullFailure::Store,
            },
        }
    }
}

/// One GET on the hub connection: `on_head` once with the status and the
/// headers the gateway passes, then `on_chunk` per body chunk (return
/// `false` to stop: the call then ends with [`HubError::Stopped`]).
/// Paths are relative to the hub URL's path and start with `/`.
// Used on a single-threaded runtime (the broker runs each pull on its own
// thread), so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait HubTransport {
    async fn get(
        &mut self,
        path: &str,
        headers: Vec<(String, String)>,
        on_head: &mut dyn FnMut(&EgressHead),
        on_chunk: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<EgressHead, HubError>;
}

/// The hub through the egress gateway: a channel handshaken for
/// `ServiceKind::Egress` on an `Egress` capability whose rights name the
/// `hub` connection.
#[derive(Debug)]
pub struct EgressHub<S> {
    chan: proto::channel::Channel<S>,
    next_id: u64,
    /// A request was abandoned mid-answer: the channel's next frames belong
    /// to it, so the channel cannot carry another request.
    broken: bool,
}

impl<S> EgressHub<S> {
    pub fn new(chan: proto::channel::Channel<S>) -> EgressHub<S> {
        EgressHub {
            chan,
            next_id: 1,
            broken: false,
        }
    }
}

impl<S> HubTransport for EgressHub<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn get(
        &mut self,
        path: &str,
        headers: Vec<(String, String)>,
        on_head: &mut dyn FnMut(&EgressHead),
        on_chunk: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<EgressHead, HubError> {
        if self.broken {
            return Err(HubError::Channel(
                "an earlier request on this channel was abandoned".into(),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let req = EgressRequest::Http {
            id,
            connection: CONNECTION.into(),
            method: Method::Get,
            path: path.into(),
            headers,
            body: Vec::new(),
        };
        let r = proto::egress::call(&mut self.chan, req, |h| on_head(h), |c| on_chunk(c)).await;
        if let Err(e) = &r {
            // After a gateway error the request is over; after anything else
            // frames of it may still come.
            self.broken = !matches!(e, EgressCallError::Gateway(_));
        }
        r.map_err(HubError::from)
    }
}

/// Why a hub URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hub.url {url:?} is not usable: {why}: set it to http(s)://HOST[:PORT][/PATH] (no user, query or fragment)")]
pub struct HubUrlError {
    pub url: String,
    pub why: &'static str,
}

/// Split a hub URL into the connection's origin and base path (without a
/// trailing `/`; empty for the root). `https` is for hubs on the internet;
/// `http` serves mirrors on an internal network and test hubs (the digest
/// check does not depend on TLS, the model id's privacy does).
pub fn parse_hub_url(url: &str) -> Result<(Origin, String), HubUrlError> {
    let bad = |why| HubUrlError {
        url: url.to_owned(),
        why,
    };
    if url.len() > 2048 || !url.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "it must be printable ASCII without spaces, at most 2048 characters",
        ));
    }
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("https://") {
        (Scheme::Https, &url["https://".len()..])
    } else if lower.starts_with("http://") {
        (Scheme::Http, &url["http://".len()..])
    } else {
        return Err(bad("the scheme must be https or http"));
    };
    if rest.contains(['?', '#']) {
        return Err(bad("a query or fragment is not allowed"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(bad(
            "user information is not allowed (credentials never go in a URL)",
        ));
    }
    let (host, port, v6) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(bad("an IPv6 address must be closed with ']'"));
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the bracketed host is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("junk after the IPv6 address"))?,
            ),
        };
        (host.to_ascii_lowercase(), port, true)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p), false),
            None => (authority.to_ascii_lowercase(), None, false),
        }
    };
    let host_ok = v6
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-'));
    if !host_ok {
        return Err(bad("the host must be a DNS name or an IP address"));
    }
    let port = match port {
        None => match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|c| c.is_ascii_digit()) => n,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    let base = path.trim_end_matches('/');
    let base_ok = base.is_empty()
        || (base.starts_with('/')
            && base[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg.bytes().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'~')
                    })
            }));
    if !base_ok {
        return Err(bad(
            "the path may only hold segments of a-z A-Z 0-9 . _ - ~",
        ));
    }
    Ok((Origin { scheme, host, port }, base.to_owned()))
}

/// The egress connection a pull uses, from `hub.url` and `hub.allow_cidrs`:
/// GET only, on the catalog, its signature and `models/**`, no credential,
/// no redirects, limits sized for large models. `None` when the hub is
/// disabled or has no (valid) URL.
pub fn hub_connection(eff: &crate::policy::Effective) -> Option<ConnectionConfig> {
    if !eff.hub_enabled() {
        return None;
    }
    hub_connection_for(eff.hub_url()?, eff.hub_allow_cidrs()).ok()
}

/// [`hub_connection`] for an explicit URL and CIDR list.
pub fn hub_connection_for(
    url: &str,
    allow_cidrs: &[String],
) -> Result<ConnectionConfig, HubUrlError> {
    let (origin, base_path) = parse_hub_url(url)?;
    Ok(ConnectionConfig {
        id: CONNECTION.into(),
        origin,
        base_path,
        methods: vec![Method::Get],
        paths: vec![
            CATALOG_PATH.into(),
            SIGNATURE_PATH.into(),
            "/models/**".into(),
        ],
        auth: None,
        allow_cidrs: allow_cidrs.to_vec(),
        limits: Limits {
            // GETs have no body.
            max_request_bytes: 0,
            max_response_bytes: MAX_MODEL_BYTES,
            timeout_ms: HUB_TIMEOUT_MS,
            rate_per_minute: HUB_RATE_PER_MINUTE,
            max_redirects: 0,
        },
    })
}

/// What a pull needs from the effective policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    pub enabled: bool,
    pub url: Option<String>,
    /// The ed25519 public key the hub catalog must be signed with; without
    /// one the hub catalog is never fetched nor trusted.
    pub signing_key: Option<[u8; 32]>,
}

impl HubSettings {
    pub fn from_effective(eff: &crate::policy::Effective) -> HubSettings {
        HubSettings {
            enabled: eff.hub_enabled(),
            url: eff.hub_url().map(str::to_owned),
            signing_key: eff.hub_signing_key(),
        }
    }
}

/// A pull that ended with the model in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOutcome {
    pub model: StoredModel,
    /// Bytes received in this pull (`model.size - resumed_from` for a
    /// download; 0 when the model was already stored).
    pub bytes: u64,
    /// Where this pull's transfer started: the length of the partial file an
    /// earlier, interrupted pull left (0 when it started over).
    pub resumed_from: u64,
    /// The model was already in the store with the trusted digest; nothing
    /// was requested from the hub's `models/` path.
    pub already_present: bool,
}

/// Download `id` (at `version`, or the newest trusted version) from the hub
/// into `store`, verified against the trusted catalog entry. `progress` gets
/// (bytes stored, total) as they arrive.
pub async fn pull(
    transport: &mut impl HubTransport,
    store: &Store,
    catalog: &Catalog,
    eff: &crate::policy::Effective,
    id: &str,
    version: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PullOutcome, PullError> {
    let settings = HubSettings::from_effective(eff);
    pull_with(transport, store, catalog, &settings, id, version, progress).await
}

/// [`pull`] with explicit settings.
pub async fn pull_with(
    transport: &mut impl HubTransport,
    store: &Store,
    catalog: &Catalog,
    settings: &HubSettings,
    id: &str,
    version: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PullOutcome, PullError> {
    if !settings.enabled {
        return Err(PullError::HubDisabled {
            why: "hub.enabled is false".into(),
        });
    }
    if settings.url.is_none() {
        return Err(PullError::HubDisabled {
            why: "hub.url is not set".into(),
        });
    }
    let id = ModelId::parse(id).map_err(|e| PullError::BadModel(e.to_string()))?;
    let version = version
        .map(Version::parse)
        .transpose()
        .map_err(|e| PullError::BadModel(e.to_string()))?;
    let entry = trusted_entry(transport, catalog, settings, &id, version.as_ref()).await?;
    let model = format!("{}@{}", entry.id, entry.version);

    if let Some(stored) = store.get(entry.id.as_str(), Some(entry.version.as_str())) {
        if stored.digest == entry.sha256 {
            progress(entry.size, entry.size);
            return Ok(PullOutcome {
                model: stored,
                bytes: 0,
                resumed_from: 0,
                already_present: true,
            });
        }
    }

    let store_err = |source| PullError::Store {
        model: model.clone(),
        source,
    };
    let mut partial = store.open_partial(&entry).map_err(store_err)?;
    if !partial.is_empty() && partial.validator().is_none() {
        // Without a validator a resume could splice two versions of a file.
        partial.restart().map_err(store_err)?;
    }
    let offset = partial.len();
    let mut resumed_from = offset;
    if offset < entry.size {
        match download(transport, &mut partial, &entry, &model, progress).await {
            Ok(start) => resumed_from = start,
            Err(e) => return Err(e.finish(partial, &model)),
        }
    } else {
        progress(offset, entry.size);
    }
    let stored = store
        .install_partial(partial)
        .map_err(|source| match source {
            StoreError::DigestMismatch { .. } => PullError::Rejected {
                model: model.clone(),
                detail: source.to_string(),
            },
            source => store_err(source),
        })?;
    Ok(PullOutcome {
        bytes: stored.size - resumed_from,
        model: stored,
        resumed_from,
        already_present: false,
    })
}

/// The entry to verify against: from `catalog` (built-in, user and policy
/// entries), else from the hub's catalog if its signature verifies with the
/// pinned key.
async fn trusted_entry(
    transport: &mut impl HubTransport,
    catalog: &Catalog,
    settings: &HubSettings,
    id: &ModelId,
    version: Option<&Version>,
) -> Result<CatalogEntry, PullError> {
    if let Some(e) = catalog.find(id, version) {
        return Ok(e.clone());
    }
    let model = match version {
        Some(v) => format!("{id}@{v}"),
        None => id.to_string(),
    };
    let Some(key) = settings.signing_key else {
        return Err(PullError::NotInCatalog {
            model,
            detail: "it is not in the local or policy catalog, and no hub.signing_key is pinned in policy, so the hub's own catalog is not trusted: add a [[models]] entry for it to a catalog, or ask your administrator to pin the hub's signing key".into(),
        });
    };
    let hub = signed_hub_catalog(transport, &key, &model).await?;
    hub.find(id, version)
        .cloned()
        .ok_or_else(|| PullError::NotInCatalog {
            model,
            detail: "neither the local, the policy nor the signed hub catalog has it: check the id and version ('flow models list' shows what is stored)".into(),
        })
}

/// Fetch `catalog.toml` and `catalog.toml.sig`, verify the signature over
/// the exact catalog bytes with `key`, then parse the catalog.
async fn signed_hub_catalog(
    transport: &mut impl HubTransport,
    key: &[u8; 32],
    model: &str,
) -> Result<Catalog, PullError> {
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| {
        PullError::BadSignature {
            detail: "hub.signing_key is not a valid ed25519 public key: ask your administrator to fix it in the policy".into(),
        }
    })?;
    let cannot_fetch = |path: &str, e: HubError| PullError::Transfer {
        model: model.to_owned(),
        detail: format!("cannot fetch the hub's {}: {e}", &path[1..]),
    };
    let catalog = match fetch_small(transport, CATALOG_PATH, MAX_CATALOG_BYTES).await {
        Ok(c) => c,
        Err(FetchError::Status(status)) => {
            return Err(PullError::HubCatalog {
                detail: format!(
                    "the hub answered HTTP {status} for {}: check hub.url",
                    &CATALOG_PATH[1..]
                ),
            })
        }
        Err(FetchError::TooLarge) => {
            return Err(PullError::HubCatalog {
                detail: format!(
                    "{} is larger than {MAX_CATALOG_BYTES} bytes",
                    &CATALOG_PATH[1..]
                ),
            })
        }
        Err(FetchError::Hub(e)) => return Err(cannot_fetch(CATALOG_PATH, e)),
    };
    let sig = match fetch_small(transport, SIGNATURE_PATH, MAX_SIGNATURE_BYTES).await {
        Ok(sig) => sig,
        Err(FetchError::Status(status)) => {
            return Err(PullError::BadSignature {
                detail: format!(
                    "the hub serves no signature (HTTP {status} for {})",
                    &SIGNATURE_PATH[1..]
                ),
            })
        }
        Err(FetchError::TooLarge) => Vec::new(),
        Err(FetchError::Hub(e)) => return Err(cannot_fetch(SIGNATURE_PATH, e)),
    };
    let sig = parse_signature(&sig).ok_or_else(|| PullError::BadSignature {
        detail: format!(
            "{} is not an ed25519 signature (64 bytes, raw or as 128 hex digits)",
            &SIGNATURE_PATH[1..]
        ),
    })?;
    verifying
        .verify_strict(&catalog, &sig)
        .map_err(|_| PullError::BadSignature {
            detail: "its signature does not verify with the key pinned in hub.signing_key (the catalog was changed, or signed with another key): ask the hub's operator, or your administrator".into(),
        })?;
    let text = std::str::from_utf8(&catalog).map_err(|_| PullError::HubCatalog {
        detail: "the signed catalog is not UTF-8 text".into(),
    })?;
    Catalog::parse(text, "the hub's catalog.toml").map_err(|e| PullError::HubCatalog {
        detail: e.to_string(),
    })
}

/// 64 raw bytes, or 128 hex digits with optional surrounding whitespace.
fn parse_signature(bytes: &[u8]) -> Option<ed25519_dalek::Signature> {
    let raw: [u8; 64] = match <[u8; 64]>::try_from(bytes) {
        Ok(raw) => raw,
        Err(_) => {
            let text = std::str::from_utf8(bytes).ok()?.trim();
            let mut raw = [0u8; 64];
            hex::decode_to_slice(text, &mut raw).ok()?;
            raw
        }
    };
    Some(ed25519_dalek::Signature::from_bytes(&raw))
}

/// Why a small GET failed.
enum FetchError {
    Status(u16),
    TooLarge,
    Hub(HubError),
}

/// GET a small file whole; anything but a 200 is an error.
async fn fetch_small(
    transport: &mut impl HubTransport,
    path: &str,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    let mut too_large = false;
    let r = transport
        .get(path, Vec::new(), &mut |_| {}, &mut |chunk| {
            if body.len() + chunk.len() > limit {
                too_large = true;
                return false;
            }
            body.extend_from_slice(chunk);
            true
        })
        .await;
    match r {
        Ok(head) if head.status == 200 => Ok(body),
        Ok(head) => Err(FetchError::Status(head.status)),
        Err(HubError::Stopped) if too_large => Err(FetchError::TooLarge),
        Err(e) => Err(FetchError::Hub(e)),
    }
}

/// Why a download stopped, before deciding what happens to the partial file.
enum DownloadError {
    /// Keep the partial file: the next pull resumes it.
    Interrupted(String),
    /// The bytes or the answer cannot be the model: delete the partial file.
    Rejected(String),
    /// The store failed (disk full, permissions): keep the partial file.
    Store(StoreError),
}

impl DownloadError {
    fn finish(self, partial: Partial, model: &str) -> PullError {
        match self {
            DownloadError::Interrupted(detail) => PullError::Transfer {
                model: model.to_owned(),
                detail,
            },
            DownloadError::Rejected(detail) => {
                partial.discard();
                PullError::Rejected {
                    model: model.to_owned(),
                    detail,
                }
            }
            DownloadError::Store(source) => PullError::Store {
                model: model.to_owned(),
                source,
            },
        }
    }
}

/// What the head and chunk callbacks share.
struct Transfer<'a> {
    partial: &'a mut Partial,
    total: u64,
    /// Where this response's body starts in the file.
    start: u64,
    accepted: bool,
    error: Option<DownloadError>,
}

impl Transfer<'_> {
    /// Decide from the status and headers whether the body appends, starts
    /// over, or is refused.
    fn head(&mut self, head: &EgressHead) {
        let offset = self.partial.len();
        let r = match head.status {
            200 => self.full(head),
            206 => self.range(head, offset),
            416 => {
                // The hub cannot serve the rest of what we hold.
                match self.partial.restart() {
                    Ok(()) => Err(DownloadError::Interrupted(
                        "the hub could not serve the rest of the partial download (HTTP 416); it was discarded".into(),
                    )),
                    Err(e) => Err(DownloadError::Store(e)),
                }
            }
            404 => Err(DownloadError::Interrupted(
                "the hub has no such file (HTTP 404): check hub.url, or ask the hub's operator"
                    .into(),
            )),
            status => Err(DownloadError::Interrupted(format!(
                "the hub answered HTTP {status}"
            ))),
        };
        match r {
            Ok(()) => self.accepted = true,
            Err(e) => self.error = Some(e),
        }
    }

    /// A 200: the whole file, from byte 0 (a resume that got this means the
    /// file changed since the partial was written: start over).
    fn full(&mut self, head: &EgressHead) -> Result<(), DownloadError> {
        if let Some(len) = head.header("content-length") {
            if len.trim().parse::<u64>().ok() != Some(self.total) {
                return Err(DownloadError::Rejected(format!(
                    "it is {} bytes, the catalog says {}",
                    len.trim(),
                    self.total
                )));
            }
        }
        if !self.partial.is_empty() {
            self.partial.restart().map_err(DownloadError::Store)?;
        }
        self.start = 0;
        self.partial
            .set_validator(validator(head))
            .map_err(DownloadError::Store)
    }

    /// A 206 must be exactly the rest of the file after `offset`.
    fn range(&mut self, head: &EgressHead, offset: u64) -> Result<(), DownloadError> {
        let want = (offset, self.total - 1, self.total);
        match head.header("content-range").and_then(parse_content_range) {
            Some((start, end, total))
                if (start, end) == (want.0, want.1) && total.is_none_or(|t| t == want.2) =>
            {
                self.start = offset;
                Ok(())
            }
            _ => {
                // Not the rest of our file: what we hold cannot be trusted to
                // continue, start over next time.
                self.partial.restart().map_err(DownloadError::Store)?;
                Err(DownloadError::Interrupted(
                    "the hub answered with another byte range than asked; the partial download was discarded".into(),
                ))
            }
        }
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

/// The validator `If-Range` may carry: a strong ETag, else Last-Modified.
fn validator(head: &EgressHead) -> Option<&str> {
    head.header("etag")
        .map(str::trim)
        .filter(|e| e.starts_with('"') && e.ends_with('"') && e.len() >= 2)
        .or_else(|| head.header("last-modified").map(str::trim))
}

/// GET the model file into `partial` (resuming it when it holds bytes);
/// returns the offset the transfer started at.
async fn download(
    transport: &mut impl HubTransport,
    partial: &mut Partial,
    entry: &CatalogEntry,
    model: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, DownloadError> {
    let total = entry.size;
    let path = format!(
        "/models/{}/{}/{}",
        entry.id,
        entry.version,
        entry.hub_file_name()
    );
    let offset = partial.len();
    let mut headers = Vec::new();
    if offset > 0 {
        if let Some(v) = partial.validator() {
            headers.push(("range".to_owned(), format!("bytes={offset}-")));
            headers.push(("if-range".to_owned(), v.to_owned()));
        }
    }
    progress(offset, total);
    let state = RefCell::new(Transfer {
        partial,
        total,
        start: offset,
        accepted: false,
        error: None,
    });
    let r = transport
        .get(
            &path,
            headers,
            &mut |head| state.borrow_mut().head(head),
            &mut |chunk| {
                let mut t = state.borrow_mut();
                if !t.accepted || t.error.is_some() {
                    return false;
                }
                match t.partial.append(chunk) {
                    Ok(()) => {
                        progress(t.partial.len(), total);
                        true
                    }
                    Err(e @ (StoreError::Oversize { .. } | StoreError::NotGguf { .. })) => {
                        t.error = Some(DownloadError::Rejected(e.to_string()));
                        false
                    }
                    Err(e) => {
                        t.error = Some(DownloadError::Store(e));
                        false
                    }
                }
            },
        )
        .await;
    let t = state.into_inner();
    if let Some(e) = t.error {
        return Err(e);
    }
    match r {
        Ok(_) if !t.accepted => Err(DownloadError::Interrupted(
            "the hub's answer had no usable head".into(),
        )),
        Ok(_) if t.partial.len() < total => Err(DownloadError::Interrupted(format!(
            "the transfer ended after {} of {total} bytes",
            t.partial.len()
        ))),
        Ok(_) => Ok(t.start),
        Err(e) => Err(DownloadError::Interrupted(format!(
            "{e} (after {} of {total} bytes of {model})",
            t.partial.len()
        ))),
    }
}

#[cfg(test)]
mod tests;
