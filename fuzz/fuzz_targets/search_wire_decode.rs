//! The `/spore/search/1` decoder and the DHT keyword-record decoder on
//! untrusted bytes: never panic; whatever decodes passes the protocol's
//! checks, and encoding it again gives a frame that decodes to the same
//! message (the first input byte picks the decoder).
#![no_main]

use libfuzzer_sys::fuzz_target;
use spore_search::{
    Message,
    dht::KeywordRecord,
    wire::{MAX_FRAME, frame_len},
};

fuzz_target!(|input: &[u8]| {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(msg) = Message::decode_frame(bytes) {
                assert_eq!(msg.check(), Ok(()));
                let again = msg.encode();
                assert!(frame_len(&again).is_ok_and(|l| l <= MAX_FRAME));
                assert_eq!(Message::decode_frame(&again).as_ref(), Ok(&msg));
            }
        }
        1 => {
            if let Ok(msg) = Message::decode_body(bytes) {
                assert_eq!(Message::decode_body(&msg.encode()[4..]).as_ref(), Ok(&msg));
                if let Message::Query(q) = &msg {
                    assert!(q.hops <= spore_search::MAX_HOPS);
                    assert!(!q.words.is_empty());
                }
                if let Message::Hits { records, .. } = &msg {
                    // Signatures are checked by the router, not the codec;
                    // checking one must not panic either.
                    for r in records {
                        let _ = r.verify();
                    }
                }
            }
        }
        _ => {
            if let Ok(rec) = KeywordRecord::decode(bytes) {
                assert!(rec.records.iter().all(|r| r.verify()));
                assert_eq!(KeywordRecord::decode(&rec.encode()), Ok(rec));
            }
        }
    }
});
