//! Property tests: hostile bytes never panic the decoders, every message
//! round-trips, and oversized lengths are rejected before allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::collection::vec;
use proptest::prelude::*;
use proto::codec::{decode, encode, encode_frame};
use proto::frame::{decode_frame, read_frame, DEFAULT_MAX_FRAME};
use proto::msg::*;
use proto::ProtoError;

/// Records the largest allocation made by the current thread, so a property
/// can assert that a call allocated nothing large.
struct TrackingAlloc;

thread_local! {
    static LARGEST_ALLOC: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with` fails only during thread teardown; nothing to record then.
    let _ = LARGEST_ALLOC.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every method forwards to `System` unchanged; recording the size
// touches only a const-initialized thread-local, which never allocates.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: TrackingAlloc = TrackingAlloc;

/// The largest allocation `f` made on this thread.
fn largest_alloc_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST_ALLOC.with(|l| l.set(0));
    let r = f();
    (r, LARGEST_ALLOC.with(|l| l.get()))
}

/// The allocation properties below would pass vacuously if the tracker saw
/// nothing; it must see a known allocation and a hostile decode must stay small.
#[test]
fn allocation_tracker_works() {
    let (v, largest) = largest_alloc_during(|| std::hint::black_box(vec![0u8; 5000]));
    assert_eq!(v.len(), 5000);
    assert!(largest >= 5000, "{largest}");

    // ReasoningRequest::Ping { id: 0, payload: <declared 2^60 bytes> }.
    let hostile = [
        0u8, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 2,
    ];
    let (res, largest) = largest_alloc_during(|| decode::<ReasoningRequest>(&hostile));
    assert!(matches!(res, Err(ProtoError::Decode { .. })), "{res:?}");
    assert!(largest < 1024, "{largest}");
}

fn right() -> impl Strategy<Value = Right> {
    prop_oneof![Just(Right::Ping), Just(Right::Infer)]
}

fn component() -> impl Strategy<Value = Component> {
    prop_oneof![
        Just(Component::Executor),
        Just(Component::ReasoningWorker),
        Just(Component::EgressGateway),
        Just(Component::LlamaServer),
    ]
}

fn cap_grant() -> impl Strategy<Value = CapGrant> {
    (
        any::<u64>(),
        prop_oneof![Just(CapRole::Client), Just(CapRole::Server)],
        vec(right(), 0..4),
    )
        .prop_map(|(id, role, rights)| CapGrant {
            id: CapId(id),
            kind: CapKind::Reasoning,
            role,
            rights,
        })
}

fn self_report() -> impl Strategy<Value = SelfReport> {
    (
        any::<String>(),
        "[0-9a-f]{64}",
        any::<u32>(),
        vec(any::<String>(), 0..3),
    )
        .prop_map(
            |(profile, filter_sha256, landlock_abi, waivers)| SelfReport {
                profile,
                filter_sha256,
                landlock_abi,
                waivers,
            },
        )
}

fn child_msg() -> impl Strategy<Value = ChildMsg> {
    prop_oneof![
        (component(), self_report())
            .prop_map(|(component, report)| ChildMsg::Hello { component, report }),
        Just(ChildMsg::Ready),
    ]
}

fn broker_msg() -> impl Strategy<Value = BrokerMsg> {
    prop_oneof![
        vec(cap_grant(), 0..4).prop_map(BrokerMsg::Grant),
        any::<u64>().prop_map(|id| BrokerMsg::Revoke(CapId(id))),
        Just(BrokerMsg::Shutdown),
    ]
}

fn reasoning_request() -> impl Strategy<Value = ReasoningRequest> {
    (any::<u64>(), vec(any::<u8>(), 0..512))
        .prop_map(|(id, payload)| ReasoningRequest::Ping { id, payload })
}

fn service_error() -> impl Strategy<Value = ServiceError> {
    prop_oneof![
        right().prop_map(ServiceError::NotPermitted),
        Just(ServiceError::BadRequest),
        Just(ServiceError::Unavailable),
    ]
}

fn reasoning_response() -> impl Strategy<Value = ReasoningResponse> {
    prop_oneof![
        (any::<u64>(), vec(any::<u8>(), 0..512))
            .prop_map(|(id, payload)| ReasoningResponse::Pong { id, payload }),
        (any::<u64>(), service_error())
            .prop_map(|(id, error)| ReasoningResponse::Error { id, error }),
    ]
}

fn control_request() -> impl Strategy<Value = ControlRequest> {
    prop_oneof![
        Just(ControlRequest::Status),
        Just(ControlRequest::Caps),
        any::<u64>().prop_map(|id| ControlRequest::Revoke(CapId(id))),
        (any::<u32>(), vec(any::<u8>(), 0..512))
            .prop_map(|(count, payload)| ControlRequest::Ping { count, payload }),
        Just(ControlRequest::Down),
    ]
}

fn cap_row() -> impl Strategy<Value = CapRow> {
    (
        any::<u64>(),
        component(),
        component(),
        vec(right(), 0..3),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(id, client, server, rights, granted_at, revoked)| CapRow {
            id: CapId(id),
            kind: CapKind::Reasoning,
            client,
            server,
            rights,
            granted_at,
            revoked,
        })
}

fn control_response() -> impl Strategy<Value = ControlResponse> {
    prop_oneof![
        vec(cap_row(), 0..4).prop_map(ControlResponse::Caps),
        (any::<u32>(), any::<u64>())
            .prop_map(|(count, total_nanos)| ControlResponse::Pinged { count, total_nanos }),
        Just(ControlResponse::Ok),
        any::<u64>()
            .prop_map(|id| ControlResponse::Error(ControlError::UnknownCapability(CapId(id)))),
        component().prop_map(|c| ControlResponse::Error(ControlError::ComponentUnavailable(c))),
    ]
}

/// Encode, frame, unframe, decode: must give back the same value.
fn assert_round_trip<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        &decode::<T>(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?,
        msg
    );

    let frame =
        encode_frame(msg, DEFAULT_MAX_FRAME).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (payload, consumed) =
        decode_frame(&frame, DEFAULT_MAX_FRAME).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(consumed, frame.len());
    prop_assert_eq!(payload, bytes.as_slice());

    // Any strict prefix of the frame is a truncation, never a value.
    for cut in [0, 1, frame.len() / 2, frame.len() - 1] {
        let truncated = matches!(
            decode_frame(&frame[..cut], DEFAULT_MAX_FRAME),
            Err(ProtoError::Truncated { .. })
        );
        prop_assert!(truncated, "cut at {}", cut);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        proto::fuzzing::decode_any(&bytes);
    }

    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(bytes in vec(any::<u8>(), 1..2048)) {
        let frame = proto::frame::encode_frame(&bytes, DEFAULT_MAX_FRAME).map_err(|e| TestCaseError::fail(e.to_string()))?;
        proto::fuzzing::decode_any(&frame);
    }

    #[test]
    fn reasoning_request_round_trips(msg in reasoning_request()) {
        assert_round_trip(&msg)?;
    }

    #[test]
    fn reasoning_response_round_trips(msg in reasoning_response()) {
        assert_round_trip(&msg)?;
    }

    #[test]
    fn control_request_round_trips(msg in control_request()) {
        assert_round_trip(&msg)?;
    }

    #[test]
    fn control_response_round_trips(msg in control_response()) {
        assert_round_trip(&msg)?;
    }

    #[test]
    fn child_msg_round_trips(msg in child_msg()) {
        assert_round_trip(&msg)?;
    }

    #[test]
    fn broker_msg_round_trips(msg in broker_msg()) {
        assert_round_trip(&msg)?;
    }

    #[test]
    fn encoded_messages_with_extra_bytes_are_rejected(msg in control_request(), extra in vec(any::<u8>(), 1..16)) {
        let mut bytes = encode(&msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
        bytes.extend_from_slice(&extra);
        let err = decode::<ControlRequest>(&bytes);
        prop_assert!(err.is_err(), "decoded {:?} with {} extra bytes", err, extra.len());
    }

    /// A header declaring more than `max` is rejected on the header alone:
    /// no allocation of the declared size (or anything else large) happens.
    #[test]
    fn oversized_lengths_rejected_without_allocation(
        max in 1usize..=DEFAULT_MAX_FRAME,
        excess in 1u64..=u64::from(u32::MAX),
        body in vec(any::<u8>(), 0..64),
    ) {
        let len = (max as u64 + excess).min(u64::from(u32::MAX));
        prop_assume!(len > max as u64);
        let mut stream = (len as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&body);

        let (res, largest) = largest_alloc_during(|| decode_frame(&stream, max).map(|(p, _)| p.len()));
        let too_large = matches!(res, Err(ProtoError::FrameTooLarge { len: l, max: m }) if l == len && m == max);
        prop_assert!(too_large, "{:?}", res);
        prop_assert_eq!(largest, 0);

        let (res, largest) = largest_alloc_during(|| read_frame(&mut stream.as_slice(), max).map(|p| p.len()));
        let too_large = matches!(res, Err(ProtoError::FrameTooLarge { len: l, max: m }) if l == len && m == max);
        prop_assert!(too_large, "{:?}", res);
        prop_assert_eq!(largest, 0);
    }

    /// Decoding hostile payloads never allocates more than a small multiple
    /// of the input (serde's cautious size hints plus postcard's bounds).
    #[test]
    fn decoding_allocates_little(bytes in vec(any::<u8>(), 0..256)) {
        let ((), largest) = largest_alloc_during(|| {
            let _ = decode::<BrokerMsg>(&bytes);
            let _ = decode::<ControlResponse>(&bytes);
            let _ = decode::<ChildMsg>(&bytes);
            let _ = decode::<AttestedState>(&bytes);
        });
        // Error messages are formatted into Strings; allow for those.
        prop_assert!(largest <= 64 * bytes.len() + 1024, "{} bytes for {} input bytes", largest, bytes.len());
    }
}
