//! The real egress gateway, under its real profile, against real loopback
//! HTTP(S) upstreams and a scripted DNS server (see
//! `flow_tests::gateway_harness`). Build the gateway first:
//! `cargo build -p flow-egress-gateway && cargo test -p flow-tests --test gateway`.
//!
//! Connections name `svc.test` (or other `.test` names) so every request
//! goes through the gateway's resolver; the test connections reach loopback
//! only because their `allow_cidrs` name `127.0.0.0/8`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flow_tests::gateway_harness::{
    sequence, Client, Dns, Gateway, Handler, Reply, Upstream, QTYPE_A, QTYPE_AAAA,
};
use proto::egress::{
    Auth, ConnectionConfig, Decision, DecisionRecord, EgressCallError, EgressError, GatewayConfig,
    Limits, Method, Origin, Scheme, Secret,
};
use proto::msg::CapId;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "s3cret-token";

fn connection(id: &str, scheme: Scheme, host: &str, port: u16) -> ConnectionConfig {
    ConnectionConfig {
        id: id.into(),
        origin: Origin {
            scheme,
            host: host.into(),
            port,
        },
        base_path: String::new(),
        methods: vec![Method::Get, Method::Post],
        paths: vec!["/items/*".into(), "/upload".into(), "/files/**".into()],
        auth: Some(Auth {
            header: "Authorization".into(),
            prefix: "Bearer ".into(),
            secret: Secret::new(SECRET.as_bytes().to_vec()),
        }),
        allow_cidrs: vec!["127.0.0.0/8".into()],
        limits: Limits {
            max_request_bytes: 1024,
            max_response_bytes: 64 * 1024,
            timeout_ms: 5_000,
            rate_per_minute: 600,
            max_redirects: 0,
        },
    }
}

fn config(dns: &Dns, connections: Vec<ConnectionConfig>) -> GatewayConfig {
    GatewayConfig {
        dns_servers: vec![dns.addr],
        extra_roots_pem: Vec::new(),
        connections,
    }
}

/// A gateway allowed to connect to `ports` and the DNS server, configured
/// with `conns`, and one capability for `grant`.
fn gateway(
    dns: &Dns,
    ports: &[u16],
    conns: Vec<ConnectionConfig>,
    grant: &[&str],
) -> (Gateway, Client) {
    let mut all: Vec<u16> = ports.to_vec();
    all.push(dns.port());
    let mut gw = Gateway::spawn(&all);
    gw.configure(config(dns, conns));
    let client = gw.grant(grant, false);
    (gw, client)
}

/// [`gateway`] with the one usual connection: `svc`, over HTTP to
/// `svc.test` on `port`.
fn svc_gateway(dns: &Dns, port: u16) -> (Gateway, Client) {
    gateway(
        dns,
        &[port],
        vec![connection("svc", Scheme::Http, "svc.test", port)],
        &["svc"],
    )
}

fn get(
    gw: &Gateway,
    c: &mut Client,
    conn: &str,
    path: &str,
) -> Result<(u16, Vec<u8>), EgressCallError> {
    gw.request(c, conn, Method::Get, path, &[], b"")
        .map(|(h, b)| (h.status, b))
}

fn refused(r: Result<impl std::fmt::Debug, EgressCallError>) -> EgressError {
    match r {
        Err(EgressCallError::Gateway(e)) => e,
        other => panic!("expected a gateway error, got {other:?}"),
    }
}

/// A GET of `path` on `conn` is refused with `want` and recorded as
/// denied; returns the decision record.
#[track_caller]
fn assert_denied(
    gw: &Gateway,
    c: &mut Client,
    conn: &str,
    path: &str,
    want: EgressError,
) -> DecisionRecord {
    assert_eq!(refused(get(gw, c, conn, path)), want, "{conn} {path}");
    let d = decision(gw);
    assert_eq!(d.decision, Decision::Denied(want), "{conn} {path}");
    d
}

/// The A and AAAA queries `dns` answered for `name`.
fn queries(dns: &Dns, name: &str) -> (usize, usize) {
    (dns.count(name, QTYPE_A), dns.count(name, QTYPE_AAAA))
}

/// The authorization header every connection of [`connection`] sends.
fn bearer() -> String {
    format!("Bearer {SECRET}")
}

/// The decision record with its duration zeroed (the only field a test
/// cannot predict).
fn decision(gw: &Gateway) -> DecisionRecord {
    let mut d = gw.decision();
    d.duration_ms = 0;
    d
}

