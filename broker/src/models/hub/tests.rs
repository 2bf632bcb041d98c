use super::*;
use crate::models::catalog::Source;
use crate::models::test_support::{catalog, catalog_toml, entry, fake_gguf, mode, sha, TempDir};
use ed25519_dalek::Signer as _;
use std::collections::BTreeMap;

fn settings(signing_key: Option<[u8; 32]>) -> HubSettings {
    HubSettings {
        enabled: true,
        url: Some("https://hub.example.com/flow".into()),
        signing_key,
    }
}

const SIZE: usize = 10_000;
const MODEL_PATH: &str = "/models/m/1.0.0/m.gguf";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

fn req(path: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        path: path.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

/// An in-memory hub with the HTTP semantics the pull relies on: a strong
/// ETag, `Range: bytes=N-` honoured when `If-Range` matches it, 206 with
/// `Content-Range`, 416, 404. Deterministic: chunks of `chunk` bytes.
struct FakeHub {
    files: BTreeMap<String, Vec<u8>>,
    etag: String,
    /// Deliver this many bytes of the next `models/` body, then fail the way
    /// the gateway does when the upstream connection drops. Once.
    cut_after: Option<usize>,
    /// Answer with the whole file even when a range is asked.
    ignore_range: bool,
    chunk: usize,
    requests: Vec<Request>,
}

impl FakeHub {
    fn new() -> FakeHub {
        FakeHub {
            files: BTreeMap::new(),
            etag: "\"v1\"".into(),
            cut_after: None,
            ignore_range: false,
            chunk: 1000,
            requests: Vec::new(),
        }
    }

    fn serving(path: &str, bytes: &[u8]) -> FakeHub {
        let mut hub = FakeHub::new();
        hub.files.insert(path.into(), bytes.to_vec());
        hub
    }

    fn paths(&self) -> Vec<&str> {
        self.requests.iter().map(|r| r.path.as_str()).collect()
    }
}

impl HubTransport for FakeHub {
    async fn get(
        &mut self,
        path: &str,
        headers: Vec<(String, String)>,
        on_head: &mut dyn FnMut(&EgressHead),
        on_chunk: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<EgressHead, HubError> {
        self.requests.push(Request {
            path: path.into(),
            headers: headers.clone(),
        });
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let Some(body) = self.files.get(path).cloned() else {
            let head = EgressHead {
                status: 404,
                headers: vec![],
            };
            on_head(&head);
            return Ok(head);
        };
        let len = body.len();
        let if_range_ok = find("if-range").is_none_or(|v| v == self.etag);
        let start = match find("range") {
            Some(r) if if_range_ok && !self.ignore_range => {
                let n = r.strip_prefix("bytes=").unwrap().strip_suffix('-').unwrap();
                Some(n.parse::<usize>().unwrap())
            }
            _ => None,
        };
        let (status, slice, mut hdrs) = match start {
            Some(n) if n < len => (
                206,
                &body[n..],
                vec![(
                    "content-range".to_string(),
                    format!("bytes {n}-{}/{len}", len - 1),
                )],
            ),
            Some(_) => (
                416,
                &body[..0],
                vec![("content-range".to_string(), format!("bytes */{len}"))],
            ),
            None => (200, &body[..], vec![]),
        };
        hdrs.push(("content-length".into(), slice.len().to_string()));
        hdrs.push(("etag".into(), self.etag.clone()));
        let head = EgressHead {
            status,
            headers: hdrs,
        };
        on_head(&head);
        let mut sent = 0;
        for c in slice.chunks(self.chunk) {
            if let (Some(cut), true) = (self.cut_after, path.starts_with("/models/")) {
                if sent + c.len() > cut {
                    if cut > sent && !on_chunk(&c[..cut - sent]) {
                        return Err(HubError::Stopped);
                    }
                    self.cut_after = None;
                    return Err(HubError::Gateway(EgressError::BadUpstreamResponse));
                }
            }
            if !on_chunk(c) {
                return Err(HubError::Stopped);
            }
            sent += c.len();
        }
        Ok(head)
    }
}

/// Pull `m@1.0.0` (or `m` when `version` is None) recording progress.
async fn pull_m(
    hub: &mut FakeHub,
    store: &Store,
    catalog: &Catalog,
    settings: &HubSettings,
    version: Option<&str>,
) -> (Result<PullOutcome, PullError>, Vec<(u64, u64)>) {
    let mut seen = Vec::new();
    let r = pull_with(hub, store, catalog, settings, "m", version, &mut |d, t| {
        seen.push((d, t))
    })
    .await;
    (r, seen)
}

fn assert_progress(seen: &[(u64, u64)], from: u64, total: u64) {
    assert_eq!(seen.first(), Some(&(from, total)), "{seen:?}");
    assert_eq!(seen.last(), Some(&(total, total)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
}

#[tokio::test]
async fn a_pull_verifies_and_stores_the_model() {
    let dir = TempDir::new("plain");
    let store = dir.store();
    let bytes = fake_gguf(1, SIZE);
    let e = entry("m", "1.0.0", &bytes);
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    let (r, seen) = pull_m(
        &mut hub,
        &store,
        &catalog(std::slice::from_ref(&e)),
        &settings(None),
        None,
    )
    .await;
    let out = r.unwrap();
    assert_eq!(
        (out.bytes, out.resumed_from, out.already_present),
        (SIZE as u64, 0, false)
    );
    assert_eq!(out.model.entry, e);
    assert_progress(&seen, 0, SIZE as u64);
    assert_eq!(hub.requests, vec![req(MODEL_PATH, &[])]);
    let (_, stored) = store.open_verified(&e.id, &e.version).unwrap();
    assert_eq!(stored.digest, e.sha256);
    // The partial file became the model; nothing is left behind.
    assert!(!dir.partial("m@1.0.0.part").exists());
    assert!(!dir.partial("m@1.0.0.validator").exists());

    // Pulling again downloads nothing.
    let (r, _) = pull_m(
        &mut hub,
        &store,
        &catalog(std::slice::from_ref(&e)),
        &settings(None),
        Some("1.0.0"),
    )
    .await;
    let again = r.unwrap();
    assert!(again.already_present);
    assert_eq!(again.bytes, 0);
    assert_eq!(hub.requests.len(), 1);
}

#[tokio::test]
async fn an_interrupted_pull_keeps_the_partial_and_resumes_with_if_range() {
    let dir = TempDir::new("resume");
    let store = dir.store();
    let bytes = fake_gguf(2, SIZE);
    let cat = catalog(&[entry("m", "1.0.0", &bytes)]);
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    hub.cut_after = Some(3_500);

    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), Some("1.0.0")).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::Transfer);
    let text = err.to_string();
    assert!(
        text.ends_with("run 'flow models pull m@1.0.0' again to resume"),
        "{text}"
    );
    assert!(text.contains("after 3500 of 10000 bytes"), "{text}");
    let part = dir.partial("m@1.0.0.part");
    assert_eq!(std::fs::read(&part).unwrap(), bytes[..3_500]);
    assert_eq!(mode(&part), 0o600);
    let validator = dir.partial("m@1.0.0.validator");
    assert_eq!(std::fs::read_to_string(&validator).unwrap(), "\"v1\"");
    assert_eq!(mode(&validator), 0o600);
    assert_eq!(mode(&dir.join("models/.partial")), 0o700);
    assert!(store.get("m", None).is_none());

    let (r, seen) = pull_m(&mut hub, &store, &cat, &settings(None), Some("1.0.0")).await;
    let out = r.unwrap();
    assert_eq!((out.bytes, out.resumed_from), (6_500, 3_500));
    assert_progress(&seen, 3_500, SIZE as u64);
    assert_eq!(
        hub.requests,
        vec![
            req(MODEL_PATH, &[]),
            req(
                MODEL_PATH,
                &[("range", "bytes=3500-"), ("if-range", "\"v1\"")]
            ),
        ]
    );
    store
        .open_verified(&out.model.id, &out.model.version)
        .unwrap();
    assert!(!part.exists());
    assert!(!validator.exists());
}

#[tokio::test]
async fn a_200_to_a_resume_starts_over() {
    let dir = TempDir::new("restart");
    let store = dir.store();
    let bytes = fake_gguf(3, SIZE);
    let cat = catalog(&[entry("m", "1.0.0", &bytes)]);
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    hub.cut_after = Some(4_000);
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    assert_eq!(r.unwrap_err().failure(), PullFailure::Transfer);

    // The file was replaced on the hub (same bytes here, new ETag): the
    // If-Range no longer matches and the hub sends everything.
    hub.etag = "\"v2\"".into();
    let (r, seen) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    let out = r.unwrap();
    assert_eq!((out.bytes, out.resumed_from), (SIZE as u64, 0));
    assert_eq!(seen.first(), Some(&(4_000, SIZE as u64)));
    assert_eq!(seen.get(1), Some(&(1_000, SIZE as u64)));
    assert_eq!(seen.last(), Some(&(SIZE as u64, SIZE as u64)));
    assert_eq!(
        hub.requests[1],
        req(
            MODEL_PATH,
            &[("range", "bytes=4000-"), ("if-range", "\"v1\"")]
        )
    );
    store
        .open_verified(&out.model.id, &out.model.version)
        .unwrap();

    // A server that ignores Range altogether is the same case.
    let dir = TempDir::new("restart2");
    let store = dir.store();
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    hub.cut_after = Some(2_000);
    let _ = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    hub.ignore_range = true;
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    assert_eq!(r.unwrap().resumed_from, 0);
}

#[tokio::test]
async fn a_wrong_digest_deletes_the_partial_and_fails() {
    let dir = TempDir::new("digest");
    let store = dir.store();
    let good = fake_gguf(4, SIZE);
    let other = fake_gguf(5, SIZE);
    let cat = catalog(&[entry("m", "1.0.0", &good)]);
    let mut hub = FakeHub::serving(MODEL_PATH, &other);
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::DigestMismatch);
    assert!(
        err.to_string().contains("partial download was deleted"),
        "{err}"
    );
    assert!(!dir.partial("m@1.0.0.part").exists());
    assert!(!dir.partial("m@1.0.0.validator").exists());
    assert!(store.list().unwrap().is_empty());

    // A longer file is refused from its Content-Length, before any byte.
    let mut long = good.clone();
    long.push(0);
    let mut hub = FakeHub::serving(MODEL_PATH, &long);
    let (r, seen) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    assert_eq!(r.unwrap_err().failure(), PullFailure::DigestMismatch);
    assert_eq!(seen, vec![(0, SIZE as u64)]);
    assert!(!dir.partial("m@1.0.0.part").exists());

    // Something that is not a GGUF file is refused at its first bytes.
    let mut html = b"<html>".to_vec();
    html.resize(SIZE, b' ');
    let mut hub = FakeHub::serving(MODEL_PATH, &html);
    let (r, seen) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::DigestMismatch);
    assert!(err.to_string().contains("not a gguf model"), "{err}");
    assert_eq!(seen, vec![(0, SIZE as u64)]);
    assert!(!dir.partial("m@1.0.0.part").exists());
}

