use std::ops::Range;

use bytes::Bytes;
use proptest::prelude::*;
use spore_core::{Bitfield, GROUP_SIZE, Hash, group_count};

use super::*;

fn enc(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out).expect("a valid message encodes");
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn h(n: u8) -> Hash {
    Hash::from_bytes([n; 32])
}

/// Encodes, checks the exact bytes, decodes them back.
fn check(msg: Message, expected_hex: &str) {
    let bytes = enc(&msg);
    assert_eq!(hex(&bytes), expected_hex.replace(' ', ""), "{msg:?}");
    let (back, used) = decode(&bytes).expect("decodes").expect("complete");
    assert_eq!(used, bytes.len());
    assert_eq!(back, msg);
}

const H1: &str = "0101010101010101010101010101010101010101010101010101010101010101";

#[test]
fn each_message_has_its_layout() {
    check(
        Message::Hello(Hello {
            version: 1,
            hash: h(1),
            max_in_flight: 256,
            capabilities: 0,
        }),
        &format!("01 24 01 {H1} 8002 00"),
    );
    check(
        Message::Error {
            code: ErrorCode::Refused,
            message: "busy".into(),
        },
        "02 06 05 04 62757379",
    );
    check(Message::Ping { nonce: 300 }, "03 02 ac02");
    check(Message::Pong { nonce: 0 }, "04 01 00");
    check(
        Message::HaveAll {
            hash: h(1),
            size: 1 << 20,
        },
        &format!("10 23 {H1} 808040"),
    );
    check(
        Message::Have(HaveSlice {
            hash: h(1),
            size: 100_000, // 7 groups
            start: 0,
            bits: Bytes::from_static(&[0b0101_0101]),
        }),
        &format!("11 25 {H1} a08d06 00 55"),
    );
    check(
        Message::HaveRanges {
            hash: h(1),
            ranges: vec![2..5, 5..6, 200..201],
        },
        &format!("12 28 {H1} 03 02 03 00 01 c2 01 01"),
    );
    check(Message::DontHave { hash: h(1) }, &format!("13 20 {H1}"));
    check(Message::WantHave { hash: h(1) }, &format!("14 20 {H1}"));
    check(
        Message::Coming {
            hash: h(1),
            ranges: vec![2..5, 200..201],
        },
        &format!("15 26 {H1} 02 02 03 c3 01 01"),
    );
    check(Message::Interested, "20 00");
    check(Message::NotInterested, "21 00");
    check(Message::Choke, "22 00");
    check(Message::Unchoke, "23 00");
    check(
        Message::Request(Request {
            id: 7,
            hash: h(1),
            groups: 64..128,
        }),
        &format!("30 23 07 {H1} 40 40"),
    );
    check(Message::Cancel { id: 7 }, "31 01 07");
    check(
        Message::Response {
            id: 7,
            status: Status::Ok,
        },
        "32 02 07 00",
    );
    check(
        Message::Response {
            id: 7,
            status: Status::Choked,
        },
        "32 02 07 03",
    );
    check(
        Message::Data {
            id: 7,
            data: Bytes::from_static(b"abc"),
        },
        "33 04 07 616263",
    );
    check(
        Message::End {
            id: 7,
            status: Status::Ok,
        },
        "34 02 07 00",
    );
    check(
        Message::Unknown {
            kind: 0x40,
            body: Bytes::from_static(&[1, 2]),
        },
        "40 02 0102",
    );
}

#[test]
fn statuses_and_codes_round_trip_as_bytes() {
    for b in 0..=255u8 {
        assert_eq!(Status::from_byte(b).to_byte(), b);
        assert_eq!(ErrorCode::from_byte(b).to_byte(), b);
    }
    assert_eq!(Status::from_byte(200), Status::Other(200));
}

fn malformed(bytes: &[u8]) -> &'static str {
    match decode(bytes) {
        Err(WireError::Malformed { reason, .. }) => reason,
        other => panic!("expected malformed for {}, got {other:?}", hex(bytes)),
    }
}

fn too_large(bytes: &[u8]) -> (&'static str, u64) {
    match decode(bytes) {
        Err(WireError::TooLarge { what, got, .. }) => (what, got),
        other => panic!("expected too large for {}, got {other:?}", hex(bytes)),
    }
}

