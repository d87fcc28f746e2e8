//! The session rules of `/spore/blob/1` that span frames (spec §2.7): the
//! handshake, requests in flight in both directions, and the order and size
//! of response payloads. Pure bookkeeping, bounded by the two
//! `max_in_flight` values; choking, availability and what to serve stay
//! with the caller.

use std::{
    collections::{HashMap, HashSet},
    ops::Range,
};

use spore_core::Hash;

use super::{Hello, Message, Request, Status, VERSION, encoded_len};

/// A broken session rule. Received from the peer: send
/// `Error { ProtocolViolation }`, close and penalise it. From a `send`
/// method: the caller's own mistake, nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation: {0}")]
pub struct Violation(pub &'static str);

/// Progress of the payload currently being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receiving {
    pub id: u64,
    /// Payload bytes still to come before `End { Ok }`.
    pub remaining: u64,
}

/// One side of a session.
#[derive(Debug)]
pub struct Session {
    hash: Hash,
    our_max_in_flight: u32,
    peer_max_in_flight: Option<u32>,
    hello_sent: bool,
    peer_closed: bool,
    /// Our requests in flight: id → payload length of an `Ok` answer.
    ours: HashMap<u64, u64>,
    /// The peer's requests we have not finished answering.
    theirs: HashSet<u64>,
    receiving: Option<Receiving>,
    sending: Option<u64>,
}

impl Session {
    /// A session about `hash`, accepting up to `max_in_flight` requests
    /// from the peer (1..=[`super::MAX_IN_FLIGHT`]).
    pub fn new(hash: Hash, max_in_flight: u32) -> Self {
        Self {
            hash,
            our_max_in_flight: max_in_flight.clamp(1, super::MAX_IN_FLIGHT),
            peer_max_in_flight: None,
            hello_sent: false,
            peer_closed: false,
            ours: HashMap::new(),
            theirs: HashSet::new(),
            receiving: None,
            sending: None,
        }
    }

    /// Our `Hello`: the first frame to send.
    pub fn hello(&mut self) -> Message {
        self.hello_sent = true;
        Message::Hello(Hello {
            version: VERSION,
            hash: self.hash,
            max_in_flight: self.our_max_in_flight,
            capabilities: 0,
        })
    }

    /// Whether the peer's `Hello` has arrived (requests may be sent).
    pub fn is_established(&self) -> bool {
        self.peer_max_in_flight.is_some()
    }

    /// Whether the peer sent `Error` (it sends nothing more).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// How many more requests the peer accepts now.
    pub fn request_budget(&self) -> usize {
        let max = self.peer_max_in_flight.unwrap_or(0) as usize;
        max.saturating_sub(self.ours.len())
    }

    /// Our requests in flight.
    pub fn in_flight(&self) -> impl Iterator<Item = u64> + '_ {
        self.ours.keys().copied()
    }

    /// Requests of the peer not yet answered in full.
    pub fn peer_in_flight(&self) -> usize {
        self.theirs.len()
    }

    /// The payload being received, if a `Response { Ok }` is open.
    pub fn receiving(&self) -> Option<Receiving> {
        self.receiving
    }

    /// Records request `id` for `groups` of `hash`, a blob of `size` bytes,
    /// and returns the frame to send.
    pub fn request(
        &mut self,
        id: u64,
        hash: Hash,
        groups: Range<u64>,
        size: u64,
    ) -> Result<Message, Violation> {
        if !self.is_established() {
            return Err(Violation("request before the peer's Hello"));
        }
        if self.request_budget() == 0 {
            return Err(Violation("the peer's max_in_flight is reached"));
        }
        if self.ours.contains_key(&id) {
            return Err(Violation("request id already in flight"));
        }
        if groups.end - groups.start.min(groups.end) > super::MAX_REQUEST_GROUPS {
            return Err(Violation("too many groups for one request"));
        }
        let expected = encoded_len(size, groups.clone())
            .ok_or(Violation("group range empty or past the blob's end"))?;
        self.ours.insert(id, expected);
        Ok(Message::Request(Request { id, hash, groups }))
    }

    /// Checks and records a frame we send (anything but `Request`: use
    /// [`request`](Self::request)). Catches answering a request twice,
    /// interleaving two payloads, and frames before our `Hello`.
    pub fn send(&mut self, msg: &Message) -> Result<(), Violation> {
        if !self.hello_sent {
            return Err(Violation("frame before our Hello"));
        }
        match msg {
            Message::Hello(_) => return Err(Violation("second Hello")),
            Message::Request(_) => return Err(Violation("requests go through Session::request")),
            Message::Response { id, status } => {
                if !self.theirs.contains(id) {
                    return Err(Violation("response to a request not in flight"));
                }
                if self.sending.is_some_and(|s| s == *id) {
                    return Err(Violation("second response to one request"));
                }
                if *status == Status::Ok {
                    if self.sending.is_some() {
                        return Err(Violation("Ok response while another payload is open"));
                    }
                    self.sending = Some(*id);
                } else {
                    self.theirs.remove(id);
                }
            }
            Message::Data { id, .. } if self.sending != Some(*id) => {
                return Err(Violation("data outside its response"));
            }
            Message::End { id, .. } => {
                if self.sending != Some(*id) {
                    return Err(Violation("End outside its response"));
                }
                self.sending = None;
                self.theirs.remove(id);
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks and records a frame received from the peer.
    pub fn receive(&mut self, msg: &Message) -> Result<(), Violation> {
        if self.peer_closed {
            return Err(Violation("frame after Error"));
        }
        if self.peer_max_in_flight.is_none() {
            return match msg {
                Message::Hello(h) if h.hash == self.hash => {
                    self.peer_max_in_flight = Some(h.max_in_flight);
                    Ok(())
                }
                Message::Hello(_) => Err(Violation("Hello for another hash")),
                Message::Error { .. } => {
                    self.peer_closed = true;
                    Ok(())
                }
                _ => Err(Violation("first frame is not Hello")),
            };
        }
        match msg {
            Message::Hello(_) => return Err(Violation("second Hello")),
            Message::Error { .. } => self.peer_closed = true,
            Message::Request(r) => {
                if self.theirs.len() >= self.our_max_in_flight as usize {
                    return Err(Violation("more requests in flight than our max_in_flight"));
                }
                if !self.theirs.insert(r.id) {
                    return Err(Violation("request id already in flight"));
                }
            }
            Message::Response { id, status } => {
                let Some(&expected) = self.ours.get(id) else {
                    return Err(Violation("response to a request not in flight"));
                };
                if self.receiving.is_some_and(|r| r.id == *id) {
                    return Err(Violation("second response to one request"));
                }
                if *status == Status::Ok {
                    if self.receiving.is_some() {
                        return Err(Violation("Ok response while another payload is open"));
                    }
                    self.receiving = Some(Receiving {
                        id: *id,
                        remaining: expected,
                    });
                } else {
                    self.ours.remove(id);
                }
            }
            Message::Data { id, data } => match &mut self.receiving {
                Some(r) if r.id == *id => {
                    r.remaining = r
                        .remaining
                        .checked_sub(data.len() as u64)
                        .ok_or(Violation("more payload than the request's encoded_len"))?;
                }
                _ => return Err(Violation("data outside its response")),
            },
            Message::End { id, status } => match self.receiving {
                Some(r) if r.id == *id => {
                    if *status == Status::Ok && r.remaining != 0 {
                        return Err(Violation("End Ok before the whole payload"));
                    }
                    self.receiving = None;
                    self.ours.remove(id);
                }
                _ => return Err(Violation("End outside its response")),
            },
            _ => {}
        }
        Ok(())
    }
}
