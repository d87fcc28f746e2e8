//! Multi-valued, signed DHT records: under a key that starts with
//! [`MULTI_VALUE_PREFIX`], every publisher owns one slot, and a record's
//! value is the list of all slots. Plain Kademlia keeps one value per key,
//! which is no use for a keyword index where many peers list items under
//! the same word.
//!
//! An *entry* is `publisher (32-byte Ed25519 key) | signature (64) |
//! payload`; the signature covers [`CONTEXT`], the key's length (u32 BE),
//! the key and the payload, so an entry cannot be replayed under another
//! key and only the key's owner can fill its slot. A record value is a
//! list of entries, each prefixed by its length (u16 BE). Stores merge
//! what they receive, slot by slot, within [`MAX_ENTRIES_PER_KEY`] and
//! [`MAX_MERGED_BYTES`] (first come, first kept, until an entry expires),
//! so one GET_VALUE answer stays under the Kademlia packet limit.

use crate::identity::NodeSigner;

/// Keys under this prefix are multi-valued.
pub const MULTI_VALUE_PREFIX: &[u8] = b"/spore/mv/";
/// Domain separation of entry signatures.
pub const CONTEXT: &[u8] = b"spore-mv/1";
/// Largest payload of one entry.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024;
/// Publishers kept per key.
pub const MAX_ENTRIES_PER_KEY: usize = 16;
/// Largest merged value (below `KAD_MAX_PACKET`, with room for the rest of
/// the message).
pub const MAX_MERGED_BYTES: usize = 12 * 1024;

const HEADER: usize = 32 + 64;

pub fn is_multi_value(key: &[u8]) -> bool {
    key.starts_with(MULTI_VALUE_PREFIX)
}

fn signed_message(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 4 + key.len() + payload.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&(key.len() as u32).to_be_bytes());
    m.extend_from_slice(key);
    m.extend_from_slice(payload);
    m
}

/// An entry of `signer` holding `payload` under `key`.
pub fn seal(signer: &NodeSigner, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&signer.public_key());
    out.extend_from_slice(&signer.sign(&signed_message(key, payload)));
    out.extend_from_slice(payload);
    out
}

/// A verified entry: its publisher's key and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub publisher: [u8; 32],
    pub payload: &'a [u8],
}

/// Checks an entry's size and signature.
pub fn open<'a>(key: &[u8], entry: &'a [u8]) -> Option<Entry<'a>> {
    if entry.len() < HEADER || entry.len() > HEADER + MAX_PAYLOAD_BYTES {
        return None;
    }
    let publisher: [u8; 32] = entry[..32].try_into().ok()?;
    let signature = &entry[32..HEADER];
    let payload = &entry[HEADER..];
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(&publisher).ok()?;
    public
        .verify(&signed_message(key, payload), signature)
        .then_some(Entry { publisher, payload })
}

/// A value holding `entries`.
pub fn encode_list<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if let Ok(len) = u16::try_from(e.len()) {
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(e);
        }
    }
    out
}

/// The entries of a value; `None` if the framing is broken.
pub fn decode_list(value: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        if rest.len() < 2 || out.len() >= 4 * MAX_ENTRIES_PER_KEY {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let end = 2 + len;
        if rest.len() < end {
            return None;
        }
        out.push(&rest[2..end]);
        rest = &rest[end..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_entries_open_only_under_their_key() {
        let s = NodeSigner::generate();
        let key = b"/spore/mv/test";
        let e = seal(&s, key, b"payload");
        let opened = open(key, &e).unwrap();
        assert_eq!(opened.payload, b"payload");
        assert_eq!(opened.publisher, s.public_key());
        assert!(open(b"/spore/mv/other", &e).is_none());
        let mut tampered = e.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(key, &tampered).is_none());
        let list = encode_list([e.as_slice(), e.as_slice()]);
        assert_eq!(decode_list(&list).unwrap().len(), 2);
        assert!(decode_list(&list[..list.len() - 1]).is_none());
        assert!(decode_list(&[0xff]).is_none());
    }
}
