//! `flow doctor`: what this machine offers the sandbox, and how to fix what
//! is missing. The facts come from `sandbox::doctor`; this is presentation.

use std::fmt::Write as _;

pub fn run(json: bool) -> anyhow::Result<i32> {
    let r = sandbox::doctor::host_report();
    let all_ready = r.profiles.iter().all(|p| p.ready);
    let creds = credential_store();
    if json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("credential_store".into(), serde_json::to_value(&creds)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if all_ready { 0 } else { 1 });
    }
    let mut o = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".into());
    let _ = writeln!(
        o,
        "kernel                                {}",
        r.kernel_release
    );
    let _ = writeln!(
        o,
        "landlock ABI                          {}",
        r.landlock_abi
    );
    let _ = writeln!(
        o,
        "seccomp filters                       {}",
        if r.seccomp_filter_available.ok {
            "available"
        } else {
            "NOT available"
        }
    );
    let _ = writeln!(
        o,
        "kernel.unprivileged_userns_clone      {}",
        opt(&r.unprivileged_userns_clone)
    );
    let _ = writeln!(
        o,
        "user.max_user_namespaces              {}",
        r.max_user_namespaces
            .map(|v| v.to_string())
            .unwrap_or_else(|| "absent".into())
    );
    let _ = writeln!(
        o,
        "apparmor_restrict_unprivileged_userns {}",
        opt(&r.apparmor_restrict_unprivileged_userns)
    );
    let _ = writeln!(
        o,
        "in a container                        {}",
        if r.container.in_container {
            "yes"
        } else {
            "no"
        }
    );
    let _ = writeln!(
        o,
        "outer seccomp filter                  {}",
        if r.outer_seccomp_filters > 0 {
            format!(
                "yes ({} filters): components inherit it",
                r.outer_seccomp_filters
            )
        } else {
            "no".into()
        }
    );
    let _ = writeln!(
        o,
        "user+net namespace probe              {}",
        if r.userns_probe.ok {
            "ok".to_string()
        } else {
            format!("FAILED: {}", r.userns_probe.detail)
        }
    );
    let _ = writeln!(
        o,
        "credential store                      {}",
        match &creds.store {
            Some(store) => format!("{store}: {}", creds.note),
            None => format!("NOT available: {}", creds.note),
        }
    );
    for p in &r.profiles {
        let _ = writeln!(
            o,
            "profile {:<30} {}",
            p.profile.as_str(),
            if p.ready { "ready" } else { "NOT ready" }
        );
        for pr in &p.problems {
            let _ = writeln!(
                o,
                "  {} {}: {}\n    fix: {}",
                if pr.fails_closed {
                    "fails closed:"
                } else {
                    "weaker:"
                },
                pr.layer,
                pr.detail,
                pr.fix
            );
        }
    }
    print!("{o}");
    Ok(if all_ready { 0 } else { 1 })
}

/// The keyring store the broker would use for connection credentials.
#[derive(Debug, serde::Serialize)]
struct CredentialStoreReport {
    /// `secret-service` or `keyutils`; `None` when neither can be used.
    store: Option<&'static str>,
    /// What a user should know (keyutils entries do not survive a reboot),
    /// or why no store can be used.
    note: String,
}

fn credential_store() -> CredentialStoreReport {
    match crate::credentials::Credentials::open() {
        Ok(c) => CredentialStoreReport {
            store: Some(c.kind().as_str()),
            note: c.note().to_string(),
        },
        Err(e) => CredentialStoreReport {
            store: None,
            note: e.to_string(),
        },
    }
}
