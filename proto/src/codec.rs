//! The serialization format. **Invariant:** this is the only module that names
//! postcard; swapping the format means changing this file (and bumping
//! [`crate::PROTOCOL_VERSION`]).
//!
//! Why decoding hostile bytes cannot allocate much: postcard reports a
//! sequence's declared length as its size hint only when the remaining input
//! could hold that many elements, and serde's `Vec`/`String` impls cap
//! preallocation from size hints at 1 MiB ("cautious" hints). Strings and byte
//! strings are borrowed from the input before being copied, so their length is
//! bounded by the input. A declared length of 2^60 therefore fails as soon as
//! the input runs out, after allocating nothing beyond the input's size.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ProtoError;
use crate::frame::{self, HEADER_LEN};

fn type_name<T: ?Sized>() -> &'static str {
    std::any::type_name::<T>()
}

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ProtoError> {
    postcard::to_stdvec(value).map_err(|e| ProtoError::Encode {
        type_name: type_name::<T>(),
        reason: e.to_string(),
    })
}

/// Encodes a value as a complete frame (header and payload) in one buffer,
/// checking the payload against `max`.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Vec<u8>, ProtoError> {
    let mut buf =
        postcard::to_extend(value, vec![0u8; HEADER_LEN]).map_err(|e| ProtoError::Encode {
            type_name: type_name::<T>(),
            reason: e.to_string(),
        })?;
    let header = frame::encode_header(buf.len() - HEADER_LEN, max)?;
    buf[..HEADER_LEN].copy_from_slice(&header);
    Ok(buf)
}

/// Decodes a value that must fill `bytes` exactly: trailing bytes are an error,
/// since a peer that appends data is either buggy or smuggling.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    let (value, rest) = take::<T>(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(ProtoError::TrailingBytes {
            type_name: type_name::<T>(),
            len: bytes.len(),
            extra: rest.len(),
        })
    }
}

/// Decodes a value from the start of `bytes`, returning the unread rest.
/// Only for reading a version-independent prefix (the handshake's magic and
/// version) before the whole payload.
pub(crate) fn take<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), ProtoError> {
    postcard::take_from_bytes::<T>(bytes).map_err(|e| ProtoError::Decode {
        type_name: type_name::<T>(),
        len: bytes.len(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ControlRequest, ReasoningRequest};

    #[test]
    fn round_trip() {
        let req = ReasoningRequest::Ping {
            id: 7,
            payload: vec![1, 2, 3],
        };
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<ReasoningRequest>(&bytes).unwrap(), req);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        // Variant index 200 does not exist.
        let err = decode::<ControlRequest>(&[200]).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { len: 1, .. }), "{err:?}");
        let err = decode::<ControlRequest>(&[]).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { len: 0, .. }), "{err:?}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&ControlRequest::Status).unwrap();
        bytes.extend_from_slice(&[0, 0]);
        let err = decode::<ControlRequest>(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ProtoError::TrailingBytes {
                    len: 3,
                    extra: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// A varint length of 2^60 must fail on the missing input, not try to
    /// reserve 2^60 bytes (which would abort the process).
    #[test]
    fn huge_declared_length_fails_fast() {
        let mut bytes = Vec::new();
        let mut n: u64 = 1 << 60;
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        bytes.extend_from_slice(&[1, 2, 3]);

        let start = std::time::Instant::now();
        let err = decode::<Vec<u8>>(&bytes).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err:?}");
        let err = decode::<String>(&bytes).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err:?}");
        let err = decode::<Vec<(String, u64)>>(&bytes).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err:?}");

        // Inside a real message: ReasoningRequest::Ping { id: 1, payload: <2^60 bytes> }.
        let mut msg = vec![0, 1];
        msg.extend_from_slice(&bytes);
        let err = decode::<ReasoningRequest>(&msg).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn encode_frame_matches_frame_layer() {
        let req = ControlRequest::Ping {
            count: 3,
            payload: vec![9; 10],
        };
        let framed = encode_frame(&req, 64).unwrap();
        let (payload, consumed) = frame::decode_frame(&framed, 64).unwrap();
        assert_eq!(consumed, framed.len());
        assert_eq!(payload, encode(&req).unwrap().as_slice());
        let err = encode_frame(&req, 4).unwrap_err();
        assert!(
            matches!(err, ProtoError::FrameTooLarge { max: 4, .. }),
            "{err:?}"
        );
    }
}