fn record(
    cap: CapId,
    conn: &str,
    host: &str,
    port: u16,
    method: Method,
    path: &str,
) -> DecisionRecord {
    DecisionRecord {
        cap,
        connection: conn.into(),
        host: host.into(),
        port,
        addr: None,
        method,
        path: path.into(),
        status: None,
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0,
        decision: Decision::Allowed,
        body_from_ai: false,
    }
}

fn lo() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[test]
fn allowed_get_and_post_carry_the_credential_and_are_recorded() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("etag".into(), "\"v1\"".into()),
            ("set-cookie".into(), "session=1".into()),
            ("x-internal".into(), "yes".into()),
            ("server".into(), "upstream/1.0".into()),
        ],
        body: b"{\"ok\":true}".to_vec(),
        ..Reply::default()
    });
    let (gw, mut c) = svc_gateway(&dns, up.port());

    let (head, body) = gw
        .request(
            &mut c,
            "svc",
            Method::Get,
            "/items/42?q=a%20b",
            &[("Accept", "application/json")],
            b"",
        )
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(body, b"{\"ok\":true}");
    // Only the passed response headers come back.
    assert_eq!(
        head.headers,
        vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("etag".to_string(), "\"v1\"".to_string()),
            ("content-length".to_string(), "11".to_string()),
        ]
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/items/42?q=a%20b");
    // Exactly these headers: nothing that identifies the machine.
    let mut names: Vec<&str> = seen[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["accept", "authorization", "host", "user-agent"]);
    assert_eq!(seen[0].header("authorization"), Some(bearer().as_str()));
    assert_eq!(
        seen[0].header("host"),
        Some(&*format!("svc.test:{}", up.port()))
    );
    assert_eq!(seen[0].header("user-agent"), Some("flow-egress-gateway"));
    let mut want = record(
        c.cap,
        "svc",
        "svc.test",
        up.port(),
        Method::Get,
        "/items/42",
    );
    want.addr = Some(lo());
    want.status = Some(200);
    want.bytes_in = 11;
    assert_eq!(decision(&gw), want);

    let (head, _) = gw
        .request(
            &mut c,
            "svc",
            Method::Post,
            "/upload",
            &[("content-type", "application/json")],
            b"{\"n\":1}",
        )
        .unwrap();
    assert_eq!(head.status, 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].body, b"{\"n\":1}");
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
    assert_eq!(seen[1].header("authorization"), Some(bearer().as_str()));
    let mut want = record(c.cap, "svc", "svc.test", up.port(), Method::Post, "/upload");
    want.addr = Some(lo());
    want.status = Some(200);
    want.bytes_out = 7;
    want.bytes_in = 11;
    assert_eq!(decision(&gw), want);
    // Exactly one A and one AAAA query per request.
    assert_eq!(queries(&dns, "svc.test"), (2, 2));
    // The secret appears nowhere in what the gateway printed.
    assert!(!gw.stderr().contains(SECRET));
    assert_eq!(gw.shutdown().code(), Some(0));
}

/// A CA and a server certificate for `names` signed by it: (CA PEM, TLS
/// server config).
fn tls_server(names: &[&str]) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "flow gateway test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca_cert.pem(), Arc::new(cfg))
}

#[test]
fn https_with_the_enterprise_ca_verifies_the_name() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    dns.script("other.test", &[&["127.0.0.1"]]);
    let (ca_pem, server) = tls_server(&["svc.test", "127.0.0.1"]);
    let up = Upstream::start(lo(), Some(server), Arc::new(|_| Reply::ok(b"secure")));
    let p = up.port();
    let mut gw = Gateway::spawn(&[p, dns.port()]);
    let mut cfg = config(
        &dns,
        vec![
            connection("svc", Scheme::Https, "svc.test", p),
            connection("ip", Scheme::Https, "127.0.0.1", p),
            connection("wrongname", Scheme::Https, "other.test", p),
        ],
    );
    cfg.extra_roots_pem = ca_pem.into_bytes();
    gw.configure(cfg);
    let mut c = gw.grant(&["svc", "ip", "wrongname"], false);
    assert_eq!(
        get(&gw, &mut c, "svc", "/items/1").unwrap(),
        (200, b"secure".to_vec())
    );
    assert_eq!(decision(&gw).status, Some(200));
    assert_eq!(
        up.seen()[0].header("authorization"),
        Some(bearer().as_str())
    );
    // An IP-literal origin is verified against the address (IP SAN).
    assert_eq!(
        get(&gw, &mut c, "ip", "/items/1").unwrap(),
        (200, b"secure".to_vec())
    );
    assert_eq!(decision(&gw).status, Some(200));
    // A certificate for another name fails, and nothing is sent.
    assert_denied(&gw, &mut c, "wrongname", "/items/1", EgressError::TlsFailed);
    assert_eq!(up.seen().len(), 2);

    // Without the enterprise CA the same upstream is not trusted.
    gw.configure(config(
        &dns,
        vec![connection("svc", Scheme::Https, "svc.test", p)],
    ));
    assert_denied(&gw, &mut c, "svc", "/items/1", EgressError::TlsFailed);
    assert_eq!(up.seen().len(), 2);
}

