//! The egress gateway on the broker's side: whether it runs at all, the TCP
//! ports its landlock ruleset allows, the configuration it is sent (name
//! servers, enterprise CA, every connection with its credential) and the
//! `Egress` capabilities minted for holders.
//!
//! **Invariant:** the gateway is started only when the effective policy
//! enables an egress exception (`cloud.enabled`, `services.enabled`,
//! `hub.enabled`); otherwise it does not exist and no `Egress` capability
//! can be minted. A credential leaves the broker only inside a
//! [`GatewayConfig`] on the gateway's bootstrap channel, bound to the one
//! connection (origin) it was added for.

use super::Shared;
use proto::bootstrap::send_async;
use proto::egress::{ConnectionConfig, EgressRights, GatewayConfig};
use proto::msg::{BrokerMsg, CapGrant, CapId, CapKind, CapRole, Component, ComponentState, Right};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// The connection id of the Model Hub.
pub const HUB_CONNECTION: &str = "hub";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the egress gateway is not running: {0}")]
    NotRunning(String),
    #[error("cannot mint an egress capability: {0}")]
    Mint(String),
    #[error("the egress gateway did not take the capability: {0}")]
    Send(proto::ProtoError),
}

/// The service catalog entries the effective policy allows, when service
/// nodes are enabled.
fn allowed_services(shared: &Shared) -> Vec<crate::services::ServiceEntry> {
    let eff = shared.effective();
    if !eff.services_enabled() {
        return Vec::new();
    }
    shared
        .services
        .entries()
        .iter()
        .filter(|e| eff.service_allowed(&e.id))
        .cloned()
        .collect()
}

/// Name servers: the `egress.dns_servers` setting, else `/etc/resolv.conf`
/// (read by the broker: the gateway has no filesystem).
pub fn dns_servers(shared: &Shared) -> Vec<SocketAddr> {
    let configured = shared.effective().dns_servers().to_vec();
    if !configured.is_empty() {
        return configured;
    }
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

/// `nameserver` lines of a resolv.conf, port 53.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            rest.trim()
                .split('%')
                .next()?
                .parse::<std::net::IpAddr>()
                .ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// TCP ports the gateway's landlock ruleset lets it connect to: the
/// origins of the allowed catalog entries, the hub, and the name servers.
pub fn connect_ports(shared: &Shared) -> Vec<u16> {
    let mut ports: Vec<u16> = allowed_services(shared)
        .iter()
        .map(|e| e.origin.port)
        .collect();
    if let Some(hub) = hub_connection(shared) {
        ports.push(hub.origin.port);
    }
    ports.extend(dns_servers(shared).iter().map(|a| a.port()));
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn hub_connection(shared: &Shared) -> Option<ConnectionConfig> {
    let eff = shared.effective();
    if !eff.hub_enabled() {
        return None;
    }
    crate::models::hub::hub_connection(&eff)
}

/// The whole configuration the gateway gets: connections with credentials
/// read from the keyring now.
pub fn build_config(shared: &Shared) -> GatewayConfig {
    let mut connections = Vec::new();
    for entry in allowed_services(shared) {
        let secret = match entry.credential_name() {
            Some(name) => match shared.credentials.get(name, &entry.origin) {
                Ok(Some(s)) => Some(s),
                // No credential: the connection does not exist ("gated by
                // connection presence"); its nodes fail validation.
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("flow: cannot read the credential of connection '{name}': {e}");
                    continue;
                }
            },
            None => None,
        };
        connections.push(entry.connection_config(secret));
    }
    if let Some(hub) = hub_connection(shared) {
        connections.push(hub);
    }
    let ca_bundle = shared.effective().ca_bundle().map(|p| p.to_path_buf());
    let extra_roots_pem = match ca_bundle {
        Some(path) => match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) => {
                eprintln!(
                    "flow: cannot read the enterprise CA bundle {}: {e}; only the bundled roots are trusted",
                    path.display()
                );
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    GatewayConfig {
        dns_servers: dns_servers(shared),
        extra_roots_pem,
        connections,
    }
}

/// The gateway's bootstrap channel, if it is running and attested.
fn gateway_boot(shared: &Shared) -> Option<Arc<tokio::io::unix::AsyncFd<OwnedFd>>> {
    shared
        .state()
        .comps
        .get(&Component::EgressGateway)
        .filter(|s| s.state == ComponentState::Running)
        .and_then(|s| s.bootstrap.clone())
}

/// Send the current configuration to the gateway (after its start, and
/// whenever connections change).
pub async fn configure(shared: &Arc<Shared>) -> Result<(), GatewayError> {
    let boot = gateway_boot(shared).ok_or_else(|| GatewayError::NotRunning(not_running(shared)))?;
    let config = build_config(shared);
    send_async(&boot, &BrokerMsg::GatewayConfig(config), &[])
        .await
        .map_err(GatewayError::Send)
}

fn not_running(shared: &Shared) -> String {
    match shared.gateway_absent() {
        Some(why) => why,
        None => "it is starting or restarting; try again in a moment ('flow status')".into(),
    }
}

/// Mint an `Egress` capability for `holder` on `connections`: the server end
/// goes to the gateway with its rights, the client end is returned for the
/// caller to pass on (or use, for the broker's own hub downloads).
pub async fn grant(
    shared: &Arc<Shared>,
    holder: Component,
    connections: Vec<String>,
    body_from_ai: bool,
) -> Result<(CapGrant, OwnedFd), GatewayError> {
    let boot = gateway_boot(shared).ok_or_else(|| GatewayError::NotRunning(not_running(shared)))?;
    let (client_end, server_end) =
        proto::fdpass::stream_pair().map_err(|e| GatewayError::Mint(e.to_string()))?;
    let (client_dup, server_dup) = match (client_end.try_clone(), server_end.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => return Err(GatewayError::Mint(e.to_string())),
    };
    let rights = vec![Right::Http];
    let id = {
        let mut st = shared.state();
        let id = st.caps.mint_id();
        st.caps.insert(
            id,
            CapKind::Egress,
            holder,
            Component::EgressGateway,
            rights.clone(),
            (client_dup, server_dup),
        );
        st.caps.prune();
        id
    };
    let egress = EgressRights {
        cap: id,
        connections,
        body_from_ai,
    };
    if let Err(e) = send_async(
        &boot,
        &BrokerMsg::GrantEgress(vec![egress]),
        &[server_end.as_fd()],
    )
    .await
    {
        shared.state().caps.revoke(id);
        shared.audit.revoked(id);
        return Err(GatewayError::Send(e));
    }
    shared.audit.granted(
        id,
        CapKind::Egress,
        holder,
        Component::EgressGateway,
        &rights,
    );
    let grant = CapGrant {
        id,
        kind: CapKind::Egress,
        role: CapRole::Client,
        rights,
    };
    Ok((grant, client_end))
}

/// Revoke an `Egress` capability: shut both ends and tell the gateway.
pub async fn revoke(shared: &Arc<Shared>, id: CapId) {
    if shared.state().caps.revoke(id) {
        shared.audit.revoked(id);
    }
    if let Some(boot) = gateway_boot(shared) {
        let _ = send_async(&boot, &BrokerMsg::Revoke(id), &[]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver  10.0.0.2 \noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
            ]
        );
    }
}
