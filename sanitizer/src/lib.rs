//! PII detection and redaction, used on the egress gateway's outbound path
//! before every cloud call.
//!
//! **Not built yet.** Cloud providers do not exist in this version of Flow, so
//! there is no outbound path for the sanitizer to guard. This crate only
//! reserves the place in the layout; the type that makes "sanitize before
//! every cloud call" a compile-time property arrives with the cloud client.
