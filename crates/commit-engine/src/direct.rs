//! A file writer that bypasses the page cache (`O_DIRECT`) for layer blobs.
//!
//! A commit writes its change twice: once into the new image's snapshot
//! (the copy made under the pause, which the image runs from) and once as
//! the layer blob. Through the page cache the blob costs a fresh cached
//! page per 4 KiB — on a virtual machine, often a host-side fault per page
//! as well — and memory pressure on the node, for data nobody reads soon
//! (a push or a save reads it once, later). Written directly, the blob goes
//! from one reused, aligned buffer to the disk.
//!
//! Whole aligned blocks are written directly; the tail is written through
//! the page cache (`O_DIRECT` turned off for it). A filesystem that refuses
//! `O_DIRECT` (tmpfs, some FUSE) gets ordinary buffered writes.

use std::alloc::{Layout, alloc, dealloc};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

/// Alignment of buffer, offsets and lengths (the largest logical block
/// size in use; 4 KiB covers 512-byte and 4 KiB devices).
const ALIGN: usize = 4096;
/// Bytes gathered before a write.
const BUFFER: usize = 1 << 20;

pub(crate) struct DirectFile {
    file: File,
    buf: AlignedBuf,
    /// Whether the file is (still) open with `O_DIRECT`.
    direct: bool,
}

impl DirectFile {
    /// Creates `path` (which must not exist) for writing, directly when the
    /// filesystem allows.
    pub(crate) fn create_new(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let (file, direct) = match direct {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let f = File::options().write(true).create_new(true).open(path)?;
                (f, false)
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            file,
            buf: AlignedBuf::new(),
            direct,
        })
    }

    /// Writes what is buffered and returns the file (positioned at its end).
    pub(crate) fn into_inner(mut self) -> io::Result<File> {
        self.drain(true)?;
        let DirectFile { file, .. } = self;
        Ok(file)
    }

    /// Writes the buffer out: whole aligned blocks directly; with `last`,
    /// the unaligned tail through the page cache.
    fn drain(&mut self, last: bool) -> io::Result<()> {
        let len = self.buf.len;
        let aligned = if self.direct { len - len % ALIGN } else { len };
        // Written piece by piece so that a switch to buffered writes goes
        // on exactly where the direct ones stopped.
        let mut done = 0;
        while done < aligned {
            match self.file.write(&self.buf.as_slice()[done..aligned]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    // Refused after all (another filesystem's rules): the
                    // rest goes through the page cache.
                    self.stop_direct()?;
                }
                Err(e) => return Err(e),
            }
        }
        let rest = len - aligned;
        if rest > 0 && last {
            self.stop_direct()?;
            self.file.write_all(&self.buf.as_slice()[aligned..len])?;
            self.buf.len = 0;
        } else {
            // Keep the unaligned rest at the start of the buffer.
            self.buf.as_mut_slice().copy_within(aligned..len, 0);
            self.buf.len = rest;
        }
        Ok(())
    }

    /// Turns `O_DIRECT` off: the writes from here on go through the page
    /// cache.
    fn stop_direct(&mut self) -> io::Result<()> {
        if !self.direct {
            return Ok(());
        }
        let fd = self.file.as_fd();
        let flags = rustix::fs::fcntl_getfl(fd)?;
        rustix::fs::fcntl_setfl(fd, flags - rustix::fs::OFlags::DIRECT)?;
        self.direct = false;
        Ok(())
    }
}

impl Write for DirectFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BUFFER - self.buf.len;
        let n = data.len().min(room);
        let at = self.buf.len;
        self.buf.as_mut_slice()[at..at + n].copy_from_slice(&data[..n]);
        self.buf.len += n;
        if self.buf.len == BUFFER {
            self.drain(false)?;
        }
        Ok(n)
    }

    /// Data is written in whole blocks as it comes; a flush does not force
    /// a partial block out (that is [`DirectFile::into_inner`]'s job).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `BUFFER`-sized, `ALIGN`-aligned heap buffer.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is plain bytes owned by this value alone.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout() -> Layout {
        // BUFFER and ALIGN are non-zero powers of two.
        Layout::from_size_align(BUFFER, ALIGN).unwrap_or_else(|_| unreachable!("valid layout"))
    }

    fn new() -> Self {
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc(Self::layout()) };
        let ptr = std::ptr::NonNull::new(raw)
            .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout()));
        Self { ptr, len: 0 }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to BUFFER bytes owned by self; all of them
        // are initialised before being read (only `..len` is read, and
        // `len` counts bytes written).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), BUFFER) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), BUFFER) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout()) };
    }
}

/// Hashes and writes a blob on a thread of its own: the producer (the tar
/// walk, or the compressor's output) hands over 1 MiB chunks and goes on,
/// so reading, hashing and writing overlap. A dead writer (an I/O error)
/// is reported at the next handover and at [`Offload::finish`].
pub(crate) struct Offload {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Emptied chunks coming back, to be filled again (no allocation per
    /// chunk).
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    thread: Option<std::thread::JoinHandle<io::Result<(sha2::Sha256, File)>>>,
}

/// Chunks in flight between producer and writer.
const OFFLOAD_DEPTH: usize = 1;

impl Offload {
    pub(crate) fn new(file: DirectFile) -> io::Result<Self> {
        use sha2::Digest;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(OFFLOAD_DEPTH);
        let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("layer-writer".into())
            .spawn(move || -> io::Result<(sha2::Sha256, File)> {
                let mut file = file;
                let mut hash = sha2::Sha256::new();
                for mut chunk in rx {
                    hash.update(&chunk);
                    file.write_all(&chunk)?;
                    chunk.clear();
                    let _ = back.send(chunk);
                }
                Ok((hash, file.into_inner()?))
            })?;
        Ok(Self {
            tx: Some(tx),
            spare,
            buf: Vec::with_capacity(BUFFER),
            thread: Some(thread),
        })
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER));
        let chunk = std::mem::replace(&mut self.buf, next);
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(chunk).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("layer writer stopped")))
        }
    }

    fn join(&mut self) -> io::Result<(sha2::Sha256, File)> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("layer writer panicked"))?,
            None => Err(io::Error::other("layer writer already finished")),
        }
    }

    /// Writes what is left and returns the blob's SHA-256 and its file.
    pub(crate) fn finish(mut self) -> io::Result<(sha2::Sha256, File)> {
        self.hand_over()?;
        self.join()
    }
}

impl Write for Offload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUFFER {
            self.hand_over()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Offload {
    fn drop(&mut self) {
        // An abandoned pipeline: stop the writer (its file is removed by
        // the caller).
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_byte_whatever_the_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0usize,
            1,
            4095,
            4096,
            4097,
            BUFFER - 1,
            BUFFER,
            BUFFER + 12_345,
            3 * BUFFER + 7,
        ] {
            let path = dir.path().join(format!("f{size}"));
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
            let mut w = DirectFile::create_new(&path).unwrap();
            // Odd-sized writes, as a tar stream makes them.
            for chunk in data.chunks(1000) {
                w.write_all(chunk).unwrap();
            }
            w.into_inner().unwrap().sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "size {size}");
        }
    }

    #[test]
    fn offload_hashes_and_writes_in_order() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..(5 * BUFFER + 333)).map(|i| (i % 251) as u8).collect();
        let mut w = Offload::new(DirectFile::create_new(&path).unwrap()).unwrap();
        for chunk in data.chunks(70_000) {
            w.write_all(chunk).unwrap();
        }
        let (hash, _file) = w.finish().unwrap();
        assert_eq!(
            hash.finalize().as_slice(),
            sha2::Sha256::digest(&data).as_slice()
        );
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