#[tokio::test]
async fn the_digest_covers_the_bytes_of_the_earlier_attempt() {
    let dir = TempDir::new("tamper");
    let store = dir.store();
    let bytes = fake_gguf(6, SIZE);
    let cat = catalog(&[entry("m", "1.0.0", &bytes)]);
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    hub.cut_after = Some(5_000);
    let _ = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    // Damage a byte of the partial file between the two attempts.
    let part = dir.partial("m@1.0.0.part");
    let mut held = std::fs::read(&part).unwrap();
    held[100] ^= 0xff;
    std::fs::write(&part, &held).unwrap();
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::DigestMismatch);
    assert!(err.to_string().contains(&sha(&bytes).to_hex()), "{err}");
    assert!(!part.exists());
    assert_eq!(hub.requests.len(), 2);
    assert_eq!(
        hub.requests[1].headers[0],
        ("range".into(), "bytes=5000-".into())
    );
    // The next pull starts over and succeeds.
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    assert_eq!(r.unwrap().resumed_from, 0);
}

#[tokio::test]
async fn an_unsigned_hub_catalog_is_not_trusted() {
    let dir = TempDir::new("unsigned");
    let store = dir.store();
    let bytes = fake_gguf(7, SIZE);
    let e = entry("m", "1.0.0", &bytes);
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    hub.files.insert(
        CATALOG_PATH.into(),
        catalog_toml(std::slice::from_ref(&e)).into_bytes(),
    );
    let empty = Catalog::default();

    // No key pinned: the hub catalog is not even asked for.
    let (r, _) = pull_m(&mut hub, &store, &empty, &settings(None), Some("1.0.0")).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::NotInCatalog);
    assert!(
        err.to_string().contains("no hub.signing_key is pinned"),
        "{err}"
    );
    assert!(hub.requests.is_empty());

    // A key pinned, but the hub serves no signature.
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let pinned = Some(key.verifying_key().to_bytes());
    let (r, _) = pull_m(&mut hub, &store, &empty, &settings(pinned), Some("1.0.0")).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::BadSignature);
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    assert_eq!(hub.paths(), vec![CATALOG_PATH, SIGNATURE_PATH]);
    assert!(store.list().unwrap().is_empty());
    assert!(!dir.partial("m@1.0.0.part").exists());
}

