//! The `flow` CLI's side of the control socket, and the commands that read
//! local state without a broker (`audit verify`).

use crate::paths::Paths;
use anyhow::{bail, Context};
use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName};
use proto::channel::SyncChannel;
use proto::msg::{CapId, ControlError, ControlRequest, ControlResponse, ServiceKind};
use std::path::PathBuf;

pub fn connect(paths: &Paths) -> anyhow::Result<SyncChannel<Stream>> {
    let path = paths.control_socket();
    let name = path.clone().to_fs_name::<GenericFilePath>()?;
    let stream = Stream::connect(name).map_err(|e| {
        anyhow::anyhow!(
            "no broker is running ({}: {e}): start one with 'flow up'",
            path.display()
        )
    })?;
    Ok(SyncChannel::handshake(stream, ServiceKind::Control)?)
}

/// True if a broker answers on this user's control socket.
pub fn broker_running(paths: &Paths) -> bool {
    connect(paths).is_ok()
}

pub fn request(req: ControlRequest) -> anyhow::Result<ControlResponse> {
    let paths = Paths::from_env()?;
    let mut ch = connect(&paths)?;
    ch.send(&req)?;
    let resp: ControlResponse = ch.recv().context("the broker did not answer")?;
    if let ControlResponse::Error(e) = &resp {
        bail!("{}", describe_error(e));
    }
    Ok(resp)
}

pub fn describe_error(e: &ControlError) -> String {
    match e {
        ControlError::UnknownCapability(id) => {
            format!("no live capability with id {}: see 'flow caps'", id.0)
        }
        ControlError::ComponentUnavailable(c) => format!(
            "the {} is not running: see 'flow status' and its log",
            c.as_str()
        ),
        ControlError::Refused => "the broker refused the request: see the audit log".into(),
        ControlError::Failed(why) => why.clone(),
    }
}

pub fn down() -> anyhow::Result<i32> {
    let paths = Paths::from_env()?;
    let pid = match request(ControlRequest::Status)? {
        ControlResponse::Status(s) => s.broker_pid,
        _ => bail!("unexpected answer from the broker"),
    };
    request(ControlRequest::Down)?;
    // Wait for the broker process itself to exit: then every component is
    // gone and the audit log is closed.
    for _ in 0..200 {
        if !process_alive(pid) {
            println!("broker stopped");
            return Ok(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!(
        "the broker (pid {pid}) did not stop within 10 s: check 'flow status' and {}",
        paths.control_socket().display()
    )
}

/// True while `pid` runs; false once it is gone or a zombie (its parent,
/// e.g. a shell or test harness, has not reaped it yet).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn fmt_caps(v: u64) -> String {
    format!("{v:016x}")
}

pub fn status(json: bool) -> anyhow::Result<i32> {
    let ControlResponse::Status(s) = request(ControlRequest::Status)? else {
        bail!("unexpected answer from the broker")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    println!(
        "broker pid {} uid {} up {}s",
        s.broker_pid, s.broker_uid, s.uptime_secs
    );
    if !s.waivers.is_empty() {
        println!("OVERRIDE in force: waived {}", s.waivers.join(", "));
    }
    println!(
        "{:<18} {:<12} {:>8} {:>8} {:>8}  sandbox",
        "component", "state", "pid", "uptime", "restarts"
    );
    for c in &s.components {
        let sandbox = match &c.attested {
            Some(a) => format!(
                "attested: seccomp {} ({} filters) nnp {} caps {} uid {} fds {:?} filter {}",
                a.seccomp_mode,
                a.seccomp_filters,
                u8::from(a.no_new_privs),
                if a.cap_inh | a.cap_prm | a.cap_eff | a.cap_bnd | a.cap_amb == 0 {
                    "none".to_string()
                } else {
                    fmt_caps(a.cap_eff)
                },
                a.host_uid,
                a.fds,
                a.filter_sha256.get(..16).unwrap_or(""),
            ),
            None => "not attested".into(),
        };
        println!(
            "{:<18} {:<12} {:>8} {:>8} {:>8}  {}",
            c.component.as_str(),
            format!("{:?}", c.state).to_lowercase(),
            c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            c.uptime_secs
                .map(|u| format!("{u}s"))
                .unwrap_or_else(|| "-".into()),
            c.restarts,
            sandbox
        );
    }
    if let Some(why) = &s.gateway_absent {
        println!("egress gateway: not running: {why} (see 'flow policy show')");
    }
    Ok(0)
}

pub fn caps(json: bool) -> anyhow::Result<i32> {
    let ControlResponse::Caps(rows) = request(ControlRequest::Caps)? else {
        bail!("unexpected answer from the broker")
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:>4} {:<10} {:<18} {:<18} {:<12} {:<12} state",
        "id", "kind", "client", "server", "rights", "granted"
    );
    for r in rows {
        println!(
            "{:>4} {:<10} {:<18} {:<18} {:<12} {:<12} {}",
            r.id.0,
            format!("{:?}", r.kind).to_lowercase(),
            r.client.as_str(),
            r.server.as_str(),
            r.rights
                .iter()
                .map(|x| format!("{x:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(","),
            r.granted_at,
            if r.revoked { "revoked" } else { "live" }
        );
    }
    Ok(0)
}

pub fn revoke(id: u64) -> anyhow::Result<i32> {
    request(ControlRequest::Revoke(CapId(id)))?;
    println!("capability {id} revoked");
    Ok(0)
}

pub fn ping(count: u32, size: usize, json: bool) -> anyhow::Result<i32> {
    if count == 0 {
        bail!("--count must be at least 1");
    }
    if size > 60 * 1024 {
        bail!("--size must be at most 61440 bytes");
    }
    let payload = vec![0xA5u8; size];
    let ControlResponse::Pinged { count, total_nanos } =
        request(ControlRequest::Ping { count, payload })?
    else {
        bail!("unexpected answer from the broker")
    };
    let per = total_nanos as f64 / f64::from(count);
    if json {
        println!(
            "{}",
            serde_json::json!({"count": count, "size": size, "total_nanos": total_nanos, "nanos_per_round_trip": per})
        );
    } else {
        println!("{count} round trips of {size} bytes: {per:.0} ns each (executor -> worker -> executor)");
    }
    Ok(0)
}

pub fn audit_verify(path: Option<PathBuf>, json: bool) -> anyhow::Result<i32> {
    let path = match path {
        Some(p) => p,
        None => Paths::from_env()?.audit_log(),
    };
    let report = audit::verify(&path)?;
    let intact = report.is_intact();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "path": path,
                "intact": intact,
                "records": report.records,
                "head": report.head_hash.to_hex(),
                "first_bad_record": report.failure.as_ref().map(|f| f.record),
                "first_bad_offset": report.failure.as_ref().map(|f| f.offset),
                "failure": report.failure.as_ref().map(|f| f.to_string()),
                "head_file": format!("{:?}", report.head_file),
            })
        );
    } else if let Some(f) = &report.failure {
        println!("audit log {} is BROKEN at {f}", path.display());
    } else if !intact {
        println!(
            "audit log {}: {} records verify, but the chain head disagrees: {:?}",
            path.display(),
            report.records,
            report.head_file
        );
    } else {
        println!(
            "audit log {} verifies: {} records, head {}",
            path.display(),
            report.records,
            report.head_hash.to_hex()
        );
    }
    Ok(if intact { 0 } else { 1 })
}
