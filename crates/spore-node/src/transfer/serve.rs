//! The upload side: accept `/spore/blob/1` streams and serve verified data.

use std::{
    collections::{HashMap, VecDeque},
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use spore_core::{Bitfield, Hash, group_count};
use spore_net::{IncomingStreams, PeerId, Stream};
use spore_store::{BlobState, ChunkNum, ChunkRanges};
use spore_transfer::{
    choker::ChokeEvent,
    holders::CopyWait,
    superseed::Reveal,
    wire::{
        self, DEFAULT_MAX_IN_FLIGHT, DataWriter, ErrorCode, MAX_DATA_PAYLOAD, MAX_HAVE_RANGES,
        Message, Session, Status,
    },
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

use super::{
    Shared,
    announce::{self, announce_coming, announce_growth},
    holders::Holding,
    lock,
    stream_io::{self, FrameError, FrameReader, FrameWriter},
    superseed::{self, Seeding},
};

/// A peer must send its `Hello` within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence from the peer after which the session closes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// We send a `Ping` after this much silence of ours.
const PING_AFTER: Duration = Duration::from_secs(10);
/// A downloading server tells a peer what it gained at most this often: one
/// `HaveRanges` per verified batch cost a few percent of a swarm's bytes and
/// CPU, and a peer gains little from hearing of a group 200 ms sooner.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);
/// A copy that waits for first copies to other peers (see
/// `Holding::copy_should_wait` and `CopyWait`) looks again this often.
const COPY_RETRY: Duration = Duration::from_millis(20);
/// A request for groups our download has asked for and not yet verified
/// is held this long at most, then answered `NotAvailable`. The asker
/// gives up a little sooner (`SchedulerConfig::early_timeout`).
const PARK_MAX: Duration = Duration::from_secs(8);

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Refusals being sent at once; past this, excess streams are just dropped.
const MAX_REFUSALS: usize = 64;

/// Accepts streams as fast as they come (libp2p-stream drops inbound
/// streams when this loop lags) and gives each its own task. A peer gets at
/// most `max_sessions_per_peer` sessions at once and all peers together
/// `max_serve_sessions`: a flood of streams from one peer is refused at its
/// own cap and never takes the slots of the others.
pub(super) async fn accept_loop(shared: Arc<Shared>, mut incoming: IncomingStreams) {
    let mut sessions: JoinSet<PeerId> = JoinSet::new();
    let mut refusals = JoinSet::new();
    let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
    let per_peer_cap = shared.config.max_sessions_per_peer.max(1);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Ok(peer) = done
                    && let Some(n) = per_peer.get_mut(&peer)
                {
                    *n -= 1;
                    if *n == 0 {
                        per_peer.remove(&peer);
                    }
                }
            }
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            next = incoming.next() => {
                let Some((peer, stream)) = next else { break };
                let mine = per_peer.get(&peer).copied().unwrap_or(0);
                let why = if mine >= per_peer_cap {
                    Some("too many sessions from this peer")
                } else if sessions.len() >= shared.config.max_serve_sessions {
                    Some("too many sessions")
                } else {
                    None
                };
                if let Some(why) = why {
                    tracing::debug!(%peer, "refusing a /spore/blob/1 stream: {why}");
                    if refusals.len() < MAX_REFUSALS {
                        refusals.spawn(refuse(stream, why));
                    }
                    continue;
                }
                *per_peer.entry(peer).or_default() += 1;
                let shared = shared.clone();
                sessions.spawn(async move {
                    serve_session(shared, peer, stream).await;
                    peer
                });
            }
        }
    }
    while sessions.join_next().await.is_some() {}
    while refusals.join_next().await.is_some() {}
}

async fn refuse(stream: Stream, why: &'static str) {
    let (_r, mut w) = stream_io::split(stream);
    w.close_with(ErrorCode::Refused, why).await;
}

