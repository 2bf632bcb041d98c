//! The canary test: a unique string goes into a prompt (the flow's template)
//! and into an input; flows run normally, with a SIGSEGV of the reasoning
//! worker mid-generation and with a kill of llama-server mid-generation.
//! Then every file changed since the test began under HOME, the XDG
//! directories, /tmp, /var/tmp, /dev/shm and /run, plus the journal, core
//! dump directories and every component's captured stderr, is searched: the
//! string may appear only in the spool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use support::{bin, llama_pid, wait_dead, Env};

fn walk(dir: &Path, since: SystemTime, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            walk(&p, since, out);
        } else if meta.is_file() && meta.modified().map(|m| m >= since).unwrap_or(true) {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Which process to kill mid-generation (its pid, read from status), and how.
type Victim<'a> = (&'a dyn Fn(&Env) -> i32, i32);

#[test]
fn canary_appears_only_in_the_spool() {
    let since = SystemTime::now() - Duration::from_secs(1);
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let canary_prompt = format!("zq{nonce:x}promptcanary");
    let canary_input = format!("zq{nonce:x}inputcanary");

    let (llama_bin, model) = support::llama_artifacts();
    let env = Env::new("canary");
    assert!(env
        .flow(&["llama", "install", llama_bin.to_str().unwrap()])
        .status
        .success());
    let _broker = env.up();
    assert!(env
        .flow(&["models", "import", model.to_str().unwrap()])
        .status
        .success());
    let spool = env.root.join("data/flow/spool");
    // The flow file carries the prompt canary; it is the user's own input and
    // lives in the spool area for this test.
    let flow = spool.join("canary-flow.toml");
    std::fs::write(
        &flow,
        support::ai_flow_toml(
            "canary",
            None,
            &format!("Repeat {canary_prompt} and then write a long story about {{topic}}."),
            600,
            "",
        ),
    )
    .unwrap();
    let input = format!("topic={canary_input}");
    let run = |victim: Option<Victim>| {
        let child = env
            .cmd(&bin("flow"))
            .args(["run", flow.to_str().unwrap(), "--input", &input, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some((pid_of, sig)) = victim {
            let t0 = Instant::now();
            while llama_pid(&env).is_none() && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_millis(1500));
            let pid = pid_of(&env);
            // Rust's runtime swallows the first SIGSEGV that is not a fault
            // in a stack guard page (it resets the handler to the default and
            // returns), so a sent SIGSEGV may take a second delivery to kill.
            for _ in 0..3 {
                // SAFETY: kill(2) on a pid read from `flow status`.
                unsafe { libc::kill(pid, sig) };
                if wait_dead(pid, Duration::from_secs(2)) {
                    break;
                }
            }
            assert!(wait_dead(pid, Duration::from_secs(10)));
        }
        let out = child.wait_with_output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v
    };
    let ok = run(None);
    assert_eq!(ok["ok"], true, "{ok}");
    let worker =
        |e: &Env| Env::component_pid(&e.flow_json(&["status", "--json"]), "reasoning-worker");
    let segv = run(Some((&worker, libc::SIGSEGV)));
    assert_eq!(segv["ok"], false, "{segv}");
    assert!(
        env.audit_text().contains("\"signal\":11"),
        "no SIGSEGV crash audited"
    );
    env.wait_running(Duration::from_secs(20));
    let llama_victim = |e: &Env| llama_pid(e).unwrap();
    let killed = run(Some((&llama_victim, libc::SIGKILL)));
    assert_eq!(killed["ok"], false, "{killed}");
    // Let the components finish writing whatever they would write.
    std::thread::sleep(Duration::from_secs(1));

    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let roots = [
        env.root.clone(),
        home,
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev/shm"),
        PathBuf::from("/run"),
        PathBuf::from("/var/log/journal"),
        PathBuf::from("/var/crash"),
        PathBuf::from("/var/lib/systemd/coredump"),
    ];
    let mut files = Vec::new();
    for r in &roots {
        walk(r, since, &mut files);
    }
    files.sort();
    files.dedup();
    // Every component's captured stderr is among them; make sure.
    let logs = env.root.join("state/flow/logs");
    for c in ["executor.log", "reasoning-worker.log", "llama-server.log"] {
        assert!(
            files.contains(&logs.join(c)) || !logs.join(c).exists(),
            "{c} not searched"
        );
    }
    assert!(files.len() > 5, "searched too little: {files:?}");
    let mut leaks = Vec::new();
    let mut in_spool = 0;
    for f in &files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        for c in [&canary_prompt, &canary_input] {
            if contains(&bytes, c.as_bytes()) {
                if f.starts_with(&spool) {
                    in_spool += 1;
                } else {
                    leaks.push((f.clone(), c.clone()));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "canary outside the spool: {leaks:?}");
    // The test can fail: the canary did reach the spool (the flow file and,
    // normally, the model's echo in out.txt).
    assert!(in_spool >= 1, "the canary never reached the spool");
}
