//! Where the bytes of a blob or an outboard live: a file or a shared buffer.
//! One type for both, so every algorithm above it is written once.

use std::{
    fs::File,
    io,
    sync::{Arc, RwLock},
};

use positioned_io::{ReadAt, Size, WriteAt};

#[cfg(target_os = "linux")]
use crate::write_behind::WriteBehind;

/// Positioned read/write access to bytes on disk or in memory.
#[derive(Debug, Clone)]
pub enum Storage {
    File(Arc<File>),
    /// A large download's data: aligned writes go to disk past the page cache.
    #[cfg(target_os = "linux")]
    WriteBehind(Arc<WriteBehind>),
    Memory(Arc<RwLock<Vec<u8>>>),
}

impl Storage {
    pub fn memory(bytes: Vec<u8>) -> Self {
        Storage::Memory(Arc::new(RwLock::new(bytes)))
    }

    pub fn len(&self) -> io::Result<u64> {
        match self {
            Storage::File(f) => Ok(f.metadata()?.len()),
            #[cfg(target_os = "linux")]
            Storage::WriteBehind(w) => w.len(),
            Storage::Memory(m) => Ok(read_lock(m).len() as u64),
        }
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            Storage::File(f) => f.set_len(len),
            #[cfg(target_os = "linux")]
            Storage::WriteBehind(w) => w.file().set_len(len),
            Storage::Memory(m) => {
                write_lock(m).resize(len as usize, 0);
                Ok(())
            }
        }
    }

    /// Makes everything written so far durable (a no-op in memory).
    pub fn sync(&self) -> io::Result<()> {
        match self {
            Storage::File(f) => f.sync_data(),
            #[cfg(target_os = "linux")]
            Storage::WriteBehind(w) => w.sync(),
            Storage::Memory(_) => Ok(()),
        }
    }

    /// Drops the file's clean pages from the page cache (a no-op in memory).
    pub fn drop_cached(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let file = match self {
                Storage::File(f) => f.as_ref(),
                // what could not go past the page cache (a short last group)
                Storage::WriteBehind(w) => w.file(),
                Storage::Memory(_) => return,
            };
            // SAFETY: the descriptor is open for as long as `file` lives;
            // fadvise only advises the kernel and touches no memory of ours.
            #[allow(unsafe_code)]
            let _ =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }

    pub fn write_at_offset(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        self.write_pieces_at(pos, &[buf])
    }

    /// Writes `pieces`, one after the other, from `pos`, as one write: a
    /// verified group that arrived split between two frames is written from
    /// where it lies, and still reaches write-behind as one aligned write.
    pub fn write_pieces_at(&self, mut pos: u64, pieces: &[&[u8]]) -> io::Result<()> {
        match self {
            Storage::File(f) => {
                for piece in pieces {
                    std::os::unix::fs::FileExt::write_all_at(f.as_ref(), piece, pos)?;
                    pos += piece.len() as u64;
                }
                Ok(())
            }
            #[cfg(target_os = "linux")]
            Storage::WriteBehind(w) => w.write_at(pos, pieces),
            Storage::Memory(m) => {
                let mut m = write_lock(m);
                let mut start = usize::try_from(pos).map_err(|_| io::ErrorKind::InvalidInput)?;
                let len: usize = pieces.iter().map(|p| p.len()).sum();
                if m.len() < start + len {
                    m.resize(start + len, 0);
                }
                for piece in pieces {
                    m[start..start + piece.len()].copy_from_slice(piece);
                    start += piece.len();
                }
                Ok(())
            }
        }
    }
}

fn read_lock(m: &RwLock<Vec<u8>>) -> std::sync::RwLockReadGuard<'_, Vec<u8>> {
    m.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock(m: &RwLock<Vec<u8>>) -> std::sync::RwLockWriteGuard<'_, Vec<u8>> {
    m.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ReadAt for Storage {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Storage::File(f) => std::os::unix::fs::FileExt::read_at(f.as_ref(), buf, pos),
            #[cfg(target_os = "linux")]
            Storage::WriteBehind(w) => w.read_at(pos, buf),
            Storage::Memory(m) => {
                let m = read_lock(m);
                let start = usize::try_from(pos).unwrap_or(usize::MAX).min(m.len());
                let n = buf.len().min(m.len() - start);
                buf[..n].copy_from_slice(&m[start..start + n]);
                Ok(n)
            }
        }
    }
}

impl WriteAt for Storage {
    fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        self.write_at_offset(pos, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Size for Storage {
    fn size(&self) -> io::Result<Option<u64>> {
        self.len().map(Some)
    }
}
