//! The capability table: every channel the broker minted, who holds which
//! end, with which rights, since when. **Invariant:** the broker keeps a
//! duplicate of both ends of every capability so it can revoke it with
//! `shutdown(SHUT_RDWR)` whatever the holders do.

use proto::msg::{CapId, CapKind, CapRow, Component, Right};
use std::os::fd::OwnedFd;

#[derive(Debug)]
pub struct CapEntry {
    pub row: CapRow,
    /// The broker's duplicates of the client's and the server's ends.
    ends: Option<(OwnedFd, OwnedFd)>,
}

#[derive(Debug, Default)]
pub struct CapTable {
    next: u64,
    entries: Vec<CapEntry>,
}

impl CapTable {
    pub fn mint_id(&mut self) -> CapId {
        self.next += 1;
        CapId(self.next)
    }

    pub fn insert(
        &mut self,
        id: CapId,
        kind: CapKind,
        client: Component,
        server: Component,
        rights: Vec<Right>,
        ends: (OwnedFd, OwnedFd),
    ) {
        let granted_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.entries.push(CapEntry {
            row: CapRow {
                id,
                kind,
                client,
                server,
                rights,
                granted_at,
                revoked: false,
            },
            ends: Some(ends),
        });
    }

    /// Live capability of `kind`, if any.
    pub fn live(&self, kind: CapKind) -> Option<CapId> {
        self.entries
            .iter()
            .find(|e| e.row.kind == kind && !e.row.revoked)
            .map(|e| e.row.id)
    }

    /// Shut the channel down: both holders' next read returns EOF.
    /// Returns false if there is no such live capability.
    pub fn revoke(&mut self, id: CapId) -> bool {
        let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.row.id == id && !e.row.revoked)
        else {
            return false;
        };
        if let Some((a, b)) = e.ends.take() {
            let _ = rustix::net::shutdown(&a, rustix::net::Shutdown::Both);
            let _ = rustix::net::shutdown(&b, rustix::net::Shutdown::Both);
        }
        e.row.revoked = true;
        true
    }

    /// Ids of every live capability of `kind`.
    pub fn live_of_kind(&self, kind: CapKind) -> Vec<CapId> {
        self.entries
            .iter()
            .filter(|e| e.row.kind == kind && !e.row.revoked)
            .map(|e| e.row.id)
            .collect()
    }

    pub fn kind_of(&self, id: CapId) -> Option<CapKind> {
        self.entries
            .iter()
            .find(|e| e.row.id == id)
            .map(|e| e.row.kind)
    }

    /// Ids of live capabilities that `component` holds an end of.
    pub fn held_by(&self, component: Component) -> Vec<CapId> {
        self.entries
            .iter()
            .filter(|e| !e.row.revoked && (e.row.client == component || e.row.server == component))
            .map(|e| e.row.id)
            .collect()
    }

    /// Rows for `flow caps`; revoked rows are kept for the record, and the
    /// table keeps at most the last 256 of them.
    pub fn rows(&self) -> Vec<CapRow> {
        self.entries.iter().map(|e| e.row.clone()).collect()
    }

    pub fn prune(&mut self) {
        let revoked = self.entries.iter().filter(|e| e.row.revoked).count();
        if revoked > 256 {
            let mut drop_n = revoked - 256;
            self.entries.retain(|e| {
                if e.row.revoked && drop_n > 0 {
                    drop_n -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}
