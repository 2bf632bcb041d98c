//! The egress gateway: the only process that may open internet
//! connections, and only for the connections its capabilities name.
//!
//! **Invariant:** a holder names a connection and a path, never a host. The
//! origin, methods, paths, limits, allowed CIDRs and credential come from the
//! broker's configuration; the rights of each capability come from the
//! broker's grant. Every request is resolved once, every address is
//! classified against one committed table ([`special_purpose`]), and only a
//! checked address is dialled.
//!
//! Modules: [`gateway`] (bootstrap messages, capability serving, decision
//! records, the order of the checks), [`policy`] (connection validation,
//! path, method and header checks), [`special_purpose`] and [`cidr`] (the
//! address table), [`host`] (names and numeric spellings), [`dns`] (the
//! resolver over TCP), [`tls`] (rustls), [`fetch`] (dial, TLS, HTTP/1.1,
//! redirects), [`rate`] (token buckets).

pub mod cidr;
pub mod dns;
pub mod fetch;
pub mod gateway;
pub mod host;
pub mod policy;
pub mod pool;
pub mod rate;
pub mod special_purpose;
pub mod tls;
