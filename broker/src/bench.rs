//! `flow bench …` (hidden): measurements behind the README's figures, run by
//! `bench/kernel.sh`. They drive the production code paths; nothing here is
//! a timed assertion.

use crate::daemon::{spawn::Spawner, supervise};
use proto::bootstrap::send_async;
use proto::msg::{BrokerMsg, Component, Handshake, ServiceKind};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "n": v.len(),
        "median_ms": percentile(&v, 0.5),
        "p99_ms": percentile(&v, 0.99),
        "min_ms": v.first().copied().unwrap_or(f64::NAN),
        "max_ms": v.last().copied().unwrap_or(f64::NAN),
    })
}

/// Sandboxed spawn to attested, `count` times, with the production profile
/// of the reasoning worker; then the same count of `bwrap --unshare-all`
/// starts in the same run, if bubblewrap is installed.
pub fn spawn(count: u32) -> anyhow::Result<i32> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| anyhow::anyhow!("the flow binary has no parent directory"))?;
    let own_filters = sandbox::attest::own_seccomp_filters()?;
    let spawner = Spawner::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let mut ours = Vec::with_capacity(count as usize);
    let run_as = sandbox::profile::DEFAULT_RUN_AS;
    rt.block_on(async {
        for _ in 0..count {
            let t0 = Instant::now();
            let a = supervise::spawn_attested(
                &spawner,
                bin_dir.join("flow-reasoning-worker"),
                vec![
                    "--run-as".into(),
                    format!("{}:{}", run_as.0, run_as.1).into(),
                ],
                Component::ReasoningWorker,
                own_filters,
                |_, _, _| {},
            )
            .await?;
            ours.push(t0.elapsed().as_secs_f64() * 1e3);
            // Release and stop the child, then reap it.
            let _ = send_async(&a.boot, &Handshake::new(ServiceKind::Bootstrap), &[]).await;
            let _ = send_async(&a.boot, &BrokerMsg::Grant(Vec::new()), &[]).await;
            let _ = send_async(&a.boot, &BrokerMsg::Shutdown, &[]).await;
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(a.pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED,
            );
        }
        Ok::<(), anyhow::Error>(())
    })?;
    let mut bwrap = Vec::new();
    let have_bwrap = std::path::Path::new("/usr/bin/bwrap").exists();
    if have_bwrap {
        for _ in 0..count {
            let t0 = Instant::now();
            let st = std::process::Command::new("/usr/bin/bwrap")
                .args(["--unshare-all", "--ro-bind", "/", "/", "/bin/true"])
                .status()?;
            bwrap.push(t0.elapsed().as_secs_f64() * 1e3);
            if !st.success() {
                anyhow::bail!("bwrap --unshare-all failed: {st}");
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "flow_spawn_to_attested": summary(ours),
            "bwrap_unshare_all": if have_bwrap { summary(bwrap) } else { serde_json::Value::Null },
        })
    );
    Ok(0)
}

fn pin(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(Into::into)
}

/// Raw baseline: a 64-byte (or `size`) ping-pong over a socketpair between
/// two processes pinned to `cpus`, with blocking read/write and nothing else.
pub fn raw_pingpong(count: u32, size: usize, cpus: (usize, usize)) -> anyhow::Result<i32> {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: fork in a process that is single-threaded here (the CLI has
    // not started any thread); the child only does read/write/exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        anyhow::bail!("fork failed: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        drop(a);
        let _ = pin(cpus.1);
        let mut buf = vec![0u8; size];
        for _ in 0..count {
            if read_full(b.as_raw_fd(), &mut buf).is_err() || rustix::io::write(&b, &buf).is_err() {
                break;
            }
        }
        // SAFETY: _exit in the forked child, without running destructors.
        unsafe { libc::_exit(0) };
    }
    drop(b);
    pin(cpus.0)?;
    let mut buf = vec![0xA5u8; size];
    let t0 = Instant::now();
    for _ in 0..count {
        rustix::io::write(&a, &buf)?;
        read_full(a.as_raw_fd(), &mut buf)?;
    }
    let total = t0.elapsed();
    let mut st = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    println!(
        "{}",
        serde_json::json!({"count": count, "size": size, "total_nanos": total.as_nanos() as u64,
            "nanos_per_round_trip": total.as_nanos() as f64 / f64::from(count)})
    );
    Ok(0)
}

fn read_full(fd: i32, buf: &mut [u8]) -> std::io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: reading into the unfilled tail of a live buffer.
        let n = unsafe { libc::read(fd, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
        if n <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        off += n as usize;
    }
    Ok(())
}
