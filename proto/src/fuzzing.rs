//! The decode entry point shared by the fuzz target (`fuzz/fuzz_targets/decode.rs`)
//! and the corpus replay test (`tests/fuzz_corpus.rs`). Not for production use:
//! it panics when it finds a bug, which is the point.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::{check_handshake, HANDSHAKE_MAX_FRAME};
use crate::codec;
use crate::frame::{self, FrameBuffer, DEFAULT_MAX_FRAME};
use crate::msg::*;

/// Feeds `data` through every decoder: as a stream of frames (with the pure,
/// the unbuffered and the buffered readers, which must agree), and each frame
/// payload (and `data` itself) as every message type and as a handshake.
/// Anything that decodes must re-encode and decode to the same value.
///
/// Must never panic; a panic is a bug in this crate.
pub fn decode_any(data: &[u8]) {
    for max in [DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME] {
        let frames = frames_pure(data, max);
        for payload in &frames {
            decode_payload(payload);
        }
        let unbuffered = frames_unbuffered(data, max);
        assert_eq!(frames, unbuffered, "frame readers disagree (unbuffered)");
        let buffered = frames_buffered(data, max);
        assert_eq!(frames, buffered, "frame readers disagree (buffered)");
    }
    decode_payload(data);
}

fn frames_pure(mut data: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Ok((payload, consumed)) = frame::decode_frame(data, max) {
        assert!(
            consumed == frame::HEADER_LEN + payload.len() && consumed <= data.len(),
            "decode_frame consumed {consumed} bytes for a {}-byte payload of a {}-byte buffer",
            payload.len(),
            data.len()
        );
        frames.push(payload.to_vec());
        data = &data[consumed..];
    }
    frames
}

fn frames_unbuffered(mut data: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while let Ok(payload) = frame::read_frame(&mut data, max) {
        frames.push(payload);
    }
    frames
}

fn frames_buffered(mut data: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut reader = FrameBuffer::new();
    while let Ok(payload) = reader.read_sync(&mut data, max) {
        frames.push(payload);
    }
    frames
}

fn decode_payload(payload: &[u8]) {
    for service in [
        ServiceKind::Bootstrap,
        ServiceKind::Reasoning,
        ServiceKind::Control,
    ] {
        if let Ok(handshake) = check_handshake(payload, service) {
            assert_eq!(
                handshake,
                Handshake::new(service),
                "accepted a bad handshake"
            );
        }
    }
    round_trip::<Handshake>(payload);
    round_trip::<ServiceKind>(payload);
    round_trip::<Component>(payload);
    round_trip::<CapId>(payload);
    round_trip::<CapKind>(payload);
    round_trip::<CapRole>(payload);
    round_trip::<Right>(payload);
    round_trip::<CapGrant>(payload);
    round_trip::<SelfReport>(payload);
    round_trip::<ChildMsg>(payload);
    round_trip::<BrokerMsg>(payload);
    round_trip::<ReasoningRequest>(payload);
    round_trip::<ReasoningResponse>(payload);
    round_trip::<ServiceError>(payload);
    round_trip::<ControlRequest>(payload);
    round_trip::<ControlResponse>(payload);
    round_trip::<ControlError>(payload);
    round_trip::<CapRow>(payload);
    round_trip::<BrokerStatus>(payload);
    round_trip::<ComponentStatus>(payload);
    round_trip::<ComponentState>(payload);
    round_trip::<AttestedState>(payload);
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(payload: &[u8]) {
    let Ok(value) = codec::decode::<T>(payload) else {
        return;
    };
    let bytes = match codec::encode(&value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("re-encoding a decoded {value:?} failed: {e}"),
    };
    match codec::decode::<T>(&bytes) {
        Ok(again) => assert_eq!(again, value, "round trip changed the value"),
        Err(e) => panic!("decoding a re-encoded {value:?} failed: {e}"),
    }
}