/// Rechokes on the choker's schedule, and refills stalled super-seeding windows.
pub(super) async fn choker_clock(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let events = lock(&shared.choker).poll(now).events;
        shared.dispatch(events);
        superseed::poll(&shared, now);
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What we can serve of the session's hash.
enum Source {
    /// A complete blob.
    Complete(spore_store::Blob),
    /// A blob we download: its verified groups, updated as they verify
    /// (`None` before its size is known), and the groups it has asked for.
    Active {
        view: watch::Receiver<Option<spore_store::Blob>>,
        expected: watch::Receiver<Option<Bitfield>>,
    },
    /// A partial blob nobody downloads now: its persisted groups.
    Stored(spore_store::Blob),
}

/// A response being encoded: the one being sent, or the next one, encoded
/// ahead so that the stream does not wait between two responses (its
/// `Response` goes out when it starts).
struct Sending {
    id: u64,
    groups: Range<u64>,
    /// Some of its groups were held by no other peer we serve when it
    /// started: it makes a first copy.
    first_copy: bool,
    chunks: mpsc::Receiver<Vec<u8>>,
    encoder: tokio::task::JoinHandle<Result<(), String>>,
}

/// The registration of a serve session with the choker; removed on drop.
struct Registration {
    shared: Arc<Shared>,
    peer: PeerId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let last = {
            let mut sessions = lock(&self.shared.serve_sessions);
            let last = sessions.get_mut(&self.peer).is_some_and(|m| {
                m.remove(&self.id);
                m.is_empty()
            });
            if last {
                sessions.remove(&self.peer);
            }
            last
        };
        if last {
            let events = lock(&self.shared.choker).remove_peer(&self.peer, Instant::now());
            lock(&self.shared.upload_limit).remove_peer(&self.peer);
            self.shared.dispatch(events);
        }
    }
}

async fn serve_session(shared: Arc<Shared>, peer: PeerId, stream: Stream) {
    let (mut rd, mut wr) = stream_io::split(stream);
    let result = serve_inner(&shared, peer, &mut rd, &mut wr).await;
    let (bytes, writes) = wr.written();
    tracing::debug!(%peer, bytes, writes, "serve session ends");
    match result {
        Ok(()) => {}
        Err(Close::Quiet) => {}
        Err(Close::With(code, why)) => {
            tracing::debug!(%peer, ?code, "serve session closed: {why}");
            wr.close_with(code, &why).await;
        }
    }
}

enum Close {
    /// The peer is gone or said goodbye: nothing to send.
    Quiet,
    With(ErrorCode, String),
}

impl From<FrameError> for Close {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Wire(w) => Close::With(w.code(), w.to_string()),
            FrameError::Timeout => Close::With(ErrorCode::Timeout, "timed out".into()),
            FrameError::Closed | FrameError::Io(_) => Close::Quiet,
        }
    }
}

fn violation(v: wire::Violation) -> Close {
    Close::With(ErrorCode::ProtocolViolation, v.to_string())
}

async fn lookup(shared: &Arc<Shared>, hash: Hash) -> Option<Source> {
    let store = shared.store.clone();
    let stored = tokio::task::spawn_blocking(move || -> Option<(BlobState, spore_store::Blob)> {
        let record = store.get(&hash).ok()??;
        let blob = store.blob(&hash).ok()?;
        Some((record.state, blob))
    })
    .await
    .ok()
    .flatten();
    if let Some((BlobState::Complete, blob)) = &stored {
        return Some(Source::Complete(blob.clone()));
    }
    let active = lock(&shared.downloads).get(&hash).cloned();
    if let Some(active) = active
        && !active.handle.progress().is_finished()
    {
        return Some(Source::Active {
            view: active.view,
            expected: active.expected,
        });
    }
    match stored {
        Some((BlobState::Partial(_), blob)) => Some(Source::Stored(blob)),
        _ => None,
    }
}

impl Source {
    /// The blob to serve from now, if any.
    fn blob(&self) -> Option<spore_store::Blob> {
        match self {
            Source::Complete(b) | Source::Stored(b) => Some(b.clone()),
            Source::Active { view, .. } => view.borrow().clone(),
        }
    }

    /// Whether `groups` can be served now, once our download verifies them
    /// (each is verified or asked for), or neither.
    fn readiness(&self, groups: &Range<u64>) -> Readiness {
        let Some(blob) = self.blob() else {
            return Readiness::No;
        };
        if blob.is_complete() {
            return Readiness::Now;
        }
        let have = blob.available();
        if groups.end > have.len() {
            return Readiness::No;
        }
        if have.all_set(groups.clone()) {
            return Readiness::Now;
        }
        let Source::Active { expected, .. } = self else {
            return Readiness::No;
        };
        let expected = expected.borrow();
        match expected.as_ref() {
            Some(e) if e.len() == have.len() && groups.clone().all(|g| have.get(g) || e.get(g)) => {
                Readiness::Coming
            }
            _ => Readiness::No,
        }
    }
}

