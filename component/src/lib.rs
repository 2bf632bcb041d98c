//! The first lines of every sandboxed Rust component's `main`.
//!
//! **Invariant:** [`start`] runs before any thread exists. It enters the
//! component's sandbox profile (`sandbox::enter`), says hello on the inherited
//! bootstrap channel and blocks until the broker has attested the process from
//! the outside. Only then may the caller start its async runtime.

use proto::msg::{CapGrant, Component, SelfReport};
use sandbox::{ProfileName, Spec, Waivers};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bad arguments: {0}: components are started by the broker ('flow up'), not by hand")]
    Args(String),
    #[error("cannot enter the {profile} sandbox: {source}")]
    Sandbox {
        profile: ProfileName,
        source: sandbox::SandboxError,
    },
    #[error("bootstrap with the broker failed: {0}")]
    Bootstrap(#[from] proto::ProtoError),
}

/// What the broker passes on the command line (the environment is cleared).
#[derive(Debug, Default)]
pub struct Args {
    pub spool: Option<PathBuf>,
    pub run_as: Option<(u32, u32)>,
    /// `--connect-port N` (repeatable): TCP ports landlock lets the egress
    /// gateway connect to. Refused for every other profile.
    pub connect_ports: Vec<u16>,
    pub waivers: Waivers,
}

pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, StartError> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| StartError::Args(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--spool" => a.spool = Some(PathBuf::from(value()?)),
            "--run-as" => {
                let v = value()?;
                let (u, g) = v
                    .split_once(':')
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
                    .ok_or_else(|| StartError::Args(format!("--run-as {v}: expected UID:GID")))?;
                a.run_as = Some((u, g));
            }
            "--connect-port" => {
                let v = value()?;
                match v.parse::<u16>() {
                    Ok(p) if p != 0 => a.connect_ports.push(p),
                    _ => {
                        return Err(StartError::Args(format!(
                            "--connect-port {v}: expected a TCP port 1-65535"
                        )))
                    }
                }
            }
            "--waive" => match value()?.as_str() {
                "landlock" => a.waivers.landlock = true,
                other => return Err(StartError::Args(format!("cannot waive '{other}'"))),
            },
            other => return Err(StartError::Args(format!("unknown argument '{other}'"))),
        }
    }
    Ok(a)
}

/// What `body` gets from [`main_with`]: the first grants and the arguments.
#[derive(Debug)]
pub struct Granted {
    pub grants: Vec<(CapGrant, OwnedFd)>,
    pub args: Args,
}

/// A component that passed attestation, with its first grants.
#[derive(Debug)]
pub struct Started {
    pub bootstrap: OwnedFd,
    pub grants: Vec<(CapGrant, OwnedFd)>,
    /// The arguments the broker passed (spool path, …).
    pub args: Args,
}

/// Enter the sandbox, bootstrap, wait for attestation.
pub fn start(component: Component, profile: ProfileName) -> Result<Started, StartError> {
    let args = parse_args(std::env::args().skip(1))?;
    let kept_args = Args {
        spool: args.spool.clone(),
        run_as: args.run_as,
        connect_ports: args.connect_ports.clone(),
        waivers: args.waivers.clone(),
    };
    let mut spec = Spec::new(profile);
    spec.keep_fds.push(proto::bootstrap::BOOTSTRAP_FD);
    if let Some(r) = args.run_as {
        spec.run_as = r;
    }
    spec.waivers = args.waivers.clone();
    if !args.connect_ports.is_empty() {
        if profile != ProfileName::EgressGateway {
            return Err(StartError::Args(format!(
                "--connect-port is only accepted by the egress gateway, not the {profile} profile"
            )));
        }
        spec.connect_ports = args.connect_ports.clone();
    }
    if profile == ProfileName::Executor {
        let spool = args
            .spool
            .ok_or_else(|| StartError::Args("the executor needs --spool".into()))?;
        spec.write_dirs.push(spool);
    }
    let applied =
        sandbox::enter(&spec).map_err(|source| StartError::Sandbox { profile, source })?;
    // SAFETY: called once, in a process the broker spawned with the bootstrap
    // socket at fd 3 (kept by `enter` as declared).
    let boot = unsafe { proto::bootstrap::ChildBootstrap::from_inherited() };
    boot.hello(
        component,
        SelfReport {
            profile: profile.as_str().into(),
            filter_sha256: applied.filter_sha256.clone(),
            landlock_abi: u32::try_from(applied.landlock.abi).unwrap_or(0),
            waivers: args.waivers.names().into_iter().map(String::from).collect(),
        },
    )?;
    let (grants, fds) = boot.wait_grant()?;
    let grants = proto::bootstrap::pair_grants(grants, fds)?;
    Ok(Started {
        bootstrap: boot.into_fd(),
        grants,
        args: kept_args,
    })
}

/// The whole `main` of a sandboxed Rust component: [`start`] (sandbox,
/// bootstrap, attestation), then a single-threaded async runtime without a
/// signal driver (its socketpair is denied by seccomp) running `body` with
/// the bootstrap channel registered for async use. Exits with `body`'s code.
pub fn main_with<F, Fut>(component: Component, profile: ProfileName, body: F) -> !
where
    F: FnOnce(Granted, tokio::io::unix::AsyncFd<OwnedFd>) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let name = component.as_str();
    let started = match start(component, profile) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flow-{name}: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flow-{name}: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let local = tokio::task::LocalSet::new();
    let Started {
        bootstrap: fd,
        grants,
        args,
    } = started;
    let code = local.block_on(&rt, async move {
        let boot = match rustix::io::ioctl_fionbio(&fd, true)
            .map_err(std::io::Error::from)
            .and_then(|()| proto::bootstrap::async_fd(fd))
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("flow-{name}: cannot watch the bootstrap channel: {e}");
                return 2;
            }
        };
        body(Granted { grants, args }, boot).await
    });
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, StartError> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn connect_ports_repeat() {
        let a = parse(&["--connect-port", "443", "--connect-port", "53"]).unwrap();
        assert_eq!(a.connect_ports, vec![443, 53]);
        assert!(parse(&[]).unwrap().connect_ports.is_empty());
    }

    #[test]
    fn connect_port_must_be_a_port() {
        for bad in ["0", "65536", "-1", "http", ""] {
            let e = parse(&["--connect-port", bad]).unwrap_err().to_string();
            assert!(e.contains("expected a TCP port 1-65535"), "{bad}: {e}");
        }
        let e = parse(&["--connect-port"]).unwrap_err().to_string();
        assert!(e.contains("needs a value"), "{e}");
    }
}
