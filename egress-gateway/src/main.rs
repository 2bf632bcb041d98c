//! `flow-egress-gateway`: the only process that may open internet
//! connections. Started by the broker only when policy enables an egress
//! exception, under the `egress-gateway` profile (the one profile that keeps
//! the host net namespace and may create TCP sockets; landlock limits its
//! connects to the `--connect-port`s the broker passes).
//!
//! After attestation and the first (empty) grant it takes `GatewayConfig`,
//! `GrantEgress` (with the server ends of `Egress` capabilities), `Revoke`
//! and `Shutdown` on its bootstrap channel; see [`egress_gateway::gateway`].

use proto::msg::Component;
use sandbox::ProfileName;

fn main() {
    component::main_with(
        Component::EgressGateway,
        ProfileName::EgressGateway,
        |granted, boot| async move {
            // The first grant is empty: egress capabilities arrive with
            // `GrantEgress`. Close anything else.
            drop(granted.grants);
            let gw = egress_gateway::gateway::Gateway::new(boot);
            gw.run().await
        },
    )
}
