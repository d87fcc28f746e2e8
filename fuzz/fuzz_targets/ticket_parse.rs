//! `Ticket` parsing: untrusted text never panics, and whatever parses
//! re-encodes to a ticket that parses back to the same value.
//!
//! Random text almost never passes the checksum, so the first byte picks a
//! mode: the rest is either the ticket text itself, or a ticket *body* that the
//! harness wraps in checksum, base32 and prefix, so the body decoder and the
//! limit checks get fuzzed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spore_core::{
    Ticket,
    ticket::{MAX_ADDR_LEN, MAX_ADDRS_PER_PROVIDER, MAX_PEER_ID_LEN, MAX_PROVIDERS},
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        style => wrap_body(rest, style),
    };
    check(&text);
});

/// Builds ticket text around `body` the way `Ticket::encode` does, in one of
/// the spellings a user may paste.
fn wrap_body(body: &[u8], style: u8) -> String {
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&blake3::hash(body).as_bytes()[..4]);
    let b32 = data_encoding::BASE32_NOPAD.encode(&bytes);
    match style {
        1 => format!("spore1{}", b32.to_ascii_lowercase()),
        2 => format!("SPORE1{b32}"),
        _ => format!(" \tspore1{}\r\n", b32.to_ascii_lowercase()),
    }
}

fn check(text: &str) {
    let Ok(ticket) = text.parse::<Ticket>() else {
        return;
    };
    assert!(ticket.providers.len() <= MAX_PROVIDERS);
    for p in &ticket.providers {
        assert!(p.peer_id.len() <= MAX_PEER_ID_LEN);
        assert!(p.addrs.len() <= MAX_ADDRS_PER_PROVIDER);
        assert!(p.addrs.iter().all(|a| a.len() <= MAX_ADDR_LEN));
    }
    let again = ticket.encode();
    assert_eq!(ticket.to_string(), again);
    assert_eq!(
        again.parse::<Ticket>().as_ref(),
        Ok(&ticket),
        "{text:?} parsed, but its re-encoding {again:?} does not parse to the same ticket"
    );
}
