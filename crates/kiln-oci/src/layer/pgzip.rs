//! Parallel, deterministic gzip (pigz's scheme) and multi-threaded zstd, for layers leaving the machine.
//!
//! The model. The input is cut into blocks of [`BLOCK_SIZE`] bytes — a constant, never derived from
//! the thread count, which is what makes the output the same on a laptop and on a 64-core runner.
//! Each block is deflated on its own (raw deflate, level as asked) with the last 32 KiB of the
//! *input* before it as preset dictionary, as pigz does: the dictionary is plain input, known before
//! the previous block is compressed, so blocks stay independent and the ratio stays that of one
//! stream (matches can reach back across the cut). A non-final block ends with a sync flush (an empty
//! stored block, byte-aligned), so the pieces concatenate into one valid deflate stream; the last block
//! ends with the final-block bit. Around them: one gzip header (no name, no mtime, OS byte 255), and
//! the trailer (CRC-32 of the whole input — the per-block CRCs combined in order — and ISIZE). The
//! result is ONE standard gzip member: `gzip -d`, Go's `compress/gzip` and flate2 read it as any other.
//!
//! A block whose bytes are as good as random (already compressed files, random data: see
//! `STORE_THRESHOLD`) is written as stored deflate blocks instead: deflating it costs most of the
//! time and saves nothing.
//!
//! Bytes out are a pure function of (input, level): block `i`'s deflate output depends only on block
//! `i` and the 32 KiB before it, each worker resets its compressor between blocks, and blocks are
//! written in input order. The thread count only decides how many blocks are deflated at once.
//!
//! Memory is bounded: at most `2 × threads` blocks are in flight (read but not yet written out), so a
//! layer of any size streams through a few MiB. With one thread nothing is spawned: the caller
//! deflates each block itself, through the same function, so the bytes are the same.
//!
//! zstd has its own multi-threaded mode (`nbWorkers`), whose output differs between 0 workers (the
//! single-threaded path) and ≥ 1, but not between 1, 2 or 8 workers: its job size follows the
//! level's window, not the worker count. So [`zstd_encoder`] always runs the MT mode with at least one
//! worker (tests check 1, 2 and 8 give the same bytes).
//!
//! Thread count: [`default_threads`] is `KILN_COMPRESS_THREADS` when set, else the available cores;
//! every function here also takes it as a parameter.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// The size of one independently deflated block. Fixed: the output depends on it, so changing it
/// changes every gzip layer digest (and must bump the memo directories in `gzip.rs`/`codec.rs`).
pub const BLOCK_SIZE: usize = 128 * 1024;

/// How much input before a block serves as its dictionary (deflate's window).
const DICT_SIZE: usize = 32 * 1024;

/// The environment variable that overrides the number of compression threads.
pub const THREADS_ENV: &str = "KILN_COMPRESS_THREADS";

/// The most threads kiln will start for one stream.
const MAX_THREADS: usize = 1024;

/// Why a thread count is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{THREADS_ENV}={0:?}: give a whole number of threads from 1 to {MAX_THREADS}")]
pub struct ThreadsError(pub String);

/// Parses a thread count as [`THREADS_ENV`] spells it.
pub fn parse_threads(s: &str) -> Result<usize, ThreadsError> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=MAX_THREADS) => Ok(n),
        _ => Err(ThreadsError(s.to_string())),
    }
}

/// [`THREADS_ENV`] when it is set: `Ok(None)` when unset, `Err` when it is not a thread count.
pub fn threads_from_env() -> Result<Option<usize>, ThreadsError> {
    match std::env::var(THREADS_ENV) {
        Ok(s) => parse_threads(&s).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(s)) => Err(ThreadsError(s.to_string_lossy().into_owned())),
    }
}

/// The number of compression threads: [`THREADS_ENV`] when set and valid, else the available cores.
pub fn default_threads() -> usize {
    let cores = || std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match threads_from_env() {
        Ok(Some(n)) => n,
        Ok(None) => cores(),
        Err(e) => {
            tracing::warn!("{e}; compressing on every core instead");
            cores()
        }
    }
}

/// A zstd encoder at `level` in zstd's multi-threaded mode with `threads` (at least 1) workers; the
/// bytes do not depend on `threads` (see the module doc).
pub fn zstd_encoder<W: Write>(w: W, level: i32, threads: usize) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(w, level)?;
    enc.multithread(threads.clamp(1, MAX_THREADS) as u32)?;
    Ok(enc)
}

/// One block for a worker.
struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Done>>,
}

/// One block's deflate output and the CRC-32 of its input.
struct Done {
    out: Vec<u8>,
    crc: Crc,
}

fn deflate_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("deflate: {e}"))
}

