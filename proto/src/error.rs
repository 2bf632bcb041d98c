//! The one error type of the wire layer.
//!
//! Every variant means the channel it happened on can no longer be trusted:
//! callers close the channel (and audit the event) instead of retrying on it.
//! The only exception is [`ProtoError::Io`] carrying `WouldBlock` on a
//! non-blocking socket, see [`ProtoError::is_would_block`].

use crate::msg::ServiceKind;

/// Everything that can go wrong framing, encoding, decoding, handshaking or
/// passing file descriptors.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer closed the connection cleanly, at a frame boundary.
    #[error("the peer closed the channel: reconnect or shut this side down")]
    Closed,

    /// The connection ended inside a frame (in its header or its body).
    #[error(
        "the channel ended {got} bytes into a {expected}-byte frame {part}: the peer died or \
         is misbehaving, and the channel was closed"
    )]
    Truncated {
        /// `"header"` or `"body"`.
        part: &'static str,
        /// Bytes of `part` received.
        got: usize,
        /// Bytes of `part` expected.
        expected: usize,
    },

    /// A frame declared (or a sender offered) more bytes than the limit.
    #[error(
        "frame of {len} bytes exceeds the {max}-byte limit: the peer is misbehaving and was \
         disconnected"
    )]
    FrameTooLarge {
        /// The declared or offered payload length.
        len: u64,
        /// The limit in force.
        max: usize,
    },

    /// A frame with a zero length prefix; every message encodes to at least one byte.
    #[error("zero-length frame: the peer is misbehaving and was disconnected")]
    EmptyFrame,

    /// A datagram's length prefix disagrees with the datagram's size.
    #[error(
        "frame header declares {declared} payload bytes but the datagram carries {actual}: \
         the peer is misbehaving and was disconnected"
    )]
    LengthMismatch {
        /// Payload length declared by the 4-byte prefix.
        declared: usize,
        /// Payload bytes actually present after the prefix.
        actual: usize,
    },

    /// A value could not be encoded.
    #[error("cannot encode {type_name}: {reason}: this is a bug in the sender, please report it")]
    Encode {
        /// The Rust type being encoded.
        type_name: &'static str,
        /// The codec's explanation.
        reason: String,
    },

    /// Bytes from the peer are not a valid encoding of the expected type.
    #[error(
        "cannot decode {type_name} from a {len}-byte payload: {reason}: the peer is \
         misbehaving or speaks another protocol version, and was disconnected"
    )]
    Decode {
        /// The Rust type expected.
        type_name: &'static str,
        /// Payload length.
        len: usize,
        /// The codec's explanation.
        reason: String,
    },

    /// A valid value followed by extra bytes in the same frame.
    #[error(
        "{extra} trailing bytes after a {type_name} in a {len}-byte payload: the peer is \
         misbehaving or speaks another protocol version, and was disconnected"
    )]
    TrailingBytes {
        /// The Rust type decoded.
        type_name: &'static str,
        /// Payload length.
        len: usize,
        /// Bytes left over.
        extra: usize,
    },

    /// The first frame did not start with the Flow magic.
    #[error(
        "handshake magic is {got:02x?}, expected {expected:02x?}: the peer is not a Flow \
         process; check the socket path"
    )]
    BadMagic {
        /// Magic received.
        got: [u8; 4],
        /// Magic expected ([`crate::msg::MAGIC`]).
        expected: [u8; 4],
    },

    /// The peer speaks another protocol version.
    #[error(
        "peer speaks protocol version {theirs}, this side speaks {ours}: install matching \
         Flow binaries and restart the broker ('flow down', then 'flow up')"
    )]
    VersionMismatch {
        /// [`crate::PROTOCOL_VERSION`].
        ours: u16,
        /// What the peer announced.
        theirs: u16,
    },

    /// The peer offers a different service on this channel.
    #[error(
        "peer offers the {got:?} service on a channel opened for {expected:?}: the wrong \
         socket or capability was connected; check the socket path or capability grant"
    )]
    WrongService {
        /// Service this side opened the channel for.
        expected: ServiceKind,
        /// Service the peer announced.
        got: ServiceKind,
    },

    /// Too many file descriptors for one message.
    #[error(
        "{count} file descriptors in one message exceed the limit of {max}: split the grant \
         over several messages"
    )]
    TooManyFds {
        /// Descriptors offered.
        count: usize,
        /// [`crate::fdpass::MAX_FDS_PER_MESSAGE`].
        max: usize,
    },

    /// The kernel truncated a received datagram (`MSG_TRUNC`).
    #[error(
        "received datagram is larger than the {max}-byte frame limit and was truncated: the \
         peer is misbehaving and was disconnected; received descriptors were closed"
    )]
    DatagramTruncated {
        /// The frame limit in force.
        max: usize,
    },

    /// The kernel truncated ancillary data (`MSG_CTRUNC`).
    #[error(
        "received more file descriptors than the limit of {max} (control data truncated): the \
         peer is misbehaving and was disconnected; received descriptors were closed"
    )]
    FdsTruncated {
        /// [`crate::fdpass::MAX_FDS_PER_MESSAGE`].
        max: usize,
    },

    /// The operating system reported an error.
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done, e.g. `"reading a frame"`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ProtoError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(op: &'static str, source: std::io::Error) -> ProtoError {
        ProtoError::Io { op, source }
    }

    /// True for an I/O error that only means "not ready yet" on a non-blocking
    /// socket (`EAGAIN`); the operation can be retried once the socket is ready.
    /// Every other error leaves the channel unusable.
    pub fn is_would_block(&self) -> bool {
        matches!(self, ProtoError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock)
    }
}
