//! The `/spore/blob/1` decoder on untrusted bytes: never panics, and every
//! frame it accepts is canonical: it re-encodes to exactly the bytes it was
//! decoded from. The incremental `Decoder`, fed the input in pieces of a
//! fuzzer-chosen size, agrees frame for frame with the one-shot `decode`,
//! and every cut of an accepted frame asks for more bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spore_transfer::wire::{self, Decoder, MAX_HEADER, Message, WireError, kind};

fuzz_target!(|input: &[u8]| {
    let Some((&step, bytes)) = input.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);

    // One-shot decoding, frame after frame.
    let mut expected: Vec<Result<Message, WireError>> = Vec::new();
    let mut at = 0;
    loop {
        match wire::decode(&bytes[at..]) {
            Ok(Some((msg, used))) => {
                let frame = &bytes[at..at + used];
                let mut again = Vec::new();
                wire::encode(&msg, &mut again).expect("a decoded message encodes");
                assert_eq!(again, frame, "not canonical: {msg:?}");
                assert_eq!(msg.validate(), Ok(()));
                assert_eq!(msg.kind(), frame[0]);
                assert!(used <= MAX_HEADER + kind::max_body(frame[0]));
                if used <= 512 {
                    for cut in 0..used {
                        assert_eq!(wire::decode(&frame[..cut]), Ok(None), "cut at {cut}");
                    }
                }
                expected.push(Ok(msg));
                at += used;
            }
            Ok(None) => break,
            Err(e) => {
                expected.push(Err(e));
                break;
            }
        }
    }

    // The incremental decoder, fed in pieces, sees the same frames.
    let mut decoder = Decoder::new();
    let mut got: Vec<Result<Message, WireError>> = Vec::new();
    'feed: for piece in bytes.chunks(step) {
        decoder.push(piece);
        loop {
            match decoder.decode_next() {
                Ok(Some(msg)) => got.push(Ok(msg)),
                Ok(None) => break,
                Err(e) => {
                    got.push(Err(e.clone()));
                    assert_eq!(decoder.decode_next(), Err(e), "the decoder stays failed");
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, expected);
    if expected.last().is_some_and(|r| r.is_ok()) || expected.is_empty() {
        assert_eq!(decoder.buffered(), bytes.len() - at);
    }
});
