//! The local store: atomic blob writes, tags under concurrency, garbage collection.

use std::fs;
use std::io::Write;
use std::sync::Arc;

use kiln_oci::manifest::{Descriptor, ImageIndex, ImageManifest, Manifest};
use kiln_oci::{media, Digest, ImageConfig, Platform, Reference, Store, StoreError};

fn ingest_files(store: &Store) -> usize {
    fs::read_dir(store.dir().join("ingest")).unwrap().count()
}

fn blob_count(store: &Store) -> usize {
    fs::read_dir(store.dir().join("blobs/sha256")).unwrap().count()
}

/// Stores a one-layer image and returns its manifest descriptor and the layer digest.
fn put_image(store: &Store, layer: &[u8], label: &str) -> (Descriptor, Digest) {
    let l = store.put_blob_bytes(layer).unwrap();
    let mut cfg = ImageConfig::new(&Platform::parse("linux/amd64").unwrap());
    cfg.rootfs.diff_ids.push(l.digest.clone());
    cfg.extra.insert("label".into(), serde_json::json!(label));
    let cfg_bytes = cfg.to_json();
    let c = store.put_blob_bytes(&cfg_bytes).unwrap();
    let m = Manifest::Image(ImageManifest::new_oci(
        Descriptor::new(media::OCI_CONFIG, c.digest, c.size),
        vec![Descriptor::new(media::OCI_LAYER_TAR, l.digest.clone(), l.size)],
    ));
    (store.put_manifest(&m).unwrap(), l.digest)
}

#[test]
fn layout_files_are_valid() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    assert_eq!(store.dir(), t.path().join("store"));
    let layout: serde_json::Value = serde_json::from_slice(&fs::read(store.dir().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value = serde_json::from_slice(&fs::read(store.dir().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    // Reopening keeps what is there.
    let (d, _) = put_image(&store, b"layer", "x");
    store.tag(&Reference::parse("a").unwrap(), &d).unwrap();
    let again = Store::open(t.path()).unwrap();
    assert_eq!(again.list().unwrap().len(), 1);
}

#[test]
fn mismatched_stream_stores_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let expected = Digest::sha256_of(b"the real content");
    let err = store.put_blob_stream(&b"tampered content"[..], Some(&expected)).unwrap_err();
    assert!(matches!(err, StoreError::Digest(_)), "{err}");
    assert!(!store.has_blob(&expected));
    assert_eq!(blob_count(&store), 0);
    assert_eq!(ingest_files(&store), 0, "the temp file must be removed");
    let ok = store.put_blob_stream(&b"the real content"[..], Some(&expected)).unwrap();
    assert_eq!(ok.digest, expected);
    assert_eq!(store.read_blob(&expected).unwrap(), b"the real content");
}

#[test]
fn interrupted_write_is_never_trusted() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let content = vec![42u8; 1 << 20];
    let digest = Digest::sha256_of(&content);
    // A writer that dies half way (no Drop runs, as after a kill).
    let mut w = store.blob_writer().unwrap();
    w.write_all(&content[..content.len() / 2]).unwrap();
    w.flush().unwrap();
    std::mem::forget(w);
    assert_eq!(ingest_files(&store), 1);
    assert!(!store.has_blob(&digest));
    assert!(matches!(store.open_blob(&digest), Err(StoreError::BlobNotFound { .. })));
    // A later run writes the blob properly; the leftover is ignored, then collected.
    store.put_blob_stream(&content[..], Some(&digest)).unwrap();
    assert_eq!(store.read_blob(&digest).unwrap().len(), content.len());
    let report = store.gc().unwrap();
    assert_eq!(report.stale_temp_files, 1);
    assert_eq!(ingest_files(&store), 0);
}

#[test]
fn a_corrupted_blob_is_detected_on_read() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let info = store.put_blob_bytes(b"{\"a\":1}").unwrap();
    fs::write(store.blob_path(&info.digest), b"{\"a\":2}").unwrap();
    assert!(matches!(store.read_blob(&info.digest), Err(StoreError::Digest(_))));
}

