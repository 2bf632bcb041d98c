//! Control-socket requests about settings and connection credentials:
//! `flow settings set`, `flow connections add | list | rm`.
//!
//! **Invariant:** a secret arrives here from the CLI over the control socket
//! (same uid, checked by the listener) and goes only into the keyring; it
//! is never logged, audited or answered back. Audit records carry the
//! connection's name and the store, nothing else.

use super::Shared;
use crate::credentials::CredentialError;
use crate::policy::{PolicyError, Source};
use proto::egress::{Origin, Secret};
use proto::msg::{ConnectionList, ConnectionRow, ControlError, ControlResponse};
use std::sync::Arc;

fn failed(msg: String) -> ControlResponse {
    ControlResponse::Error(ControlError::Failed(msg))
}

/// `flow settings set KEY VALUE`: a runtime change (until the broker
/// stops). A key the enterprise policy locks is refused and audited.
pub async fn set_setting(shared: &Arc<Shared>, key: String, value: String) -> ControlResponse {
    let r = shared.effective().set(&key, &value, Source::Runtime);
    match r {
        Ok(()) => {
            // The gateway's connections, name servers and CA follow the
            // settings; it is fine if no gateway runs.
            let _ = super::gateway::configure(shared).await;
            ControlResponse::Ok
        }
        Err(e) => {
            if matches!(e, PolicyError::Locked { .. }) {
                shared.audit.setting_refused(
                    crate::policy::audit_key(&key).as_str(),
                    audit::SettingSource::ControlSocket,
                );
            }
            failed(e.to_string())
        }
    }
}

/// The origin connection `name`'s credential is bound to: that of the
/// catalog entries whose credential name is `name` (an entry's credential
/// name defaults to its id). They must agree: a credential is bound to one
/// origin.
fn origin_of(shared: &Shared, name: &str) -> Result<Origin, String> {
    let mut found: Vec<(&str, &Origin)> = Vec::new();
    for e in shared.services.entries() {
        if e.credential_name() == Some(name) && !found.iter().any(|(_, o)| **o == e.origin) {
            found.push((e.id.as_str(), &e.origin));
        }
    }
    match found.as_slice() {
        [] => Err(format!(
            "no entry of the service catalog uses the connection '{name}': add one to {} (see docs/services.md), then run 'flow down' and 'flow up'",
            shared.services.user_file().display()
        )),
        [(_, origin)] => Ok((*origin).clone()),
        [(a, oa), (b, ob), ..] => Err(format!(
            "catalog entries '{a}' ({oa}) and '{b}' ({ob}) both use the credential '{name}', but a credential is bound to one origin: give one of them its own 'credential' name"
        )),
    }
}

/// `flow connections add NAME`.
pub async fn connection_add(shared: &Arc<Shared>, name: String, secret: Secret) -> ControlResponse {
    if let Err(e) = audit::ConnectionName::parse(&name) {
        return failed(e.to_string());
    }
    let origin = match origin_of(shared, &name) {
        Ok(o) => o,
        Err(msg) => return failed(msg),
    };
    let shared2 = shared.clone();
    let (name2, origin2) = (name.clone(), origin.clone());
    let r = tokio::task::spawn_blocking(move || shared2.credentials.add(&name2, &origin2, &secret))
        .await;
    match r {
        Ok(Ok(())) => {
            let store = shared.credentials.kind();
            shared.audit.connection_added(&name, store.audit());
            // A running gateway learns the new credential now.
            let _ = super::gateway::configure(shared).await;
            ControlResponse::Connections(ConnectionList {
                store: store.as_str().into(),
                store_note: shared.credentials.note().into(),
                rows: vec![ConnectionRow {
                    name,
                    origin: origin.to_string(),
                    present: true,
                    in_catalog: true,
                }],
            })
        }
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => ControlResponse::Error(ControlError::Refused),
    }
}

/// `flow connections list`: every connection the catalog names and every
/// credential stored, with its origin and whether it is present.
pub async fn connection_list(shared: &Arc<Shared>) -> ControlResponse {
    let shared2 = shared.clone();
    let stored = tokio::task::spawn_blocking(move || shared2.credentials.list()).await;
    let store = shared.credentials.kind();
    let (stored, store_note) = match stored {
        Ok(Ok(list)) => (list, shared.credentials.note().to_string()),
        Ok(Err(e)) => (Vec::new(), unavailable_note(&e)),
        Err(_) => return ControlResponse::Error(ControlError::Refused),
    };
    let mut rows: Vec<ConnectionRow> = Vec::new();
    for e in shared.services.entries() {
        let Some(name) = e.credential_name() else {
            continue;
        };
        let origin = e.origin.to_string();
        if rows.iter().any(|r| r.name == name && r.origin == origin) {
            continue;
        }
        let present = stored.iter().any(|(n, o)| n == name && *o == origin);
        rows.push(ConnectionRow {
            name: name.to_string(),
            origin,
            present,
            in_catalog: true,
        });
    }
    for (name, origin) in stored {
        if !rows.iter().any(|r| r.name == name && r.origin == origin) {
            rows.push(ConnectionRow {
                name,
                origin,
                present: true,
                in_catalog: false,
            });
        }
    }
    rows.sort_by(|a, b| (&a.name, &a.origin).cmp(&(&b.name, &b.origin)));
    ControlResponse::Connections(ConnectionList {
        store: store.as_str().into(),
        store_note,
        rows,
    })
}

fn unavailable_note(e: &CredentialError) -> String {
    format!("the credential store cannot be read: {e}")
}

/// `flow connections rm NAME`.
pub async fn connection_remove(shared: &Arc<Shared>, name: String) -> ControlResponse {
    if let Err(e) = audit::ConnectionName::parse(&name) {
        return failed(e.to_string());
    }
    let shared2 = shared.clone();
    let name2 = name.clone();
    let r = tokio::task::spawn_blocking(move || shared2.credentials.remove(&name2)).await;
    let store = shared.credentials.kind();
    match r {
        Ok(Ok(true)) => {
            shared.audit.connection_removed(&name, store.audit());
            // The gateway forgets it; nodes using it fail validation.
            let _ = super::gateway::configure(shared).await;
            ControlResponse::Ok
        }
        Ok(Ok(false)) => failed(format!(
            "connection '{name}' has no credential in the {} store: see 'flow connections list'",
            store.as_str()
        )),
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => ControlResponse::Error(ControlError::Refused),
    }
}
