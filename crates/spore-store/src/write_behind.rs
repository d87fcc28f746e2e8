//! A large download's data file, written past the page cache on a thread of
//! its own.
//!
//! Written through the page cache, a download costs the receiver a copy into
//! fresh pages and their writeback: on the benchmark's VM that was the largest
//! share of the receiving node's CPU (docs/benchmarks.md, 2026-12-03), while
//! the disk takes `O_DIRECT` writes at 2 GB/s. So verified groups are copied
//! into runs of up to [`RUN_BYTES`] in aligned buffers, and a writer thread
//! writes each run with `O_DIRECT` while the download goes on verifying.
//! (On the previous day's disk, which took `O_DIRECT` at a third of that,
//! direct writes lost to the page cache: worth measuring on other disks.)
//!
//! Runs still waiting or being written stay readable: [`WriteBehind::read_at`]
//! lays them over what the file holds, so a group reported verified can be
//! served at once. [`WriteBehind::sync`] waits for every run queued before it,
//! then syncs, so a flushed bitfield never claims bytes that are not on disk.
//!
//! What `O_DIRECT` cannot take goes through the page cache: a write whose
//! offset or length is not a multiple of [`ALIGN`] (a blob's short last
//! group), and every write once the file system refused one (`EINVAL`).
//!
//! Each file has a writer thread and up to four 1 MiB buffers, so a process
//! writes at most [`MAX_FILES`] files behind at once ([`FILES`]); further
//! downloads go through the page cache.

use std::{
    collections::VecDeque,
    fs::File,
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

/// Offsets, lengths and buffers of `O_DIRECT` writes are multiples of this
/// (the largest logical block size of common disks).
pub(crate) const ALIGN: usize = 4096;
/// The most one run (one `O_DIRECT` write) carries.
pub(crate) const RUN_BYTES: usize = 1 << 20;
/// Downloads smaller than this go through the page cache: a writer thread
/// and its buffers are not worth it for them.
pub(crate) const WORTH_IT_FROM: u64 = 16 << 20;
/// Buffers per file: one being filled, the rest queued or being written.
const BUFFERS: usize = 4;
/// Files a process writes behind at once: as many as a collection
/// downloads side by side (16 MiB of buffers and four threads at most).
pub(crate) const MAX_FILES: usize = 4;
/// The slots of this process's files written behind.
pub(crate) static FILES: Slots = Slots::new(MAX_FILES);

/// A bounded count of things open at once.
#[derive(Debug)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    max: usize,
}

impl Slots {
    pub(crate) const fn new(max: usize) -> Self {
        Slots {
            taken: AtomicUsize::new(0),
            max,
        }
    }