#[test]
fn malformed_frames_are_rejected() {
    malformed(&[0x00, 0x00]);
    // Non-minimal length varint.
    malformed(&[0x20, 0x80, 0x00]);
    // Interested with a body.
    assert_eq!(
        malformed(&[0x20, 0x01, 0x00]),
        "bytes left over after the last field"
    );
    // Ping whose varint runs off the body.
    malformed(&[0x03, 0x01, 0x80]);
    // Non-minimal varint in a body.
    malformed(&[0x03, 0x02, 0x80, 0x00]);
    // 11-byte varint / 10th byte overflowing.
    malformed(&unhex("03 0a ffffffffffffffffff02"));
    // Hello with version 0 and with max_in_flight 0.
    malformed(&unhex(&format!("01 23 00 {H1} 01 00")));
    malformed(&unhex(&format!("01 23 01 {H1} 00 00")));
    // Error text that is not UTF-8.
    assert_eq!(
        malformed(&unhex("02 03 00 01 ff")),
        "error message is not UTF-8"
    );
    // Request for no groups.
    assert_eq!(
        malformed(&unhex(&format!("30 23 07 {H1} 40 00"))),
        "empty group range"
    );
    // Request whose range overflows.
    malformed(&unhex(&format!("30 2c 07 {H1} ffffffffffffffffff01 01")));
    // Empty data frame.
    assert_eq!(malformed(&unhex("33 01 07")), "empty data frame");
    // Have slice not starting on a byte, past the end, with padding bits set.
    malformed(&unhex(&format!("11 25 {H1} a08d06 01 55")));
    malformed(&unhex(&format!("11 26 {H1} a08d06 00 5501")));
    assert_eq!(
        malformed(&unhex(&format!("11 25 {H1} a08d06 00 80"))),
        "bits set past the blob's last group"
    );
    // HaveRanges with an empty range, with no ranges, with a count past the body.
    malformed(&unhex(&format!("12 23 {H1} 01 00 00")));
    malformed(&unhex(&format!("12 21 {H1} 00")));
    assert_eq!(
        malformed(&unhex(&format!("12 23 {H1} 05 00 01"))),
        "range count runs past the end of the body"
    );
    // Coming, read like HaveRanges: an empty range, no ranges, a count past the body.
    malformed(&unhex(&format!("15 23 {H1} 01 00 00")));
    malformed(&unhex(&format!("15 21 {H1} 00")));
    assert_eq!(
        malformed(&unhex(&format!("15 23 {H1} 05 00 01"))),
        "range count runs past the end of the body"
    );
    // Response without its status byte.
    malformed(&unhex("32 01 07"));
}

#[test]
fn oversized_frames_are_rejected_before_their_body_arrives() {
    // A control frame announcing 64 KiB + 1: only the header is present.
    let (what, got) = too_large(&[0x11, 0x81, 0x80, 0x04]);
    assert_eq!((what, got), ("body length", 65_537));
    // Unknown types get the control limit too.
    too_large(&[0x41, 0x81, 0x80, 0x04]);
    // A data frame may be larger, up to its own limit.
    assert_eq!(decode(&[0x33, 0x8a, 0x80, 0x10]), Ok(None));
    too_large(&[0x33, 0x8b, 0x80, 0x10]);
    // Three continuation bytes: at least 2^21, whatever follows.
    too_large(&[0x33, 0xff, 0xff, 0xff]);
    // A data frame with a 1-byte id and a payload of 256 KiB + 1.
    let mut frame = vec![0x33];
    codec::put_varint(&mut frame, (MAX_DATA_PAYLOAD + 2) as u64);
    frame.push(7);
    frame.resize(frame.len() + MAX_DATA_PAYLOAD + 1, 0);
    assert_eq!(
        too_large(&frame),
        ("data payload", MAX_DATA_PAYLOAD as u64 + 1)
    );
    // Field limits.
    let err = encode(
        &Message::Request(Request {
            id: 1,
            hash: h(1),
            groups: 0..MAX_REQUEST_GROUPS + 1,
        }),
        &mut Vec::new(),
    );
    assert!(matches!(
        err,
        Err(WireError::TooLarge {
            what: "request groups",
            ..
        })
    ));
    let mut frame = unhex(&format!("30 24 07 {H1} 40 8108"));
    assert_eq!(too_large(&frame), ("request groups", 1025));
    frame = unhex(&format!("01 24 01 {H1} 8108 00"));
    assert_eq!(too_large(&frame), ("max_in_flight", 1025));
    frame = unhex(&format!("12 22 {H1} 8110"));
    assert_eq!(too_large(&frame), ("range count", 2049));
    frame = unhex("02 03 00 8108");
    assert_eq!(too_large(&frame), ("error message", 1025));
}