#[tokio::test]
async fn a_signed_hub_catalog_is_trusted_with_the_pinned_key_only() {
    let bytes = fake_gguf(8, SIZE);
    let e = entry("m", "1.0.0", &bytes);
    let text = catalog_toml(std::slice::from_ref(&e)).into_bytes();
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let sig = key.sign(&text).to_bytes();
    let pinned = Some(key.verifying_key().to_bytes());
    let serving = |sig: Vec<u8>, catalog: &[u8]| {
        let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
        hub.files.insert(CATALOG_PATH.into(), catalog.to_vec());
        hub.files.insert(SIGNATURE_PATH.into(), sig);
        hub
    };
    let empty = Catalog::default();

    // Raw and hex signatures both verify.
    for sig in [sig.to_vec(), format!("{}\n", hex::encode(sig)).into_bytes()] {
        let dir = TempDir::new("signed");
        let store = dir.store();
        let mut hub = serving(sig, &text);
        let (r, _) = pull_m(&mut hub, &store, &empty, &settings(pinned), None).await;
        let out = r.unwrap();
        assert_eq!(out.model.entry, e);
        assert_eq!(hub.paths(), vec![CATALOG_PATH, SIGNATURE_PATH, MODEL_PATH]);
        store.open_verified(&e.id, &e.version).unwrap();
    }

    // Signed by another key, or the catalog changed after signing: refused
    // before the model is asked for.
    let other = ed25519_dalek::SigningKey::from_bytes(&[10u8; 32]);
    let mut changed = text.clone();
    changed.extend_from_slice(b"\n");
    for (sig, catalog) in [
        (other.sign(&text).to_bytes().to_vec(), text.clone()),
        (sig.to_vec(), changed),
        (b"not a signature".to_vec(), text.clone()),
    ] {
        let dir = TempDir::new("badsig");
        let store = dir.store();
        let mut hub = serving(sig, &catalog);
        let (r, _) = pull_m(&mut hub, &store, &empty, &settings(pinned), None).await;
        let err = r.unwrap_err();
        assert_eq!(err.failure(), PullFailure::BadSignature, "{err}");
        assert_eq!(hub.paths(), vec![CATALOG_PATH, SIGNATURE_PATH]);
        assert!(store.list().unwrap().is_empty());
    }

    // The right signature checked with another pinned key: refused too.
    let dir = TempDir::new("otherkey");
    let mut hub = serving(sig.to_vec(), &text);
    let (r, _) = pull_m(
        &mut hub,
        &dir.store(),
        &empty,
        &settings(Some(other.verifying_key().to_bytes())),
        None,
    )
    .await;
    assert_eq!(r.unwrap_err().failure(), PullFailure::BadSignature);
}