/// Deflates one block: the only place bytes are made, used by the workers and the one-thread path.
/// A fresh compressor per block, not `Compress::reset`: measured, zlib-rs 0.6.8's reset leaves some
/// state behind (the same block came out 2 bytes different after different predecessors), and the
/// bytes must depend on the block alone. A new compressor costs about 1% at 128 KiB blocks.
fn deflate_block(level: u32, data: &[u8], dict: &[u8], last: bool) -> io::Result<Done> {
    // Incompressible input (already compressed or random data) is stored, not searched for matches
    // that are not there: zlib at level 6 spends most of its time on such blocks for nothing.
    let level = if level > 0 && incompressible(data) { 0 } else { level };
    let mut c = new_compress(level);
    let c = &mut c;
    if level > 0 && !dict.is_empty() {
        c.set_dictionary(dict).map_err(deflate_err)?;
    }
    let mut crc = Crc::new();
    crc.update(data);
    // Enough for incompressible data (stored blocks add 5 bytes per 64 KiB) plus the flush marker.
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    let mut consumed = 0usize;
    loop {
        let before = c.total_in();
        let status = c.compress_vec(&data[consumed..], &mut out, flush).map_err(deflate_err)?;
        consumed += (c.total_in() - before) as usize;
        let done = if last {
            status == Status::StreamEnd
        } else {
            // A sync flush is complete when it returns with output room to spare.
            consumed == data.len() && out.len() < out.capacity()
        };
        if done {
            return Ok(Done { out, crc });
        }
        out.reserve(out.capacity() / 2 + 64);
    }
}

/// How close to random a block must be to be stored: its collision entropy (Rényi order 2,
/// `-log2 Σ p²`, in bits per byte) at least 7.99, written as the integer test
/// `Σ c² × 25423 ≤ n² × 100` (2^7.99 ≈ 254.23) so that no floating point decides what bytes are
/// written. Huffman coding cannot save more than about 0.1% there, and deflate's matches reach back
/// only 32 KiB, where data this close to random rarely repeats. Random bytes measure 7.997 over a
/// 128 KiB block; text, code, binaries and tar headers stay far below.
const STORE_THRESHOLD: (u128, u128) = (25_423, 100);

/// Whether `data` is stored rather than deflated (see [`STORE_THRESHOLD`]). A pure function of the
/// block's bytes, so the output stays a function of (input, level). Blocks under 4 KiB are always
/// deflated: the estimate means little there.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < 4096 {
        return false;
    }
    let mut counts = [0u64; 256];
    for b in data {
        counts[*b as usize] += 1;
    }
    let collisions: u128 = counts.iter().map(|c| u128::from(*c) * u128::from(*c)).sum();
    let n = data.len() as u128;
    collisions * STORE_THRESHOLD.0 <= n * n * STORE_THRESHOLD.1
}

fn new_compress(level: u32) -> Compress {
    // Raw deflate: the gzip header and trailer are written around the blocks by `GzipWriter`.
    Compress::new(flate2::Compression::new(level), false)
}

/// The worker threads of one [`GzipWriter`].
struct Pool {
    jobs: Option<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: u32) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let h = std::thread::Builder::new().name(format!("kiln-gzip-{i}")).spawn(move || {
                loop {
                    // Hold the lock only to take a job, not while deflating it.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let done = deflate_block(level, &job.data, &job.dict, job.last);
                    // The writer may have gone (dropped unfinished); the block is then not wanted.
                    let _ = job.reply.send(done);
                }
            })?;
            handles.push(h);
        }
        Ok(Pool { jobs: Some(tx), handles })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A gzip encoder that deflates [`BLOCK_SIZE`] blocks on `threads` threads and writes one standard
/// gzip member (see the module doc). Call [`GzipWriter::finish`]: dropping it unfinished leaves the
/// stream truncated.
pub struct GzipWriter<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: Crc,
    pool: Option<Pool>,
    /// With one thread: the level, and blocks are deflated in the caller.
    local: Option<u32>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    window: usize,
}