#[test]
fn encode_refuses_invalid_messages_and_writes_nothing() {
    let mut out = vec![9];
    let bad = [
        Message::Data {
            id: 1,
            data: Bytes::new(),
        },
        Message::Data {
            id: 1,
            data: Bytes::from(vec![0; MAX_DATA_PAYLOAD + 1]),
        },
        Message::HaveRanges {
            hash: h(1),
            ranges: vec![3..5, 4..6],
        },
        Message::Response {
            id: 1,
            status: Status::Other(0),
        },
        Message::Unknown {
            kind: kind::PING,
            body: Bytes::new(),
        },
        Message::Error {
            code: ErrorCode::Goodbye,
            message: "x".repeat(MAX_ERROR_MESSAGE + 1),
        },
    ];
    for msg in bad {
        assert!(encode(&msg, &mut out).is_err(), "{msg:?}");
    }
    assert_eq!(out, vec![9]);
}

#[test]
fn largest_frames_fit_their_limits() {
    let data = Message::Data {
        id: u64::MAX,
        data: Bytes::from(vec![1; MAX_DATA_PAYLOAD]),
    };
    let bytes = enc(&data);
    assert_eq!(bytes.len(), 1 + 3 + MAX_DATA_BODY);
    assert_eq!(decode(&bytes).expect("decodes").map(|(m, _)| m), Some(data));

    let ranges: Vec<_> = (0..MAX_HAVE_RANGES as u64)
        .map(|i| (u64::MAX / 4096) * i..(u64::MAX / 4096) * i + u64::MAX / 8192)
        .collect();
    let msg = Message::HaveRanges { hash: h(1), ranges };
    assert!(enc(&msg).len() <= MAX_CONTROL_BODY);

    let size = u64::MAX;
    let msg = Message::Have(HaveSlice {
        hash: h(1),
        size,
        start: (group_count(size) / 8 - MAX_HAVE_BYTES as u64) * 8,
        bits: Bytes::from(vec![0xff; MAX_HAVE_BYTES]),
    });
    assert!(enc(&msg).len() <= MAX_CONTROL_BODY);
    assert_eq!(
        decode(&enc(&msg)).expect("decodes").map(|(m, _)| m),
        Some(msg)
    );
}

#[test]
fn decoder_streams_frames_and_slices_data_without_copying() {
    let msgs = vec![
        Message::Hello(Hello {
            version: 1,
            hash: h(2),
            max_in_flight: 8,
            capabilities: 5,
        }),
        Message::Response {
            id: 1,
            status: Status::Ok,
        },
        Message::Data {
            id: 1,
            data: Bytes::from(vec![7; 100_000]),
        },
        Message::Ping { nonce: 1 },
        Message::End {
            id: 1,
            status: Status::Ok,
        },
    ];
    let mut stream = Vec::new();
    for m in &msgs {
        encode(m, &mut stream).expect("encodes");
    }
    for step in [1, 3, 1000, stream.len()] {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            assert!(d.wanted() > 0);
            d.push(piece);
            while let Some(m) = d.decode_next().expect("decodes") {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(d.buffered(), 0);
    }
    let mut d = Decoder::new();
    d.push(&stream[..10]);
    let _ = d.decode_next();
    // The Hello frame is 37 bytes.
    assert_eq!(d.wanted(), 27);
}

/// A frame's first bytes make room for all of it, and reads that stop where
/// [`Decoder::read_limit`] says start every frame in an empty buffer: so a data
/// payload is never moved to grow the buffer, even while earlier payloads
/// (in flight to the store) still hold parts of it.
#[test]
fn decoder_makes_room_for_a_whole_frame_at_its_start() {
    let payloads: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; MAX_DATA_PAYLOAD]).collect();
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    for (id, data) in payloads.iter().enumerate() {
        let msg = Message::Data {
            id: id as u64,
            data: Bytes::from(data.clone()),
        };
        let before = stream.len();
        encode(&msg, &mut stream).expect("encodes");
        frames.push(stream.len() - before);
    }
    let mut d = Decoder::new();
    let mut rest = &stream[..];
    let mut held = Vec::new();
    while !rest.is_empty() {
        let room = d.read_limit(64 * 1024);
        let (read, after) = rest.split_at(room.min(rest.len()));
        rest = after;
        let starts_frame = d.buffered() == 0;
        d.push(read);
        if starts_frame {
            let frame = frames[held.len()];
            assert!(d.capacity() >= frame, "room for frame {}", held.len());
        }
        while let Some(msg) = d.decode_next().expect("decodes") {
            let Message::Data { data, .. } = msg else {
                panic!("a data frame, not {msg:?}");
            };
            held.push(data);
            assert_eq!(d.buffered(), 0, "a read stopped at the frame's end");
        }
    }
    assert_eq!(held, payloads);
}

