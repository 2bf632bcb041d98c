//! Flow's wire protocol. **API boundary:** the types in [`msg`] are the contract
//! between Flow's processes; everything crossing a process boundary is one of them.
//!
//! - [`frame`]: length-prefixed frames with a hard size limit, checked before any
//!   allocation.
//! - [`codec`]: the only module that knows the serialization format (postcard).
//!   The design card names bincode; RUSTSEC-2025-0141 marks every bincode version
//!   unmaintained and 3.0.0 does not compile, so Flow uses postcard.
//! - [`channel`]: typed request/response/stream channels with the version handshake
//!   as the first frame.
//! - [`fdpass`]: capability handles (socket ends) carried with `SCM_RIGHTS`.
//! - [`egress`]: the egress gateway's grants, requests and decision records,
//!   and the path rules and patterns they name ([`egress::path`]).
//! - [`fuzzing`]: the decode entry point shared by the fuzz target and the
//!   corpus replay test.
//!
//! **Invariant:** decoding untrusted bytes never panics and never allocates more
//! than the frame limit.

pub mod bootstrap;
pub mod channel;
pub mod codec;
pub mod egress;
pub mod error;
pub mod fdpass;
pub mod flow;
pub mod frame;
pub mod fuzzing;
pub mod msg;

pub use error::ProtoError;
pub use msg::PROTOCOL_VERSION;
