//! Parallel gzip: the stream is cut into 1 MiB chunks, each compressed on a
//! worker thread into a gzip member of its own — with ISA-L's igzip at
//! levels 1 to 3 ([`crate::igzip`]), libdeflate above — and the
//! members are written in order. Concatenated members are one valid gzip
//! file (RFC 1952 §2.2); Go's, zlib's and pigz's readers all read them.
//! The first chunks are smaller and the last, partial one is cut among the
//! threads: a layer under a few megabytes (a small commit's) is compressed
//! on every core too, beginning while its tar is still being written.
//!
//! Chunks that do not compress (already-compressed files, random data) are
//! detected on a sample (igzip's level 1, the fastest on such data) and
//! stored instead of deflated: deflate spends most of its time failing to
//! find matches in such data, and gains nothing.
//!
//! Memory is bounded: at most `threads` chunks wait for a worker (the job
//! queue), one is compressed per worker straight into the member it sends,
//! and `threads` compressed members wait for the writer (the done queue),
//! which holds back only members that arrive before the one it must write
//! next.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor, Crc};

use crate::igzip::Igzip;

/// Bytes per gzip member (smaller ones cost: 256 KiB chunks with a 32 KiB
/// sample compressed 17% slower at level 1, 460 MB/s against 557 on two
/// threads here, 5% at level 6; [`tests::measure`]).
pub(crate) const CHUNK: usize = 1 << 20;
/// The least a piece of the last chunk is cut to.
const LAST_PIECE: usize = 64 << 10;
/// The first chunks are smaller, so that the threads start compressing
/// while a small layer's tar is still being written.
const FIRST_CHUNK: usize = 256 << 10;
/// How many chunks are that small.
const FIRST_CHUNKS: u64 = 4;
/// Bytes sampled to decide whether a chunk compresses.
const SAMPLE: usize = 64 << 10;
/// A chunk whose sample compresses to more than this fraction is stored.
const STORE_ABOVE: f64 = 0.97;

pub(crate) struct ParGzip<W: Write + Send + 'static> {
    buf: Vec<u8>,
    seq: u64,
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParGzip<W> {
    pub(crate) fn new(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let level = match level {
            0 => return Err(io::Error::new(io::ErrorKind::InvalidInput, "gzip level 0")),
            1..=Igzip::MAX_LEVEL => Level::Igzip(level),
            _ => Level::Libdeflate(
                CompressionLvl::new(i32::try_from(level).unwrap_or(i32::MAX)).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("gzip level: {e:?}"))
                })?,
            ),
        };
        Ok(Self::with(inner, level, threads))
    }

    fn with(inner: W, level: Level, threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, job_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
        let (done_tx, done_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let (rx, tx) = (Arc::clone(&job_rx), done_tx.clone());
                std::thread::spawn(move || work(&rx, &tx, level))
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || write_in_order(inner, &done_rx));
        Self {
            buf: Vec::with_capacity(CHUNK),
            seq: 0,
            jobs: Some(jobs),
            workers,
            writer: Some(writer),
        }
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))?;
        if jobs.send((self.seq, chunk)).is_err() {
            // The writer stopped: its error says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("gzip writer stopped")));
        }
        self.seq += 1;
        Ok(())
    }

    fn join(&mut self) -> io::Result<W> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("gzip writer panicked"))?,
            None => Err(io::Error::other("gzip stream already finished")),
        }
    }

    /// Compresses what is buffered, waits for every member to be written,
    /// and returns the inner writer. An empty input gives one empty member.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.seq == 0 && self.buf.is_empty() {
            // gzip of nothing is still a (tiny) gzip file.
            let jobs = self
                .jobs
                .as_ref()
                .ok_or_else(|| io::Error::other("finished"))?;
            jobs.send((0, Vec::new()))
                .map_err(|_| io::Error::other("gzip writer stopped"))?;
        } else {
            // The last chunk, in a piece a thread (1 MiB chunks alone made
            // gzip 9 ms of a 37 ms commit of 100 files of 4 KiB, on one
            // core; 4 ms with this and the small first chunks).
            // (Empty when the stream ended on a chunk's end: no piece.)
            let last = std::mem::take(&mut self.buf);
            let pieces = self.workers.len().min(last.len() / LAST_PIECE).max(1);
            let per = last.len().div_ceil(pieces).max(1);
            for piece in last.chunks(per) {
                self.buf.extend_from_slice(piece);
                self.dispatch()?;
            }
        }
        self.join()
    }
}