#[test]
fn decoder_stays_failed() {
    let mut d = Decoder::new();
    d.push(&[0x20, 0x01, 0x00, 0x20, 0x00]);
    let err = d.decode_next().expect_err("malformed");
    assert_eq!(err.code(), ErrorCode::Malformed);
    d.push(&[0x20, 0x00]);
    assert_eq!(d.decode_next(), Err(err));
    assert_eq!(d.wanted(), 0);
}

#[test]
fn data_writer_cuts_full_frames() {
    use std::io::Write;
    let payload: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    let mut out = Vec::new();
    let mut frames = 0;
    let mut w = DataWriter::new(9, 65_536, |frame: Vec<u8>| {
        out.extend_from_slice(&frame);
        frames += 1;
        Ok(())
    });
    // Odd-sized writes, as bao-tree does (64-byte parents, 16 KiB groups).
    for piece in payload.chunks(777) {
        w.write_all(piece).expect("writes to a Vec");
    }
    assert_eq!(w.payload_written(), 300_000);
    w.finish().expect("writes to a Vec");
    assert_eq!(frames, 5, "each frame goes to the sink whole");
    let mut d = Decoder::new();
    d.push(&out);
    let mut back = Vec::new();
    let mut sizes = Vec::new();
    while let Some(m) = d.decode_next().expect("decodes") {
        let Message::Data { id: 9, data } = m else {
            panic!("not data: {m:?}")
        };
        sizes.push(data.len());
        back.extend_from_slice(&data);
    }
    assert_eq!(back, payload);
    assert_eq!(sizes, vec![65_536, 65_536, 65_536, 65_536, 37_856]);

    let mut frames = 0;
    let w = DataWriter::new(9, 1 << 30, |_| {
        frames += 1;
        Ok(())
    });
    w.finish().expect("writes");
    assert_eq!(frames, 0, "no payload, no frame");
}

#[test]
fn data_writer_frames_decode_whatever_the_header_size() {
    use std::io::Write;
    // Payloads on both sides of each varint boundary of the body length
    // (128 and 16,384 bytes) and ids of 1 to 9 bytes: the last frame's
    // header may be shorter than a full frame's.
    for id in [0, 200, u64::MAX] {
        for frame_payload in [100, 127, 16_383, 16_384, 65_536, MAX_DATA_PAYLOAD] {
            for total in [1, 126, 127, 128, 16_380, 16_383, 16_384, 16_385, 70_000] {
                let payload: Vec<u8> = (0..total).map(|i| (i * 7) as u8).collect();
                let mut out = Vec::new();
                let mut w = DataWriter::new(id, frame_payload, |f: Vec<u8>| {
                    out.extend_from_slice(&f);
                    Ok(())
                });
                w.write_all(&payload).expect("writes");
                w.finish().expect("writes");
                let mut d = Decoder::new();
                d.push(&out);
                let mut back = Vec::new();
                while let Some(m) = d.decode_next().expect("decodes") {
                    let Message::Data { id: got, data } = m else {
                        panic!("not data: {m:?}")
                    };
                    assert_eq!(got, id);
                    assert!(data.len() <= frame_payload);
                    back.extend_from_slice(&data);
                }
                assert_eq!(
                    d.buffered(),
                    0,
                    "id {id}, frames of {frame_payload}, {total} bytes"
                );
                assert_eq!(
                    back, payload,
                    "id {id}, frames of {frame_payload}, {total} bytes"
                );
            }
        }
    }
}

#[test]
fn have_messages_cover_the_bitfield() {
    let size = 3 * MAX_HAVE_BYTES as u64 * 8 * GROUP_SIZE + 5;
    let n = group_count(size);
    let mut have = Bitfield::new(n);
    for g in (0..n).step_by(7) {
        have.set(g);
    }
    have.set(n - 1);
    let msgs = have_messages(h(3), size, &have);
    assert_eq!(msgs.len(), 4);
    let mut back = Bitfield::new(n);
    for m in &msgs {
        let bytes = enc(m);
        let Some((Message::Have(slice), _)) = decode(&bytes).expect("decodes") else {
            panic!("not a Have")
        };
        slice.apply(&mut back);
    }
    assert_eq!(back, have);
    assert_eq!(
        have_messages(h(3), size, &Bitfield::full(n)),
        vec![Message::HaveAll { hash: h(3), size }]
    );
    assert_eq!(
        have_messages(h(3), 0, &Bitfield::new(1)),
        vec![Message::DontHave { hash: h(3) }]
    );
}

