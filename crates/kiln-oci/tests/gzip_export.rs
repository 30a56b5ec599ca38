//! Plain layers in the store and their gzip form for export (`kiln_oci::layer::gzip_*`).

use std::fs;
use std::io::Read;

use kiln_oci::layer::{gzip_image, gzip_layer, write_layer_from_dir, write_layer_to_store, WriteOptions};
use kiln_oci::{media, Compression, Descriptor, Digest, ImageManifest, Manifest, Store};

fn plain_layer(store: &Store, dir: &std::path::Path, content: &[u8]) -> Descriptor {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("f"), content).unwrap();
    let opts = WriteOptions { compression: Compression::None, source_date_epoch: Some(0) };
    let info = write_layer_to_store(store, |w| write_layer_from_dir(dir, w, &opts).map(|(_, i)| i)).unwrap();
    assert_eq!(info.digest, info.diff_id, "a plain layer's digest is its diff id");
    assert_eq!(info.size, info.uncompressed_size);
    let d = info.descriptor();
    assert_eq!(d.media_type, media::OCI_LAYER_TAR);
    d
}

fn gunzip_digest(store: &Store, d: &Digest) -> Digest {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(store.open_blob(d).unwrap()).read_to_end(&mut bytes).unwrap();
    Digest::sha256_of(&bytes)
}

#[test]
fn a_plain_layer_written_by_the_store_hashes_to_its_bytes() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let d = plain_layer(&store, &t.path().join("src"), b"hello");
    // The trusting writer committed under the digest the layer writer computed: check it for real.
    assert_eq!(Digest::sha256_of(&store.read_blob(&d.digest).unwrap()), d.digest);
}

#[test]
fn gzip_layer_is_deterministic_remembered_and_recomputed_after_a_prune() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let plain = plain_layer(&store, &t.path().join("src"), &vec![7u8; 200_000]);
    let gz = gzip_layer(&store, &plain).unwrap();
    assert_eq!(gz.media_type, media::OCI_LAYER_GZIP);
    assert!(gz.size < plain.size / 10, "200 kB of one byte compresses");
    assert_eq!(gunzip_digest(&store, &gz.digest), plain.digest, "the gzip blob holds the plain layer's bytes");
    assert_eq!(gzip_layer(&store, &plain).unwrap(), gz, "remembered: the same descriptor again");

    // A second store compresses the same tar to the same bytes.
    let t2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(t2.path()).unwrap();
    let plain2 = plain_layer(&store2, &t2.path().join("src"), &vec![7u8; 200_000]);
    assert_eq!(plain2, plain);
    assert_eq!(gzip_layer(&store2, &plain2).unwrap(), gz, "deterministic across stores");

    // The remembered blob is gone (a prune): it is compressed again, not trusted.
    fs::remove_file(store.blob_path(&gz.digest)).unwrap();
    assert_eq!(gzip_layer(&store, &plain).unwrap(), gz);
    assert!(store.has_blob(&gz.digest));
    // A torn memo is ignored too.
    let memo = store.dir().join("gzip-v3/sha256").join(plain.digest.hex());
    fs::write(&memo, "sha256:12").unwrap();
    assert_eq!(gzip_layer(&store, &plain).unwrap(), gz);
}

#[test]
fn compressed_or_absent_layers_pass_through_untouched() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    // Known only from a registry cache: not in the store, already gzip.
    let remote = Descriptor::new(media::OCI_LAYER_GZIP, Digest::sha256_of(b"elsewhere"), 9);
    assert_eq!(gzip_layer(&store, &remote).unwrap(), remote);
    let zstd = Descriptor::new(media::OCI_LAYER_ZSTD, Digest::sha256_of(b"z"), 1);
    assert_eq!(gzip_layer(&store, &zstd).unwrap(), zstd);
}

#[test]
fn gzip_image_rewrites_only_the_manifest_and_keeps_config_and_remote_layers() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let a = plain_layer(&store, &t.path().join("a"), b"layer a");
    let b = plain_layer(&store, &t.path().join("b"), b"layer b");
    let remote = Descriptor::new(media::OCI_LAYER_GZIP, Digest::sha256_of(b"cached elsewhere"), 16);
    let config = store.put_blob_bytes(b"{}").unwrap();
    let cfg = Descriptor::new(media::OCI_CONFIG, config.digest, config.size);
    let m = Manifest::Image(ImageManifest::new_oci(cfg.clone(), vec![a.clone(), remote.clone(), b.clone()]));
    let root = store.put_manifest(&m).unwrap();
    let out = gzip_image(&store, &root).unwrap();
    assert_ne!(out.digest, root.digest);
    let Manifest::Image(gm) = store.read_manifest(&out).unwrap().value else { panic!("not an image") };
    assert_eq!(gm.config, cfg);
    assert_eq!(gm.layers[1], remote, "a layer only a registry has stays as it is");
    assert_eq!(gm.layers[0], gzip_layer(&store, &a).unwrap());
    assert_eq!(gm.layers[2], gzip_layer(&store, &b).unwrap());
    assert_eq!(gzip_image(&store, &out).unwrap(), out, "an all-gzip image is its own export form");
    assert_eq!(gzip_image(&store, &root).unwrap(), out, "the same export form every time");
}
