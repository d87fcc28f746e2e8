//! What the peers we serve a blob to hold: one [`Holders`] table per blob,
//! shared by its serve sessions, so each session starts its peer's rarest
//! queued request first (see `spore_transfer::holders` for why).
//!
//! Each serve session joins as a [`Holding`] once it knows the blob's size,
//! reports what its peer announces, what it has queued and each response it
//! starts (see `serve::start_next`), and leaves on drop. Super-seeding keeps
//! its own table inside its state machine, which must see the moment a
//! group becomes held or unheld, and counts a group held once it is
//! delivered.

use std::{collections::HashMap, ops::Range, sync::Arc};

use spore_core::{Hash, group_count};
use spore_transfer::holders::Holders;

use super::{Shared, lock};

/// What the peers of each blob being served hold, by hash.
pub(crate) type BlobHolders = HashMap<Hash, Holders<u64>>;

/// A serve session's peer in its blob's holder table; it leaves on drop.
pub(super) struct Holding {
    shared: Arc<Shared>,
    hash: Hash,
    size: u64,
    session: u64,
}

impl Holding {
    /// Joins the table of `hash` (a blob of `size` bytes). `None` if the
    /// table follows as many peers as it may: the session then serves in
    /// arrival order.
    pub(super) fn join(shared: &Arc<Shared>, hash: Hash, size: u64, session: u64) -> Option<Self> {
        let mut tables = lock(&shared.holders);
        let table = tables
            .entry(hash)
            .or_insert_with(|| Holders::new(group_count(size)));
        if table.groups() != group_count(size) || !table.add_peer(session) {
            return None;
        }
        Some(Self {
            shared: shared.clone(),
            hash,
            size,
            session,
        })
    }

    /// The blob's size.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// The peer holds `groups`: it announced them, or we are sending them.
    pub(super) fn on_have(&self, groups: Range<u64>) {
        if let Some(table) = lock(&self.shared.holders).get_mut(&self.hash) {
            table.add(&self.session, groups, |_| {});
        }
    }

    /// The peer withdrew what it announced.
    pub(super) fn on_dont_have(&self) {
        if let Some(table) = lock(&self.shared.holders).get_mut(&self.hash) {
            table.clear(&self.session, |_| {});
        }
    }

    /// Which of the queued requests (their group ranges, in arrival order)
    /// to start next: the first of the rarest.
    pub(super) fn rarest<'a>(
        &self,
        queued: impl IntoIterator<Item = &'a Range<u64>>,
    ) -> Option<usize> {
        lock(&self.shared.holders)
            .get(&self.hash)
            .and_then(|table| table.rarest(queued))
    }

    /// The peer's queued requests now (their group ranges, in arrival order).
    pub(super) fn set_queued<'a>(&self, queued: impl IntoIterator<Item = &'a Range<u64>>) {
        if let Some(table) = lock(&self.shared.holders).get_mut(&self.hash) {
            table.set_queued(&self.session, queued);
        }
    }

    /// Whether every one of `groups` is held by some peer (this one included).
    pub(super) fn all_held(&self, groups: &Range<u64>) -> bool {
        lock(&self.shared.holders)
            .get(&self.hash)
            .is_some_and(|t| t.all_held(groups))
    }

    /// Whether sending `groups` would only copy what a peer holds already
    /// while another peer waits for a group nobody holds: then it waits.
    pub(super) fn copy_should_wait(&self, groups: &Range<u64>) -> bool {
        lock(&self.shared.holders)
            .get(&self.hash)
            .is_some_and(|t| t.all_held(groups) && t.first_copies_queued(&self.session))
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut tables = lock(&self.shared.holders);
        if let Some(table) = tables.get_mut(&self.hash) {
            table.remove_peer(&self.session, |_| {});
            if table.peer_count() == 0 {
                tables.remove(&self.hash);
            }
        }
    }
}