/// The worked example in docs/protocol.md: keep the two in step.
#[test]
fn worked_example_in_the_spec() {
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let store = spore_store::Store::in_memory();
    let added = store.add_bytes(&data, "example").expect("adds");
    let hash = added.hash;
    let blob = store.blob(&hash).expect("blob");
    let hello = Message::Hello(Hello {
        version: 1,
        hash,
        max_in_flight: 64,
        capabilities: 0,
    });
    let request = Message::Request(Request {
        id: 1,
        hash,
        groups: 2..3,
    });
    let chunks = group_chunks(2..3);
    let ranges = spore_store::ChunkRanges::from(
        spore_store::ChunkNum(chunks.start)..spore_store::ChunkNum(chunks.end),
    );
    let mut payload = Vec::new();
    blob.encode(&ranges, &mut payload).expect("encodes");
    assert_eq!(
        payload.len() as u64,
        encoded_len(40_000, 2..3).expect("in range")
    );
    // Three groups: the root's pair, then the short last group.
    assert_eq!(payload.len(), 64 + (40_000 - 32_768));

    let mut response = enc(&Message::Response {
        id: 1,
        status: Status::Ok,
    });
    let mut w = DataWriter::new(1, MAX_DATA_PAYLOAD, |f: Vec<u8>| {
        response.extend_from_slice(&f);
        Ok(())
    });
    std::io::Write::write_all(&mut w, &payload).expect("writes");
    w.finish().expect("writes");
    response.extend(enc(&Message::End {
        id: 1,
        status: Status::Ok,
    }));
    // Every frame as docs/protocol.md §2.10 prints it.
    let doc = |msg: &Message, expected: &str| {
        assert_eq!(
            hex(&enc(msg)),
            expected.replace(' ', "").replace("H", &hash.to_hex())
        );
    };
    doc(&hello, "01 23 01 H 40 00");
    doc(
        &Message::Hello(Hello {
            version: 1,
            hash,
            max_in_flight: 256,
            capabilities: 0,
        }),
        "01 24 01 H 8002 00",
    );
    doc(&Message::HaveAll { hash, size: 40_000 }, "10 23 H c0b802");
    doc(&Message::DontHave { hash }, "13 20 H");
    doc(&Message::Interested, "20 00");
    doc(&Message::Unchoke, "23 00");
    doc(&request, "30 23 01 H 02 01");
    assert_eq!(
        hex(&payload[..64]),
        "1e03bf3657c5076623059f21d92f2ec634dd276b07e3760625c73416f343d857\
         083663d9bddc14d40cc2f3869e01c5bebde7632dfea165eda38af01d93d5045b"
            .replace(' ', "")
    );
    assert_eq!(&payload[64..], &data[32_768..]);
    println!("hash {hash}");
    println!("hello {}", hex(&enc(&hello)));
    println!(
        "have {}",
        hex(&enc(&Message::HaveAll { hash, size: 40_000 }))
    );
    println!("request {}", hex(&enc(&request)));
    println!("response {}", hex(&response[..32]));
    println!(
        "payload {} bytes, first parent pair {}",
        payload.len(),
        hex(&payload[..64])
    );
    println!("response tail {}", hex(&response[response.len() - 8..]));
    assert_eq!(
        hash.to_hex(),
        "ccd32b4544a24c50fbefb249e10a8fcedc26e2794c79eb8a44ad0631bf07f53f"
    );
    // The response frames: header, one data frame of 7,296 bytes, end.
    assert_eq!(hex(&response[..8]), "3202010033813901");
    assert_eq!(&response[8..8 + 64], &payload[..64]);
    assert_eq!(response.len(), 4 + 4 + payload.len() + 4);
    assert_eq!(hex(&response[response.len() - 4..]), "34020100");

    // And the receiving side verifies it.
    let target = spore_store::Store::in_memory();
    let mut partial = target
        .partial(&hash, 40_000, spore_core::ContentKind::Blob)
        .expect("partial");
    let mut d = Decoder::new();
    d.push(&response);
    let mut received = Vec::new();
    while let Some(m) = d.decode_next().expect("decodes") {
        if let Message::Data { data, .. } = m {
            received.push(data);
        }
    }
    let ingested = partial.ingest(&ranges, &received).expect("verifies");
    assert_eq!(ingested.new_groups, vec![2]);
}

