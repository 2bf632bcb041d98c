//! Idle upstream connections, kept for reuse like any forward proxy does.
//!
//! A connection is pooled under the connection id it was opened for (one
//! origin, one credential) and the checked address it was dialled to. A
//! request reuses one only if that address is among the addresses its own
//! resolution just checked, so reuse never skips the check: after a
//! rebinding the old connection is simply not taken. The pool is emptied on
//! every configuration change (origins, CIDRs or CA roots may have changed).

use crate::fetch::Upstream;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Idle connections kept per connection id.
pub const MAX_IDLE_PER_CONNECTION: usize = 8;
/// An idle connection older than this is closed instead of reused.
pub const MAX_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Pool {
    idle: HashMap<String, Vec<Upstream>>,
}

impl Pool {
    /// An open, ready connection for `connection` to one of `checked`.
    pub fn take(&mut self, connection: &str, checked: &[IpAddr]) -> Option<Upstream> {
        let list = self.idle.get_mut(connection)?;
        list.retain(|u| !u.sender.is_closed() && u.idle_since.elapsed() < MAX_IDLE);
        let i = list
            .iter()
            .rposition(|u| checked.contains(&u.addr) && u.sender.is_ready())?;
        Some(list.swap_remove(i))
    }

    pub fn put(&mut self, connection: &str, mut u: Upstream) {
        if u.sender.is_closed() {
            return;
        }
        u.idle_since = std::time::Instant::now();
        let list = self.idle.entry(connection.to_string()).or_default();
        if list.len() >= MAX_IDLE_PER_CONNECTION {
            list.remove(0);
        }
        list.push(u);
    }

    pub fn clear(&mut self) {
        self.idle.clear();
    }
}
