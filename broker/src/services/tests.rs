use super::*;
use crate::policy::Source;
use proto::flow::{FlowEdge, FlowNode};
use proto::msg::InferParams;

const ENTRY: &str = r#"[[service]]
id = "api"
base_url = "https://API.Example.com:8443/v1/"
methods = ["POST", "GET"]
paths = ["/items/*", "/search/**"]
auth = { scheme = "header", header = "X-Api-Key", prefix = "Key " }
credential = "api-key"
limits = { max_request_bytes = 0, max_response_bytes = 1024, timeout_ms = 500, rate_per_minute = 5, max_redirects = 2 }
allow_cidrs = ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "10.0.0.0/8"]
"#;

fn api_entry() -> ServiceEntry {
    ServiceEntry {
        id: "api".into(),
        origin: Origin {
            scheme: Scheme::Https,
            host: "api.example.com".into(),
            port: 8443,
        },
        base_path: "/v1".into(),
        methods: vec![Method::Get, Method::Post],
        paths: vec!["/items/*".into(), "/search/**".into()],
        auth: Some(AuthSpec {
            header: "X-Api-Key".into(),
            prefix: "Key ".into(),
        }),
        credential: Some("api-key".into()),
        limits: Limits {
            max_request_bytes: 0,
            max_response_bytes: 1024,
            timeout_ms: 500,
            rate_per_minute: 5,
            max_redirects: 2,
        },
        allow_cidrs: vec!["127.0.0.1/32".into(), "10.0.0.0/8".into(), "::1/128".into()],
    }
}

