//! `flow doctor`: what this machine offers the sandbox, and how to fix what
//! is missing. The facts come from `sandbox::doctor`; this is presentation.

use std::fmt::Write as _;

pub fn run(json: bool) -> anyhow::Result<i32> {
    let r = sandbox::doctor::host_report();
    let all_ready = r.profiles.iter().all(|p| p.ready);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
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