/// Every denied address class, reached through DNS answers: refused with
/// `AddressDenied`, nothing dialled, one query of each type.
fn denied_through_dns(address: &str, allow_loopback: bool) {
    let dns = Dns::start();
    dns.script("svc.test", &[&[address]]);
    let up = Upstream::fixed(Reply::ok(b"never"));
    let mut conn = connection("svc", Scheme::Http, "svc.test", up.port());
    if !allow_loopback {
        conn.allow_cidrs.clear();
    }
    let (mut gw, mut c) = gateway(&dns, &[up.port()], vec![conn], &["svc"]);
    assert_eq!(
        refused(get(&gw, &mut c, "svc", "/items/1")),
        EgressError::AddressDenied,
        "{address}"
    );
    let mut want = record(c.cap, "svc", "svc.test", up.port(), Method::Get, "/items/1");
    want.decision = Decision::Denied(EgressError::AddressDenied);
    assert_eq!(decision(&gw), want, "{address}");
    assert_eq!(up.connections(), 0, "{address}: the upstream was reached");
    assert_eq!(queries(&dns, "svc.test"), (1, 1), "{address}");
    assert!(gw.alive());
}

macro_rules! denied_class {
    ($($name:ident: $addr:expr, $allow_loopback:expr;)*) => {$(
        #[test]
        fn $name() {
            denied_through_dns($addr, $allow_loopback);
        }
    )*};
}

denied_class! {
    denied_loopback_without_allow_cidrs: "127.0.0.1", false;
    denied_loopback_other_than_allowed_v6: "::1", true;
    denied_private_10: "10.0.0.1", true;
    denied_private_172_16: "172.16.5.4", true;
    denied_private_192_168: "192.168.1.1", true;
    denied_link_local: "169.254.10.10", true;
    denied_cloud_metadata: "169.254.169.254", true;
    denied_cloud_metadata_alibaba: "100.100.100.200", true;
    denied_cgnat: "100.64.0.1", true;
    denied_this_network: "0.0.0.0", true;
    denied_reserved_240: "240.0.0.1", true;
    denied_benchmarking_198_18: "198.18.0.1", true;
    denied_multicast_v4: "224.0.0.1", true;
    denied_broadcast: "255.255.255.255", true;
    denied_documentation_v4: "192.0.2.1", true;
    denied_v4_mapped_loopback: "::ffff:127.0.0.1", true;
    denied_nat64_loopback: "64:ff9b::7f00:1", true;
    denied_nat64_local_use: "64:ff9b:1::a00:1", true;
    denied_6to4_loopback: "2002:7f00:1::", true;
    denied_teredo: "2001:0:4136:e378:8000:63bf:3fff:fdd2", true;
    denied_v4_compatible: "::127.0.0.1", true;
    denied_unique_local: "fc00::1", true;
    denied_cloud_metadata_v6: "fd00:ec2::254", true;
    denied_link_local_v6: "fe80::1", true;
    denied_multicast_v6: "ff02::1", true;
    denied_unspecified_v6: "::", true;
    denied_documentation_v6: "2001:db8::1", true;
}

#[test]
fn rebinding_allowed_then_denied_dials_only_the_checked_address() {
    let dns = Dns::start();
    // The upstream listens on 127.0.0.2 only: reaching it proves the dialled
    // address is the one from the answer.
    let up = Upstream::start(
        IpAddr::from([127, 0, 0, 2]),
        None,
        Arc::new(|_| Reply::ok(b"one")),
    );
    dns.script("svc.test", &[&["127.0.0.2"], &["10.0.0.7"]]);
    let (gw, mut c) = svc_gateway(&dns, up.port());
    assert_eq!(
        get(&gw, &mut c, "svc", "/items/1").unwrap(),
        (200, b"one".to_vec())
    );
    let d = decision(&gw);
    assert_eq!(d.addr, Some(IpAddr::from([127, 0, 0, 2])));
    assert_eq!(d.decision, Decision::Allowed);
    assert_eq!(up.seen().len(), 1);
    assert_eq!(up.seen()[0].local.ip(), IpAddr::from([127, 0, 0, 2]));
    assert_eq!(queries(&dns, "svc.test"), (1, 1));
    // The name now points inside the network: refused, not dialled.
    let d = assert_denied(&gw, &mut c, "svc", "/items/1", EgressError::AddressDenied);
    assert_eq!(d.addr, None);
    assert_eq!(up.connections(), 1);
    assert_eq!(queries(&dns, "svc.test"), (2, 2));
}