/// See [`Source::readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Now,
    Coming,
    No,
}

/// A request held until our download verifies its groups (cut-through).
struct Parked {
    req: wire::Request,
    since: Instant,
}

async fn serve_inner(
    shared: &Arc<Shared>,
    peer: PeerId,
    rd: &mut FrameReader,
    wr: &mut FrameWriter,
) -> Result<(), Close> {
    let hello = match rd.next_within(HELLO_TIMEOUT).await? {
        Message::Hello(h) => h,
        Message::Error { .. } => return Err(Close::Quiet),
        _ => {
            return Err(Close::With(
                ErrorCode::ProtocolViolation,
                "first frame is not Hello".into(),
            ));
        }
    };
    let hash = hello.hash;
    // `Coming` came with revision 2 (see `announce_coming`).
    let tells_coming = hello.version >= 2;
    if let Some(active) = lock(&shared.downloads).get(&hash) {
        // It downloads what we download: it may become a source for us
        // (even if we have nothing to serve it yet).
        let _ = active.candidates.try_send(peer);
    }
    let Some(mut source) = lookup(shared, hash).await else {
        return Err(Close::With(ErrorCode::NotFound, "not here".into()));
    };

    let mut session = Session::new(hash, DEFAULT_MAX_IN_FLIGHT);
    session.receive(&Message::Hello(hello)).map_err(violation)?;
    let hello = session.hello();
    wr.send(&hello).await?;

    // Availability: of a complete blob, what super-seeding reveals.
    let sid = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
    let mut blob = source.blob();
    let mut seeding = match (&source, &blob) {
        (Source::Complete(_), Some(b)) => {
            tracing::debug!(%peer, session = sid, "super-seed session joins");
            Seeding::join(shared, hash, b.size(), sid, Instant::now())
        }
        _ => None,
    };
    let mut announced = None;
    // What the peer holds, to serve its rarest request first.
    let mut holding = blob
        .as_ref()
        .and_then(|b| Holding::join(shared, hash, b.size(), sid));
    // A peer alone with us is told a window once interested, and everything
    // after a grace (see `spore_transfer::superseed`): the blob's clock runs
    // then, not at the choker's next tick.
    let mut lone_until: Option<tokio::time::Instant> = None;
    match (&blob, seeding.as_mut()) {
        (Some(_), Some(seeding)) => {
            if seeding.waits_alone() {
                lone_until = Some(tokio::time::Instant::now() + seeding.lone_grace());
            }
            announce_reveal(wr, hash, seeding, true).await?;
        }
        (Some(b), None) => {
            let have = b.available();
            for msg in wire::have_messages(hash, b.size(), &have) {
                wr.send(&msg).await?;
            }
            announced = Some(have);
        }
        (None, _) => wr.send(&Message::DontHave { hash }).await?,
    }

    // Choker registration.
    let (ctl_tx, mut ctl_rx) = mpsc::channel(8);
    {
        let mut sessions = lock(&shared.serve_sessions);
        let entry = sessions.entry(peer).or_default();
        if entry.is_empty() {
            let _ = lock(&shared.choker).add_peer(peer, Instant::now());
        }
        entry.insert(sid, ctl_tx);
    }
    let _registration = Registration {
        shared: shared.clone(),
        peer,
        id: sid,
    };
    let mut unchoked = false;

    let mut queue: VecDeque<wire::Request> = VecDeque::new();
    let mut sending: Option<Sending> = None;
    let mut next: Option<Sending> = None;
    // A copy waiting for first copies elsewhere: when to look again, and
    // since when it waits.
    let mut copy_retry: Option<tokio::time::Instant> = None;
    let mut copy_wait = CopyWait::default();
    let mut last_heard = Instant::now();
    let mut last_sent = Instant::now();
    let (mut view_rx, mut expected_rx) = match &source {
        Source::Active { view, expected } => {
            (Some(view.clone()), tells_coming.then(|| expected.clone()))
        }
        _ => (None, None),
    };
    // Requests held for groups our download will verify, and the groups
    // told `Coming` so far.
    let mut parked: Vec<Parked> = Vec::new();
    let mut refusals: Vec<u64> = Vec::new();
    let mut told_coming: Option<Bitfield> = None;
    // Growth of `blob` not yet told, and when it may be.
    let mut announce_at: Option<tokio::time::Instant> = None;
    let mut last_announce = tokio::time::Instant::now();

    let result = loop {
        if let Some(s) = &mut seeding {
            s.set_idle(queue.is_empty() && sending.is_none() && next.is_none());
        }
        let idle_deadline = tokio::time::Instant::from_std(last_heard + IDLE_TIMEOUT);
        let ping_deadline = tokio::time::Instant::from_std(last_sent + PING_AFTER);
        // Biased: what the peer sent is read before the next request starts
        // and before each chunk is written. Its `Cancel` of a queued request
        // then lands while the request is still queued; read late (after a
        // congested write), it found the request already sent and its bytes
        // arrived twice (once from whoever the work moved to).
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => {
                break Err(Close::With(ErrorCode::Shutdown, "shutting down".into()));
            }
            frame = rd.next() => {
                let msg = frame?;
                last_heard = Instant::now();
                session.receive(&msg).map_err(violation)?;
                match msg {
                    Message::Request(req) => {
                        if let Some(s) = &seeding {
                            s.on_request(req.groups.clone(), last_heard);
                            announce_reveal(wr, hash, s, false).await?;
                        }
                        if unchoked
                            && tells_coming
                            && source.readiness(&req.groups) == Readiness::Coming
                        {
                            parked.push(Parked { req, since: last_heard });
                        } else {
                            queue.push_back(req);
                            note_queue(holding.as_ref(), &queue);
                        }
                    }
                    Message::Cancel { id } => {
                        let queued = queue
                            .iter()
                            .position(|r| r.id == id)
                            .and_then(|pos| queue.remove(pos))
                            .is_some();
                        if queued {
                            note_queue(holding.as_ref(), &queue);
                        }
                        let was_parked = parked.len();
                        parked.retain(|p| p.req.id != id);
                        let prepared = next.take_if(|s| s.id == id);
                        let unstarted = queued || prepared.is_some() || parked.len() < was_parked;
                        if let Some(s) = prepared {
                            abort(shared, peer, s).await;
                        }
                        if unstarted {
                            let msg = Message::Response { id, status: Status::Cancelled };
                            session.send(&msg).map_err(violation)?;
                            wr.send(&msg).await?;
                        } else if sending.as_ref().is_some_and(|s| s.id == id)
                            && let Some(s) = sending.take()
                        {
                            abort(shared, peer, s).await;
                            let msg = Message::End { id, status: Status::Cancelled };
                            session.send(&msg).map_err(violation)?;
                            wr.send(&msg).await?;
                        }
                    }
                    Message::Interested | Message::NotInterested => {
                        let interested = matches!(msg, Message::Interested);
                        let (events, now_unchoked) = {
                            let mut choker = lock(&shared.choker);
                            let events = choker.set_interested(&peer, interested, Instant::now());
                            (events, choker.is_unchoked(&peer))
                        };
                        shared.dispatch(events);
                        if interested && let Some(s) = &seeding && s.on_interested() {
                            announce_reveal(wr, hash, s, false).await?;
                            last_sent = Instant::now();
                        }
                        // Another session of this peer may hold the slot already.
                        if interested && now_unchoked && !unchoked {
                            unchoked = true;
                            wr.send(&Message::Unchoke).await?;
                            last_sent = Instant::now();
                        }
                    }
                    Message::Ping { nonce } => {
                        wr.send(&Message::Pong { nonce }).await?;
                        last_sent = Instant::now();
                    }
                    Message::Error { .. } => break Err(Close::Quiet),
                    Message::Response { .. } | Message::Data { .. } | Message::End { .. } => {
                        // Session::receive refuses these: we never request here.
                        break Err(Close::With(ErrorCode::ProtocolViolation, "unexpected payload".into()));
                    }
                    // What the peer holds (from anyone) steers super-seeding
                    // and the order we serve its requests in.
                    Message::HaveAll { hash: h, size } if h == hash => {
                        if let Some(s) = seeding.as_ref().filter(|s| s.size() == size) {
                            s.on_have(0..group_count(size));
                        }
                        if let Some(h) = holding.as_ref().filter(|h| h.size() == size) {
                            h.on_have(0..group_count(size));
                        }
                    }
                    Message::Have(slice) if slice.hash == hash => {
                        if let Some(s) = seeding.as_ref().filter(|s| s.size() == slice.size) {
                            slice.present().for_each(|r| s.on_have(r));
                        }
                        if let Some(h) = holding.as_ref().filter(|h| h.size() == slice.size) {
                            slice.present().for_each(|r| h.on_have(r));
                        }
                    }
                    Message::HaveRanges { hash: h, ranges } if h == hash => {
                        for r in ranges {
                            if let Some(s) = &seeding {
                                s.on_have(r.clone());
                            }
                            if let Some(h) = &holding {
                                h.on_have(r);
                            }
                        }
                    }
                    Message::DontHave { hash: h } if h == hash => {
                        if let Some(s) = &seeding {
                            s.on_dont_have();
                        }
                        if let Some(h) = &holding {
                            h.on_dont_have();
                        }
                    }
                    Message::WantHave { hash: other } if other != hash => {
                        wr.send(&Message::DontHave { hash: other }).await?;
                    }
                    _ => {}
                }
            }
            // A copy encoded ahead gives way to a first copy queued after it:
            // nothing of it is on the wire yet, so it goes back to the queue,
            // and the first copy leaves right after the response being sent
            // (a lone holder's fresh groups otherwise waited a response more).
            _ = std::future::ready(()), if copy_gives_way(next.as_ref(), &queue, holding.as_ref()) => {
                if let Some(s) = next.take() {
                    queue.push_front(wire::Request { id: s.id, hash, groups: s.groups.clone() });
                    note_queue(holding.as_ref(), &queue);
                    abort(shared, peer, s).await;
                }
            }
            // Start the next response when idle and nothing from the peer waits.
            _ = std::future::ready(()), if sending.is_none() && (next.is_some() || !queue.is_empty()) && copy_retry.is_none() => {
                let started = match next.take() {
                    Some(s) => Ok(s),
                    None => {
                        let may_wait = copy_wait.may_wait(Instant::now());
                        let next = start_next(shared, peer, &mut source, &mut blob, unchoked, &mut queue, holding.as_ref(), may_wait);
                        let Some((id, started)) = waited(next, &mut copy_retry, &mut copy_wait) else { continue };
                        started.map_err(|status| (id, status))
                    }
                };
                let msg = match &started {
                    Ok(s) => Message::Response { id: s.id, status: Status::Ok },
                    Err((id, status)) => Message::Response { id: *id, status: *status },
                };
                session.send(&msg).map_err(violation)?;
                wr.send(&msg).await?;
                sending = started.ok();
                last_sent = Instant::now();
            }
            // Encode the request after the one being sent, ahead of time.
            _ = std::future::ready(()), if sending.is_some() && next.is_none() && !queue.is_empty() && copy_retry.is_none() => {
                let may_wait = copy_wait.may_wait(Instant::now());
                let started = start_next(shared, peer, &mut source, &mut blob, unchoked, &mut queue, holding.as_ref(), may_wait);
                let Some((id, started)) = waited(started, &mut copy_retry, &mut copy_wait) else { continue };
                match started {
                    Ok(s) => next = Some(s),
                    Err(status) => {
                        // Refusals may interleave with another response's data.
                        let msg = Message::Response { id, status };
                        session.send(&msg).map_err(violation)?;
                        wr.send(&msg).await?;
                        last_sent = Instant::now();
                    }
                }
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                break Err(Close::With(ErrorCode::Timeout, "nothing heard for 30 s".into()));
            }
            _ = tokio::time::sleep_until(ping_deadline) => {
                wr.send(&Message::Ping { nonce: 0 }).await?;
                last_sent = Instant::now();
            }
            ev = ctl_rx.recv() => {
                let Some(ev) = ev else { continue };
                match ev {
                    ChokeEvent::Unchoke(_) if !unchoked => {
                        unchoked = true;
                        wr.send(&Message::Unchoke).await?;
                    }
                    ChokeEvent::Choke(_) if unchoked => {
                        unchoked = false;
                        wr.send(&Message::Choke).await?;
                        let mut unstarted: Vec<u64> = Vec::new();
                        if let Some(s) = next.take() {
                            unstarted.push(s.id);
                            abort(shared, peer, s).await;
                        }
                        unstarted.extend(queue.drain(..).map(|r| r.id));
                        unstarted.extend(parked.drain(..).map(|p| p.req.id));
                        note_queue(holding.as_ref(), &queue);
                        for id in unstarted {
                            let msg = Message::Response { id, status: Status::Choked };
                            session.send(&msg).map_err(violation)?;
                            wr.send(&msg).await?;
                        }
                    }
                    _ => {}
                }
                last_sent = Instant::now();
            }
            new = announce::next_view(&mut view_rx) => {
                if let Some(new) = new {
                    if holding.is_none() {
                        holding = Holding::join(shared, hash, new.size(), sid);
                    }
                    // Served at once, told with the next announcement.
                    blob = Some(new);
                    announce_at.get_or_insert(last_announce + ANNOUNCE_EVERY);
                }
                unpark(&source, &mut parked, &mut queue, holding.as_ref(), &mut refusals);
            }
            changed = next_expected(&mut expected_rx) => {
                if changed {
                    announce_at.get_or_insert(last_announce + ANNOUNCE_EVERY);
                }
                unpark(&source, &mut parked, &mut queue, holding.as_ref(), &mut refusals);
            }
            _ = sleep_until_some(parked.iter().map(|p| p.since).min().map(|t| tokio::time::Instant::from_std(t + PARK_MAX))) => {
                unpark(&source, &mut parked, &mut queue, holding.as_ref(), &mut refusals);
            }
            _ = std::future::ready(()), if !refusals.is_empty() => {
                for id in std::mem::take(&mut refusals) {
                    let msg = Message::Response { id, status: Status::NotAvailable };
                    session.send(&msg).map_err(violation)?;
                    wr.send(&msg).await?;
                }
                last_sent = Instant::now();
            }
            _ = sleep_until_some(announce_at) => {
                announce_at = None;
                last_announce = tokio::time::Instant::now();
                if let Some(b) = &blob
                    && announce_growth(wr, hash, b.size(), b.available(), &mut announced).await?
                {
                    last_sent = Instant::now();
                }
                // Only a peer that knows the size reads `Coming`.
                let expected = expected_rx.as_ref().and_then(|rx| rx.borrow().clone());
                if let (Some(b), Some(expected), Some(_)) = (&blob, expected, &announced)
                    && announce_coming(wr, hash, &expected, &b.available(), &mut told_coming).await?
                {
                    last_sent = Instant::now();
                }
            }
            _ = sleep_until_some(copy_retry) => {
                copy_retry = None;
            }
            _ = sleep_until_some(lone_until) => {
                lone_until = None;
                if let Some(s) = &seeding {
                    s.poll(Instant::now());
                }
            }
            _ = async {
                match seeding.as_mut() {
                    Some(s) => s.woken().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(s) = &seeding {
                    announce_reveal(wr, hash, s, false).await?;
                    last_sent = Instant::now();
                }
            }
            chunk = async {
                match sending.as_mut() {
                    Some(s) => s.chunks.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(s) = sending.as_mut() else { continue };
                match chunk {
                    Some(bytes) => {
                        shared.throttle(&shared.upload_limit, &peer, bytes.len() as u64).await;
                        wr.write_raw(&bytes).await?;
                        last_sent = Instant::now();
                        let n = bytes.len() as u64;
                        lock(&shared.choker).on_uploaded(&peer, n);
                        let mut up = lock(&shared.uploads);
                        *up.per_peer.entry(peer).or_default() += n;
                        up.total += n;
                    }
                    None => {
                        let id = s.id;
                        let mut damaged = false;
                        let status = match (&mut s.encoder).await {
                            Ok(Ok(())) => Status::Ok,
                            Ok(Err(e)) => {
                                tracing::warn!(%hash, "serving {id} failed: {e}");
                                damaged = matches!(source, Source::Complete(_))
                                    && !still_intact(shared, hash).await;
                                Status::Internal
                            }
                            Err(_) => Status::Internal,
                        };
                        if status == Status::Ok
                            && let Some(seeding) = &seeding
                        {
                            seeding.on_delivered(s.groups.clone());
                        }
                        sending = None;
                        lock(&shared.choker).end_request(&peer);
                        lock(&shared.uploads).requests += 1;
                        let msg = Message::End { id, status };
                        session.send(&msg).map_err(violation)?;
                        wr.send(&msg).await?;
                        last_sent = Instant::now();
                        if damaged {
                            // Withdraw what we announced; a later session finds it broken.
                            wr.send(&Message::DontHave { hash }).await?;
                            break Err(Close::With(ErrorCode::NotFound, "our copy is damaged".into()));
                        }
                    }
                }
            }
        }
    };
    for s in [sending.take(), next.take()].into_iter().flatten() {
        abort(shared, peer, s).await;
    }
    result
}

/// What [`start_next`] did.
enum Next {
    /// Nothing is queued.
    Empty,
    /// The rarest queued request is a copy, and another peer waits for a
    /// first copy: nothing starts now.
    CopyWaits,
    /// This request started (or the status refusing it).
    Started(u64, Result<Sending, Status>),
}

/// Starts the queued request to serve next: the peer's rarest (see
/// [`Holding::rarest`]), or the oldest when nothing is known of what it
/// holds. With `may_wait`, a request that would only copy what others hold
/// waits while another peer waits for a first copy
/// ([`Holding::copy_should_wait`]).
///
/// A response we start counts as held by the peer from then on (not once
/// sent): two sessions would otherwise send the same rare group side by
/// side, and a lone holder's upload is what keeps its groups in the swarm.
#[allow(clippy::too_many_arguments)]
fn start_next(
    shared: &Arc<Shared>,
    peer: PeerId,
    source: &mut Source,
    blob: &mut Option<spore_store::Blob>,
    unchoked: bool,
    queue: &mut VecDeque<wire::Request>,
    holding: Option<&Holding>,
    may_wait: bool,
) -> Next {
    let pick = holding
        .and_then(|h| h.rarest(queue.iter().map(|r| &r.groups)))
        .unwrap_or(0);
    let Some(groups) = queue.get(pick).map(|r| r.groups.clone()) else {
        return Next::Empty;
    };
    if may_wait && unchoked && holding.is_some_and(|h| h.copy_should_wait(&groups)) {
        return Next::CopyWaits;
    }
    let Some(req) = queue.remove(pick) else {
        return Next::Empty;
    };
    note_queue(holding, queue);
    let first_copy = holding.is_some_and(|h| !h.all_held(&req.groups));
    let started = start_request(shared, peer, source, blob, unchoked, &req)
        .map(|s| Sending { first_copy, ..s });
    if started.is_ok()
        && let Some(h) = holding
    {
        h.on_have(req.groups.clone());
    }
    Next::Started(req.id, started)
}

/// Follows what [`start_next`] did on the clock of a waiting copy: it looks
/// again after [`COPY_RETRY`]. The started request, if one did.
fn waited(
    next: Next,
    retry: &mut Option<tokio::time::Instant>,
    copy_wait: &mut CopyWait,
) -> Option<(u64, Result<Sending, Status>)> {
    match next {
        Next::Empty => None,
        Next::CopyWaits => {
            *retry = Some(tokio::time::Instant::now() + COPY_RETRY);
            copy_wait.waiting(Instant::now());
            None
        }
        Next::Started(id, started) => {
            copy_wait.started(Instant::now());
            Some((id, started))
        }
    }
}

/// Moves the parked requests whose groups have verified to the queue, and
/// those whose groups we no longer expect, or that waited [`PARK_MAX`], to
/// `refusals` (answered `NotAvailable`).
fn unpark(
    source: &Source,
    parked: &mut Vec<Parked>,
    queue: &mut VecDeque<wire::Request>,
    holding: Option<&Holding>,
    refusals: &mut Vec<u64>,
) {
    if parked.is_empty() {
        return;
    }
    let now = Instant::now();
    let mut moved = false;
    parked.retain(|p| match source.readiness(&p.req.groups) {
        Readiness::Coming if now.duration_since(p.since) < PARK_MAX => true,
        Readiness::Now => {
            queue.push_back(p.req.clone());
            moved = true;
            false
        }
        Readiness::Coming | Readiness::No => {
            refusals.push(p.req.id);
            false
        }
    });
    if moved {
        note_queue(holding, queue);
    }
}

/// Whether the groups our download expects changed; never resolves once it
/// has ended (a `select!` arm).
async fn next_expected(rx: &mut Option<watch::Receiver<Option<Bitfield>>>) -> bool {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    if r.changed().await.is_ok() {
        return true;
    }
    *rx = None;
    false
}

/// Whether `next`, encoded ahead, only copies what other peers hold while a
/// queued request would make a first copy.
fn copy_gives_way(
    next: Option<&Sending>,
    queue: &VecDeque<wire::Request>,
    holding: Option<&Holding>,
) -> bool {
    let (Some(next), Some(h)) = (next, holding) else {
        return false;
    };
    !next.first_copy && queue.iter().any(|r| !h.all_held(&r.groups))
}

/// Tells the blob's holder table what the peer has queued now.
fn note_queue(holding: Option<&Holding>, queue: &VecDeque<wire::Request>) {
    if let Some(h) = holding {
        h.set_queued(queue.iter().map(|r| &r.groups));
    }
}

/// After a complete blob failed to encode: re-hashes it (the store marks a
/// damaged copy broken, so it is no longer served or provided) and says
/// whether it is still intact. One check per blob at a time; a session whose
/// blob is being checked by another takes it as damaged, and its peer asks
/// again later.
async fn still_intact(shared: &Arc<Shared>, hash: Hash) -> bool {
    if !lock(&shared.rechecking).insert(hash) {
        return false;
    }
    let store = shared.store.clone();
    let verified = tokio::task::spawn_blocking(move || store.verify(&hash)).await;
    lock(&shared.rechecking).remove(&hash);
    match verified {
        Ok(Ok(v)) => {
            tracing::info!(%hash, "re-verified after a failed read: {v:?}");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(%hash, "our copy is damaged, no longer serving it: {e}");
            false
        }
        Err(_) => false,
    }
}

/// Announces what super-seeding reveals to this session. The session's first
/// announcement must tell the size, so revealed groups go out as `Have`
/// slices then, and as `HaveRanges` after.
async fn announce_reveal(
    wr: &mut FrameWriter,
    hash: Hash,
    seeding: &Seeding,
    first: bool,
) -> Result<(), Close> {
    let size = seeding.size();
    match seeding.reveal() {
        Reveal::Nothing if !first => {}
        Reveal::All | Reveal::Nothing => wr.send(&Message::HaveAll { hash, size }).await?,
        Reveal::Groups(ranges) if first => {
            let mut have = Bitfield::new(group_count(size));
            for r in ranges {
                have.set_range(r);
            }
            for msg in wire::have_messages(hash, size, &have) {
                wr.send(&msg).await?;
            }
        }
        Reveal::Groups(ranges) => {
            for batch in ranges.chunks(MAX_HAVE_RANGES) {
                wr.send(&Message::HaveRanges {
                    hash,
                    ranges: batch.to_vec(),
                })
                .await?;
            }
        }
    }
    Ok(())
}

/// Stops encoding `s` and frees its request slot with the choker.
async fn abort(shared: &Shared, peer: PeerId, s: Sending) {
    drop(s.chunks);
    let _ = s.encoder.await;
    lock(&shared.choker).end_request(&peer);
}

/// Sleeps until `at`; never resolves without one (a `select!` arm for an
/// optional deadline).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Checks a request and starts encoding it on a blocking thread.
fn start_request(
    shared: &Arc<Shared>,
    peer: PeerId,
    source: &mut Source,
    blob: &mut Option<spore_store::Blob>,
    unchoked: bool,
    req: &wire::Request,
) -> Result<Sending, Status> {
    if let Source::Active { view, .. } = source {
        // The freshest view of a blob being downloaded.
        if let Some(b) = view.borrow().clone() {
            *blob = Some(b);
        }
    }
    let Some(b) = blob.clone() else {
        return Err(Status::NotAvailable);
    };
    if req.hash != b.hash() {
        return Err(Status::NotFound);
    }
    if req.groups.end > group_count(b.size()) {
        return Err(Status::BadRequest);
    }
    if !b.is_complete() && !b.available().all_set(req.groups.clone()) {
        return Err(Status::NotAvailable);
    }
    if !unchoked {
        return Err(Status::Choked);
    }
    lock(&shared.choker)
        .begin_request(&peer)
        .map_err(|r| match r {
            spore_transfer::choker::Refusal::Busy => Status::Busy,
            _ => Status::Choked,
        })?;
    let (tx, rx) = mpsc::channel(4);
    let chunks = wire::group_chunks(req.groups.clone());
    let ranges = ChunkRanges::from(ChunkNum(chunks.start)..ChunkNum(chunks.end));
    let (id, lie) = (req.id, shared.config.debug_lie_uploads);
    let encoder = tokio::task::spawn_blocking(move || {
        // Frames of MAX_DATA_PAYLOAD go to the session one by one through a
        // small bounded channel, so memory stays bounded.
        let send = |frame: Vec<u8>| {
            tx.blocking_send(frame)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session closed"))
        };
        let mut data = DataWriter::new(id, MAX_DATA_PAYLOAD, send);
        let encoded = super::lying::maybe_lying(lie, &mut data);
        b.encode(&ranges, encoded).map_err(|e| e.to_string())?;
        data.finish().map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    Ok(Sending {
        id,
        groups: req.groups.clone(),
        first_copy: false,
        chunks: rx,
        encoder,
    })
}