impl<W: Write + Send + 'static> Write for ParGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let chunk = if self.seq < FIRST_CHUNKS {
            FIRST_CHUNK
        } else {
            CHUNK
        };
        let n = data.len().min(chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == chunk {
            self.dispatch()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParGzip<W> {
    fn drop(&mut self) {
        // Unfinished (an error elsewhere): stop the threads, drop the output.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

/// Which library compresses, at which of its levels.
#[derive(Clone, Copy)]
enum Level {
    /// igzip's levels 1 to 3: on 1 MiB of text or binaries 1.7–2.3×
    /// libdeflate's level-1 speed here, 2–3% larger at its level 3 (6–11%
    /// at its level 1); the whole stream: [`tests::measure`].
    Igzip(u32),
    /// Smaller layers, at a third of the speed or less.
    Libdeflate(CompressionLvl),
}

/// A worker's compressor.
enum Deflate {
    Igzip(Igzip),
    Libdeflate(Compressor),
}

impl Deflate {
    fn new(level: Level) -> Self {
        match level {
            Level::Igzip(l) => Deflate::Igzip(Igzip::new(l)),
            Level::Libdeflate(l) => Deflate::Libdeflate(Compressor::new(l)),
        }
    }

    /// One gzip member of `input` in `out`; its length, or `None`.
    fn compress(&mut self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        match self {
            Deflate::Igzip(z) => z.compress(input, out),
            Deflate::Libdeflate(c) => c.gzip_compress(input, out).ok(),
        }
    }
}

/// Room for a member of `len` bytes that deflate would not shrink: more
/// than that is not worth it (the chunk is stored instead).
fn bound(len: usize) -> usize {
    len + len / 1000 + 64
}

fn work(rx: &Mutex<Receiver<(u64, Vec<u8>)>>, tx: &SyncSender<(u64, Vec<u8>)>, level: Level) {
    let mut sampler = Igzip::new(1);
    let mut c = Deflate::new(level);
    let mut sample_out = vec![0u8; bound(SAMPLE)];
    loop {
        let job = rx.lock().map(|r| r.recv());
        let Ok(Ok((seq, chunk))) = job else { return };
        let sample = &chunk[..chunk.len().min(SAMPLE)];
        let compressible = sample.is_empty()
            || sampler
                .compress(sample, &mut sample_out)
                .is_some_and(|n| (n as f64) < sample.len() as f64 * STORE_ABOVE);
        let member = if compressible {
            // Compressed into the member itself (no copy of it held).
            let mut out = vec![0u8; bound(chunk.len())];
            match c.compress(&chunk, &mut out) {
                Some(n) => {
                    // In place: the allocator keeps the rest.
                    out.truncate(n);
                    out.shrink_to_fit();
                    out
                }
                None => {
                    drop(out);
                    stored_member(&chunk)
                }
            }
        } else {
            stored_member(&chunk)
        };
        drop(chunk);
        if tx.send((seq, member)).is_err() {
            return;
        }
    }
}

fn write_in_order<W: Write>(mut inner: W, rx: &Receiver<(u64, Vec<u8>)>) -> io::Result<W> {
    let mut next = 0u64;
    let mut waiting = BTreeMap::new();
    for (seq, member) in rx {
        waiting.insert(seq, member);
        while let Some(m) = waiting.remove(&next) {
            inner.write_all(&m)?;
            next += 1;
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other("gzip members lost"));
    }
    inner.flush()?;
    Ok(inner)
}

/// A gzip member holding `data` in stored (uncompressed) deflate blocks.
pub(crate) fn stored_member(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(65535).max(1);
    let mut out = Vec::with_capacity(data.len() + blocks * 5 + 18);
    // ID1 ID2 CM FLG MTIME(4) XFL OS=unix
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    let mut rest = data;
    loop {
        let n = rest.len().min(65535);
        let last = n == rest.len();
        out.push(u8::from(last)); // BFINAL, BTYPE=00
        let len = u16::try_from(n).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if last {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(u32::try_from(data.len() % (1 << 32)).unwrap_or(0)).to_le_bytes());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// Every member of `data`, decompressed as one stream.
    pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// `len` bytes that do not compress (xorshift).
    fn random(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn roundtrip(input: &[u8], threads: usize) -> Vec<u8> {
        roundtrip_at(input, threads, 1)
    }

    fn roundtrip_at(input: &[u8], threads: usize, level: u32) -> Vec<u8> {
        let mut z = ParGzip::new(Vec::new(), level, threads).unwrap();
        // Odd write sizes, to cross chunk boundaries anywhere.
        for piece in input.chunks(77_777) {
            z.write_all(piece).unwrap();
        }
        z.finish().unwrap()
    }

    /// A stream's last chunk is cut into a member a thread (at least
    /// [`LAST_PIECE`] each), after [`FIRST_CHUNK`]s; read back as one.
    #[test]
    fn the_last_chunk_is_shared_among_the_threads() {
        let input: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let first_member = |z: &[u8]| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(z)
                .read_to_end(&mut out)
                .unwrap();
            out.len()
        };
        let z = roundtrip(&input[..200_000], 2);
        assert_eq!(gunzip(&z), &input[..200_000]);
        assert_eq!(first_member(&z), 100_000, "two members");
        let z = roundtrip(&input, 2);
        assert_eq!(gunzip(&z), input);
        assert_eq!(first_member(&z), FIRST_CHUNK, "a first chunk");
        // Ending on a chunk's end: nothing left to cut.
        for len in [FIRST_CHUNK, 4 * FIRST_CHUNK + CHUNK] {
            let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(gunzip(&roundtrip(&input, 2)), input);
        }
        let z = roundtrip(&input[..LAST_PIECE + 1], 4);
        assert_eq!(gunzip(&z), &input[..LAST_PIECE + 1]);
        assert_eq!(first_member(&z), LAST_PIECE + 1, "one: too short to cut");
    }

    /// Throughput of 256 MiB, half text and half random in 2 MiB files'
    /// worth each, as the 10 GiB benchmark row has them, on two threads.
    #[test]
    #[ignore = "a measurement; run with --release --ignored --nocapture"]
    fn measure() {
        let mut text = Vec::new();
        let mut n = 0u64;
        while text.len() < 2 << 20 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.extend_from_slice(
                format!("line {} of words {} and more\n", n >> 40, n % 977).as_bytes(),
            );
        }
        text.truncate(2 << 20);
        let random = random(2 << 20);
        let libdeflate = |l| Level::Libdeflate(CompressionLvl::new(l).unwrap());
        for (name, level) in [
            ("libdeflate 1", libdeflate(1)),
            ("igzip 1", Level::Igzip(1)),
            ("igzip 2", Level::Igzip(2)),
            ("igzip 3", Level::Igzip(3)),
            ("libdeflate 6", libdeflate(6)),
        ] {
            let started = std::time::Instant::now();
            let mut z = ParGzip::with(Vec::new(), level, 2);
            for _ in 0..64 {
                z.write_all(&random).unwrap();
                z.write_all(&text).unwrap();
            }
            let out = z.finish().unwrap().len();
            let s = started.elapsed().as_secs_f64();
            eprintln!(
                "{name}, {} KiB chunks: {:.0} MB/s, {:.1} MiB",
                CHUNK >> 10,
                268.4 / s,
                out as f64 / f64::from(1 << 20)
            );
        }
    }

    #[test]
    fn members_read_back_as_one_stream() {
        let mut text = Vec::new();
        while text.len() < 3 * CHUNK + 12345 {
            text.extend_from_slice(b"the quick brown fox jumps over the lazy dog 0123456789\n");
        }
        let random = random(2 * CHUNK + 7);
        let mixed: Vec<u8> = text.iter().chain(&random).chain(&text).copied().collect();
        // igzip's levels, then libdeflate's.
        for (threads, level) in [(1, 1), (3, 1), (2, 2), (2, 3), (2, 4), (3, 9)] {
            let z = roundtrip_at(&mixed, threads, level);
            assert_eq!(gunzip(&z), mixed, "level {level}");
            assert!(
                z.len() < random.len() + (64 << 10),
                "level {level}: text compressed, random stored: {}",
                z.len()
            );
        }
        assert!(ParGzip::new(Vec::new(), 0, 2).is_err());
        assert!(ParGzip::new(Vec::new(), 13, 2).is_err());
        assert_eq!(gunzip(&roundtrip(b"", 2)), b"");
        assert_eq!(gunzip(&stored_member(&random[..70_000])), &random[..70_000]);
    }
}