#[test]
fn a_pooled_connection_is_reused_only_for_the_address_just_checked() {
    let dns = Dns::start();
    let one = Upstream::start(
        IpAddr::from([127, 0, 0, 2]),
        None,
        Arc::new(|_| Reply::ok(b"two")),
    );
    let p = one.port();
    let other = Upstream::start_at(
        std::net::SocketAddr::new(IpAddr::from([127, 0, 0, 3]), p),
        None,
        Arc::new(|_| Reply::ok(b"three")),
    );
    dns.script(
        "svc.test",
        &[&["127.0.0.2"], &["127.0.0.3"], &["127.0.0.2"]],
    );
    let (gw, mut c) = gateway(
        &dns,
        &[p],
        vec![connection("svc", Scheme::Http, "svc.test", p)],
        &["svc"],
    );
    assert_eq!(
        get(&gw, &mut c, "svc", "/items/1").unwrap(),
        (200, b"two".to_vec())
    );
    assert_eq!(decision(&gw).addr, Some(IpAddr::from([127, 0, 0, 2])));
    // The name moved: the idle connection to .2 is not used.
    assert_eq!(
        get(&gw, &mut c, "svc", "/items/1").unwrap(),
        (200, b"three".to_vec())
    );
    assert_eq!(decision(&gw).addr, Some(IpAddr::from([127, 0, 0, 3])));
    // Back to .2: the idle connection is reused.
    assert_eq!(
        get(&gw, &mut c, "svc", "/items/1").unwrap(),
        (200, b"two".to_vec())
    );
    assert_eq!(decision(&gw).addr, Some(IpAddr::from([127, 0, 0, 2])));
    assert_eq!((one.seen().len(), one.connections()), (2, 1));
    assert_eq!((other.seen().len(), other.connections()), (1, 1));
    assert_eq!(queries(&dns, "svc.test"), (3, 3));
}

#[test]
fn rebinding_denied_first_then_allowed() {
    let dns = Dns::start();
    let up = Upstream::fixed(Reply::ok(b"two"));
    dns.script("svc.test", &[&["169.254.169.254"], &["127.0.0.1"]]);
    let (gw, mut c) = svc_gateway(&dns, up.port());
    assert_denied(&gw, &mut c, "svc", "/items/1", EgressError::AddressDenied);
    assert_eq!(up.connections(), 0);
    assert_eq!(queries(&dns, "svc.test"), (1, 1));
    assert_eq!(
        get(&gw, &mut c, "svc", "/items/1").unwrap(),
        (200, b"two".to_vec())
    );
    assert_eq!(decision(&gw).addr, Some(lo()));
    assert_eq!(up.seen().len(), 1);
    assert_eq!(queries(&dns, "svc.test"), (2, 2));
}

#[test]
fn mixed_answers_are_refused_whole() {
    let dns = Dns::start();
    let up = Upstream::fixed(Reply::ok(b"never"));
    // Allowed + denied in one family, then allowed v4 + denied v6 (the v6
    // form of the allowed address itself).
    dns.script(
        "svc.test",
        &[
            &["127.0.0.1", "10.0.0.1"],
            &["127.0.0.1", "::ffff:127.0.0.1"],
        ],
    );
    let (gw, mut c) = svc_gateway(&dns, up.port());
    for round in 1..=2 {
        let d = assert_denied(&gw, &mut c, "svc", "/items/1", EgressError::AddressDenied);
        assert_eq!(d.addr, None, "round {round}");
        assert_eq!(queries(&dns, "svc.test"), (round, round));
    }
    assert_eq!(up.connections(), 0);
}

