//! Library half of `flow-reasoning-worker`: the pieces the binary composes.
//!
//! - [`llama`]: a small, strict HTTP/1.1 + SSE client for llama-server over an
//!   already-connected unix stream. **Invariant:** nothing in this crate calls
//!   `socket` or `connect`; every connection arrives from the broker.

pub mod llama;
