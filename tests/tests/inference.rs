//! Local inference end to end with the REAL llama-server and SmolLM2
//! (built and fetched by deploy/install-llama.sh, which .ci/run runs first):
//! a streamed, sandboxed, audited AI node; graceful degradation; recovery
//! from kill -9 of llama-server and of the worker mid-generation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{bin, llama_artifacts, llama_pid, wait_dead, Env};

/// A broker with llama-server installed (and the model imported if asked).
fn ready_env(tag: &str, import: bool) -> (Env, support::Broker, PathBuf) {
    let (llama, model) = llama_artifacts();
    let env = Env::new(tag);
    let out = env.flow(&["llama", "install", llama.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let broker = env.up();
    if import {
        let out = env.flow(&["models", "import", model.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (env, broker, model)
}

fn write_flow(env: &Env, name: &str, prompt: &str, max_tokens: u32) -> PathBuf {
    let p = env.root.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        support::ai_flow_toml(
            name,
            Some("rain"),
            &format!("{prompt} {{topic}}"),
            max_tokens,
            "temperature = 0.8\nseed = 3",
        ),
    )
    .unwrap();
    p
}

fn run_json(env: &Env, flow: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", flow.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = env.flow(&args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "flow run printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn node<'a>(run: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == id)
        .unwrap()
}

#[test]
fn ai_flow_streams_from_smollm2_sandboxed_and_audited() {
    let (env, _broker, _) = ready_env("ai", true);
    let flow = write_flow(&env, "haiku", "Write a haiku about", 48);
    // Streamed: the text form prints tokens as they come.
    let out = env.flow(&["run", flow.to_str().unwrap(), "--input", "topic=snow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("answer> "), "{stdout}");
    let run = run_json(&env, &flow, &[]);
    assert_eq!(run["ok"], true, "{run}");
    let answer = node(&run, "answer");
    assert_eq!(answer["status"], "ok", "{run}");
    assert!(answer["tokens"].as_u64().unwrap() > 0, "{run}");
    // llama-server is running, attested by its profile's launcher.
    assert!(llama_pid(&env).is_some());
    // Audited as metadata only.
    let audit = env.audit_text();
    assert!(audit.contains("\"ai-node\""), "{audit}");
    assert!(audit.contains("\"llama-server-started\""), "{audit}");
    assert!(audit.contains("\"model-imported\""), "{audit}");
    assert!(
        !audit.contains("haiku about"),
        "prompt text in the audit log"
    );
    // The spool has the run; it can be listed, shown and removed.
    let list = env.flow_json(&["runs", "list", "--json"]);
    let id = run["run"].as_str().unwrap();
    assert!(
        list.as_array().unwrap().iter().any(|r| r["run"] == id),
        "{list}"
    );
    let show = env.flow_json(&["runs", "show", id, "--json"]);
    assert_eq!(show["outputs"], serde_json::json!(["out.txt"]), "{show}");
    let out = env.flow(&["runs", "rm", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = env.flow_json(&["runs", "list", "--json"]);
    assert!(!list.as_array().unwrap().iter().any(|r| r["run"] == id));
    let verify = env.flow(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn ai_node_is_skipped_without_model_or_below_memory_floor() {
    let (env, broker, model) = ready_env("degrade", false);
    let flow = write_flow(&env, "degrade", "Say something about", 8);
    let run = run_json(&env, &flow, &[]);
    assert_eq!(
        node(&run, "answer")["status"]["skipped"],
        "ModelMissing",
        "{run}"
    );
    assert_eq!(
        node(&run, "out")["status"]["skipped"],
        "UpstreamNotDone",
        "{run}"
    );
    assert_eq!(node(&run, "prompt")["status"], "ok");

    // Import it, then raise its memory floor above this machine.
    let out = env.flow(&["models", "import", model.to_str().unwrap()]);
    assert!(out.status.success());
    drop(broker);
    std::thread::sleep(Duration::from_millis(500));
    let cfg = env.root.join("config/flow");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("settings.toml"),
        "[models.smollm2-135m-instruct]\nmemory_floor_mb = 100000000\n",
    )
    .unwrap();
    let _broker = env.up();
    let run = run_json(&env, &flow, &[]);
    assert_eq!(
        node(&run, "answer")["status"]["skipped"],
        "BelowMemoryFloor",
        "{run}"
    );
    assert!(
        env.audit_text().contains("below-memory-floor"),
        "{}",
        env.audit_text()
    );
}

/// Start a long generation, kill `victim` with `signal` once tokens flow,
/// and return the run's JSON.
fn kill_mid_generation(
    env: &Env,
    flow: &Path,
    victim: &dyn Fn(&Env) -> i32,
    signal: i32,
) -> serde_json::Value {
    let child = env
        .cmd(&bin("flow"))
        .args(["run", flow.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Generation is under way once llama-server is up; give it a moment.
    let t0 = Instant::now();
    while llama_pid(env).is_none() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let pid = victim(env);
    // SAFETY: kill(2) on a pid read from `flow status`.
    unsafe { libc::kill(pid, signal) };
    assert!(wait_dead(pid, Duration::from_secs(10)));
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)))
}

fn worker_pid(env: &Env) -> i32 {
    Env::component_pid(&env.flow_json(&["status", "--json"]), "reasoning-worker")
}

#[test]
fn kill_9_of_llama_server_or_worker_fails_the_node_and_recovers() {
    let (env, _broker, _) = ready_env("kill9", true);
    let long = write_flow(&env, "long", "Write a very long story about", 2000);
    let short = write_flow(&env, "short", "Name a color like", 8);

    let run = kill_mid_generation(&env, &long, &|e| llama_pid(e).unwrap(), libc::SIGKILL);
    assert_eq!(
        node(&run, "answer")["status"]["failed"],
        "ModelServerFailed",
        "{run}"
    );
    assert_eq!(run["ok"], false);
    // llama-server comes back and the next run works.
    let run = run_json(&env, &short, &[]);
    assert_eq!(node(&run, "answer")["status"], "ok", "{run}");

    let run = kill_mid_generation(&env, &long, &worker_pid, libc::SIGKILL);
    assert_eq!(
        node(&run, "answer")["status"]["failed"],
        "WorkerUnavailable",
        "{run}"
    );
    env.wait_running(Duration::from_secs(20));
    let run = run_json(&env, &short, &[]);
    assert_eq!(node(&run, "answer")["status"], "ok", "{run}");
    let audit = env.audit_text();
    assert!(audit.contains("\"llama-server-exited\""), "{audit}");
    assert!(audit.contains("\"component-crashed\""), "{audit}");
}