#[test]
fn numeric_host_spellings_are_addresses_not_names() {
    let dns = Dns::start();
    let up = Upstream::fixed(Reply::ok(b"numeric"));
    let spellings = [
        "2130706433",
        "0177.1",
        "0x7f.1",
        "127.1",
        "0x7f000001",
        "017700000001",
    ];
    let mut conns = Vec::new();
    for (i, s) in spellings.iter().enumerate() {
        conns.push(connection(
            &format!("allowed{i}"),
            Scheme::Http,
            s,
            up.port(),
        ));
        let mut denied = connection(&format!("denied{i}"), Scheme::Http, s, up.port());
        denied.allow_cidrs.clear();
        conns.push(denied);
    }
    let names: Vec<String> = conns.iter().map(|c| c.id.clone()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (gw, mut c) = gateway(&dns, &[up.port()], conns, &refs);
    for (i, s) in spellings.iter().enumerate() {
        // Classified as 127.0.0.1: allowed only where allow_cidrs says so.
        assert_eq!(
            get(&gw, &mut c, &format!("allowed{i}"), "/items/1")
                .unwrap()
                .0,
            200,
            "{s}"
        );
        let d = decision(&gw);
        assert_eq!((d.addr, d.decision), (Some(lo()), Decision::Allowed), "{s}");
        let denied = format!("denied{i}");
        assert_denied(&gw, &mut c, &denied, "/items/1", EgressError::AddressDenied);
    }
    assert_eq!(up.seen().len(), spellings.len());
    // The normalised address is the Host header, and no spelling was ever
    // sent to DNS.
    assert_eq!(
        up.seen()[0].header("host"),
        Some(&*format!("127.0.0.1:{}", up.port()))
    );
    assert_eq!(dns.queries(), vec![]);
}

#[test]
fn redirect_to_another_origin_is_refused_and_never_fetched() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    dns.script("other.test", &[&["127.0.0.1"]]);
    let other = Upstream::fixed(Reply::ok(b"elsewhere"));
    let op = other.port();
    let locations = vec![
        format!("http://svc.test:{op}/items/2"),
        format!("http://other.test:{op}/items/2"),
        format!("http://127.0.0.1:{op}/items/2"),
        "https://svc.test/items/2".to_string(),
    ];
    let replies: Vec<Reply> = locations.iter().map(|l| Reply::redirect(302, l)).collect();
    let up = Upstream::start(lo(), None, sequence(replies));
    let mut conn = connection("svc", Scheme::Http, "svc.test", up.port());
    conn.limits.max_redirects = 5;
    let (gw, mut c) = gateway(&dns, &[up.port(), op], vec![conn], &["svc"]);
    for loc in &locations {
        assert_eq!(
            refused(get(&gw, &mut c, "svc", "/items/1")),
            EgressError::RedirectDenied,
            "{loc}"
        );
        let d = decision(&gw);
        assert_eq!(
            (d.status, d.decision),
            (Some(302), Decision::Denied(EgressError::RedirectDenied)),
            "{loc}"
        );
    }
    assert_eq!(up.seen().len(), locations.len());
    // The other origin never saw a connection, so never the credential.
    assert_eq!(other.connections(), 0);
    // One resolution per request, none for the redirect targets.
    assert_eq!(dns.count("svc.test", QTYPE_A), locations.len());
    assert_eq!(dns.count("other.test", QTYPE_A), 0);
}

#[test]
fn same_origin_redirect_is_followed_only_when_allowed() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let handler: Handler = Arc::new(|s| match s.target.as_str() {
        "/items/1" => Reply::redirect(302, "/items/2"),
        "/items/3" => Reply::redirect(301, "/admin"),
        "/items/4" => Reply::redirect(307, "/items/1"),
        _ => Reply::ok(b"landed"),
    });
    let up = Upstream::start(lo(), None, handler);
    let p = up.port();
    let mut follow = connection("follow", Scheme::Http, "svc.test", p);
    follow.limits.max_redirects = 1;
    let nofollow = connection("nofollow", Scheme::Http, "svc.test", p);
    let (gw, mut c) = gateway(&dns, &[p], vec![follow, nofollow], &["follow", "nofollow"]);

    assert_eq!(
        get(&gw, &mut c, "follow", "/items/1").unwrap(),
        (200, b"landed".to_vec())
    );
    let d = decision(&gw);
    assert_eq!(
        (d.status, d.decision, d.path.as_str()),
        (Some(200), Decision::Allowed, "/items/1")
    );
    let seen = up.seen();
    assert_eq!(
        seen.iter().map(|s| s.target.as_str()).collect::<Vec<_>>(),
        ["/items/1", "/items/2"]
    );
    // Same origin: the credential goes along.
    assert_eq!(seen[1].header("authorization"), Some(bearer().as_str()));
    // The redirect reused the checked address: one resolution.
    assert_eq!(dns.count("svc.test", QTYPE_A), 1);

    // max_redirects = 0: the 302 itself is refused.
    assert_denied(
        &gw,
        &mut c,
        "nofollow",
        "/items/1",
        EgressError::RedirectDenied,
    );
    // Same origin but a path the catalog does not allow.
    assert_denied(
        &gw,
        &mut c,
        "follow",
        "/items/3",
        EgressError::RedirectDenied,
    );
    // More redirects than allowed.
    assert_denied(
        &gw,
        &mut c,
        "follow",
        "/items/4",
        EgressError::RedirectDenied,
    );
    let targets: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(
        targets,
        ["/items/1", "/items/2", "/items/1", "/items/3", "/items/4", "/items/1"]
    );
}

