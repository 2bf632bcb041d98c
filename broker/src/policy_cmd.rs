//! `flow policy show` and `flow settings set`.
//!
//! `policy show` computes the effective values from the files (the policy
//! at its build-time path and the user's settings file), so it works without
//! a running broker; it does not know `flow up --set` flags or runtime
//! changes of a running broker.

use crate::client;
use crate::paths::Paths;
use crate::policy::{Effective, PolicyRow, Source, POLICY_PATH};
use anyhow::bail;
use proto::msg::{ControlRequest, ControlResponse};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Serialize)]
struct Shown<'a> {
    policy_path: &'a str,
    policy_present: bool,
    settings_path: String,
    gateway: bool,
    gateway_absent_reason: Option<String>,
    settings: Vec<PolicyRow>,
}

pub fn show(json: bool) -> anyhow::Result<i32> {
    let paths = Paths::from_env()?;
    let settings_path = paths.settings();
    let (eff, _refusals) = Effective::load(&settings_path, &[])?;
    let shown = Shown {
        policy_path: POLICY_PATH,
        policy_present: eff.policy_present(),
        settings_path: settings_path.display().to_string(),
        gateway: eff.gateway_wanted(),
        gateway_absent_reason: eff.gateway_absent_reason(),
        settings: eff.rows(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print!("{}", render(&shown));
    }
    Ok(0)
}

fn render(s: &Shown<'_>) -> String {
    let mut o = String::new();
    match &s.gateway_absent_reason {
        None => {
            let _ = writeln!(o, "egress gateway: runs (an egress exception is enabled)");
        }
        Some(why) => {
            let _ = writeln!(o, "egress gateway: not started: {why}");
        }
    }
    let _ = writeln!(
        o,
        "policy file:    {} ({})",
        s.policy_path,
        if s.policy_present {
            "in force"
        } else {
            "absent: no enterprise policy"
        }
    );
    let _ = writeln!(o, "settings file:  {}", s.settings_path);
    let _ = writeln!(o);
    let kw = s
        .settings
        .iter()
        .map(|r| r.key.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let vw = s
        .settings
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    let _ = writeln!(
        o,
        "{:<kw$}  {:<vw$}  {:<16}  MEANING",
        "KEY", "VALUE", "SOURCE"
    );
    for r in &s.settings {
        let src = if r.locked {
            format!("{} (locked)", r.source.as_str())
        } else {
            r.source.as_str().to_string()
        };
        let _ = writeln!(
            o,
            "{:<kw$}  {:<vw$}  {:<16}  {}",
            r.key, r.value, src, r.meaning
        );
        if !r.overridden_by_policy.is_empty() {
            let from: Vec<&str> = r
                .overridden_by_policy
                .iter()
                .map(|s| match s {
                    Source::Settings => "the settings file",
                    Source::Cli => "the command line",
                    Source::Runtime => "the control socket",
                    Source::FlowFile => "a flow file",
                    Source::Default | Source::Policy => "another source",
                })
                .collect();
            let _ = writeln!(
                o,
                "{:<kw$}  ^ overridden by policy: the value from {} is ignored",
                "",
                from.join(" and ")
            );
        }
    }
    o
}

/// `flow settings set KEY VALUE`: a runtime change in the running broker.
pub fn settings_set(key: &str, value: &str) -> anyhow::Result<i32> {
    match client::request(ControlRequest::SetSetting {
        key: key.to_string(),
        value: value.to_string(),
    })? {
        ControlResponse::Ok => {
            println!("{key} = {value} (runtime, until the broker stops)");
            if matches!(key, "cloud.enabled" | "services.enabled" | "hub.enabled") {
                println!(
                    "note: the egress gateway is started or left out when the broker starts: to change whether it runs, put the key in the settings file and run 'flow down' then 'flow up'"
                );
            }
            Ok(0)
        }
        _ => bail!("unexpected answer from the broker"),
    }
}
