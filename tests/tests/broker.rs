//! The broker end to end, with the real binaries in the real sandbox:
//! `flow up` → attested components → status/caps → crash and restart →
//! revoke → `flow down`; fail-closed start-up; parent-death cleanup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;
use support::{alive, bin, wait_dead, Env};

#[test]
fn up_status_caps_restart_down() {
    let env = Env::new("up");
    let mut broker = env.up();
    let status = env.flow_json(&["status", "--json"]);

    // Every component attested from the outside, with the values we require.
    for c in status["components"].as_array().unwrap() {
        let a = &c["attested"];
        assert_eq!(a["no_new_privs"], true, "{c}");
        assert_eq!(a["seccomp_mode"], 2, "{c}");
        for set in ["cap_inh", "cap_prm", "cap_eff", "cap_bnd", "cap_amb"] {
            assert_eq!(a[set], 0, "{set} of {c}");
        }
        assert_ne!(a["host_uid"], 0, "{c}");
        assert_eq!(a["fds"], serde_json::json!([0, 1, 2, 3]), "{c}");
        assert_eq!(a["threads"], 1, "{c}");
    }
    // Only the two components this version runs: no gateway.
    let names: Vec<_> = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Executor", "ReasoningWorker"]);

    // The capability table shows who can talk to whom.
    let caps = env.flow_json(&["caps", "--json"]);
    let live: Vec<_> = caps
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["revoked"] == false)
        .collect();
    assert_eq!(live.len(), 1, "{caps}");
    assert_eq!(live[0]["client"], "Executor");
    assert_eq!(live[0]["server"], "ReasoningWorker");
    assert_eq!(live[0]["kind"], "Reasoning");

    // A real request over the capability.
    let ping = env.flow_json(&["ping", "--count", "100", "--size", "64", "--json"]);
    assert_eq!(ping["count"], 100);

    // SIGKILL the worker: it comes back attested, the crash is audited.
    let worker = Env::component_pid(&status, "reasoning-worker");
    let executor = Env::component_pid(&status, "executor");
    // SAFETY: kill(2) on a pid this test read from `flow status`.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    assert!(wait_dead(worker, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(300));
    let status2 = env.wait_running(Duration::from_secs(20));
    let worker2 = Env::component_pid(&status2, "reasoning-worker");
    assert_ne!(worker, worker2);
    let w = status2["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "ReasoningWorker")
        .unwrap()
        .clone();
    assert_eq!(w["restarts"], 1);
    let audit = env.audit_text();
    assert!(audit.contains("\"component-crashed\""), "{audit}");
    assert!(audit.contains("\"component-restarted\""), "{audit}");
    assert!(audit.contains("\"capability-revoked\""), "{audit}");
    // The new worker serves the executor over a fresh capability.
    let ping = env.flow_json(&["ping", "--count", "10", "--json"]);
    assert_eq!(ping["count"], 10);

    // Revoke the live capability: the executor's next read is EOF, so a ping fails.
    let caps = env.flow_json(&["caps", "--json"]);
    let id = caps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revoked"] == false)
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let out = env.flow(&["revoke", &id.to_string()]);
    assert!(out.status.success());
    let out = env.flow(&["ping", "--count", "1"]);
    assert!(
        !out.status.success(),
        "ping worked over a revoked capability"
    );

    // flow down leaves nothing behind.
    let out = env.flow(&["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(broker.wait_exit(Duration::from_secs(10)).is_some());
    assert!(wait_dead(executor, Duration::from_secs(5)));
    assert!(wait_dead(worker2, Duration::from_secs(5)));

    let verify = env.flow(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// The broker idles 30 s without killing anything, then dies by SIGKILL and
/// takes every component with it (PR_SET_PDEATHSIG on the spawner thread).
#[test]
fn idle_then_broker_sigkill_leaves_nothing() {
    let env = Env::new("pdeath");
    let mut broker = env.up();
    let status = env.flow_json(&["status", "--json"]);
    let pids = [
        Env::component_pid(&status, "executor"),
        Env::component_pid(&status, "reasoning-worker"),
    ];
    std::thread::sleep(Duration::from_secs(30));
    for p in pids {
        assert!(alive(p), "component {p} died while the broker idled");
    }
    let status2 = env.flow_json(&["status", "--json"]);
    for c in status2["components"].as_array().unwrap() {
        assert_eq!(c["restarts"], 0, "{c}");
    }
    // SAFETY: kill(2) on the broker this test spawned.
    unsafe { libc::kill(broker.pid(), libc::SIGKILL) };
    broker.wait_exit(Duration::from_secs(5));
    for p in pids {
        assert!(
            wait_dead(p, Duration::from_secs(5)),
            "component {p} survived the broker"
        );
    }
}

/// Under a host that lacks landlock and blocks user namespaces, `flow up`
/// refuses to start, says how to fix it, and audits the refusal.
#[test]
fn up_fails_closed_without_landlock_or_userns() {
    let env = Env::new("failclosed");
    let out = env
        .cmd(&bin("flow-outer-filter"))
        .args(["--", bin("flow").to_str().unwrap(), "up"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "flow up started without landlock: {err}"
    );
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("landlock"), "{err}");
    assert!(
        env.audit_text().contains("\"refused\""),
        "{}",
        env.audit_text()
    );

    // Waiving landlock (the only waivable layer) is not enough: user
    // namespaces are still blocked, and they can never be waived.
    let out = env
        .cmd(&bin("flow-outer-filter"))
        .args([
            "--",
            bin("flow").to_str().unwrap(),
            "up",
            "--waive",
            "landlock",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "flow up started without user namespaces: {err}"
    );
    assert!(err.contains("namespace"), "{err}");

    // Seccomp cannot be waived at all.
    let out = env.flow(&["up", "--waive", "seccomp"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be waived"));
}

/// Production spawn, `flow sandbox show` and `flow sandbox run` agree on the
/// filter hash, landlock rules and namespaces, apart from the exec allowance.
#[test]
fn production_and_sandbox_run_report_the_same_profile() {
    let env = Env::new("same");
    let broker = env.up();
    let status = env.flow_json(&["status", "--json"]);
    for (variant, profile) in [
        ("ReasoningWorker", "reasoning-worker"),
        ("Executor", "executor"),
    ] {
        let c = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == variant)
            .unwrap()
            .clone();
        let show = env.flow_json(&["sandbox", "show", "--profile", profile, "--json"]);
        let base = show["seccomp"]["base_sha256"].clone();
        assert_eq!(show["seccomp"]["sha256"], base);
        assert_eq!(c["attested"]["filter_sha256"], base, "{profile}");

        let show_exec =
            env.flow_json(&["sandbox", "show", "--profile", profile, "--exec", "--json"]);
        assert_eq!(show_exec["seccomp"]["base_sha256"], base);
        // Same landlock rules and namespaces, apart from the exec allowance.
        assert_eq!(show_exec["namespaces_fresh"], show["namespaces_fresh"]);
        let rules = |v: &serde_json::Value| v["landlock"]["rules"].as_array().unwrap().clone();
        let (base_rules, exec_rules) = (rules(&show), rules(&show_exec));
        for r in &base_rules {
            assert!(
                exec_rules.contains(r),
                "{profile}: {r} missing under the exec allowance"
            );
        }
        for r in exec_rules.iter().filter(|r| !base_rules.contains(r)) {
            let path = r["path"].as_str().unwrap().to_ascii_lowercase();
            assert!(
                path.contains("exec") || path.contains("interpreter") || path.contains("librar"),
                "{profile}: extra rule {r} is not part of the exec allowance"
            );
        }
        let out = env
            .cmd(&bin("flow"))
            .args([
                "sandbox",
                "run",
                "--report",
                "--profile",
                profile,
                "--",
                "/bin/true",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find_map(|l| l.strip_prefix("flow-sandbox-report: "))
            .unwrap();
        let applied: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(applied["filter_sha256"], base, "{profile}");
        assert_eq!(
            applied["exec_filter_sha256"], show_exec["seccomp"]["exec_sha256"],
            "{profile}"
        );
        assert_ne!(applied["exec_filter_sha256"], applied["filter_sha256"]);
        assert_eq!(applied["namespaces"], show["namespaces_fresh"], "{profile}");
    }
    drop(broker);
}

/// A control-socket peer that sends garbage is cut off and audited.
#[test]
fn malformed_control_peer_is_cut_off_and_audited() {
    use std::io::{Read, Write};
    let env = Env::new("malformed");
    let _broker = env.up();
    let sock = env.root.join("run/flow/control.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A frame header announcing 1 GiB.
    s.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        env.audit_text().contains("\"malformed-peer\""),
        "{}",
        env.audit_text()
    );
    // The broker is still serving.
    env.flow_json(&["status", "--json"]);
}