#[test]
fn response_over_the_limit_is_cut() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let big = vec![b'x'; 200 * 1024];
    let handler: Handler = {
        let big = big.clone();
        Arc::new(move |s| Reply {
            status: 200,
            headers: vec![],
            body: if s.target == "/files/small" {
                b"small".to_vec()
            } else {
                big.clone()
            },
            chunked: s.target == "/files/chunked",
            delay: Duration::ZERO,
        })
    };
    let up = Upstream::start(lo(), None, handler);
    let mut conn = connection("svc", Scheme::Http, "svc.test", up.port());
    conn.limits.max_response_bytes = 100 * 1024;
    let (gw, mut c) = gateway(&dns, &[up.port()], vec![conn], &["svc"]);
    // Declared too large: refused before the head.
    let d = assert_denied(
        &gw,
        &mut c,
        "svc",
        "/files/declared",
        EgressError::ResponseTooLarge,
    );
    assert_eq!((d.status, d.bytes_in), (Some(200), 0));
    // Chunked: the head and up to the limit arrive, then the error.
    let mut got = 0usize;
    let mut head = None;
    let r = gw.request(&mut c, "svc", Method::Get, "/files/chunked", &[], b"");
    if let Ok((h, b)) = &r {
        head = Some(h.status);
        got = b.len();
    }
    assert_eq!(refused(r), EgressError::ResponseTooLarge, "{head:?} {got}");
    let d = decision(&gw);
    assert_eq!(d.decision, Decision::Denied(EgressError::ResponseTooLarge));
    assert!(d.bytes_in <= 100 * 1024, "{}", d.bytes_in);
    // The capability still works afterwards.
    assert_eq!(
        get(&gw, &mut c, "svc", "/files/small").unwrap(),
        (200, b"small".to_vec())
    );
    assert_eq!(decision(&gw).decision, Decision::Allowed);
}

#[test]
fn request_body_over_the_limit_is_refused_before_anything() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    let (gw, mut c) = svc_gateway(&dns, up.port());
    let r = gw.request(&mut c, "svc", Method::Post, "/upload", &[], &[0u8; 1025]);
    assert_eq!(refused(r), EgressError::RequestTooLarge);
    let mut want = record(c.cap, "svc", "svc.test", up.port(), Method::Post, "/upload");
    want.decision = Decision::Denied(EgressError::RequestTooLarge);
    assert_eq!(decision(&gw), want);
    assert!(dns.queries().is_empty());
    assert_eq!(up.connections(), 0);
    // At the limit it goes through.
    let (h, _) = gw
        .request(&mut c, "svc", Method::Post, "/upload", &[], &[0u8; 1024])
        .unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(decision(&gw).bytes_out, 1024);
}

#[test]
fn rate_limit_per_connection_across_holders() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    let mut conn = connection("svc", Scheme::Http, "svc.test", up.port());
    conn.limits.rate_per_minute = 2;
    let (mut gw, mut c1) = gateway(&dns, &[up.port()], vec![conn], &["svc"]);
    let mut c2 = gw.grant(&["svc"], true);
    assert_eq!(get(&gw, &mut c1, "svc", "/items/1").unwrap().0, 200);
    assert!(!decision(&gw).body_from_ai);
    assert_eq!(get(&gw, &mut c2, "svc", "/items/1").unwrap().0, 200);
    assert!(decision(&gw).body_from_ai);
    // The bucket is the connection's, shared by both holders.
    assert_denied(&gw, &mut c1, "svc", "/items/1", EgressError::RateLimited);
    let d = assert_denied(&gw, &mut c2, "svc", "/items/1", EgressError::RateLimited);
    assert_eq!(d.cap, c2.cap);
    assert_eq!(up.seen().len(), 2);
    assert_eq!(dns.count("svc.test", QTYPE_A), 2);
}

