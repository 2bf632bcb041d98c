//! `flow-egress-gateway`: the only process that may create internet sockets.
//!
//! **Not started in this version.** No policy can enable cloud providers or
//! service nodes yet, so the broker never spawns the gateway and no
//! capability to it exists. The binary enters its production profile and
//! completes the bootstrap like every component, so that the profile can be
//! attested and tried (`flow sandbox run --profile egress-gateway`); it serves
//! no requests.

use proto::bootstrap::{recv_async, BOOTSTRAP_MAX_FRAME};
use proto::msg::{BrokerMsg, Component};
use sandbox::ProfileName;

fn main() {
    let started = match component::start(Component::EgressGateway, ProfileName::EgressGateway) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("flow-egress-gateway: {e}");
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
            eprintln!("flow-egress-gateway: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async move {
        let Ok(boot) = rustix::io::ioctl_fionbio(&started.bootstrap, true)
            .map_err(std::io::Error::from)
            .and_then(|()| proto::bootstrap::async_fd(started.bootstrap))
        else {
            return 2;
        };
        loop {
            match recv_async::<BrokerMsg>(&boot, BOOTSTRAP_MAX_FRAME).await {
                Ok((BrokerMsg::Shutdown, _)) | Err(proto::ProtoError::Closed) => return 0,
                Ok(_) => {}
                Err(_) => return 3,
            }
        }
    });
    std::process::exit(code);
}