#[tokio::test]
async fn the_local_catalog_wins_and_the_hub_catalog_is_not_fetched() {
    let dir = TempDir::new("local");
    let store = dir.store();
    let bytes = fake_gguf(11, SIZE);
    let local = entry("m", "1.0.0", &bytes);
    // The hub's signed catalog says another digest for the same version.
    let evil = entry("m", "1.0.0", &fake_gguf(12, SIZE));
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let text = catalog_toml(&[evil]).into_bytes();
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    hub.files
        .insert(SIGNATURE_PATH.into(), key.sign(&text).to_bytes().to_vec());
    hub.files.insert(CATALOG_PATH.into(), text);
    let pinned = Some(key.verifying_key().to_bytes());
    let (r, _) = pull_m(
        &mut hub,
        &store,
        &catalog(std::slice::from_ref(&local)),
        &settings(pinned),
        None,
    )
    .await;
    assert_eq!(r.unwrap().model.digest, local.sha256);
    assert_eq!(hub.paths(), vec![MODEL_PATH]);
}

#[tokio::test]
async fn requests_carry_only_the_id_and_version() {
    // A resumed pull of a model only the signed hub catalog knows: every
    // request the hub sees, path and header names.
    let dir = TempDir::new("privacy");
    let store = dir.store();
    let bytes = fake_gguf(13, SIZE);
    let mut e = entry("m", "1.0.0", &bytes);
    e.sources = vec![Source::Hub {
        url: "https://hub.example.com/elsewhere".into(),
    }];
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let text = catalog_toml(&[e]).into_bytes();
    let default_path = "/models/m/1.0.0/model.gguf";
    let mut hub = FakeHub::serving(default_path, &bytes);
    hub.files
        .insert(SIGNATURE_PATH.into(), key.sign(&text).to_bytes().to_vec());
    hub.files.insert(CATALOG_PATH.into(), text);
    hub.cut_after = Some(1_234);
    let s = settings(Some(key.verifying_key().to_bytes()));
    let empty = Catalog::default();
    let _ = pull_m(&mut hub, &store, &empty, &s, Some("1.0.0")).await;
    pull_m(&mut hub, &store, &empty, &s, Some("1.0.0"))
        .await
        .0
        .unwrap();
    let fixed = [CATALOG_PATH, SIGNATURE_PATH];
    for r in &hub.requests {
        assert!(
            fixed.contains(&r.path.as_str()) || r.path == default_path,
            "{r:?}"
        );
        for (name, value) in &r.headers {
            match name.as_str() {
                "range" => assert_eq!(value, "bytes=1234-"),
                "if-range" => assert_eq!(value, "\"v1\""),
                other => panic!("header {other} was sent"),
            }
        }
    }
    assert_eq!(
        hub.paths(),
        vec![
            CATALOG_PATH,
            SIGNATURE_PATH,
            default_path,
            CATALOG_PATH,
            SIGNATURE_PATH,
            default_path
        ]
    );
}