#[test]
fn a_credential_is_only_sent_to_its_origin() {
    let dns = Dns::start();
    dns.script("a.test", &[&["127.0.0.1"]]);
    dns.script("b.test", &[&["127.0.0.1"]]);
    let b = Upstream::fixed(Reply::ok(b"b"));
    let a = Upstream::start(
        lo(),
        None,
        Arc::new({
            let bp = b.port();
            move |_| Reply::redirect(307, &format!("http://a.test:{bp}/items/1"))
        }),
    );
    let mut ca = connection("a", Scheme::Http, "a.test", a.port());
    ca.limits.max_redirects = 3;
    let mut cb = connection("b", Scheme::Http, "b.test", b.port());
    cb.auth = None;
    let (gw, mut c) = gateway(&dns, &[a.port(), b.port()], vec![ca, cb], &["a", "b"]);
    // A redirect from a's origin to another port (where b listens) is refused.
    assert_denied(&gw, &mut c, "a", "/items/1", EgressError::RedirectDenied);
    assert_eq!(b.connections(), 0);
    // b's own requests carry no credential (b has none).
    assert_eq!(get(&gw, &mut c, "b", "/items/1").unwrap().0, 200);
    assert_eq!(decision(&gw).decision, Decision::Allowed);
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), None);
    assert!(seen
        .iter()
        .all(|s| s.headers.iter().all(|(_, v)| !v.contains(SECRET))));
    // a's credential went to a only.
    assert_eq!(a.seen()[0].header("authorization"), Some(bearer().as_str()));
}

#[test]
fn a_holder_cannot_widen_its_grant() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    let p = up.port();
    let (gw, mut c) = gateway(
        &dns,
        &[p],
        vec![
            connection("svc", Scheme::Http, "svc.test", p),
            connection("other", Scheme::Http, "svc.test", p),
        ],
        &["svc"],
    );
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        EgressError,
    );
    let cases: Vec<Case> = vec![
        (
            "other",
            Method::Get,
            "/items/1",
            vec![],
            EgressError::ConnectionNotGranted,
        ),
        (
            "nonexistent",
            Method::Get,
            "/items/1",
            vec![],
            EgressError::ConnectionNotGranted,
        ),
        (
            "svc",
            Method::Delete,
            "/items/1",
            vec![],
            EgressError::MethodNotAllowed,
        ),
        (
            "svc",
            Method::Get,
            "/admin",
            vec![],
            EgressError::PathNotAllowed,
        ),
        (
            "svc",
            Method::Get,
            "/items/1/2",
            vec![],
            EgressError::PathNotAllowed,
        ),
        (
            "svc",
            Method::Get,
            "/items/..",
            vec![],
            EgressError::BadRequest,
        ),
        (
            "svc",
            Method::Get,
            "/items/%2e%2e",
            vec![],
            EgressError::BadRequest,
        ),
        (
            "svc",
            Method::Get,
            "/items/a%2fb",
            vec![],
            EgressError::BadRequest,
        ),
        (
            "svc",
            Method::Get,
            "items/1",
            vec![],
            EgressError::BadRequest,
        ),
        (
            "svc",
            Method::Get,
            "/items/1#x",
            vec![],
            EgressError::BadRequest,
        ),
        (
            "svc",
            Method::Get,
            "/items/a b",
            vec![],
            EgressError::BadRequest,
        ),
        (
            "svc",
            Method::Get,
            "/items/1",
            vec![("Authorization", "Bearer mine")],
            EgressError::HeaderNotAllowed,
        ),
        (
            "svc",
            Method::Get,
            "/items/1",
            vec![("Host", "evil.test")],
            EgressError::HeaderNotAllowed,
        ),
        (
            "svc",
            Method::Get,
            "/items/1",
            vec![("accept", "a\r\nx: y")],
            EgressError::BadRequest,
        ),
    ];
    for (conn, method, path, headers, want) in &cases {
        let r = gw.request(&mut c, conn, *method, path, headers, b"");
        assert_eq!(refused(r), *want, "{conn} {method:?} {path} {headers:?}");
        let d = decision(&gw);
        assert_eq!(d.decision, Decision::Denied(*want), "{conn} {path}");
        assert_eq!(d.addr, None);
        // The audit path never carries the query or raw control bytes.
        assert!(d.path.bytes().all(|b| b.is_ascii_graphic()), "{:?}", d.path);
    }
    assert!(dns.queries().is_empty());
    assert_eq!(up.connections(), 0);
}

#[test]
fn slow_upstream_times_out() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply {
        delay: Duration::from_secs(3),
        ..Reply::ok(b"late")
    });
    let mut conn = connection("svc", Scheme::Http, "svc.test", up.port());
    conn.limits.timeout_ms = 300;
    let (gw, mut c) = gateway(&dns, &[up.port()], vec![conn], &["svc"]);
    let t = std::time::Instant::now();
    assert_eq!(
        refused(get(&gw, &mut c, "svc", "/items/1")),
        EgressError::TimedOut
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let d = decision(&gw);
    assert_eq!(
        (d.addr, d.decision),
        (Some(lo()), Decision::Denied(EgressError::TimedOut))
    );
}

