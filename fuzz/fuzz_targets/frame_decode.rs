//! Arbitrary bytes through the frame layer, as a hostile sender would deliver them.
//!
//! 1. As a stream: `read_frame` in a loop, the way a connection reads, for each message
//!    type a stream may carry (`Request`, `ServerMsg`, `PeerMsg`, `RelayMsg`) and for
//!    `ChatPayload` (the plaintext inside a sealed frame).
//! 2. As one payload: everything after the 4-byte prefix through `decode`, whatever the
//!    prefix says, so the fuzzer need not match the prefix to reach the decoder. Also as
//!    the two layers of a sealed mail blob (`SealedMail`, `MailContent`), which reach the
//!    recipient through the directory from any sender.
//!
//! Never a panic, never an allocation above `MAX_ALLOC`, only the documented error kinds;
//! every message that decodes re-encodes, decodes back equal, and re-encodes to the
//! same bytes. (Not necessarily to the input bytes: bincode accepts integers in longer
//! forms than it writes, so the wire format is not canonical. Nothing signs encoded
//! messages, only transcripts, so that is harmless.)

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use proto::frame::{self, FrameError, HEADER_LEN, MAX_FRAME};
use proto::message::{ChatPayload, PeerMsg, RelayMsg, Request, ServerMsg};
use proto::sealed::{MailContent, SealedMail};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[global_allocator]
static ALLOC: proto_fuzz::CappedAlloc = proto_fuzz::CappedAlloc;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<HEADER_LEN>() {
        let announced = u32::from_be_bytes(*header) as usize;
        match frame::payload_len(*header) {
            Ok(len) => assert!(len == announced && len <= MAX_FRAME),
            Err(FrameError::TooLarge { .. }) => assert!(announced > MAX_FRAME),
            Err(e) => panic!("payload_len: unexpected error {e:?}"),
        }
    }

    stream::<Request>(data);
    stream::<ServerMsg>(data);
    stream::<PeerMsg>(data);
    stream::<RelayMsg>(data);
    stream::<ChatPayload>(data);

    let body = data.get(HEADER_LEN..).unwrap_or_default();
    payload::<Request>(body);
    payload::<ServerMsg>(body);
    payload::<PeerMsg>(body);
    payload::<RelayMsg>(body);
    payload::<ChatPayload>(body);
    payload::<SealedMail>(body);
    payload::<MailContent>(body);
});

/// Reads frames until the stream ends or one fails, as a connection would.
fn stream<T: Message>(data: &[u8]) {
    let mut reader = data;
    loop {
        match proto_fuzz::ready(frame::read_frame::<_, T>(&mut reader)) {
            Ok(Some(msg)) => round_trip(&msg),
            Ok(None) => {
                assert!(reader.is_empty(), "clean end with bytes left");
                return;
            }
            Err(
                FrameError::TooLarge { .. }
                | FrameError::Truncated
                | FrameError::Malformed(_)
                | FrameError::Trailing(_),
            ) => return,
            Err(e) => panic!("read_frame: unexpected error {e:?}"),
        }
    }
}

/// Decodes one payload.
fn payload<T: Message>(body: &[u8]) {
    match frame::decode::<T>(body) {
        Ok(msg) => round_trip(&msg),
        Err(FrameError::Malformed(_) | FrameError::Trailing(_)) => {}
        Err(FrameError::TooLarge { .. }) => assert!(body.len() > MAX_FRAME),
        Err(e) => panic!("decode: unexpected error {e:?}"),
    }
}

fn round_trip<T: Message>(msg: &T) {
    let bytes = frame::encode(msg).expect("a decoded message re-encodes");
    let header = *bytes.first_chunk::<HEADER_LEN>().expect("has a header");
    let len = frame::payload_len(header).expect("a decoded message fits in a frame");
    assert_eq!(len, bytes.len() - HEADER_LEN);
    let again: T = frame::decode(&bytes[HEADER_LEN..]).expect("re-encoded message decodes");
    assert_eq!(&again, msg);
    assert_eq!(frame::encode(&again).expect("encodes"), bytes);
}

trait Message: Serialize + DeserializeOwned + PartialEq + Debug {}
impl<T: Serialize + DeserializeOwned + PartialEq + Debug> Message for T {}