#[tokio::test]
async fn a_disabled_hub_or_a_bad_id_makes_no_request() {
    let dir = TempDir::new("disabled");
    let store = dir.store();
    let bytes = fake_gguf(14, SIZE);
    let cat = catalog(&[entry("m", "1.0.0", &bytes)]);
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    let mut off = settings(None);
    off.enabled = false;
    let (r, _) = pull_m(&mut hub, &store, &cat, &off, None).await;
    assert_eq!(r.unwrap_err().failure(), PullFailure::HubDisabled);
    let mut no_url = settings(None);
    no_url.url = None;
    let (r, _) = pull_m(&mut hub, &store, &cat, &no_url, None).await;
    assert_eq!(r.unwrap_err().failure(), PullFailure::HubDisabled);

    for (id, version) in [("../m", None), ("m", Some("1.0")), ("m", Some("2.0.0"))] {
        let r = pull_with(
            &mut hub,
            &store,
            &cat,
            &settings(None),
            id,
            version,
            &mut |_, _| {},
        )
        .await;
        assert_eq!(r.unwrap_err().failure(), PullFailure::NotInCatalog);
    }
    assert!(hub.requests.is_empty());
}

#[tokio::test]
async fn a_missing_file_and_a_second_pull_of_the_same_model_fail_cleanly() {
    let dir = TempDir::new("missing");
    let store = dir.store();
    let bytes = fake_gguf(15, SIZE);
    let e = entry("m", "1.0.0", &bytes);
    let cat = catalog(std::slice::from_ref(&e));
    let mut hub = FakeHub::new();
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::Transfer);
    assert!(err.to_string().contains("HTTP 404"), "{err}");

    // While one download holds the partial file, another is refused.
    let held = store.open_partial(&e).unwrap();
    let mut hub = FakeHub::serving(MODEL_PATH, &bytes);
    let (r, _) = pull_m(&mut hub, &store, &cat, &settings(None), None).await;
    let err = r.unwrap_err();
    assert_eq!(err.failure(), PullFailure::Store);
    assert!(err.to_string().contains("in progress"), "{err}");
    drop(held);
    pull_m(&mut hub, &store, &cat, &settings(None), None)
        .await
        .0
        .unwrap();
}

