//! The egress exceptions end to end, with the real broker, the real gateway
//! process under its real profile, the real keyring (keyutils when there is
//! no session bus), a real HTTP upstream and a real Model Hub on loopback:
//!
//! - the default install has no gateway, and says why;
//! - `FLOW_*` environment variables change nothing;
//! - an enterprise policy lock wins over the settings file, `flow up --set`,
//!   `flow settings set` (control socket) and a flow file's `[settings]`,
//!   and every attempt is refused and audited;
//! - a service node runs against a loopback upstream with its keyring
//!   credential, one audit decision record per request, and is invalid once
//!   the credential is removed;
//! - `flow models pull` from a local hub resumes after an interruption,
//!   verifies, and the model runs in a flow.
//!
//! The policy file's path is fixed at build time; `deploy/test.sh` builds
//! with `FLOW_POLICY_PATH` pointing at a test location. Every test here
//! holds [`POLICY`] while a broker runs, so one test's policy never meets
//! another's broker, and removes the file when done.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use support::{bin, Env};

static POLICY: Mutex<()> = Mutex::new(());

/// The enterprise policy file of the binaries under test, held for the
/// test's duration; removed (with its directory) on drop.
struct Policy {
    path: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl Policy {
    fn lock(env: &Env) -> Policy {
        let lock = POLICY.lock().unwrap_or_else(|p| p.into_inner());
        let shown = env.flow_json(&["policy", "show", "--json"]);
        let path = PathBuf::from(shown["policy_path"].as_str().unwrap());
        assert_ne!(
            path,
            Path::new("/etc/flow/policy.toml"),
            "these tests write the policy file: build with deploy/test.sh (FLOW_POLICY_PATH)"
        );
        let p = Policy { path, _lock: lock };
        p.remove();
        p
    }

    /// Write the policy as root would: root-owned, 0644, in a 0755 directory.
    fn write(&self, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&self.path, text).unwrap();
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        self.remove();
    }
}

fn settings(env: &Env, text: &str) {
    let dir = env.root.join("config/flow");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("settings.toml"), text).unwrap();
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn audit_events(env: &Env, name: &str) -> Vec<serde_json::Value> {
    env.audit_text()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .filter_map(|r| r["event"].get(name).cloned())
        .collect()
}

fn components(status: &serde_json::Value) -> Vec<String> {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap().to_string())
        .collect()
}

/// Live processes whose command name is the gateway's (`comm` is cut to
/// 15). Zombies are left out: a gateway killed with an earlier test's broker
/// may wait a while to be reaped.
fn gateway_processes() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "flow-egress-gat")
                .unwrap_or(false)
        })
        .filter(|pid| support::alive(*pid))
        .collect()
}

/// No gateway process, allowing one killed with an earlier test's broker a
/// few seconds to go (a gateway of this test's broker would stay).
fn assert_no_gateway_process() {
    for _ in 0..50 {
        if gateway_processes().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gateway_processes(), Vec::<i32>::new());
}

