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
    component::main_with(
        Component::EgressGateway,
        ProfileName::EgressGateway,
        |_granted, boot| async move {
            loop {
                match recv_async::<BrokerMsg>(&boot, BOOTSTRAP_MAX_FRAME).await {
                    Ok((BrokerMsg::Shutdown, _)) | Err(proto::ProtoError::Closed) => return 0,
                    Ok(_) => {}
                    Err(_) => return 3,
                }
            }
        },
    )
}