#[test]
fn hub_urls() {
    let ok = |url: &str| parse_hub_url(url).unwrap();
    let o = |scheme, host: &str, port| Origin {
        scheme,
        host: host.into(),
        port,
    };
    assert_eq!(
        ok("https://hub.example.com"),
        (o(Scheme::Https, "hub.example.com", 443), String::new())
    );
    assert_eq!(
        ok("HTTPS://Hub.Example.com:8443/flow/v1/"),
        (o(Scheme::Https, "hub.example.com", 8443), "/flow/v1".into())
    );
    assert_eq!(
        ok("http://127.0.0.1:5000/"),
        (o(Scheme::Http, "127.0.0.1", 5000), String::new())
    );
    assert_eq!(
        ok("http://[::1]:8080/m"),
        (o(Scheme::Http, "::1", 8080), "/m".into())
    );
    for bad in [
        "ftp://hub.example.com",
        "hub.example.com",
        "https://user:pw@hub.example.com",
        "https://hub.example.com/?x=1",
        "https://hub.example.com/#f",
        "https://hub.example.com:0",
        "https://hub.example.com:99999",
        "https://hub.example.com:80x",
        "https://",
        "https://[::1",
        "https://[nope]:1",
        "https://a:b:80",
        "https://hub.example.com/a/../b",
        "https://hub.example.com/a//b",
        "https://hub example.com",
        "https://hub_example.com",
    ] {
        let e = parse_hub_url(bad).unwrap_err();
        assert!(e.to_string().contains("set it to http(s)://"), "{bad}: {e}");
    }
}

#[test]
fn the_hub_connection_allows_only_what_a_pull_needs() {
    let c = hub_connection_for("https://hub.example.com/flow", &["10.0.0.0/8".into()]).unwrap();
    assert_eq!(
        c,
        ConnectionConfig {
            id: "hub".into(),
            origin: Origin {
                scheme: Scheme::Https,
                host: "hub.example.com".into(),
                port: 443,
            },
            base_path: "/flow".into(),
            methods: vec![Method::Get],
            paths: vec![
                "/catalog.toml".into(),
                "/catalog.toml.sig".into(),
                "/models/**".into()
            ],
            auth: None,
            allow_cidrs: vec!["10.0.0.0/8".into()],
            limits: Limits {
                max_request_bytes: 0,
                max_response_bytes: 64 << 30,
                timeout_ms: 6 * 3600 * 1000,
                rate_per_minute: 30,
                max_redirects: 0,
            },
        }
    );
}

#[test]
fn the_hub_connection_follows_the_effective_policy() {
    use crate::policy::{Effective, Source as PolicySource};
    let mut eff = Effective::defaults();
    assert_eq!(hub_connection(&eff), None);
    assert_eq!(
        HubSettings::from_effective(&eff),
        HubSettings {
            enabled: false,
            url: None,
            signing_key: None
        }
    );
    eff.set("hub.enabled", "true", PolicySource::Settings)
        .unwrap();
    assert_eq!(hub_connection(&eff), None, "no url yet");
    eff.set(
        "hub.url",
        "http://127.0.0.1:4000/hub",
        PolicySource::Settings,
    )
    .unwrap();
    eff.set("hub.allow_cidrs", "127.0.0.1/32", PolicySource::Settings)
        .unwrap();
    let key = "01".repeat(32);
    eff.set("hub.signing_key", &key, PolicySource::Settings)
        .unwrap();
    let c = hub_connection(&eff).unwrap();
    assert_eq!(c.origin.to_string(), "http://127.0.0.1:4000");
    assert_eq!(c.base_path, "/hub");
    assert_eq!(c.allow_cidrs, vec!["127.0.0.1/32".to_string()]);
    assert_eq!(
        HubSettings::from_effective(&eff),
        HubSettings {
            enabled: true,
            url: Some("http://127.0.0.1:4000/hub".into()),
            signing_key: Some([1u8; 32]),
        }
    );
}

#[test]
fn content_ranges() {
    assert_eq!(
        parse_content_range("bytes 10-99/100"),
        Some((10, 99, Some(100)))
    );
    assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
    assert_eq!(parse_content_range("bytes */100"), None);
    assert_eq!(parse_content_range("items 1-2/3"), None);
}