fn wait_gateway(env: &Env) -> serde_json::Value {
    for _ in 0..200 {
        let s = env.flow_json(&["status", "--json"]);
        let up = s["components"].as_array().unwrap().iter().any(|c| {
            c["component"] == "EgressGateway" && c["state"] == "Running" && !c["attested"].is_null()
        });
        if up {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the gateway did not come up: {}",
        env.flow_json(&["status", "--json"])
    );
}

#[test]
fn default_install_has_no_gateway_and_says_why() {
    let env = Env::new("egress-default");
    let _policy = Policy::lock(&env);
    let _broker = env.up();
    let status = env.flow_json(&["status", "--json"]);
    assert_eq!(components(&status), ["Executor", "ReasoningWorker"]);
    let why = status["gateway_absent"].as_str().unwrap();
    for key in ["cloud.enabled", "services.enabled", "hub.enabled"] {
        assert!(why.contains(key), "{why}");
    }
    let human = env.flow(&["status"]);
    assert!(text(&human).contains("egress gateway"), "{}", text(&human));
    let shown = env.flow(&["policy", "show"]);
    let shown = text(&shown);
    assert!(shown.contains("egress gateway: not started"), "{shown}");
    assert!(shown.contains("services.enabled"), "{shown}");
    // No gateway process, no capability to it.
    assert_no_gateway_process();
    let caps = env.flow_json(&["caps", "--json"]);
    assert!(
        caps.as_array()
            .unwrap()
            .iter()
            .all(|c| c["kind"] != "Egress"),
        "{caps}"
    );
    // The components that run are each in their own net namespace (the
    // escape suite proves their seccomp allowlists deny IP sockets).
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    for c in status["components"].as_array().unwrap() {
        let pid = c["pid"].as_i64().unwrap();
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        assert_ne!(
            ns, host_net,
            "{} shares the host net namespace",
            c["component"]
        );
    }
    let policy = audit_events(&env, "egress-policy");
    assert_eq!(
        policy,
        [serde_json::json!({"cloud": false, "services": false, "hub": false, "gateway": false})]
    );
}

#[test]
fn flow_environment_variables_change_nothing() {
    let env = Env::new("egress-env");
    let _policy = Policy::lock(&env);
    let vars = [
        ("FLOW_POLICY_PATH", "/nonexistent/policy.toml"),
        ("FLOW_SERVICES_ENABLED", "true"),
        ("FLOW_CLOUD_ENABLED", "true"),
        ("FLOW_HUB_ENABLED", "true"),
        ("FLOW_HUB_URL", "http://127.0.0.1:1"),
        ("FLOW_SERVICES__ENABLED", "true"),
        ("FLOW_SETTINGS", "/dev/null"),
    ];
    let mut show = env.cmd(&bin("flow"));
    show.args(["policy", "show", "--json"]);
    for (k, v) in vars {
        show.env(k, v);
    }
    let out = show.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let with_vars: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let without = env.flow_json(&["policy", "show", "--json"]);
    assert_eq!(with_vars, without);
    assert_eq!(with_vars["gateway"], false);
    for row in with_vars["settings"].as_array().unwrap() {
        assert_eq!(row["source"], "default", "{row}");
    }
    let mut up = env.cmd(&bin("flow"));
    up.arg("up").stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in vars {
        up.env(k, v);
    }
    let _broker = support::Broker {
        child: Some(up.spawn().unwrap()),
    };
    let status = env.wait_running(Duration::from_secs(20));
    assert_eq!(components(&status), ["Executor", "ReasoningWorker"]);
    assert_no_gateway_process();
}

const LOCKED_POLICY: &str = r#"
[lock]
"services.enabled" = false
"cloud.enabled" = false
"hub.enabled" = false
"hub.url" = "https://hub.example.com"
"#;

#[test]
fn a_locked_policy_wins_over_every_source_and_each_attempt_is_audited() {
    let env = Env::new("egress-locked");
    let policy = Policy::lock(&env);
    policy.write(LOCKED_POLICY);
    settings(
        &env,
        "[services]\nenabled = true\n[hub]\nurl = \"http://127.0.0.1:9\"\n",
    );
    // `flow policy show`: the lock's value, its source, and what it overrode.
    let shown = env.flow_json(&["policy", "show", "--json"]);
    let row = |key: &str| {
        shown["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("services.enabled")["value"], "false");
    assert_eq!(row("services.enabled")["source"], "policy");
    assert_eq!(row("services.enabled")["locked"], true);
    assert_eq!(row("hub.url")["value"], "\"https://hub.example.com\"");
    assert_eq!(shown["gateway"], false);
    assert!(shown["gateway_absent_reason"]
        .as_str()
        .unwrap()
        .contains("locked"));

    // The CLI: `flow up --set` on a locked key.
    let out = env
        .cmd(&bin("flow"))
        .args(["up", "--set", "services.enabled=true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "flow up --set of a locked key started"
    );
    assert!(text(&out).contains("services.enabled"), "{}", text(&out));
    assert!(text(&out).contains("locked"), "{}", text(&out));

    // The settings file (audited at start), with FLOW_* variables that try
    // the same (nothing reads them), then the control socket.
    let mut up = env.cmd(&bin("flow"));
    up.arg("up").stdout(Stdio::null()).stderr(Stdio::null());
    up.env("FLOW_SERVICES_ENABLED", "true")
        .env("FLOW_POLICY_PATH", "/nonexistent/policy.toml")
        .env("FLOW_HUB_URL", "http://127.0.0.1:9");
    let _broker = support::Broker {
        child: Some(up.spawn().unwrap()),
    };
    env.wait_running(Duration::from_secs(20));
    let status = env.flow_json(&["status", "--json"]);
    assert_eq!(components(&status), ["Executor", "ReasoningWorker"]);
    assert_no_gateway_process();
    let out = env.flow(&["settings", "set", "services.enabled", "true"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("services.enabled"), "{}", text(&out));

    // A flow file's [settings].
    run_refused(
        &env,
        "sneaky",
        "name = \"sneaky\"\n[settings]\n\"hub.url\" = \"http://127.0.0.1:9\"\n\
         [[nodes]]\nid = \"a\"\nkind = \"input\"\ndefault = \"x\"\n\
         [[nodes]]\nid = \"out\"\nkind = \"output\"\n\
         [[edges]]\nfrom = \"a\"\nto = \"out\"\n",
        &["hub.url"],
    );
    // A flow with a service node fails validation naming the policy key.
    run_refused(
        &env,
        "svc",
        "name = \"svc\"\n[[nodes]]\nid = \"call\"\nkind = \"service\"\n\
         service = \"tickets\"\nmethod = \"GET\"\npath = \"/tickets\"\n\
         [[nodes]]\nid = \"out\"\nkind = \"output\"\n\
         [[edges]]\nfrom = \"call\"\nto = \"out\"\n",
        &["services.enabled", "locked"],
    );

    let refused = audit_events(&env, "setting-refused");
    for (key, source) in [
        ("services.enabled", "cli"),
        ("services.enabled", "settings-file"),
        ("hub.url", "settings-file"),
        ("services.enabled", "control-socket"),
        ("hub.url", "flow-file"),
    ] {
        assert!(
            refused.contains(&serde_json::json!({"key": key, "source": source})),
            "no refusal of {key} from {source}: {refused:?}"
        );
    }
}

/// Write flow `name` and run it: it must fail, naming each of `needles`.
fn run_refused(env: &Env, name: &str, toml: &str, needles: &[&str]) {
    let flow = env.root.join(format!("{name}.toml"));
    std::fs::write(&flow, toml).unwrap();
    let out = env.flow(&["run", flow.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    for n in needles {
        assert!(text(&out).contains(n), "no {n:?} in: {}", text(&out));
    }
}

/// A real HTTP/1.1 upstream on loopback that answers every request with a
/// small JSON body and records method, path and the Authorization header.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request as the upstream saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let (mut auth, mut len) = (None, 0usize);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (name, value) = h.split_once(':').unwrap_or(("", ""));
                    match name.to_ascii_lowercase().as_str() {
                        "authorization" => auth = Some(value.trim().to_string()),
                        "content-length" => len = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                log.lock().unwrap().push(Seen {
                    method,
                    path,
                    authorization: auth,
                });
                let answer = br#"{"ticket":"T-42","state":"open"}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = conn.write_all(answer);
            }
        });
        Upstream { port, seen }
    }
}

fn connections_add(env: &Env, name: &str, secret: &str) -> std::process::Output {
    let mut child = env
        .cmd(&bin("flow"))
        .args(["connections", "add", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_service_node_runs_through_the_gateway_with_its_keyring_credential() {
    let env = Env::new("egress-service");
    let _policy = Policy::lock(&env);
    let upstream = Upstream::start();
    // Unique per run: the keyring is the real one, shared by this uid.
    let name = format!("tickets-{}", std::process::id());
    settings(&env, "[services]\nenabled = true\n");
    std::fs::write(
        env.root.join("config/flow/services.toml"),
        format!(
            r#"[[service]]
id = "{name}"
base_url = "http://127.0.0.1:{port}/api"
methods = ["GET", "POST"]
paths = ["/tickets/*"]
auth = {{ scheme = "bearer", header = "Authorization" }}
allow_cidrs = ["127.0.0.1/32"]
"#,
            port = upstream.port
        ),
    )
    .unwrap();
    let flow = env.root.join("ticket.toml");
    std::fs::write(
        &flow,
        format!(
            r#"name = "ticket"
[[nodes]]
id = "ticket_id"
kind = "input"
default = "42"
[[nodes]]
id = "fetch"
kind = "service"
service = "{name}"
method = "GET"
path = "/tickets/{{id}}"
[[nodes]]
id = "out"
kind = "output"
[[edges]]
from = "ticket_id"
to = "fetch"
input = "id"
[[edges]]
from = "fetch"
to = "out"
"#
        ),
    )
    .unwrap();
    let _broker = env.up();
    let status = wait_gateway(&env);
    assert!(status["gateway_absent"].is_null(), "{status}");

    // Without the credential the node does not exist yet.
    let out = env.flow(&["run", flow.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("flow connections add {name}")),
        "{}",
        text(&out)
    );
    assert!(upstream.seen.lock().unwrap().is_empty());

    let secret = format!("s3cret-{}", std::process::id());
    let out = connections_add(&env, &name, &secret);
    assert!(out.status.success(), "{}", text(&out));
    let listed = env.flow_json(&["connections", "list", "--json"]);
    assert!(listed.to_string().contains(&name), "{listed}");

    let out = env.flow(&["run", flow.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("T-42"), "{}", text(&out));
    {
        let seen = upstream.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/api/tickets/42");
        assert_eq!(
            seen[0].authorization.as_deref(),
            Some(format!("Bearer {secret}").as_str())
        );
    }
    let decisions = audit_events(&env, "egress-decision");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let d = &decisions[0];
    assert_eq!(d["connection"], name.as_str());
    assert_eq!(d["host"], "127.0.0.1");
    assert_eq!(d["port"], upstream.port);
    assert_eq!(d["method"], "get");
    assert_eq!(d["path"], "/api/tickets/42");
    assert_eq!(d["status"], 200);
    assert_eq!(d["outcome"], "allowed");
    assert_eq!(d["body_from_ai"], false);
    // The secret appears nowhere but the keyring and the upstream.
    assert!(!env.audit_text().contains(&secret));
    assert!(!text(&out).contains(&secret));
    let added = audit_events(&env, "connection-added");
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["name"], name.as_str());

    // Removing the credential makes the node invalid again.
    let out = env.flow(&["connections", "rm", &name]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.flow(&["run", flow.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("flow connections add {name}")),
        "{}",
        text(&out)
    );
    assert_eq!(upstream.seen.lock().unwrap().len(), 1);
    assert_eq!(audit_events(&env, "connection-removed").len(), 1);
    assert_eq!(audit_events(&env, "egress-decision").len(), 1);
}

/// The built-in catalog's SmolLM2 entry, as a hub serves it.
const HUB_VERSION: &str = "1.0.0";
const HUB_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// A hub directory (docs/hub.md): the built-in catalog, and the SmolLM2 file
/// under models/<id>/<version>/<file>.
fn hub_dir(env: &Env, model: &Path) -> PathBuf {
    let catalog = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/catalog.toml"),
    )
    .unwrap();
    assert!(catalog.contains(&format!("name = \"{HUB_FILE}\"")));
    let dir = env.root.join("hub");
    let models = dir.join(format!("models/smollm2-135m-instruct/{HUB_VERSION}"));
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(model, models.join(HUB_FILE)).unwrap();
    std::fs::write(dir.join("catalog.toml"), &catalog).unwrap();
    dir
}

#[test]
fn models_pull_resumes_verifies_and_the_model_runs() {
    let (llama, model) = support::llama_artifacts();
    let env = Env::new("egress-hub");
    let _policy = Policy::lock(&env);
    let dir = hub_dir(&env, &model);
    let version = HUB_VERSION;
    let log = env.root.join("hub.log");
    let size = std::fs::metadata(&model).unwrap().len();
    let mut hub = Killed(
        Command::new(bin("flow-test-hub"))
            .args([
                "--dir",
                dir.to_str().unwrap(),
                "--log",
                log.to_str().unwrap(),
            ])
            .args(["--cut-after", &(size / 3).to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    BufReader::new(hub.0.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().unwrap();
    settings(
        &env,
        &format!(
            "[hub]\nenabled = true\nurl = \"http://127.0.0.1:{port}\"\nallow_cidrs = [\"127.0.0.1/32\"]\n"
        ),
    );
    let out = env.flow(&["llama", "install", llama.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let _broker = env.up();
    wait_gateway(&env);

    // First use: the AI node's model is missing and the hub is enabled, so
    // the broker pulls it; the hub cuts that download a third of the way,
    // the node is skipped with its reason, the partial file is kept.
    let id = "smollm2-135m-instruct";
    let flow = env.root.join("ask.toml");
    std::fs::write(
        &flow,
        support::ai_flow_toml("ask", Some("rain"), "One word about {topic}:", 8, ""),
    )
    .unwrap();
    let out = env.flow(&["run", flow.to_str().unwrap(), "--json"]);
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "answer")
        .unwrap()
        .clone();
    assert_eq!(answer["status"]["skipped"], "ModelMissing", "{run}");
    assert_eq!(audit_events(&env, "model-pull-failed").len(), 1);
    // The second resumes with Range/If-Range and verifies the whole file.
    let out = env.flow(&["models", "pull", &format!("{id}@{version}")]);
    assert!(out.status.success(), "{}", text(&out));
    let requests = std::fs::read_to_string(&log).unwrap();
    let artifact: Vec<&str> = requests
        .lines()
        .filter(|l| l.contains("/models/"))
        .collect();
    assert_eq!(artifact.len(), 2, "{requests}");
    assert!(artifact[0].contains("range=-"), "{requests}");
    assert!(artifact[1].contains("range=bytes="), "{requests}");
    assert!(artifact[1].contains("if-range=match"), "{requests}");
    assert!(artifact[1].contains("status=206"), "{requests}");
    // Only the model id and version travel: no identifying headers.
    for l in requests.lines() {
        let headers = l.split("headers=").nth(1).unwrap_or("");
        for h in headers.split(',').filter(|h| !h.is_empty()) {
            assert!(
                [
                    "host",
                    "user-agent",
                    "range",
                    "if-range",
                    "accept",
                    "content-length"
                ]
                .contains(&h),
                "header {h} sent to the hub: {l}"
            );
        }
    }
    let pulled = audit_events(&env, "model-pulled");
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert_eq!(pulled[0]["id"], id);
    // This pull moved the rest of the file; the first third was kept.
    let resumed_from = pulled[0]["resumed_from"].as_u64().unwrap();
    assert!(resumed_from > 0, "{pulled:?}");
    assert_eq!(pulled[0]["bytes"].as_u64().unwrap() + resumed_from, size);
    assert_eq!(audit_events(&env, "model-pull-failed").len(), 1);
    let listed = env.flow_json(&["models", "list", "--json"]);
    assert!(listed.to_string().contains(id), "{listed}");

    // And it runs.
    let out = env.flow(&["run", flow.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["ok"], true, "{run}");
}

/// A child process killed and reaped when the test ends, pass or fail.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
