//! The broker's audit log: append-only, hash-chained, metadata only.
//!
//! # Format
//!
//! One record per line:
//!
//! ```text
//! <64 hex sha256> <compact JSON body>\n
//! body = {"seq":N,"time":"2025-01-02T03:04:05.678Z","prev":"<64 hex>","overrides":[…],"event":{…}}
//! hash = sha256(prev hash bytes || body bytes as written)
//! ```
//!
//! `seq` starts at 1 and grows by one; record 1's `prev` is 64 zeros. The hash
//! covers the raw bytes of the body, not a re-serialization, so any change to a
//! line (its hash, the separator, the body or its newline) breaks verification at
//! that line while the lines before it still verify. The verifier reads each line
//! strictly: UTF-8, 64 lowercase hex digits, one space at byte 64, a body that is a
//! [`Record`] with no unknown field, `seq` = previous + 1, `prev` = previous hash,
//! and the hash itself.
//!
//! **Invariant:** records are a closed set of [`Event`]s with no free-text field:
//! every field is an enum of this crate, an id, a number or a hex digest. Ids
//! that are strings ([`ModelId`], [`Version`], [`NodeId`]) are newtypes whose
//! parsing enforces a strict charset, on write and on read. Prompts,
//! spool content, paths and error messages cannot be written here. This crate
//! depends on no other Flow crate; the broker maps its types to these.
//!
//! Every record carries `overrides`: the sandbox layers an operator override
//! waived while it was written (empty normally), so a waiver cannot hide between
//! the records it affects.
//!
//! # The chain head
//!
//! A hash chain alone proves that nothing inside it changed, not that nothing was
//! cut from its end. After each append the [`Writer`] replaces `audit.head` (beside
//! `audit.log`: the log's name with the extension `head`) with the last record's
//! sequence number and hash, and [`verify`] holds the log against it:
//! fewer records than the head names is [`FailureKind::Truncated`]. A head one
//! record behind is accepted (the writer stopped between the two writes).
//!
//! When the broker runs as root, the log's inode is made append-only
//! (`FS_IOC_SETFLAGS` with `FS_APPEND_FL`, i.e. `chattr +a`). Once the broker has
//! dropped `CAP_LINUX_IMMUTABLE`, neither it nor anything else without that
//! capability can truncate, rewrite, rename or delete the log: a compromised
//! broker can only append. [`Writer::head_protection`] says whether that
//! protection is in force.
//!
//! # What this does not defend against
//!
//! There is no secret in the chain. A process running under the log's uid (the
//! broker's user, when the broker is not root, or anything that user runs) can
//! rewrite the log and recompute every hash and the head file consistently, and
//! [`verify`] will pass. Without the append-only flag it can also delete the log
//! and its head. The head file only catches accidents and naive truncation. The
//! defenses against a same-uid attacker are running the broker as root with the
//! append-only flag (above), and forwarding records as they are written to a
//! SIEM that the machine's users cannot reach back into (planned). Full root
//! (with `CAP_LINUX_IMMUTABLE`) can always clear the flag.
//!
//! # Durability
//!
//! Each record is written with one `write` on an `O_APPEND` descriptor and made
//! durable with `fdatasync` before [`Writer::append`] returns; the head file is
//! then replaced atomically (write, sync, rename, sync the directory). A failed
//! write stops the writer: every later append fails until the log is reopened,
//! which verifies it and refuses a broken log.

mod error;
mod event;
mod id;
mod record;
mod verify;
mod writer;

pub use error::AuditError;
pub use event::{
    AiFailure, AiOutcome, AttestCheck, CapKind, Component, Digest, EgressDenial, EgressOutcome,
    Event, HttpMethod, KeyStore, Layer, Peer, ProtoErrorKind, PullFailure, RefusalReason, Right,
    SettingSource, SkipReason, Waiver,
};
pub use id::{
    ConnectionName, Host, IdError, ModelId, NodeId, RunId, SettingKey, UrlPath, Version, MAX_ID_LEN,
};
pub use record::{chain_hash, ChainHead, LineError, Record, Summary, Timestamp, MAX_LINE};
pub use verify::{head_path, read_records, verify, Failure, FailureKind, HeadCheck, VerifyReport};
pub use writer::{HeadProtection, Writer};