// ---- bao payload sizes, against spore-store's encoder ----

fn bao_payload(blob: &spore_store::Blob, groups: Range<u64>) -> usize {
    let c = group_chunks(groups);
    let ranges = spore_store::ChunkRanges::from(
        spore_store::ChunkNum(c.start)..spore_store::ChunkNum(c.end),
    );
    let mut out = Vec::new();
    blob.encode(&ranges, &mut out).expect("encodes");
    out.len()
}

#[test]
fn encoded_len_matches_blob_encode_exactly() {
    let store = spore_store::Store::in_memory();
    let sizes = [
        0,
        1,
        1024,
        GROUP_SIZE - 1,
        GROUP_SIZE,
        GROUP_SIZE + 1,
        2 * GROUP_SIZE,
        3 * GROUP_SIZE + 17,
        5 * GROUP_SIZE,
        8 * GROUP_SIZE,
        13 * GROUP_SIZE - 1000,
        17 * GROUP_SIZE + 1,
        33 * GROUP_SIZE,
        64 * GROUP_SIZE - 1,
    ];
    for size in sizes {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        let hash = store.add_bytes(&data, "x").expect("adds").hash;
        let blob = store.blob(&hash).expect("blob");
        let n = group_count(size);
        for start in 0..n {
            for end in start + 1..=n {
                assert_eq!(
                    encoded_len(size, start..end),
                    Some(bao_payload(&blob, start..end) as u64),
                    "size {size}, groups {start}..{end}"
                );
                assert!(encoded_len(size, start..end) <= Some(max_encoded_len(end - start)));
            }
        }
        assert_eq!(encoded_len(size, 0..n + 1), None);
        assert_eq!(encoded_len(size, 0..0), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn encoded_len_matches_blob_encode_for_larger_blobs(
        size in 0u64..(3 << 20),
        a in 0u64..200,
        len in 1u64..80,
    ) {
        let store = spore_store::Store::in_memory();
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let hash = store.add_bytes(&data, "x").expect("adds").hash;
        let blob = store.blob(&hash).expect("blob");
        let n = group_count(size);
        let start = a % n;
        let end = (start + len).min(n);
        let bytes = bao_payload(&blob, start..end) as u64;
        prop_assert_eq!(encoded_len(size, start..end), Some(bytes));
        prop_assert!(bytes <= max_encoded_len(end - start));
    }
}

proptest! {
    #[test]
    fn max_encoded_len_bounds_every_blob(
        size in any::<u64>(),
        start in any::<u64>(),
        len in 1u64..=MAX_REQUEST_GROUPS,
    ) {
        let n = group_count(size);
        let start = start % n;
        let end = (start + len).min(n);
        let exact = encoded_len(size, start..end).expect("in range");
        prop_assert!(exact <= max_encoded_len(end - start));
        prop_assert!(max_encoded_len(MAX_REQUEST_GROUPS) < 17 << 20);
    }
}

// ---- properties of the codec ----

fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash::from_bytes)
}

fn arb_status() -> impl Strategy<Value = Status> {
    prop_oneof![
        (0u8..8).prop_map(Status::from_byte),
        (8u8..).prop_map(Status::Other)
    ]
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        (0u8..9).prop_map(ErrorCode::from_byte),
        (9u8..).prop_map(ErrorCode::Other)
    ]
}

fn arb_u64() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), 0u64..300, (0u32..64).prop_map(|s| 1u64 << s)]
}

fn arb_slice() -> impl Strategy<Value = HaveSlice> {
    (
        arb_hash(),
        prop_oneof![0u64..(1 << 24), any::<u64>()],
        any::<u64>(),
        1usize..300,
    )
        .prop_flat_map(|(hash, size, start, len)| {
            let bytes_total = group_count(size).div_ceil(8);
            let first = start % bytes_total;
            let len = (len as u64).min(bytes_total - first) as usize;
            proptest::collection::vec(any::<u8>(), len).prop_map(move |mut bits| {
                let groups = group_count(size);
                if first + len as u64 == bytes_total
                    && !groups.is_multiple_of(8)
                    && let Some(last) = bits.last_mut()
                {
                    *last &= (1u8 << (groups % 8)) - 1;
                }
                HaveSlice {
                    hash,
                    size,
                    start: first * 8,
                    bits: Bytes::from(bits),
                }
            })
        })
}