    /// A slot, given back on drop; `None` when all are taken.
    fn take(&'static self) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }
}

#[derive(Debug)]
struct Slot(&'static Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A data file whose aligned writes are gathered and written behind.
#[derive(Debug)]
pub struct WriteBehind {
    /// Opened without `O_DIRECT`: reads, unaligned writes, sync, length.
    file: Arc<File>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    /// Given back once the writer has finished (fields drop after `drop`).
    _slot: Slot,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The run being filled by [`WriteBehind::write_at`].
    filling: Option<Run>,
    /// Runs handed to the writer, oldest first; the front one is being written.
    queued: VecDeque<Arc<Run>>,
    spare: Vec<AlignedBuf>,
    allocated: usize,
    /// Runs ever queued, and how many of them are written (in queue order).
    runs_queued: u64,
    runs_written: u64,
    /// The first write that failed. Its run stays queued (and readable);
    /// nothing more is written, and every later write or sync reports it.
    failed: Option<(io::ErrorKind, String)>,
    closing: bool,
}

#[derive(Debug)]
struct Run {
    offset: u64,
    len: usize,
    buf: AlignedBuf,
}

impl Run {
    fn bytes(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }

    fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

/// [`RUN_BYTES`] starting at an [`ALIGN`]ed address inside a larger allocation.
struct AlignedBuf {
    bytes: Box<[u8]>,
    start: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlignedBuf")
    }
}

impl AlignedBuf {
    fn new() -> Self {
        let bytes = vec![0u8; RUN_BYTES + ALIGN].into_boxed_slice();
        let start = bytes.as_ptr().align_offset(ALIGN);
        AlignedBuf { bytes, start }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + RUN_BYTES]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + RUN_BYTES]
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn error(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Runs not yet on disk: the one being filled, then the queued ones.
    fn pending(&self) -> impl Iterator<Item = &Run> {
        self.filling.iter().chain(self.queued.iter().map(|r| &**r))
    }

    fn queue_filling(&mut self, shared: &Shared) {
        if let Some(run) = self.filling.take() {
            self.queued.push_back(Arc::new(run));
            self.runs_queued += 1;
            shared.changed.notify_all();
        }
    }
}

impl WriteBehind {
    /// Opens `path` a second time with `O_DIRECT` beside `file` (the same
    /// file, opened normally) and starts the writer. `None` where the file
    /// system does not take `O_DIRECT` (tmpfs refuses to open with it), or
    /// when every one of `slots` (in the store: [`FILES`]) is taken.
    pub(crate) fn open(
        file: Arc<File>,
        path: &Path,
        slots: &'static Slots,
    ) -> io::Result<Option<Self>> {
        let Some(slot) = slots.take() else {
            return Ok(None);
        };
        let direct = match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(direct) => direct,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let writer = std::thread::Builder::new()
            .name("spore-write".into())
            .spawn({
                let shared = shared.clone();
                let file = file.clone();
                move || write_runs(&shared, &file, direct)
            })?;
        Ok(Some(WriteBehind {
            file,
            shared,
            writer: Some(writer),
            _slot: slot,
        }))
    }

    /// Writes `pieces`, one after the other, from `pos`: aligned bytes into
    /// the run being filled, anything else through the page cache at once.
    /// Waits only when every buffer is queued.
    ///
    /// Alignment is that of the whole write, not of each piece: a group
    /// that arrived split between two frames still goes into a run.
    pub fn write_at(&self, mut pos: u64, pieces: &[&[u8]]) -> io::Result<()> {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        if !pos.is_multiple_of(ALIGN as u64) || !len.is_multiple_of(ALIGN) {
            self.shared.lock().error()?;
            for piece in pieces {
                self.file.write_all_at(piece, pos)?;
                pos += piece.len() as u64;
            }
            return Ok(());
        }
        let mut state = self.shared.lock();
        for mut data in pieces.iter().copied() {
            while !data.is_empty() {
                state.error()?;
                let fits = state
                    .filling
                    .as_ref()
                    .is_some_and(|run| run.end() == pos && run.len < RUN_BYTES);
                if !fits {
                    state.queue_filling(&self.shared);
                    let buf = loop {
                        state.error()?;
                        if let Some(buf) = state.spare.pop() {
                            break buf;
                        }
                        if state.allocated < BUFFERS {
                            state.allocated += 1;
                            break AlignedBuf::new();
                        }
                        state = self.shared.wait(state);
                    };
                    state.filling = Some(Run {
                        offset: pos,
                        len: 0,
                        buf,
                    });
                }
                let run = state.filling.as_mut().expect("a run is being filled");
                let n = data.len().min(RUN_BYTES - run.len);
                run.buf.as_mut_slice()[run.len..run.len + n].copy_from_slice(&data[..n]);
                run.len += n;
                pos += n as u64;
                data = &data[n..];
                if run.len == RUN_BYTES {
                    state.queue_filling(&self.shared);
                }
            }
        }
        Ok(())
    }

    /// Reads what the file holds at `pos`, with the runs not yet written laid
    /// over it. Bytes between the file's end and a run read as zeros.
    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = pos + buf.len() as u64;
        // Taken before the file is read: a run written meanwhile is then
        // copied from here, whether or not the read saw it on disk.
        let pending: Vec<(usize, Vec<u8>)> = {
            let state = self.shared.lock();
            state
                .pending()
                .filter(|run| run.offset < end && run.end() > pos)
                .map(|run| {
                    let from = run.offset.max(pos);
                    let to = run.end().min(end);
                    let bytes = run.bytes()
                        [(from - run.offset) as usize..(to - run.offset) as usize]
                        .to_vec();
                    ((from - pos) as usize, bytes)
                })
                .collect()
        };
        let mut n = 0;
        while n < buf.len() {
            match self.file.read_at(&mut buf[n..], pos + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        for (at, bytes) in pending {
            if at > n {
                buf[n..at].fill(0);
            }
            buf[at..at + bytes.len()].copy_from_slice(&bytes);
            n = n.max(at + bytes.len());
        }
        Ok(n)
    }

    /// Waits until every run queued so far is written, then syncs the file.
    pub fn sync(&self) -> io::Result<()> {
        {
            let mut state = self.shared.lock();
            state.queue_filling(&self.shared);
            let target = state.runs_queued;
            while state.runs_written < target {
                state.error()?;
                state = self.shared.wait(state);
            }
            state.error()?;
        }
        self.file.sync_data()
    }

    /// The file's length, counting runs not yet written.
    pub fn len(&self) -> io::Result<u64> {
        let on_disk = self.file.metadata()?.len();
        let state = self.shared.lock();
        Ok(state.pending().map(Run::end).fold(on_disk, u64::max))
    }

    /// The file opened without `O_DIRECT`.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for WriteBehind {
    /// Writes what is queued (unless a write failed) before the file is let go.
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.queue_filling(&self.shared);
            state.closing = true;
            self.shared.changed.notify_all();
        }
        if let Some(writer) = self.writer.take()
            && let Err(panic) = writer.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The writer thread: writes queued runs in order until closed.
fn write_runs(shared: &Shared, file: &File, direct: File) {
    let mut direct = Some(direct);
    loop {
        let run = {
            let mut state = shared.lock();
            loop {
                if state.failed.is_none()
                    && let Some(run) = state.queued.front()
                {
                    break run.clone();
                }
                if state.closing && (state.queued.is_empty() || state.failed.is_some()) {
                    return;
                }
                state = shared.wait(state);
            }
        };
        let result = write_run(&run, file, &mut direct);
        let mut state = shared.lock();
        match result {
            Ok(()) => {
                drop(state.queued.pop_front());
                state.runs_written += 1;
                if let Ok(run) = Arc::try_unwrap(run) {
                    state.spare.push(run.buf);
                }
            }
            Err(e) => state.failed = Some((e.kind(), format!("writing behind: {e}"))),
        }
        shared.changed.notify_all();
    }
}

fn write_run(run: &Run, file: &File, direct: &mut Option<File>) -> io::Result<()> {
    if let Some(d) = direct {
        match d.write_all_at(run.bytes(), run.offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("O_DIRECT refused ({e}); writing through the page cache");
                *direct = None;
            }
            other => return other,
        }
    }
    file.write_all_at(run.bytes(), run.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots enough for every test of this module at once.
    static TEST_FILES: Slots = Slots::new(64);

    /// A write-behind file in a fresh directory, or `None` (said on stderr)
    /// where the temporary directory's file system refuses `O_DIRECT`.
    fn open() -> Option<(WriteBehind, std::path::PathBuf, tempfile::TempDir)> {
        let (dir, file, path) = new_file();
        let Some(w) = WriteBehind::open(Arc::new(file), &path, &TEST_FILES).unwrap() else {
            eprintln!("{} refuses O_DIRECT: nothing to test", dir.path().display());
            return None;
        };
        Some((w, path, dir))
    }

    fn new_file() -> (tempfile::TempDir, File, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        (dir, file, path)
    }

    #[test]
    fn only_so_many_files_are_written_behind_at_once() {
        static TWO: Slots = Slots::new(2);
        let open = || {
            let (dir, file, path) = new_file();
            (WriteBehind::open(Arc::new(file), &path, &TWO).unwrap(), dir)
        };
        let (Some(a), _a) = open() else {
            eprintln!("the temporary directory refuses O_DIRECT: nothing to test");
            return;
        };
        let (b, _b) = open();
        assert!(b.is_some());
        assert!(open().0.is_none(), "a third goes through the page cache");
        drop(a);
        assert!(
            open().0.is_some(),
            "a slot is free again once a file closes"
        );
        assert_eq!(TWO.taken.load(Ordering::Acquire), 1);
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn read(w: &WriteBehind, pos: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0xAA; len];
        let n = w.read_at(pos, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn written_bytes_read_back_before_and_after_sync() {
        let Some((w, path, _dir)) = open() else {
            return;
        };
        let a = pattern(1, 3 * RUN_BYTES + 5 * 16384);
        for (i, group) in a.chunks(16384).enumerate() {
            w.write_at(i as u64 * 16384, &[group]).unwrap();
        }
        // Some runs may still be queued: reads see them anyway.
        assert_eq!(read(&w, 0, a.len()), a);
        assert_eq!(read(&w, 100_000, 50_000), a[100_000..150_000]);
        assert_eq!(w.len().unwrap(), a.len() as u64);
        w.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), a);
        drop(w);
        assert_eq!(std::fs::read(&path).unwrap(), a);
    }

    #[test]
    fn runs_out_of_order_and_unaligned_tails_land_where_they_belong() {
        let Some((w, path, _dir)) = open() else {
            return;
        };
        let size = 10 * 16384 + 1000;
        let a = pattern(7, size);
        // Groups in a scattered order; the short last group is unaligned.
        for g in [9usize, 3, 4, 5, 0, 10, 1, 8, 2, 7, 6] {
            let start = g * 16384;
            let end = (start + 16384).min(size);
            w.write_at(start as u64, &[&a[start..end]]).unwrap();
        }
        assert_eq!(read(&w, 0, size), a);
        w.sync().unwrap();
        drop(w);
        assert_eq!(std::fs::read(&path).unwrap(), a);
    }

    #[test]
    fn a_run_not_yet_on_disk_reads_past_the_files_end_with_a_zero_gap() {
        let Some((w, _path, _dir)) = open() else {
            return;
        };
        let group = pattern(3, 16384);
        w.write_at(2 * 16384, &[&group]).unwrap();
        // Whether or not the writer got to it, the group reads back, and
        // the unwritten groups before it read as zeros.
        let got = read(&w, 0, 3 * 16384);
        assert_eq!(got.len(), 3 * 16384);
        assert!(got[..2 * 16384].iter().all(|&b| b == 0));
        assert_eq!(got[2 * 16384..], group);
    }

    #[test]
    fn a_group_written_in_unaligned_pieces_goes_into_the_run() {
        let Some((w, path, _dir)) = open() else {
            return;
        };
        let a = pattern(5, 3 * 16384);
        w.write_at(0, &[&a[..16384]]).unwrap();
        // The second group in three pieces, none of them aligned.
        w.write_at(
            16384,
            &[&a[16384..21000], &a[21000..21001], &a[21001..32768]],
        )
        .unwrap();
        w.write_at(32768, &[&a[32768..]]).unwrap();
        {
            let state = w.shared.lock();
            let pending: Vec<(u64, usize)> = state.pending().map(|r| (r.offset, r.len)).collect();
            assert_eq!(
                pending,
                [(0, 3 * 16384)],
                "one run, nothing through the page cache"
            );
        }
        assert_eq!(read(&w, 0, a.len()), a);
        w.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), a);
    }

    #[test]
    fn many_runs_pass_through_a_bounded_set_of_buffers() {
        let Some((w, path, _dir)) = open() else {
            return;
        };
        let a = pattern(9, 12 * RUN_BYTES);
        for (i, piece) in a.chunks(64 * 1024).enumerate() {
            w.write_at(i as u64 * 64 * 1024, &[piece]).unwrap();
        }
        w.sync().unwrap();
        assert!(w.shared.lock().allocated <= BUFFERS);
        assert_eq!(std::fs::read(&path).unwrap(), a);
    }
}
