//! Shared by the broker integration tests: a private set of XDG directories
//! per test, and the real binaries from the same target directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// target/<profile>/ of the binaries under test (beside this test's deps/).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    assert!(
        dir.join("flow").is_file(),
        "{} has no flow binary: run 'cargo build --workspace --bins' first",
        dir.display()
    );
    dir
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// One user's Flow installation in a temporary directory.
pub struct Env {
    pub root: PathBuf,
}

impl Env {
    pub fn new(tag: &str) -> Env {
        let root = std::env::temp_dir().join(format!(
            "flow-test-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["home", "run", "state", "data", "config"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        // Traversable (not listable) by the sandbox uid a root broker's
        // components run as, like /run/user/<uid> is for its owner.
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o711)).unwrap();
        Env { root }
    }

    pub fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.root.join("home"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("XDG_STATE_HOME", self.root.join("state"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_CONFIG_HOME", self.root.join("config"));
        c
    }

    pub fn flow(&self, args: &[&str]) -> Output {
        self.cmd(&bin("flow")).args(args).output().unwrap()
    }

    pub fn flow_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.flow(args);
        assert!(
            out.status.success(),
            "flow {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn audit_log(&self) -> PathBuf {
        self.root.join("state/flow/audit.log")
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.audit_log()).unwrap_or_default()
    }

    pub fn up(&self) -> Broker {
        let child = self
            .cmd(&bin("flow"))
            .arg("up")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let b = Broker { child: Some(child) };
        self.wait_running(Duration::from_secs(20));
        b
    }

    /// Wait until both components are running and attested; returns status.
    pub fn wait_running(&self, timeout: Duration) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let out = self.flow(&["status", "--json"]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let comps: Vec<&serde_json::Value> = v["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["component"] == "Executor" || c["component"] == "ReasoningWorker")
                    .collect();
                let caps = self.flow(&["caps", "--json"]);
                let live_cap = serde_json::from_slice::<serde_json::Value>(&caps.stdout)
                    .map(|c| {
                        c.as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["revoked"] == false && r["kind"] == "Reasoning")
                    })
                    .unwrap_or(false);
                if comps.len() == 2
                    && comps
                        .iter()
                        .all(|c| c["state"] == "Running" && !c["attested"].is_null())
                    && live_cap
                {
                    return v;
                }
            }
            assert!(
                t0.elapsed() < timeout,
                "components not running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn component_pid(status: &serde_json::Value, name: &str) -> i32 {
        status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == name_to_variant(name))
            .and_then(|c| c["pid"].as_i64())
            .unwrap() as i32
    }
}

fn name_to_variant(name: &str) -> &'static str {
    match name {
        "executor" => "Executor",
        "reasoning-worker" => "ReasoningWorker",
        _ => "?",
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A root broker marks its audit log append-only (chattr +a); the test
        // runner, still holding CAP_LINUX_IMMUTABLE, lifts it to clean up.
        let _ = Command::new("chattr")
            .arg("-a")
            .arg(self.audit_log())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub struct Broker {
    pub child: Option<Child>,
}

impl Broker {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); check /proc state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub fn wait_dead(pid: i32, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

/// (llama-server binary, model file) from deploy/install-llama.sh's cache
/// (.ci/run runs the script first; here it only prints the cached paths).
pub fn llama_artifacts() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install-llama.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "deploy/install-llama.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|l| l.split_whitespace().next())
            .map(PathBuf::from)
            .unwrap()
    };
    (field("llama-server "), field("model "))
}

/// A flow file (TOML): input `topic` → template `text` (which may use
/// `{topic}`) → ai node `answer` (SmolLM2, `max_tokens`, plus `ai_extra`
/// TOML lines) → output `out`.
pub fn ai_flow_toml(
    name: &str,
    default: Option<&str>,
    text: &str,
    max_tokens: u32,
    ai_extra: &str,
) -> String {
    let default = default
        .map(|d| format!("default = \"{d}\"\n"))
        .unwrap_or_default();
    format!(
        r#"name = "{name}"
[[nodes]]
id = "topic"
kind = "input"
{default}[[nodes]]
id = "prompt"
kind = "template"
text = "{text}"
[[nodes]]
id = "answer"
kind = "ai"
model = "smollm2-135m-instruct"
max_tokens = {max_tokens}
{ai_extra}
[[nodes]]
id = "out"
kind = "output"
[[edges]]
from = "topic"
to = "prompt"
input = "topic"
[[edges]]
from = "prompt"
to = "answer"
[[edges]]
from = "answer"
to = "out"
"#
    )
}

/// The running llama-server's pid, from `flow status --json`.
pub fn llama_pid(env: &Env) -> Option<i32> {
    let s = env.flow_json(&["status", "--json"]);
    s["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "LlamaServer" && c["state"] == "Running")
        .and_then(|c| c["pid"].as_i64())
        .map(|p| p as i32)
}
