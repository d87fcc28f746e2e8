//! Conversions between libp2p peer ids / multiaddrs and spore-core's
//! [`ProviderHint`] (the same values as raw bytes, carried in tickets).
//!
//! Hints come from pasted tickets, so decoding never panics: a bad peer id is
//! an error, a bad address is skipped.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use spore_core::ProviderHint;

/// Addresses put in one hint; tickets refuse more than 8 (spore-core's limit).
pub const HINT_MAX_ADDRS: usize = 8;
/// Longest address put in a hint; spore-core refuses longer ones.
pub const HINT_MAX_ADDR_LEN: usize = 256;

/// Why a hint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    #[error("provider hint has an invalid peer id: {0}")]
    BadPeerId(String),
}

/// A hint for `peer` at `addrs` (a trailing `/p2p/<peer>` is stripped;
/// relay circuits and loopback addresses are kept, the reader decides).
pub fn to_hint(peer: &PeerId, addrs: &[Multiaddr]) -> ProviderHint {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for a in addrs {
        let mut a = a.clone();
        if matches!(a.iter().last(), Some(Protocol::P2p(p)) if p == *peer) {
            a.pop();
        }
        let bytes = a.to_vec();
        if bytes.len() <= HINT_MAX_ADDR_LEN && !out.contains(&bytes) {
            out.push(bytes);
        }
        if out.len() == HINT_MAX_ADDRS {
            break;
        }
    }
    ProviderHint {
        peer_id: peer.to_bytes(),
        addrs: out,
    }
}

/// The peer and the addresses of a hint; unreadable addresses are dropped.
pub fn from_hint(hint: &ProviderHint) -> Result<(PeerId, Vec<Multiaddr>), HintError> {
    let peer =
        PeerId::from_bytes(&hint.peer_id).map_err(|e| HintError::BadPeerId(e.to_string()))?;
    let addrs = hint
        .addrs
        .iter()
        .filter_map(|b| Multiaddr::try_from(b.clone()).ok())
        .filter(|a| !a.is_empty())
        .collect();
    Ok((peer, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_strips_own_p2p_suffix() {
        let peer = PeerId::random();
        let with_p2p: Multiaddr = format!("/ip4/1.2.3.4/tcp/5/p2p/{peer}").parse().unwrap();
        let plain: Multiaddr = "/ip4/1.2.3.4/udp/5/quic-v1".parse().unwrap();
        let hint = to_hint(&peer, &[with_p2p, plain.clone()]);
        let (p, addrs) = from_hint(&hint).unwrap();
        assert_eq!(p, peer);
        assert_eq!(addrs, vec!["/ip4/1.2.3.4/tcp/5".parse().unwrap(), plain]);
    }

    #[test]
    fn garbage_is_rejected_or_skipped_without_panic() {
        let bad = ProviderHint {
            peer_id: vec![0xff; 40],
            addrs: vec![],
        };
        assert!(from_hint(&bad).is_err());
        let peer = PeerId::random();
        let hint = ProviderHint {
            peer_id: peer.to_bytes(),
            addrs: vec![vec![0xff, 0xff, 0xff], vec![]],
        };
        let (_, addrs) = from_hint(&hint).unwrap();
        assert!(addrs.is_empty());
    }

    #[test]
    fn at_most_eight_addresses() {
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = (1..20)
            .map(|p| format!("/ip4/1.2.3.4/tcp/{p}").parse().unwrap())
            .collect();
        assert_eq!(to_hint(&peer, &addrs).addrs.len(), HINT_MAX_ADDRS);
    }
}
