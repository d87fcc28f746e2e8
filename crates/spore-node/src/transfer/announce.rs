//! What a session tells its peer we have of a blob: the whole picture
//! first (`HaveAll`, `Have` slices, or `DontHave`), then only what grew
//! (`HaveRanges`).

use std::ops::Range;

use spore_core::{Bitfield, Hash};
use spore_store::Blob;
use spore_transfer::{
    scheduler::piece_groups_for,
    wire::{self, MAX_HAVE_RANGES, Message},
};

use tokio::sync::watch;

use super::stream_io::{FrameError, FrameWriter};

/// The next view of a blob being downloaded (`None` before its size is
/// known). Once the download has ended, `view` becomes `None` and this never
/// resolves. Cancel-safe, for a `select!` arm.
pub(super) async fn next_view(view: &mut Option<watch::Receiver<Option<Blob>>>) -> Option<Blob> {
    loop {
        let Some(rx) = view.as_mut() else {
            return std::future::pending().await;
        };
        if rx.changed().await.is_ok() {
            return rx.borrow().clone();
        }
        *view = None;
    }
}

/// Announces `have` (over the groups of a blob of `size` bytes) beyond what
/// `announced` holds, and records it there. `None`: the session opened with
/// `DontHave`, so an empty `have` is not announced again. True if a frame
/// was sent (the caller's keep-alive clock moves only then).
pub(super) async fn announce_growth(
    wr: &mut FrameWriter,
    hash: Hash,
    size: u64,
    have: Bitfield,
    announced: &mut Option<Bitfield>,
) -> Result<bool, FrameError> {
    match announced {
        // Nothing new, or still nothing at all (a DontHave said so).
        Some(old) if old == &have => return Ok(false),
        // Nothing yet: the caller's opening DontHave still holds.
        None if have.count_ones() == 0 => return Ok(false),
        // `HaveRanges` only for a peer that was told the size: a `DontHave`
        // (what an empty bitfield was announced as) does not tell it.
        Some(old) if old.len() == have.len() && old.count_ones() > 0 => {
            let ranges = growth(old, &have);
            for batch in ranges.chunks(MAX_HAVE_RANGES) {
                wr.send(&Message::HaveRanges {
                    hash,
                    ranges: batch.to_vec(),
                })
                .await?;
            }
        }
        _ => {
            for msg in wire::have_messages(hash, size, &have) {
                wr.send(&msg).await?;
            }
        }
    }
    *announced = Some(have);
    Ok(true)
}

/// The groups of the pieces `have` holds whole: what a downloader tells the
/// sources it fetches from (a super-seeding source follows what its peers
/// hold), once per finished piece rather than per verified batch.
pub(super) fn whole_pieces(have: &Bitfield) -> Bitfield {
    let groups = have.len();
    let piece = u64::from(piece_groups_for(groups));
    let mut whole = Bitfield::new(groups);
    for r in have.ones_ranges() {
        let start = r.start.next_multiple_of(piece);
        let mut end = r.end - r.end % piece;
        if r.end == groups {
            end = groups;
        }
        if start < end {
            whole.set_range(start..end);
        }
    }
    whole
}

/// Tells the peer which groups of `expected` (verified, or asked of a peer
/// that has them: `Scheduler::expected`) are coming: those not in `have` and not told
/// before (recorded in `told`). True if a frame was sent.
pub(super) async fn announce_coming(
    wr: &mut FrameWriter,
    hash: Hash,
    expected: &Bitfield,
    have: &Bitfield,
    told: &mut Option<Bitfield>,
) -> Result<bool, FrameError> {
    if expected.len() != have.len() {
        return Ok(false);
    }
    let told = told.get_or_insert_with(|| Bitfield::new(expected.len()));
    let ranges = runs_where(expected, |g| !have.get(g) && !told.get(g));
    for r in &ranges {
        told.set_range(r.clone());
    }
    for batch in ranges.chunks(MAX_HAVE_RANGES) {
        wr.send(&Message::Coming {
            hash,
            ranges: batch.to_vec(),
        })
        .await?;
    }
    Ok(!ranges.is_empty())
}

/// The runs of groups set in `new` and not in `old` (same length).
fn growth(old: &Bitfield, new: &Bitfield) -> Vec<Range<u64>> {
    runs_where(new, |g| !old.get(g))
}

/// The runs of groups set in `bits` for which `keep` holds.
fn runs_where(bits: &Bitfield, keep: impl Fn(u64) -> bool) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for r in bits.ones_ranges() {
        let mut start = None;
        for g in r.clone() {
            match (keep(g), start) {
                (true, None) => start = Some(g),
                (false, Some(s)) => {
                    ranges.push(s..g);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            ranges.push(s..r.end);
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_pieces_are_told() {
        // 4096 groups: pieces of 64.
        let mut have = Bitfield::new(4096);
        have.set_range(0..100);
        have.set_range(128..192);
        have.set_range(4000..4096);
        let whole = whole_pieces(&have);
        let runs: Vec<_> = whole.ones_ranges().collect();
        assert_eq!(runs, vec![0..64, 128..192, 4032..4096]);
    }

    #[test]
    fn growth_is_what_is_new() {
        let mut old = Bitfield::new(100);
        old.set_range(10..20);
        let mut new = old.clone();
        new.set_range(0..5);
        new.set_range(15..30);
        assert_eq!(growth(&old, &new), vec![0..5, 20..30]);
    }
}
