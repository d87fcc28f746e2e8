//! Super-seeding on the serving side: one [`SuperSeed`] per complete blob
//! that sessions are serving, shared by those sessions (see
//! `spore_transfer::superseed` for the policy).
//!
//! Each serve session of a complete blob joins as a [`Seeding`], announces
//! what [`Seeding::reveal`] returns, and reports requests and whether its
//! peer may request. A change that gives *other* sessions something to
//! announce (the blob is fully out, a stalled peer got a fresh window) wakes
//! every session of the blob; each then takes its own reveal.

use std::{
    collections::HashMap,
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use spore_core::{Hash, group_count};
use spore_transfer::superseed::{Reveal, SuperSeed, SuperSeedConfig};
use tokio::sync::watch;

use super::{Shared, lock, seed};

/// The super-seeding state of one blob, shared by its serve sessions.
#[derive(Debug)]
pub(crate) struct BlobSeeding {
    machine: SuperSeed<u64>,
    wake: watch::Sender<()>,
}

/// Every blob being super-seeded, by hash.
pub(crate) type SuperSeeds = HashMap<Hash, BlobSeeding>;

/// A serve session's part in its blob's super-seeding; it leaves on drop.
pub(super) struct Seeding {
    shared: Arc<Shared>,
    hash: Hash,
    size: u64,
    session: u64,
    /// What the state machine was last told by `set_idle`.
    idle: bool,
    wake: watch::Receiver<()>,
}

impl Seeding {
    /// Joins the super-seeding of `hash`. `None` when the session should
    /// announce everything: super-seeding is off, or the blob already
    /// follows as many sessions as it may.
    pub(super) fn join(
        shared: &Arc<Shared>,
        hash: Hash,
        size: u64,
        session: u64,
        now: Instant,
    ) -> Option<Self> {
        if !shared.config.super_seed {
            return None;
        }
        let mut seeds = lock(&shared.super_seeds);
        let blob = seeds.entry(hash).or_insert_with(|| BlobSeeding {
            machine: SuperSeed::new(group_count(size), SuperSeedConfig::default(), seed()),
            wake: watch::channel(()).0,
        });
        if !blob.machine.add_peer(session, now) {
            if blob.machine.peer_count() == 0 {
                seeds.remove(&hash);
            }
            return None;
        }
        let wake = blob.wake.subscribe();
        if blob.machine.peer_count() > 1 {
            // A peer that waited alone may have just been given its window.
            blob.wake.send_replace(());
        }
        Some(Self {
            shared: shared.clone(),
            hash,
            size,
            session,
            idle: false,
            wake,
        })
    }

    /// The blob's size.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Whether this session's peer is alone with us, waiting for company.
    pub(super) fn waits_alone(&self) -> bool {
        lock(&self.shared.super_seeds)
            .get(&self.hash)
            .is_some_and(|b| b.machine.waits_alone(&self.session))
    }

    /// How long a peer alone with us waits before it is told everything.
    pub(super) fn lone_grace(&self) -> Duration {
        lock(&self.shared.super_seeds)
            .get(&self.hash)
            .map_or(Duration::ZERO, |b| b.machine.config().lone_grace)
    }

    /// Runs the blob's clock now (the first session does, once its grace
    /// alone is over, rather than wait for the choker's tick).
    pub(super) fn poll(&self, now: Instant) {
        self.with(|blob| {
            if blob.machine.poll(now) {
                blob.wake.send_replace(());
            }
        });
    }

    /// What this session must announce now.
    pub(super) fn reveal(&self) -> Reveal {
        let reveal = lock(&self.shared.super_seeds)
            .get_mut(&self.hash)
            .map_or(Reveal::Nothing, |b| b.machine.take_reveal(&self.session));
        if reveal != Reveal::Nothing {
            tracing::debug!(session = self.session, ?reveal, "super-seed reveal");
        }
        reveal
    }

    /// The peer requested `groups`.
    pub(super) fn on_request(&self, groups: Range<u64>, now: Instant) {
        tracing::trace!(session = self.session, ?groups, "super-seed request");
        self.with(|blob| blob.machine.on_request(&self.session, groups, now));
    }

    /// We finished sending `groups` to the peer.
    pub(super) fn on_delivered(&self, groups: Range<u64>) {
        tracing::trace!(session = self.session, ?groups, "super-seed delivered");
        self.holds(groups);
    }

    /// The peer said it wants data: alone with us, it gets its window now.
    /// True if it has something to announce.
    pub(super) fn on_interested(&self) -> bool {
        lock(&self.shared.super_seeds)
            .get_mut(&self.hash)
            .is_some_and(|b| b.machine.on_interested(&self.session))
    }

    /// The peer announced that it holds `groups` (from anyone).
    pub(super) fn on_have(&self, groups: Range<u64>) {
        self.holds(groups);
    }

    fn holds(&self, groups: Range<u64>) {
        self.with(|blob| {
            let was_active = blob.machine.is_active();
            blob.machine.on_have(&self.session, groups);
            // The peers together hold every group: everyone is told everything.
            if was_active && !blob.machine.is_active() {
                let uploaded = lock(&self.shared.uploads).total;
                tracing::debug!(hash = %self.hash, uploaded, "super-seeding over: the peers hold every group");
                blob.wake.send_replace(());
            }
        });
    }

    /// The peer withdrew its announcements.
    pub(super) fn on_dont_have(&self) {
        self.with(|blob| blob.machine.on_dont_have(&self.session));
    }

    /// Whether the peer is idle with us: it has no request pending. Cheap when nothing changed (called on every session event).
    pub(super) fn set_idle(&mut self, idle: bool) {
        if self.idle != idle {
            self.idle = idle;
            self.with(|blob| blob.machine.set_idle(&self.session, idle, Instant::now()));
        }
    }

    /// Resolves when some change may have given this session something to
    /// announce.
    pub(super) async fn woken(&mut self) {
        if self.wake.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn with(&self, f: impl FnOnce(&mut BlobSeeding)) {
        if let Some(blob) = lock(&self.shared.super_seeds).get_mut(&self.hash) {
            f(blob);
        }
    }
}

impl Drop for Seeding {
    fn drop(&mut self) {
        tracing::debug!(session = self.session, "super-seed session left");
        let mut seeds = lock(&self.shared.super_seeds);
        if let Some(blob) = seeds.get_mut(&self.hash) {
            if blob.machine.remove_peer(&self.session) {
                blob.wake.send_replace(());
            }
            if blob.machine.peer_count() == 0 {
                seeds.remove(&self.hash);
            }
        }
    }
}

/// Gives stalled peers fresh windows (on the choker's clock).
pub(super) fn poll(shared: &Shared, now: Instant) {
    for blob in lock(&shared.super_seeds).values_mut() {
        if blob.machine.poll(now) {
            blob.wake.send_replace(());
        }
    }
}
