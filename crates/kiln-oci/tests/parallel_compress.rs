//! Parallel layer compression (`kiln_oci::layer::pgzip`): the bytes do not depend on the thread
//! count, the gzip output is one standard member that the real `gzip` reads, and the store's memo
//! keeps a compressed layer from being compressed twice.

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use kiln_oci::layer::pgzip::{gzip_stream, zstd_encoder, BLOCK_SIZE};
use kiln_oci::layer::{compress_layer_with, gzip_layer_with, write_layer_from_dir, write_layer_to_store, Codec, WriteOptions, GZIP_LEVEL};
use kiln_oci::{Compression, Descriptor, Store};

/// Deterministic pseudo-random bytes (xorshift), incompressible for deflate and zstd.
fn random(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Text-like bytes that compress well but not trivially (numbers, words, repeats at a distance).
fn text(n: usize) -> Vec<u8> {
    let words = ["layer", "digest", "manifest", "registry", "kiln", "overlay", "sha256", "blob", "tar", "gzip"];
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() < n {
        let w = words[(i * 7 + i / 3) as usize % words.len()];
        out.extend_from_slice(format!("{w} {} {:x}\n", i % 997, i.wrapping_mul(2654435761) % 65536).as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// Up to `n` bytes of the host's own programs and docs, concatenated in name order: real data, with
/// the runs and stored stretches synthetic inputs miss (zlib-rs's `reset` leaked state between
/// blocks only on data like this).
fn host_files(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for dir in ["/usr/bin", "/usr/share/doc/gzip"] {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        names.sort();
        for p in names {
            if out.len() >= n {
                break;
            }
            if let Ok(b) = fs::read(&p) {
                out.extend_from_slice(&b[..b.len().min(n - out.len())]);
            }
        }
    }
    assert!(out.len() > BLOCK_SIZE, "expected host files under /usr/bin");
    out
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut mixed = text(5 * BLOCK_SIZE + 1234);
    mixed.extend(random(4 * BLOCK_SIZE + 99, 7));
    mixed.extend(text(3 * BLOCK_SIZE));
    vec![
        ("empty", Vec::new()),
        ("one byte", b"k".to_vec()),
        ("exactly one block", text(BLOCK_SIZE)),
        ("one block and one byte", text(BLOCK_SIZE + 1)),
        ("exactly three blocks", text(3 * BLOCK_SIZE)),
        ("twelve blocks, text and random", mixed),
        ("incompressible, nine blocks", random(9 * BLOCK_SIZE + 5, 42)),
        ("host files", host_files(4 << 20)),
    ]
}

fn gz(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
    gzip_stream(&mut &data[..], Vec::new(), level, threads).unwrap()
}

/// Runs the real `gzip` with `args`, `input` on stdin; returns stdout, or panics with stderr.
fn real_gzip(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gzip(1) must be installed for this test (Debian package gzip)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn gzip_bytes_are_the_same_with_1_2_and_8_threads() {
    for (name, data) in inputs() {
        let one = gz(&data, GZIP_LEVEL, 1);
        assert_eq!(gz(&data, GZIP_LEVEL, 2), one, "{name}: 2 threads");
        assert_eq!(gz(&data, GZIP_LEVEL, 8), one, "{name}: 8 threads");
    }
    // Other levels too (the `compression-level=` of an export).
    let data = text(6 * BLOCK_SIZE + 7);
    for level in [0, 1, 9] {
        assert_eq!(gz(&data, level, 8), gz(&data, level, 1), "level {level}");
    }
}

#[test]
fn gzip_output_is_one_member_that_real_gzip_and_flate2_read_back() {
    for (name, data) in inputs() {
        let packed = gz(&data, GZIP_LEVEL, 2);
        // GzDecoder stops at the end of the first member: all of the input must be in it.
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut back).unwrap();
        assert!(back == data, "{name}: flate2 read back {} bytes of {}", back.len(), data.len());
        real_gzip(&["-t"], &packed);
        let back = real_gzip(&["-d", "-c"], &packed);
        assert!(back == data, "{name}: gzip -d gave {} bytes of {}", back.len(), data.len());
        // `gzip -l` reads the trailer's ISIZE: it must be the input length.
        assert_eq!(&packed[packed.len() - 4..], &(data.len() as u32).to_le_bytes(), "{name}: ISIZE");
    }
}

#[test]
fn gzip_ratio_stays_close_to_one_stream() {
    // The dictionary carried across blocks keeps the loss against one deflate stream small.
    let data = text(20 * BLOCK_SIZE);
    let blocks = gz(&data, GZIP_LEVEL, 2).len() as f64;
    let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    one.write_all(&data).unwrap();
    let single = one.finish().unwrap().len() as f64;
    assert!(blocks <= single * 1.03, "parallel gzip {blocks} bytes against one stream's {single}");
}

fn zstd(data: &[u8], level: i32, threads: usize) -> Vec<u8> {
    let mut e = zstd_encoder(Vec::new(), level, threads).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn zstd_bytes_are_the_same_with_1_2_and_8_workers() {
    // Level 1's jobs are 2 MiB (4 windows of 512 KiB) and level 3's 8 MiB: these inputs span several.
    let mut big = text(9 << 20);
    big.extend(random(3 << 20, 3));
    big.extend(text(6 << 20));
    for level in [1, 3] {
        for (name, data) in inputs().into_iter().chain([("18 MiB text and random", big.clone())]) {
            let one = zstd(&data, level, 1);
            assert_eq!(zstd(&data, level, 2), one, "level {level}, {name}: 2 workers");
            assert_eq!(zstd(&data, level, 8), one, "level {level}, {name}: 8 workers");
            assert!(zstd::decode_all(&one[..]).unwrap() == data, "level {level}, {name}: round trip");
        }
    }
}

fn plain_layer(store: &Store, dir: &std::path::Path, content: &[u8]) -> Descriptor {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("f"), content).unwrap();
    let opts = WriteOptions { compression: Compression::None, source_date_epoch: Some(0) };
    write_layer_to_store(store, |w| write_layer_from_dir(dir, w, &opts).map(|(_, i)| i)).unwrap().descriptor()
}

#[test]
fn a_layer_in_the_memo_is_not_compressed_again() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let plain = plain_layer(&store, &t.path().join("src"), &text(5 * BLOCK_SIZE));
    for codec in [Codec::DEFAULT, Codec::Zstd { level: 3 }, Codec::Gzip { level: 9 }] {
        let first = compress_layer_with(&store, &plain, codec, false, 2).unwrap();
        assert_eq!(compress_layer_with(&store, &plain, codec, false, 8).unwrap(), first, "{codec:?}: 8 threads name the same blob");
        // Take the plain blob away: only the memo can answer now, so a second call that answers
        // proves nothing was read or compressed.
        let plain_path = store.blob_path(&plain.digest);
        let saved = fs::read(&plain_path).unwrap();
        fs::remove_file(&plain_path).unwrap();
        assert_eq!(compress_layer_with(&store, &plain, codec, false, 1).unwrap(), first, "{codec:?}: from the memo");
        fs::write(&plain_path, saved).unwrap();
    }
    // The default gzip memo lives under the new name, never the old single-stream one.
    assert!(store.dir().join("gzip-v3").is_dir());
    assert!(!store.dir().join("gzip").exists(), "the pre-parallel memo dir is not written");
    // The same layer and threads give the blob gzip_layer_with names.
    assert_eq!(gzip_layer_with(&store, &plain, 1).unwrap(), compress_layer_with(&store, &plain, Codec::DEFAULT, false, 2).unwrap());
}

#[test]
fn a_layer_written_gzip_is_the_blob_an_export_of_its_plain_form_names() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let dir = t.path().join("src");
    let plain = plain_layer(&store, &dir, &text(3 * BLOCK_SIZE + 10));
    let opts = WriteOptions { compression: Compression::Gzip, source_date_epoch: Some(0) };
    let written = write_layer_to_store(&store, |w| write_layer_from_dir(&dir, w, &opts).map(|(_, i)| i)).unwrap();
    assert_eq!(gzip_layer_with(&store, &plain, 2).unwrap().digest, written.digest);
}
