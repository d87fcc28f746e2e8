//! `Ticket::encode` promises that a ticket it prints can always be read back
//! (over-limit providers and addresses are trimmed). Builds arbitrary tickets,
//! including ones far over the limits, and checks that promise.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use spore_core::{
    ContentKind, Hash, ProviderHint, Ticket,
    ticket::{MAX_ADDR_LEN, MAX_ADDRS_PER_PROVIDER, MAX_PEER_ID_LEN, MAX_PROVIDERS},
};

/// Bytes, either spelled out or as a cheap run, so that small inputs can
/// describe peer ids and addresses around and beyond the limits.
#[derive(Debug, Arbitrary)]
enum Bytes {
    Literal(Vec<u8>),
    Run { len: u16, byte: u8 },
}

impl Bytes {
    fn build(&self) -> Vec<u8> {
        match self {
            Bytes::Literal(v) => v.clone(),
            // Up to 320: either side of the 64- and 256-byte limits.
            Bytes::Run { len, byte } => vec![*byte; usize::from(*len) % 321],
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Provider {
    peer_id: Bytes,
    addrs: Vec<Bytes>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    collection: bool,
    hash: [u8; 32],
    providers: Vec<Provider>,
}

/// True when `sub` is `full` with some elements left out (order kept).
fn is_subsequence<T: PartialEq>(sub: &[T], full: &[T]) -> bool {
    let mut rest = full.iter();
    sub.iter().all(|x| rest.any(|y| y == x))
}

fuzz_target!(|input: Input| {
    let kind = if input.collection {
        ContentKind::Collection
    } else {
        ContentKind::Blob
    };
    let providers: Vec<ProviderHint> = input
        .providers
        .iter()
        .map(|p| ProviderHint {
            peer_id: p.peer_id.build(),
            addrs: p.addrs.iter().map(Bytes::build).collect(),
        })
        .collect();
    let ticket = Ticket::new(kind, Hash::from_bytes(input.hash)).with_providers(providers);
    let text = ticket.encode();
    let back = match text.parse::<Ticket>() {
        Ok(back) => back,
        Err(e) => panic!(
            "Ticket::encode printed a ticket that does not parse: {e} \
             ({} providers, {} addresses, {} characters)",
            ticket.providers.len(),
            ticket
                .providers
                .iter()
                .map(|p| p.addrs.len())
                .sum::<usize>(),
            text.len()
        ),
    };
    assert_eq!(back.kind, ticket.kind);
    assert_eq!(back.hash, ticket.hash);
    // Trimming only drops providers and addresses; it never invents or edits one.
    let peers = |t: &Ticket| {
        t.providers
            .iter()
            .map(|p| p.peer_id.clone())
            .collect::<Vec<_>>()
    };
    assert!(is_subsequence(&peers(&back), &peers(&ticket)));
    for p in &back.providers {
        assert!(
            ticket
                .providers
                .iter()
                .any(|o| o.peer_id == p.peer_id && is_subsequence(&p.addrs, &o.addrs))
        );
    }
    // A ticket within the limits survives unchanged.
    let within_limits = ticket.providers.len() <= MAX_PROVIDERS
        && ticket.providers.iter().all(|p| {
            p.peer_id.len() <= MAX_PEER_ID_LEN
                && p.addrs.len() <= MAX_ADDRS_PER_PROVIDER
                && p.addrs.iter().all(|a| a.len() <= MAX_ADDR_LEN)
        });
    if within_limits {
        assert_eq!(back, ticket);
    }
});