/// The error text for `ENTRY` with `line` (1-based) replaced by `text`.
fn error_with(line: usize, text: &str) -> String {
    let src: Vec<String> = ENTRY
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == line {
                text.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    match ServiceCatalog::parse(&(src.join("\n") + "\n"), "cat.toml") {
        Ok(c) => panic!("{text}: parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const FIX: &str = ": fix this key of the service catalog (the format is in docs/services.md)";

#[test]
fn a_full_entry_parses() {
    let c = ServiceCatalog::parse(ENTRY, "cat.toml").unwrap();
    assert_eq!(c.entries(), &[api_entry()]);
    assert_eq!(c.get("api"), Some(&api_entry()));
    assert_eq!(c.get("other"), None);
}

#[test]
fn defaults_of_a_minimal_entry() {
    let c = ServiceCatalog::parse(
        "[[service]]\nid = \"m\"\nbase_url = \"http://10.1.2.3\"\nmethods = [\"GET\"]\npaths = [\"/\"]\n",
        "cat.toml",
    )
    .unwrap();
    assert_eq!(
        c.entries(),
        &[ServiceEntry {
            id: "m".into(),
            origin: Origin {
                scheme: Scheme::Http,
                host: "10.1.2.3".into(),
                port: 80,
            },
            base_path: String::new(),
            methods: vec![Method::Get],
            paths: vec!["/".into()],
            auth: None,
            credential: None,
            limits: Limits::default(),
            allow_cidrs: Vec::new(),
        }]
    );
    assert_eq!(c.entries()[0].credential_name(), None);
}

#[test]
fn builtin_is_empty_and_its_example_is_valid() {
    let builtin = ServiceCatalog::parse(BUILTIN, BUILTIN_ORIGIN).unwrap();
    assert!(builtin.entries().is_empty());
    // The commented example, uncommented, is a valid entry.
    let example: String = BUILTIN
        .lines()
        .skip_while(|l| *l != "# [[service]]")
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = ServiceCatalog::parse(&example, "example").unwrap();
    let e = c.get("example-api").unwrap();
    assert_eq!(e.origin.to_string(), "https://api.example.com:443");
    assert_eq!(e.base_path, "/v1");
    assert_eq!(
        e.auth,
        Some(AuthSpec {
            header: "Authorization".into(),
            prefix: "Bearer ".into()
        })
    );
    assert_eq!(e.credential_name(), Some("example-api"));
    // What examples/service.toml asks for is allowed by it.
    assert!(e.allows(Method::Get, "/items/42"));
    assert!(e.allows(Method::Post, "/notes"));
}

#[test]
fn each_bad_field_names_its_line_and_key() {
    let cases: &[(usize, &str, &str)] = &[
        (2, "id = \"Api\"", "cat.toml:2:id: \"Api\" is not a service id: use 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"),
        (3, "base_url = \"ftp://api.example.com\"", "cat.toml:3:base_url: service 'api': scheme \"ftp\" is not allowed: use https (or http)"),
        (3, "base_url = \"https://user:pw@api.example.com\"", "cat.toml:3:base_url: service 'api': \"https://user:pw@api.example.com\" has user information ('@'): credentials belong in the keyring ('flow connections add ID'), never in the URL"),
        (3, "base_url = \"https://api.example.com/v1?k=1\"", "cat.toml:3:base_url: service 'api': \"https://api.example.com/v1?k=1\" has a query or fragment: the base URL is scheme, host, port and path only"),
        (4, "methods = []", "cat.toml:4:methods: service 'api': list at least one method, e.g. [\"GET\"]"),
        (4, "methods = [\"GET\", \"get\"]", "cat.toml:4:methods: service 'api': \"get\" is not a method: use GET, HEAD, POST, PUT, PATCH or DELETE"),
        (4, "methods = [\"GET\", \"GET\"]", "cat.toml:4:methods: service 'api': GET is listed twice: list it once"),
        (5, "paths = []", "cat.toml:5:paths: service 'api': list at least one path pattern, e.g. [\"/items/*\"]"),
        (5, "paths = [\"items\"]", "cat.toml:5:paths: service 'api': \"items\" must start with '/' (e.g. \"/items/*\")"),
        (5, "paths = [\"/a/**/b\"]", "cat.toml:5:paths: service 'api': \"/a/**/b\": '**' may only be the last segment"),
        (5, "paths = [\"/a*\"]", "cat.toml:5:paths: service 'api': \"/a*\": '*' must be a whole segment (\"/a/*\", not \"/a*\")"),
        (5, "paths = [\"/a/../b\"]", "cat.toml:5:paths: service 'api': \"/a/../b\" has a '.' or '..' segment"),
        (5, "paths = [\"/a?b\"]", "cat.toml:5:paths: service 'api': \"/a?b\": segment \"a?b\" has characters a URL path does not allow (no query, no braces): use %XX"),
        (5, "paths = [\"/a/\"]", "cat.toml:5:paths: service 'api': \"/a/\" ends with '/': write \"/a\" or \"/a/*\""),
        (5, "paths = [\"/a%2Fb\"]", "cat.toml:5:paths: service 'api': \"/a%2Fb\": segment \"a%2Fb\" escapes '/', '\\', a control character or NUL, which the gateway refuses in a path: write the segment without that escape"),
        (6, "auth = { scheme = \"basic\" }", "cat.toml:6:auth.scheme: service 'api': unknown scheme \"basic\": use \"bearer\" (Authorization: Bearer <secret>) or \"header\" (a header of your choice)"),
        (6, "auth = { scheme = \"header\" }", "cat.toml:6:auth.header: service 'api': scheme \"header\" needs the header's name: add header = \"X-Api-Key\" (for example)"),
        (6, "auth = { scheme = \"header\", header = \"X Key\" }", "cat.toml:6:auth.header: service 'api': \"X Key\" is not a header name: use 1 to 64 letters, digits and - (e.g. \"X-Api-Key\")"),
        (6, "auth = { scheme = \"header\", header = \"Host\" }", "cat.toml:6:auth.header: service 'api': Host cannot carry a credential: it frames the request or is set by the node; use Authorization or an X- header"),
        (6, "auth = { scheme = \"bearer\", prefix = \"Token \" }", "cat.toml:6:auth.prefix: service 'api': scheme \"bearer\" always sends \"Bearer \": remove prefix, or use scheme = \"header\""),
        (6, "auth = { scheme = \"header\", header = \"X-K\", prefix = \"a\\nb\" }", "cat.toml:6:auth.prefix: service 'api': the prefix must be at most 64 printable ASCII characters"),
        (6, "", "cat.toml:7:credential: service 'api': a credential is sent only with auth: add auth = { scheme = \"bearer\" } or remove credential"),
        (7, "credential = \"API KEY\"", "cat.toml:7:credential: service 'api': \"API KEY\" is not a connection name: use 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"),
        (8, "limits = { max_request_bytes = -1 }", "cat.toml:8:limits.max_request_bytes: service 'api': -1 is outside 0..=2031616: use a value in 0..=2031616"),
        (8, "limits = { max_response_bytes = 0 }", "cat.toml:8:limits.max_response_bytes: service 'api': 0 is outside 1..=67108864: use a value in 1..=67108864"),
        (8, "limits = { timeout_ms = 600001 }", "cat.toml:8:limits.timeout_ms: service 'api': 600001 is outside 1..=600000: use a value in 1..=600000"),
        (8, "limits = { rate_per_minute = 0 }", "cat.toml:8:limits.rate_per_minute: service 'api': 0 is outside 1..=60000: use a value in 1..=60000"),
        (8, "limits = { max_redirects = 11 }", "cat.toml:8:limits.max_redirects: service 'api': 11 is outside 0..=10: use a value in 0..=10"),
        (9, "allow_cidrs = [\"10.0.0.1/8\"]", "cat.toml:9:allow_cidrs: service 'api': \"10.0.0.1/8\" has host bits set: write the network, \"10.0.0.0/8\""),
        (9, "allow_cidrs = [\"10.0.0.0\"]", "cat.toml:9:allow_cidrs: service 'api': \"10.0.0.0\" is not a CIDR: write address/prefix-length, e.g. \"10.0.0.0/8\" or \"127.0.0.1/32\""),
    ];
    for (line, text, want) in cases {
        assert_eq!(error_with(*line, text), format!("{want}{FIX}"), "{text}");
    }
}

#[test]
fn schema_errors_name_their_line_and_key() {
    let err = error_with(9, "allow_cidr = []");
    assert!(
        err.starts_with("cat.toml:9:allow_cidr: unknown field `allow_cidr`"),
        "{err}"
    );
    let err = error_with(8, "limits = { timeout = 1 }");
    assert!(
        err.starts_with("cat.toml:8:limits.timeout: unknown field `timeout`"),
        "{err}"
    );
    let err = error_with(4, "methods = \"GET\"");
    assert!(
        err.starts_with("cat.toml:4:methods: invalid type: string \"GET\", expected a sequence"),
        "{err}"
    );
    let err = error_with(3, "");
    assert!(
        err.starts_with("cat.toml:1:base_url: missing field `base_url`"),
        "{err}"
    );
    let err = ServiceCatalog::parse("[[services]]\nid = \"a\"\n", "cat.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cat.toml:1:services: unknown field `services`"),
        "{err}"
    );
}

#[test]
fn duplicate_ids_in_one_file() {
    let two = format!("{ENTRY}\n{ENTRY}");
    assert_eq!(
        ServiceCatalog::parse(&two, "cat.toml").unwrap_err().to_string(),
        format!("cat.toml:12:id: service 'api' is already defined at line 2: give each entry its own id{FIX}")
    );
}

#[test]
fn base_urls() {
    let ok: &[(&str, &str, &str)] = &[
        ("https://api.example.com", "https://api.example.com:443", ""),
        (
            "https://api.example.com/",
            "https://api.example.com:443",
            "",
        ),
        (
            "http://API.example.COM:8080/a/b/",
            "http://api.example.com:8080",
            "/a/b",
        ),
        ("http://127.0.0.1:9/x%20y", "http://127.0.0.1:9", "/x%20y"),
        ("https://[::1]:8443/v2", "https://[::1]:8443", "/v2"),
        ("https://[2001:DB8::1]", "https://[2001:db8::1]:443", ""),
        ("https://localhost", "https://localhost:443", ""),
    ];
    for (url, origin, base) in ok {
        let (o, b) = parse_base_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            (o.to_string(), b.as_str()),
            ((*origin).to_owned(), *base),
            "{url}"
        );
    }
    let bad = [
        "api.example.com",
        "HTTPS://api.example.com",
        "https://",
        "https://:443",
        "https://api.example.com:0",
        "https://api.example.com:65536",
        "https://api.example.com:+80",
        "https://api.example.com:",
        "https://a:b:c",
        "https://2130706433",
        "https://0177.0.0.1",
        "https://0x7f.1",
        "https://127.1",
        "https://1.2.3.4.5",
        "https://-a.example.com",
        "https://a_b.example.com",
        "https://exa mple.com",
        "https://ex\u{e4}mple.com",
        "https://[::1",
        "https://[fe80::1%25eth0]",
        "https://[::1]x",
        "https://a.example.com//x",
        "https://a.example.com/a/../b",
        "https://a.example.com/%zz",
        "https://a.example.com/a%2Fb",
        "https://a.example.com/a%00",
        "https://a.example.com/{x}",
        "https://a.example.com#f",
        "https://u@a.example.com",
    ];
    for url in bad {
        assert!(parse_base_url(url).is_err(), "{url} was accepted");
    }
}

#[test]
fn cidrs() {
    assert_eq!(parse_cidr("10.0.0.0/8"), Ok("10.0.0.0/8".into()));
    assert_eq!(parse_cidr("127.0.0.1/32"), Ok("127.0.0.1/32".into()));
    assert_eq!(parse_cidr("0.0.0.0/0"), Ok("0.0.0.0/0".into()));
    assert_eq!(parse_cidr("FD00:0::/8"), Ok("fd00::/8".into()));
    assert_eq!(
        parse_cidr("fd00::1/8"),
        Err("\"fd00::1/8\" has host bits set: write the network, \"fd00::/8\"".into())
    );
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10/8",
        "x/8",
        "10.0.0.0/",
    ] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
}

#[test]
fn entries_allow_paths_like_the_gateway() {
    // The pattern rules themselves are proto::egress::path's (tested there);
    // an entry applies them to the path before any query.
    let e = api_entry();
    assert!(e.allows(Method::Get, "/items/42"));
    assert!(e.allows(Method::Get, "/items/42?q=x"));
    assert!(e.allows(Method::Post, "/search/a/b"));
    assert!(!e.allows(Method::Get, "/items/"));
    assert!(!e.allows(Method::Get, "/items/1/2"));
    assert!(!e.allows(Method::Get, "/search"));
    assert!(!e.allows(Method::Get, "items/1"));
    assert!(!e.allows(Method::Delete, "/items/42"));
    // Before substitution, a placeholder segment matches only * or **.
    let matches = |pattern: &str, path: &str| {
        PathPattern::parse(pattern)
            .unwrap()
            .matches_segments(&executor::format::service_path_segments(path))
    };
    assert!(matches("/items/*", "/items/{id}"));
    assert!(matches("/items/**", "/items/{id}/raw"));
    assert!(!matches("/items/42", "/items/{id}"));
    assert!(!matches("/items/*", "/{kind}/1"));
    assert!(matches("/*/*", "/{kind}/1?x={y}"));
}

#[test]
fn connection_config_carries_the_credential_only_with_auth() {
    let e = api_entry();
    assert_eq!(e.credential_name(), Some("api-key"));
    let secret = Secret::new(b"s3cret".to_vec());
    let cfg = e.connection_config(Some(secret.clone()));
    assert_eq!(
        cfg,
        ConnectionConfig {
            id: "api".into(),
            origin: e.origin.clone(),
            base_path: "/v1".into(),
            methods: vec![Method::Get, Method::Post],
            paths: vec!["/items/*".into(), "/search/**".into()],
            auth: Some(Auth {
                header: "X-Api-Key".into(),
                prefix: "Key ".into(),
                secret: secret.clone(),
            }),
            allow_cidrs: e.allow_cidrs.clone(),
            limits: e.limits,
        }
    );
    assert_eq!(e.connection_config(None).auth, None);
    let no_auth = ServiceEntry {
        auth: None,
        credential: None,
        ..api_entry()
    };
    assert_eq!(no_auth.credential_name(), None);
    assert_eq!(no_auth.connection_config(Some(secret)).auth, None);
    // The default credential name is the id.
    let by_id = ServiceEntry {
        credential: None,
        ..api_entry()
    };
    assert_eq!(by_id.credential_name(), Some("api"));
}

/// A private directory removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!(
            "flow-services-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_overlays_the_user_file() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tmp::new("load");
    // No user file: the built-in catalog.
    let c = ServiceCatalog::load(&t.0).unwrap();
    assert!(c.entries().is_empty());
    assert_eq!(c.user_file(), t.0.join("services.toml"));
    let path = t.0.join("services.toml");
    std::fs::write(&path, ENTRY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = ServiceCatalog::load(&t.0).unwrap();
    assert_eq!(c.entries(), &[api_entry()]);
    // A user entry replaces one of the same id, in place.
    let mut base = ServiceCatalog::parse(
        "[[service]]\nid = \"api\"\nbase_url = \"https://old.example.com\"\nmethods = [\"GET\"]\npaths = [\"/\"]\n[[service]]\nid = \"z\"\nbase_url = \"https://z.example.com\"\nmethods = [\"GET\"]\npaths = [\"/\"]\n",
        "builtin",
    )
    .unwrap();
    base.overlay(std::mem::take(&mut c));
    let ids: Vec<(&str, &str)> = base
        .entries()
        .iter()
        .map(|e| (e.id.as_str(), e.origin.host.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![("api", "api.example.com"), ("z", "z.example.com")]
    );
    // Errors name the user's file.
    std::fs::write(&path, ENTRY.replace("\"GET\"]", "\"GOT\"]")).unwrap();
    assert_eq!(
        ServiceCatalog::load(&t.0).unwrap_err().to_string(),
        format!(
            "{}:4:methods: service 'api': \"GOT\" is not a method: use GET, HEAD, POST, PUT, PATCH or DELETE{FIX}",
            path.display()
        )
    );
    // A file others may write is refused: it decides where credentials go.
    std::fs::write(&path, ENTRY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = ServiceCatalog::load(&t.0).unwrap_err();
    assert!(matches!(err, ServiceCatalogError::Insecure { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "service catalog {p} is writable by group or others (mode 666): it decides where credentials are sent; run 'chmod go-w {p}'",
            p = path.display()
        )
    );
}

// ---------------------------------------------------------------------------
// plan_services.

fn svc(id: &str, service: &str, method: Method, path: &str) -> FlowNode {
    FlowNode {
        id: id.into(),
        kind: FlowNodeKind::Service {
            service: service.into(),
            method,
            path: path.into(),
            content_type: None,
        },
    }
}

fn edge(from: &str, to: &str, input: &str) -> FlowEdge {
    FlowEdge {
        from: from.into(),
        to: to.into(),
        input: input.into(),
    }
}

/// input `q` → service `s` (`/items/{id}`); with `ai`, q → ai `m` → s's body.
fn flow_with(method: Method, path: &str, ai: bool) -> Flow {
    let mut nodes = vec![FlowNode {
        id: "q".into(),
        kind: FlowNodeKind::Input {
            default: Some("1".into()),
        },
    }];
    let mut edges = vec![edge("q", "s", "id")];
    if ai {
        nodes.push(FlowNode {
            id: "m".into(),
            kind: FlowNodeKind::Ai {
                model: "x".into(),
                system: None,
                chat: true,
                params: InferParams::default(),
                latency_budget_ms: None,
            },
        });
        edges.push(edge("q", "m", "prompt"));
        edges.push(edge("m", "s", "body"));
    }
    nodes.push(svc("s", "api", method, path));
    let flow = Flow {
        name: "f".into(),
        nodes,
        edges,
        settings: Vec::new(),
    };
    assert_eq!(executor::format::validate(&flow), Ok(()));
    flow
}

fn catalog() -> ServiceCatalog {
    let mut c = ServiceCatalog::parse(ENTRY, "cat.toml").unwrap();
    c.user_file = PathBuf::from("/home/u/.config/flow/services.toml");
    c
}

fn enabled() -> Effective {
    let mut e = Effective::defaults();
    e.set("services.enabled", "true", Source::Settings).unwrap();
    e
}

fn all_present(_: &str) -> bool {
    true
}

#[test]
fn a_flow_without_service_nodes_passes_whatever_the_policy() {
    let flow = Flow {
        name: "f".into(),
        nodes: vec![FlowNode {
            id: "q".into(),
            kind: FlowNodeKind::Input { default: None },
        }],
        edges: Vec::new(),
        settings: Vec::new(),
    };
    let plans = plan_services(&flow, &Effective::defaults(), &catalog(), &all_present);
    assert_eq!(plans, Ok(Vec::new()));
}

#[test]
fn disabled_by_default_names_the_key_and_how_to_enable() {
    let flow = flow_with(Method::Get, "/items/{id}", false);
    let err = plan_services(&flow, &Effective::defaults(), &catalog(), &all_present).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node 's': service nodes are disabled by policy key services.enabled (default): enable them with [services] enabled = true in settings.toml"
    );
    // Switched off by the flow itself.
    let eff = enabled()
        .with_flow_settings(&[("services.enabled".into(), "false".into())])
        .unwrap();
    assert_eq!(
        plan_services(&flow, &eff, &catalog(), &all_present)
            .unwrap_err()
            .to_string(),
        "node 's': service nodes are disabled by policy key services.enabled (set by the flow's [settings]): remove it from the flow's [settings]"
    );
}

#[test]
fn allowed_ids_unknown_ids_methods_and_paths() {
    let flow = flow_with(Method::Get, "/items/{id}", false);
    let mut eff = enabled();
    eff.set("services.allowed_ids", "other", Source::Settings)
        .unwrap();
    assert_eq!(
        plan_services(&flow, &eff, &catalog(), &all_present),
        Err(ServiceError::NotAllowed {
            node: "s".into(),
            service: "api".into(),
            origin: "set in settings.toml".into(),
            fix: "add \"api\" to [services] allowed_ids in settings.toml".into(),
        })
    );
    let flow = Flow {
        nodes: vec![svc("s", "nope", Method::Get, "/x")],
        edges: Vec::new(),
        ..flow_with(Method::Get, "/items/{id}", false)
    };
    assert_eq!(
        plan_services(&flow, &enabled(), &catalog(), &all_present)
            .unwrap_err()
            .to_string(),
        "node 's': field 'service': there is no service 'nope' in the service catalog: add a [[service]] entry with id = \"nope\" to /home/u/.config/flow/services.toml (see docs/services.md)"
    );
    let flow = flow_with(Method::Delete, "/items/{id}", false);
    assert_eq!(
        plan_services(&flow, &enabled(), &catalog(), &all_present)
            .unwrap_err()
            .to_string(),
        "node 's': field 'method': service 'api' does not allow DELETE: its catalog entry allows GET, POST"
    );
    let flow = flow_with(Method::Get, "/admin/{id}", false);
    assert_eq!(
        plan_services(&flow, &enabled(), &catalog(), &all_present)
            .unwrap_err()
            .to_string(),
        "node 's': field 'path': service 'api' does not allow path '/admin/{id}': its catalog entry allows /items/*, /search/**"
    );
    // A placeholder is one segment: it cannot stand for a literal one.
    let catalog_literal =
        ServiceCatalog::parse(&ENTRY.replace("\"/items/*\"", "\"/items/42\""), "cat.toml").unwrap();
    let flow = flow_with(Method::Get, "/items/{id}", false);
    assert!(matches!(
        plan_services(&flow, &enabled(), &catalog_literal, &all_present),
        Err(ServiceError::PathNotAllowed { .. })
    ));
    let flow = flow_with(Method::Get, "/search/{id}/more?x=1", false);
    assert!(plan_services(&flow, &enabled(), &catalog(), &all_present).is_ok());
}

#[test]
fn a_missing_credential_gates_the_node() {
    let flow = flow_with(Method::Get, "/items/{id}", false);
    let asked = std::cell::RefCell::new(Vec::new());
    let present = |name: &str| {
        asked.borrow_mut().push(name.to_owned());
        false
    };
    assert_eq!(
        plan_services(&flow, &enabled(), &catalog(), &present)
            .unwrap_err()
            .to_string(),
        "node 's': connection 'api-key' has no credential: add it with 'flow connections add api-key'"
    );
    assert_eq!(*asked.borrow(), vec!["api-key".to_owned()]);
    // An entry without auth needs no credential.
    let open = ServiceCatalog::parse(
        &ENTRY
            .replace(
                "auth = { scheme = \"header\", header = \"X-Api-Key\", prefix = \"Key \" }\n",
                "",
            )
            .replace("credential = \"api-key\"\n", ""),
        "cat.toml",
    )
    .unwrap();
    assert_eq!(
        plan_services(&flow, &enabled(), &open, &|_: &str| false),
        Ok(vec![ServicePlan {
            node: "s".into(),
            service: "api".into(),
            body_from_ai: false
        }])
    );
}

#[test]
fn ai_output_into_a_request_needs_the_policy_key() {
    let flow = flow_with(Method::Post, "/items/{id}", true);
    assert_eq!(
        plan_services(&flow, &enabled(), &catalog(), &all_present)
            .unwrap_err()
            .to_string(),
        "node 's': its request would carry AI output (from ai node 'm'), which policy key services.allow_ai_output forbids (default): remove the path from 'm' to 's', or, if AI output may leave this machine, set [services] allow_ai_output = true in settings.toml"
    );
    let mut eff = enabled();
    eff.set("services.allow_ai_output", "true", Source::Runtime)
        .unwrap();
    assert_eq!(
        plan_services(&flow, &eff, &catalog(), &all_present),
        Ok(vec![ServicePlan {
            node: "s".into(),
            service: "api".into(),
            body_from_ai: true
        }])
    );
    // The flow cannot switch it on by itself.
    assert!(enabled()
        .with_flow_settings(&[("services.allow_ai_output".into(), "true".into())])
        .is_err());
}

#[test]
fn every_service_node_gets_a_plan_in_node_order() {
    let mut flow = flow_with(Method::Get, "/items/{id}", false);
    flow.nodes
        .push(svc("t", "api", Method::Post, "/search/all"));
    assert_eq!(
        plan_services(&flow, &enabled(), &catalog(), &all_present),
        Ok(vec![
            ServicePlan {
                node: "s".into(),
                service: "api".into(),
                body_from_ai: false
            },
            ServicePlan {
                node: "t".into(),
                service: "api".into(),
                body_from_ai: false
            },
        ])
    );
}

#[test]
fn a_policy_lock_is_named_with_its_file() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the policy file must be root-owned; run as root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let t = Tmp::new("lock");
    std::fs::set_permissions(&t.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = t.0.join("policy.toml");
    std::fs::write(
        &policy,
        "[lock]\n\"services.enabled\" = false\n\"services.allow_ai_output\" = false\n",
    )
    .unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = t.0.join("settings.toml");
    std::fs::write(&settings, "[services]\nenabled = true\n").unwrap();
    let (eff, refusals) = Effective::load_policy_only_for_tests(&policy, &settings, &[]).unwrap();
    assert_eq!(refusals.len(), 1);
    let flow = flow_with(Method::Get, "/items/{id}", false);
    assert_eq!(
        plan_services(&flow, &eff, &catalog(), &all_present)
            .unwrap_err()
            .to_string(),
        format!(
            "node 's': service nodes are disabled by policy key services.enabled (locked by {}): the enterprise policy decides this: ask your administrator",
            policy.display()
        )
    );
}

/// The decisions through the trait seam, for sources `Effective` cannot
/// produce without files.
struct Fixed {
    enabled: bool,
    allowed: bool,
    ai: bool,
    origin: KeyOrigin,
}

impl ServicePolicy for Fixed {
    fn services_enabled(&self) -> bool {
        self.enabled
    }
    fn service_allowed(&self, _: &str) -> bool {
        self.allowed
    }
    fn allow_ai_output_to_services(&self) -> bool {
        self.ai
    }
    fn origin_of(&self, _: &str) -> KeyOrigin {
        self.origin.clone()
    }
}

#[test]
fn locked_keys_say_who_decides() {
    let lock = KeyOrigin::Locked(PathBuf::from("/etc/flow/policy.toml"));
    let flow = flow_with(Method::Post, "/items/{id}", true);
    let run = |p: Fixed| {
        plan_services_with(&flow, &p, &catalog(), &all_present)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        run(Fixed {
            enabled: true,
            allowed: false,
            ai: false,
            origin: lock.clone()
        }),
        "node 's': service 'api' is not allowed by policy key services.allowed_ids (locked by /etc/flow/policy.toml): the enterprise policy decides this: ask your administrator"
    );
    assert_eq!(
        run(Fixed {
            enabled: true,
            allowed: true,
            ai: false,
            origin: lock
        }),
        "node 's': its request would carry AI output (from ai node 'm'), which policy key services.allow_ai_output forbids (locked by /etc/flow/policy.toml): the enterprise policy decides this: ask your administrator"
    );
    assert_eq!(
        KeyOrigin::PolicySet(PathBuf::from("/etc/flow/policy.toml")).to_string(),
        "set by /etc/flow/policy.toml"
    );
}
