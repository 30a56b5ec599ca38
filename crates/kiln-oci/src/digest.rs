//! Content digests (`algorithm:hex`) and streaming hashing.
//!
//! kiln writes sha256 only, but accepts sha384/sha512 digests from registries and verifies them, since
//! the OCI spec registers them. Verification happens while bytes stream through, so a blob is never held
//! in memory just to be checked: wrap a reader in [`VerifyingReader`] or a writer in [`DigestWriter`].

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// Why a digest string was rejected, or why content did not match its digest.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {input:?}: {reason}; a digest looks like sha256:<64 lowercase hex digits>")]
    Invalid { input: String, reason: &'static str },
    #[error("unsupported digest algorithm {algorithm:?} in {input:?}; kiln supports sha256, sha384 and sha512")]
    UnsupportedAlgorithm { input: String, algorithm: String },
    #[error("digest mismatch: expected {expected}, got {actual} ({size} bytes); the content is corrupt or was changed in transit, and was discarded")]
    Mismatch { expected: Digest, actual: Digest, size: u64 },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}; the content was discarded")]
    SizeMismatch { digest: Digest, expected: u64, actual: u64 },
}

/// A digest algorithm registered by the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:e3b0c442…`. Ordering and equality are on the string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses and validates `algorithm:hex` (lowercase hex of the algorithm's exact length).
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let invalid = |reason| DigestError::Invalid { input: s.to_string(), reason };
        let (algo, hex) = s.split_once(':').ok_or_else(|| invalid("missing ':' between algorithm and hex"))?;
        let algorithm = match algo {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            "" => return Err(invalid("empty algorithm")),
            other => {
                let valid_name = other.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
                if !valid_name {
                    return Err(invalid("algorithm contains characters outside [a-z0-9+._-]"));
                }
                return Err(DigestError::UnsupportedAlgorithm { input: s.to_string(), algorithm: other.to_string() });
            }
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid("wrong number of hex digits for the algorithm"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("hex part must be lowercase hexadecimal"));
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part (no algorithm prefix).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as `docker images` shows them.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// A fresh hasher of this digest's algorithm, for verifying content against it.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub struct Hasher {
    inner: HasherInner,
}

#[derive(Clone)]
enum HasherInner {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A new hasher.
    pub fn new(algorithm: Algorithm) -> Hasher {
        let inner = match algorithm {
            Algorithm::Sha256 => HasherInner::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => HasherInner::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => HasherInner::Sha512(sha2::Sha512::new()),
        };
        Hasher { inner }
    }
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            HasherInner::Sha256(h) => h.update(bytes),
            HasherInner::Sha384(h) => h.update(bytes),
            HasherInner::Sha512(h) => h.update(bytes),
        }
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, bytes) = match self.inner {
            HasherInner::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            HasherInner::Sha384(h) => (Algorithm::Sha384, h.finalize().to_vec()),
            HasherInner::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest { algorithm, hex: to_hex(&bytes) }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// A writer that hashes (sha256) and counts everything written through it.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Hasher,
    /// False for [`DigestWriter::counting`]: bytes are counted, not hashed.
    hashing: bool,
    written: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`, hashing with sha256.
    pub fn new(inner: W) -> Self {
        DigestWriter { inner, hasher: Hasher::new(Algorithm::Sha256), hashing: true, written: 0 }
    }
    /// Wraps `inner`, counting only: for a stream whose digest the caller computes elsewhere in the
    /// same pass (an uncompressed layer's digest is its diff id). The digest `finish` returns is then
    /// meaningless, so this stays inside the crate.
    pub(crate) fn counting(inner: W) -> Self {
        DigestWriter { inner, hasher: Hasher::new(Algorithm::Sha256), hashing: false, written: 0 }
    }
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }
    /// The inner writer, for callers that need to reach it mid-stream.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
    /// Returns the inner writer, the digest and the byte count. Does not flush the inner writer.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, self.hasher.finish(), self.written)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.hashing {
            self.hasher.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through and, at end of stream, checks it against an expected digest
/// (and size, when given). A mismatch surfaces as an `io::Error` of kind `InvalidData` wrapping
/// [`DigestError`], on the read that hits end of stream: the caller must then discard what it wrote.
pub struct VerifyingReader<R> {
    inner: R,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    hasher: Hasher,
    read: u64,
    result: Option<Digest>,
}

impl<R: Read> VerifyingReader<R> {
    /// Verifies against `expected` at end of stream; with `None` it only computes the sha256 digest.
    pub fn new(inner: R, expected: Option<&Digest>) -> Self {
        let hasher = expected.map(|d| d.hasher()).unwrap_or_else(|| Hasher::new(Algorithm::Sha256));
        VerifyingReader { inner, expected: expected.cloned(), expected_size: None, hasher, read: 0, result: None }
    }
    /// Also require exactly `size` bytes.
    pub fn with_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }
    /// The verified digest, once end of stream was reached (reads to the end first if needed).
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        if self.result.is_none() {
            io::copy(&mut self, &mut io::sink())?;
        }
        match self.result {
            Some(d) => Ok((d, self.read)),
            None => Err(io::Error::other("digest verification did not complete")),
        }
    }

    fn check(&mut self) -> io::Result<()> {
        let actual = std::mem::replace(&mut self.hasher, Hasher::new(Algorithm::Sha256)).finish();
        if let Some(expected) = &self.expected {
            if *expected != actual {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestError::Mismatch { expected: expected.clone(), actual, size: self.read },
                ));
            }
        }
        if let Some(size) = self.expected_size {
            if size != self.read {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestError::SizeMismatch { digest: actual, expected: size, actual: self.read },
                ));
            }
        }
        self.result = Some(actual);
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.result.is_some() || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check()?;
            return Ok(0);
        }
        self.read += n as u64;
        if let Some(size) = self.expected_size {
            if self.read > size {
                let actual = std::mem::replace(&mut self.hasher, Hasher::new(Algorithm::Sha256)).finish();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestError::SizeMismatch { digest: actual, expected: size, actual: self.read },
                ));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty_is_the_well_known_value() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY);
    }

    #[test]
    fn parse_accepts_valid_and_rejects_invalid() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.short(), "e3b0c44298fc");
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            ":e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e"), Err(DigestError::UnsupportedAlgorithm { .. })));
        let d512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(Digest::parse(&d512).unwrap().algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn serde_round_trips_as_string() {
        let d = Digest::parse(EMPTY).unwrap();
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn digest_writer_matches_one_shot() {
        let mut w = DigestWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(d, Digest::sha256_of(b"hello world"));
    }

    #[test]
    fn verifying_reader_accepts_match_and_rejects_mismatch() {
        let good = Digest::sha256_of(b"payload");
        let mut r = VerifyingReader::new(&b"payload"[..], Some(&good)).with_size(7);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.finish().unwrap(), (good.clone(), 7));

        let mut r = VerifyingReader::new(&b"paylOad"[..], Some(&good));
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("digest mismatch"), "{err}");

        let mut r = VerifyingReader::new(&b"payload"[..], Some(&good)).with_size(3);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
    }
}
