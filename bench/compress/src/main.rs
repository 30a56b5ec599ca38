//! `kiln-bench-compress gzip|zstd|gzip-single THREADS LEVEL < in > out`: compresses stdin with
//! kiln-oci's layer encoders (`gzip-single`: one flate2 stream, kiln's form before parallel gzip, for
//! the ratio), and prints `bytes_in bytes_out seconds` to stderr.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::time::Instant;

struct Count<R>(R, u64);
impl<R: Read> Read for Count<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(b)?;
        self.1 += n as u64;
        Ok(n)
    }
}

struct CountW<W>(W, u64);
impl<W: Write> Write for CountW<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.0.write(b)?;
        self.1 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || io::Error::other("usage: kiln-bench-compress gzip|zstd|gzip-single THREADS LEVEL < in > out");
    let (mode, threads, level) = match &args[1..] {
        [m, t, l] => (m.as_str(), t.parse::<usize>().map_err(|_| usage())?, l.parse::<i32>().map_err(|_| usage())?),
        _ => return Err(usage()),
    };
    let mut r = Count(BufReader::with_capacity(1 << 20, io::stdin().lock()), 0);
    let w = CountW(BufWriter::with_capacity(1 << 20, io::stdout().lock()), 0);
    let t0 = Instant::now();
    let mut w = match mode {
        "gzip" => kiln_oci::layer::pgzip::gzip_stream(&mut r, w, level as u32, threads)?,
        "zstd" => {
            let mut e = kiln_oci::layer::pgzip::zstd_encoder(w, level, threads)?;
            io::copy(&mut r, &mut e)?;
            e.finish()?
        }
        "gzip-single" => {
            let mut e = flate2::write::GzEncoder::new(w, flate2::Compression::new(level as u32));
            io::copy(&mut r, &mut e)?;
            e.finish()?
        }
        _ => return Err(usage()),
    };
    w.flush()?;
    eprintln!("{} {} {:.3}", r.1, w.1, t0.elapsed().as_secs_f64());
    Ok(())
}