fn arb_ranges() -> impl Strategy<Value = Vec<Range<u64>>> {
    proptest::collection::vec((0u64..1000, 1u64..1000), 1..100).prop_map(|pairs| {
        let mut at = 0u64;
        pairs
            .into_iter()
            .map(|(gap, len)| {
                let r = at + gap..at + gap + len;
                at = r.end;
                r
            })
            .collect()
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (1u32.., arb_hash(), 1u32..=MAX_IN_FLIGHT, arb_u64()).prop_map(
            |(version, hash, max_in_flight, capabilities)| Message::Hello(Hello {
                version,
                hash,
                max_in_flight,
                capabilities
            })
        ),
        (arb_code(), "\\PC{0,100}").prop_map(|(code, message)| Message::Error { code, message }),
        arb_u64().prop_map(|nonce| Message::Ping { nonce }),
        arb_u64().prop_map(|nonce| Message::Pong { nonce }),
        (arb_hash(), arb_u64()).prop_map(|(hash, size)| Message::HaveAll { hash, size }),
        arb_slice().prop_map(Message::Have),
        (arb_hash(), arb_ranges()).prop_map(|(hash, ranges)| Message::HaveRanges { hash, ranges }),
        (arb_hash(), arb_ranges()).prop_map(|(hash, ranges)| Message::Coming { hash, ranges }),
        arb_hash().prop_map(|hash| Message::DontHave { hash }),
        arb_hash().prop_map(|hash| Message::WantHave { hash }),
        Just(Message::Interested),
        Just(Message::NotInterested),
        Just(Message::Choke),
        Just(Message::Unchoke),
        (arb_u64(), arb_hash(), arb_u64(), 1u64..=MAX_REQUEST_GROUPS).prop_map(
            |(id, hash, start, count)| {
                let start = start.min(u64::MAX - count);
                Message::Request(Request {
                    id,
                    hash,
                    groups: start..start + count,
                })
            }
        ),
        arb_u64().prop_map(|id| Message::Cancel { id }),
        (arb_u64(), arb_status()).prop_map(|(id, status)| Message::Response { id, status }),
        (arb_u64(), proptest::collection::vec(any::<u8>(), 1..2000)).prop_map(|(id, data)| {
            Message::Data {
                id,
                data: Bytes::from(data),
            }
        }),
        (arb_u64(), arb_status()).prop_map(|(id, status)| Message::End { id, status }),
        (
            any::<u8>().prop_filter("unknown type", |k| *k != 0 && !kind::is_known(*k)),
            proptest::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(kind, body)| Message::Unknown {
                kind,
                body: Bytes::from(body)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_message_round_trips(msg in arb_message()) {
        let bytes = enc(&msg);
        let (back, used) = decode(&bytes).expect("decodes").expect("complete");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&back, &msg);
        prop_assert!(bytes.len() <= MAX_HEADER + kind::max_body(msg.kind()));
    }

    #[test]
    fn every_truncation_needs_more(msg in arb_message()) {
        let bytes = enc(&msg);
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn a_stream_of_messages_decodes_in_any_pieces(
        msgs in proptest::collection::vec(arb_message(), 1..20),
        step in 1usize..5000,
    ) {
        let mut stream = Vec::new();
        for m in &msgs {
            encode(m, &mut stream).expect("encodes");
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(step) {
            d.push(piece);
            while let Some(m) = d.decode_next().expect("decodes") {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decoded_frames_are_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok(Some((msg, used))) = decode(&bytes) {
            prop_assert_eq!(enc(&msg), bytes[..used].to_vec());
        }
    }

    #[test]
    fn mutated_frames_never_panic(msg in arb_message(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = enc(&msg);
        let i = at % bytes.len();
        bytes[i] = byte;
        let mut d = Decoder::new();
        d.push(&bytes);
        while let Ok(Some(m)) = d.decode_next() {
            let re = enc(&m);
            prop_assert!(!re.is_empty());
        }
        if let Ok(Some((m, used))) = decode(&bytes) {
            prop_assert_eq!(enc(&m), bytes[..used].to_vec());
        }
    }
}

// ---- session rules ----

fn established(max: u32) -> (Session, Session) {
    let mut a = Session::new(h(5), max);
    let mut b = Session::new(h(5), max);
    let ha = a.hello();
    let hb = b.hello();
    b.receive(&ha).expect("hello");
    a.receive(&hb).expect("hello");
    (a, b)
}

#[test]
fn session_runs_a_request_and_its_payload() {
    let size = 100_000;
    let (mut a, mut b) = established(2);
    let req = a.request(1, h(5), 1..4, size).expect("room");
    b.receive(&req).expect("request");
    let ok = Message::Response {
        id: 1,
        status: Status::Ok,
    };
    b.send(&ok).expect("answer");
    a.receive(&ok).expect("answer");
    let len = encoded_len(size, 1..4).expect("in range") as usize;
    for piece in [len - 100, 100] {
        let data = Message::Data {
            id: 1,
            data: Bytes::from(vec![0; piece]),
        };
        b.send(&data).expect("data");
        a.receive(&data).expect("data");
    }
    assert_eq!(
        a.receiving(),
        Some(Receiving {
            id: 1,
            remaining: 0
        })
    );
    let end = Message::End {
        id: 1,
        status: Status::Ok,
    };
    b.send(&end).expect("end");
    a.receive(&end).expect("end");
    assert_eq!(a.in_flight().count(), 0);
    assert_eq!(b.peer_in_flight(), 0);
    assert_eq!(a.request_budget(), 2);
}

#[test]
fn session_catches_broken_rules() {
    let v = |r: Result<(), Violation>| r.expect_err("a violation").0;
    // Handshake.
    let mut s = Session::new(h(5), 4);
    assert_eq!(
        v(s.receive(&Message::Interested)),
        "first frame is not Hello"
    );
    let mut s = Session::new(h(5), 4);
    let other = Session::new(h(6), 4).hello();
    assert_eq!(v(s.receive(&other)), "Hello for another hash");
    let mut s = Session::new(h(5), 4);
    assert!(s.request(1, h(5), 0..1, 10).is_err());
    assert_eq!(v(s.send(&Message::Interested)), "frame before our Hello");

    // Requests in flight.
    let (mut a, mut b) = established(2);
    let r1 = a.request(1, h(5), 0..1, 100_000).expect("room");
    assert!(a.request(1, h(5), 1..2, 100_000).is_err(), "id in flight");
    let r2 = a.request(2, h(5), 1..2, 100_000).expect("room");
    assert!(a.request(3, h(5), 2..3, 100_000).is_err(), "budget");
    assert!(a.request(4, h(5), 7..8, 100_000).is_err(), "past the end");
    b.receive(&r1).expect("first");
    assert_eq!(v(b.receive(&r1)), "request id already in flight");
    b.receive(&r2).expect("second");
    let r3 = Message::Request(Request {
        id: 3,
        hash: h(5),
        groups: 0..1,
    });
    assert_eq!(
        v(b.receive(&r3)),
        "more requests in flight than our max_in_flight"
    );

    // Payloads: one at a time, exact length, only for requests in flight.
    let ok = |id| Message::Response {
        id,
        status: Status::Ok,
    };
    assert_eq!(v(a.receive(&ok(9))), "response to a request not in flight");
    a.receive(&ok(1)).expect("ok");
    assert_eq!(
        v(a.receive(&ok(2))),
        "Ok response while another payload is open"
    );
    a.receive(&Message::Response {
        id: 2,
        status: Status::Busy,
    })
    .expect("a final answer may interleave");
    let data = |id, n| Message::Data {
        id,
        data: Bytes::from(vec![0; n]),
    };
    assert_eq!(v(a.receive(&data(2, 1))), "data outside its response");
    assert_eq!(
        v(a.receive(&data(
            1,
            encoded_len(100_000, 0..1).expect("in range") as usize + 1
        ))),
        "more payload than the request's encoded_len"
    );
    a.receive(&data(1, 10)).expect("data");
    assert_eq!(
        v(a.receive(&Message::End {
            id: 1,
            status: Status::Ok
        })),
        "End Ok before the whole payload"
    );
    a.receive(&Message::End {
        id: 1,
        status: Status::Internal,
    })
    .expect("an abandoned payload");
    assert_eq!(a.in_flight().count(), 0);

    // The answering side.
    b.send(&ok(1)).expect("ok");
    assert_eq!(v(b.send(&ok(1))), "second response to one request");
    assert_eq!(
        v(b.send(&ok(2))),
        "Ok response while another payload is open"
    );
    assert_eq!(v(b.send(&data(2, 1))), "data outside its response");
    b.send(&Message::End {
        id: 1,
        status: Status::Ok,
    })
    .expect("end");
    assert_eq!(v(b.send(&ok(1))), "response to a request not in flight");

    // After Error, nothing more.
    a.receive(&Message::Error {
        code: ErrorCode::Goodbye,
        message: String::new(),
    })
    .expect("error");
    assert!(a.peer_closed());
    assert_eq!(v(a.receive(&Message::Interested)), "frame after Error");
}