impl<W: Write> GzipWriter<W> {
    /// A writer at gzip `level` (0–9) on `threads` threads (1 deflates in the caller's thread).
    pub fn new(mut w: W, level: u32, threads: usize) -> io::Result<GzipWriter<W>> {
        if level > 9 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("gzip level {level}: gzip takes 0 to 9")));
        }
        let threads = threads.clamp(1, MAX_THREADS);
        // XFL as gzip(1) sets it: 2 for the slowest level, 4 for the fastest.
        let xfl = match level {
            9 => 2,
            0 | 1 => 4,
            _ => 0,
        };
        w.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
        let (pool, local) = if threads == 1 { (None, Some(level)) } else { (Some(Pool::new(threads, level)?), None) };
        Ok(GzipWriter {
            inner: Some(w),
            buf: Vec::with_capacity(BLOCK_SIZE),
            dict: Vec::new(),
            crc: Crc::new(),
            pool,
            local,
            pending: VecDeque::new(),
            window: threads * 2,
        })
    }

    fn inner(&mut self) -> &mut W {
        self.inner.as_mut().expect("GzipWriter used after finish")
    }

    fn emit(&mut self, done: Done) -> io::Result<()> {
        self.crc.combine(&done.crc);
        self.inner().write_all(&done.out)
    }

    fn wait_front(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let done = rx.recv().map_err(|_| io::Error::other("a gzip worker thread stopped"))??;
            self.emit(done)?;
        }
        Ok(())
    }

    /// Hands the buffered block on (to a worker, or deflates it here) and starts the next one.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let next_dict = {
            let tail = self.buf.len().saturating_sub(DICT_SIZE);
            self.buf[tail..].to_vec()
        };
        let data = std::mem::replace(&mut self.buf, if last { Vec::new() } else { Vec::with_capacity(BLOCK_SIZE) });
        let dict = std::mem::replace(&mut self.dict, next_dict);
        if let Some(level) = self.local {
            let done = deflate_block(level, &data, &dict, last)?;
            return self.emit(done);
        }
        while self.pending.len() >= self.window {
            self.wait_front()?;
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let jobs = self.pool.as_ref().and_then(|p| p.jobs.as_ref()).expect("a pool when threads > 1");
        jobs.send(Job { data, dict, last, reply }).map_err(|_| io::Error::other("the gzip worker threads stopped"))?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// Writes the last block and the trailer, and returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.wait_front()?;
        }
        let trailer = {
            let mut t = [0u8; 8];
            t[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
            t[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
            t
        };
        let mut w = self.inner.take().expect("GzipWriter finished twice");
        w.write_all(&trailer)?;
        w.flush()?;
        Ok(w)
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        // A full block is handed on only when more input comes, so the last block is always the
        // one `finish` marks final (no empty final block after an exact multiple of BLOCK_SIZE).
        if self.buf.len() == BLOCK_SIZE {
            self.submit(false)?;
        }
        let n = data.len().min(BLOCK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Writes out the blocks already deflated; a partial block stays buffered (flushing it would
    /// make the bytes depend on when the caller flushed).
    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

/// Compresses all of `r` into `w` as one gzip member at `level` on `threads` threads.
pub fn gzip_stream<R: io::Read, W: Write>(r: &mut R, w: W, level: u32, threads: usize) -> io::Result<W> {
    let mut enc = GzipWriter::new(w, level, threads)?;
    io::copy(r, &mut enc)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
        gzip_stream(&mut &data[..], Vec::new(), level, threads).unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // GzDecoder (not Multi): the output must be a single member.
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn thread_counts_parse_and_refuse_by_name() {
        assert_eq!(parse_threads("2"), Ok(2));
        assert_eq!(parse_threads(" 8 "), Ok(8));
        assert_eq!(
            parse_threads("0").unwrap_err().to_string(),
            "KILN_COMPRESS_THREADS=\"0\": give a whole number of threads from 1 to 1024"
        );
        assert!(parse_threads("many").is_err());
        assert!(parse_threads("-1").is_err());
    }

    #[test]
    fn level_out_of_range_is_refused() {
        let e = GzipWriter::new(Vec::new(), 10, 1).err().unwrap();
        assert_eq!(e.to_string(), "gzip level 10: gzip takes 0 to 9");
    }

    #[test]
    fn the_header_has_no_name_no_mtime_and_a_fixed_os_byte() {
        let out = gz(b"x", 6, 2);
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(&out[out.len() - 4..], &1u32.to_le_bytes(), "ISIZE");
    }

    #[test]
    fn an_exact_block_is_one_final_block_and_round_trips_at_every_level() {
        let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        for level in 0..=9 {
            let one = gz(&data, level, 1);
            assert_eq!(gunzip(&one), data, "level {level}");
            assert_eq!(gz(&data, level, 3), one, "level {level}");
        }
    }

    #[test]
    fn small_writes_and_one_big_write_give_the_same_bytes() {
        let data: Vec<u8> = (0..3 * BLOCK_SIZE + 17).map(|i| (i * 7 % 13) as u8).collect();
        let mut enc = GzipWriter::new(Vec::new(), 6, 2).unwrap();
        for chunk in data.chunks(1000) {
            enc.write_all(chunk).unwrap();
            enc.flush().unwrap();
        }
        assert_eq!(enc.finish().unwrap(), gz(&data, 6, 1));
    }

    /// xorshift bytes: as good as random for deflate.
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn random_blocks_are_stored_and_text_blocks_deflated() {
        let random = noise(BLOCK_SIZE, 9);
        assert!(incompressible(&random));
        let text: Vec<u8> = (0..BLOCK_SIZE / 8).flat_map(|i| format!("{i:07}\n").into_bytes()).collect();
        assert!(!incompressible(&text));
        // Bytes spread evenly over 128 values only: 7 bits of entropy, Huffman saves 1/8.
        let seven_bits: Vec<u8> = noise(BLOCK_SIZE, 5).iter().map(|b| b & 0x7f).collect();
        assert!(!incompressible(&seven_bits));
        assert!(!incompressible(&random[..4000]), "a short block is always deflated");
        // Stored: 5 bytes of header per 64 KiB at most, plus the gzip frame; round-trips.
        let mut mixed = text.clone();
        mixed.extend_from_slice(&random);
        mixed.extend_from_slice(&text);
        let out = gz(&mixed, 6, 2);
        assert_eq!(gunzip(&out), mixed);
        let stored = gz(&random, 6, 1);
        assert!(stored.len() <= random.len() + 64, "{} for {}", stored.len(), random.len());
        assert!(out.len() < random.len() + text.len(), "the text around the random block is still deflated");
        assert_eq!(gz(&mixed, 6, 1), out);
    }
}
