//! Arbitrary bytes through frame decoding (pure, unbuffered and buffered
//! readers, which must agree), postcard decoding of every message type in
//! `proto::msg` (anything that decodes must round-trip), and the handshake
//! check. The logic lives in `proto::fuzzing::decode_any` so that
//! `proto/tests/fuzz_corpus.rs` replays the corpus through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proto::fuzzing::decode_any(data);
});
