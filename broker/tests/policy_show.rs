//! `flow policy show` runs without a broker, reads only the files (the
//! build-time policy path and the XDG settings file), and no `FLOW_*`
//! variable changes anything.

use std::path::Path;
use std::process::{Command, Output};

#[test]
fn policy_show_reads_files_only_and_ignores_the_environment() {
    let tmp = std::env::temp_dir().join(format!("flow-policy-show-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    for d in ["config/flow", "state", "data", "run"] {
        std::fs::create_dir_all(tmp.join(d)).unwrap();
    }
    let settings = tmp.join("config/flow/settings.toml");
    std::fs::write(
        &settings,
        "[services]\nenabled = true\nallowed_ids = [\"example-api\"]\n",
    )
    .unwrap();
    let run = |extra: &[(&str, &str)]| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flow"));
        c.args(["policy", "show", "--json"])
            .env_clear()
            .env("HOME", &tmp)
            .env("XDG_CONFIG_HOME", tmp.join("config"))
            .env("XDG_STATE_HOME", tmp.join("state"))
            .env("XDG_DATA_HOME", tmp.join("data"))
            .env("XDG_RUNTIME_DIR", tmp.join("run"));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let plain = run(&[]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(v["policy_path"], broker::policy::POLICY_PATH);
    assert_eq!(v["gateway"], true);
    assert_eq!(v["gateway_absent_reason"], serde_json::Value::Null);
    let row = |key: &str| -> serde_json::Value {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no row {key}"))
    };
    if !Path::new(broker::policy::POLICY_PATH).exists() {
        assert_eq!(row("services.enabled")["value"], "true");
        assert_eq!(row("services.enabled")["source"], "settings");
        assert_eq!(row("services.allowed_ids")["value"], "[\"example-api\"]");
        assert_eq!(row("cloud.enabled")["value"], "false");
        assert_eq!(row("cloud.enabled")["source"], "default");
        assert_eq!(row("cloud.enabled")["locked"], false);
    }

    // Variables that look like settings or a policy path change nothing.
    let other_policy = tmp.join("policy.toml");
    std::fs::write(&other_policy, "[lock]\n\"services.enabled\" = false\n").unwrap();
    let with_env = run(&[
        ("FLOW_POLICY_PATH", other_policy.to_str().unwrap()),
        ("FLOW_POLICY", other_policy.to_str().unwrap()),
        ("FLOW_SETTINGS", "/nonexistent/settings.toml"),
        ("FLOW_SERVICES_ENABLED", "false"),
        ("FLOW_CLOUD_ENABLED", "true"),
        ("FLOW_HUB_ENABLED", "true"),
        ("FLOW_HUB_URL", "https://evil.example.com"),
        ("FLOW_SPOOL_RETENTION_DAYS", "1"),
    ]);
    assert!(with_env.status.success());
    assert_eq!(
        String::from_utf8_lossy(&with_env.stdout),
        String::from_utf8_lossy(&plain.stdout)
    );

    // An invalid settings file is an error naming file:line:key.
    std::fs::write(&settings, "[services]\nenabled = \"yes\"\n").unwrap();
    let bad = run(&[]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("settings.toml:2:services.enabled: expected true or false, found a string"),
        "{err}"
    );

    // The human form starts with whether the gateway runs and why not.
    std::fs::write(&settings, "").unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_flow"));
    let human = c
        .args(["policy", "show"])
        .env_clear()
        .env("HOME", &tmp)
        .env("XDG_CONFIG_HOME", tmp.join("config"))
        .env("XDG_STATE_HOME", tmp.join("state"))
        .env("XDG_DATA_HOME", tmp.join("data"))
        .env("XDG_RUNTIME_DIR", tmp.join("run"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&human.stdout);
    let first = out.lines().next().unwrap_or("");
    if !Path::new(broker::policy::POLICY_PATH).exists() {
        assert_eq!(
            first,
            "egress gateway: not started: no egress exception is enabled: cloud.enabled = false (default), services.enabled = false (default), hub.enabled = false (default)"
        );
    } else {
        assert!(first.starts_with("egress gateway: "), "{out}");
    }
    assert!(out.contains(broker::policy::POLICY_PATH), "{out}");
    let _ = std::fs::remove_dir_all(&tmp);
}