#[test]
fn concurrent_tags_keep_index_valid() {
    let t = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(t.path()).unwrap());
    let (desc, _) = put_image(&store, b"shared", "x");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let desc = desc.clone();
            std::thread::spawn(move || {
                for j in 0..15 {
                    let r = Reference::parse(&format!("localhost/t{i}:v{j}")).unwrap();
                    store.tag(&r, &desc).unwrap();
                    if j % 5 == 4 {
                        // A second handle, as another process would have.
                        let other = Store::open(store.dir().parent().unwrap()).unwrap();
                        other.untag(&r).unwrap();
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let list = store.list().unwrap();
    assert_eq!(list.len(), 8 * 12);
    let index: ImageIndex = serde_json::from_slice(&fs::read(store.dir().join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 8 * 12);
    assert!(store.resolve(&Reference::parse("localhost/t3:v3").unwrap()).unwrap().is_some());
    assert!(store.resolve(&Reference::parse("localhost/t3:v4").unwrap()).unwrap().is_none());
}

#[test]
fn gc_removes_exactly_the_unreachable_blobs() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let (a, la) = put_image(&store, b"layer-a", "a");
    let (b, lb) = put_image(&store, b"layer-b", "b");
    let (c, _) = put_image(&store, b"layer-a", "c"); // shares layer-a with image a
    let stray = store.put_blob_bytes(b"stray").unwrap();
    let mut idx = ImageIndex::new_oci();
    let mut pa = a.clone();
    pa.platform = Some(Platform::parse("linux/amd64").unwrap());
    idx.manifests.push(pa);
    let multi = store.put_manifest(&Manifest::Index(idx)).unwrap();

    store.tag(&Reference::parse("localhost/multi:1").unwrap(), &multi).unwrap();
    store.tag(&Reference::parse("localhost/b:1").unwrap(), &b).unwrap();
    store.tag(&Reference::parse("localhost/c:1").unwrap(), &c).unwrap();
    let before = blob_count(&store);
    let r = store.gc().unwrap();
    assert_eq!(r.removed.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(), vec![stray.digest.clone()]);
    assert_eq!(r.kept, before - 1);

    // Untag b and c: b's manifest, config and layer go; layer-a stays (image a, via the index).
    store.untag(&Reference::parse("localhost/b:1").unwrap()).unwrap();
    store.untag(&Reference::parse("localhost/c:1").unwrap()).unwrap();
    let r = store.gc().unwrap();
    let removed: std::collections::BTreeSet<_> = r.removed.iter().map(|x| x.digest.clone()).collect();
    assert_eq!(removed.len(), 5, "{removed:?}");
    assert!(removed.contains(&b.digest) && removed.contains(&c.digest) && removed.contains(&lb));
    assert!(!removed.contains(&la));
    assert!(store.has_blob(&la) && store.has_blob(&a.digest) && store.has_blob(&multi.digest));
    assert_eq!(r.freed_bytes, r.removed.iter().map(|x| x.size).sum::<u64>());

    store.untag(&Reference::parse("localhost/multi:1").unwrap()).unwrap();
    store.gc().unwrap();
    assert_eq!(blob_count(&store), 0);
}

#[test]
fn resolve_by_digest_and_lease_blocks_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let (d, _) = put_image(&store, b"l", "x");
    let by_digest = Reference::parse(&format!("localhost/x@{}", d.digest)).unwrap();
    let got = store.resolve(&by_digest).unwrap().unwrap();
    assert_eq!(got.digest, d.digest);
    assert_eq!(got.media_type, media::OCI_MANIFEST);
    let _lease = store.lease().unwrap();
    let _lease2 = store.lease().unwrap();
    store.tag(&Reference::parse("localhost/x:1").unwrap(), &d).unwrap();
    let m = store.read_manifest(&d).unwrap();
    let Manifest::Image(m) = m.value else { panic!("image manifest expected") };
    let cfg = store.read_config(&m.config.digest).unwrap();
    assert_eq!(cfg.value.extra["label"], "x");
}