#[test]
fn dns_answer_with_the_wrong_id_is_not_used() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    dns.set_wrong_id(true);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    let (gw, mut c) = svc_gateway(&dns, up.port());
    assert_denied(&gw, &mut c, "svc", "/items/1", EgressError::ResolveFailed);
    assert_eq!(up.connections(), 0);
    // An unknown name (NXDOMAIN) fails the same way.
    dns.set_wrong_id(false);
    let (gw2, mut c2) = gateway(
        &dns,
        &[up.port()],
        vec![connection("svc", Scheme::Http, "nowhere.test", up.port())],
        &["svc"],
    );
    assert_eq!(
        refused(get(&gw2, &mut c2, "svc", "/items/1")),
        EgressError::ResolveFailed
    );
    drop(gw);
}

#[test]
fn a_dns_server_without_pipelining_still_gets_one_query_of_each_type() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    dns.set_one_per_connection(true);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    let (gw, mut c) = svc_gateway(&dns, up.port());
    assert_eq!(get(&gw, &mut c, "svc", "/items/1").unwrap().0, 200);
    assert_eq!(decision(&gw).decision, Decision::Allowed);
    assert_eq!(queries(&dns, "svc.test"), (1, 1));
}

#[test]
fn landlock_limits_connects_to_the_granted_ports() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    // The catalog names the upstream, but the spawn did not grant its port.
    let mut gw = Gateway::spawn(&[dns.port()]);
    gw.configure(config(
        &dns,
        vec![connection("svc", Scheme::Http, "svc.test", up.port())],
    ));
    let mut c = gw.grant(&["svc"], false);
    assert_denied(&gw, &mut c, "svc", "/items/1", EgressError::ConnectFailed);
    assert_eq!(up.connections(), 0);
    assert!(gw.alive());
}

#[test]
fn revoked_capability_is_closed() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply::ok(b"ok"));
    let (mut gw, mut c) = svc_gateway(&dns, up.port());
    assert_eq!(get(&gw, &mut c, "svc", "/items/1").unwrap().0, 200);
    let _ = decision(&gw);
    gw.revoke(c.cap);
    std::thread::sleep(Duration::from_millis(200));
    match get(&gw, &mut c, "svc", "/items/1") {
        Err(EgressCallError::Channel(_)) => {}
        other => panic!("a revoked capability still answered: {other:?}"),
    }
    assert_eq!(up.seen().len(), 1);
    assert!(gw.alive());
    // Other capabilities keep working.
    let mut c2 = gw.grant(&["svc"], false);
    assert_eq!(get(&gw, &mut c2, "svc", "/items/1").unwrap().0, 200);
}

/// A loopback "upstream" that answers every connection with `bytes` and
/// closes: not HTTP at all, or HTTP broken in a chosen way.
fn raw_upstream(bytes: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(bytes);
        }
    });
    port
}

#[test]
fn a_malformed_upstream_response_is_refused_and_the_gateway_goes_on() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    for garbage in [
        &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"\x00\xff\x00\xff",
    ] {
        let port = raw_upstream(garbage);
        let (gw, mut c) = svc_gateway(&dns, port);
        let d = assert_denied(
            &gw,
            &mut c,
            "svc",
            "/items/1",
            EgressError::BadUpstreamResponse,
        );
        // A broken body after a good head keeps the status it had.
        assert!(matches!(d.status, None | Some(200)), "{garbage:?}: {d:?}");
        // The same capability still serves the next request.
        assert_eq!(
            refused(get(&gw, &mut c, "svc", "/items/2")),
            EgressError::BadUpstreamResponse
        );
    }
}

#[test]
fn a_request_in_flight_when_its_capability_is_revoked_is_still_recorded() {
    let dns = Dns::start();
    dns.script("svc.test", &[&["127.0.0.1"]]);
    let up = Upstream::fixed(Reply {
        delay: Duration::from_secs(3),
        ..Reply::ok(b"late")
    });
    let (mut gw, mut c) = svc_gateway(&dns, up.port());
    // Send the request without waiting for its answer, then revoke.
    let req = proto::egress::EgressRequest::Http {
        id: 1,
        connection: "svc".into(),
        method: Method::Get,
        path: "/items/1".into(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    gw.send_request(&mut c, &req);
    // Until the upstream has the request, nothing is in flight.
    for _ in 0..100 {
        if !up.seen().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(up.seen().len(), 1);
    gw.revoke(c.cap);
    let d = decision(&gw);
    assert_eq!(
        (d.cap, d.connection.as_str(), d.path.as_str(), d.addr),
        (c.cap, "svc", "/items/1", Some(lo()))
    );
    assert_eq!(
        d.decision,
        Decision::Denied(EgressError::ConnectionNotGranted)
    );
    assert!(gw.alive());
}
