//! Picking a platform's image out of a tag whose index was only partly fetched.

use kiln_oci::manifest::{Descriptor, ImageIndex, ImageManifest, Manifest};
use kiln_oci::{media, ImageConfig, Platform, Store, StoreError};

/// Stores a one-layer image for `platform`; returns its manifest descriptor with the platform set.
fn put_image(store: &Store, platform: &str) -> Descriptor {
    let p = Platform::parse(platform).unwrap();
    let l = store.put_blob_bytes(format!("layer for {platform}").as_bytes()).unwrap();
    let mut cfg = ImageConfig::new(&p);
    cfg.rootfs.diff_ids.push(l.digest.clone());
    let c = store.put_blob_bytes(&cfg.to_json()).unwrap();
    let m = Manifest::Image(ImageManifest::new_oci(
        Descriptor::new(media::OCI_CONFIG, c.digest, c.size),
        vec![Descriptor::new(media::OCI_LAYER_TAR, l.digest, l.size)],
    ));
    let mut d = store.put_manifest(&m).unwrap();
    d.platform = Some(p);
    d
}

/// An index of `children` in the store.
fn put_index(store: &Store, children: &[Descriptor]) -> Descriptor {
    let mut ix = ImageIndex::new_oci();
    ix.manifests = children.to_vec();
    store.put_manifest(&Manifest::Index(ix)).unwrap()
}

fn p(s: &str) -> Platform {
    Platform::parse(s).unwrap()
}

#[test]
fn a_partial_index_serves_what_it_has_and_names_what_it_lacks() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let amd = put_image(&store, "linux/amd64");
    // The arm64 image exists elsewhere (its registry): listed in the index, none of its blobs here.
    let elsewhere = tempfile::tempdir().unwrap();
    let arm = put_image(&Store::open(elsewhere.path()).unwrap(), "linux/arm64");
    let root = put_index(&store, &[amd.clone(), arm.clone()]);

    assert_eq!(store.select_platform("r:1", &root, &p("linux/amd64")).unwrap().digest, amd.digest);
    let e = store.select_platform("r:1", &root, &p("linux/arm64")).unwrap_err();
    assert!(matches!(e, StoreError::PlatformAbsent(_)));
    assert_eq!(
        e.to_string(),
        "r:1 has no image for linux/arm64 in the local store (it has: linux/amd64); kiln pull --platform linux/arm64 r:1"
    );
    let e = store.select_platform("r:1", &root, &p("linux/s390x")).unwrap_err();
    assert!(matches!(e, StoreError::PlatformUnlisted(_)), "{e}");
    assert!(e.to_string().contains("linux/amd64, linux/arm64"), "{e}");

    let e = store.require_all_platforms("r:1", &root).unwrap_err();
    assert!(e.to_string().starts_with("r:1 has no image for linux/arm64 in the local store (it has: linux/amd64)"), "{e}");
    let images = store.platform_images(&root).unwrap();
    assert_eq!(
        images.iter().map(|i| (i.label(), i.present)).collect::<Vec<_>>(),
        vec![("linux/amd64".into(), true), ("linux/arm64".into(), false)]
    );

    // gc keeps what is here and does not trip over what is not.
    store.tag_name("r:1", &root).unwrap();
    let report = store.gc().unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(store.select_platform("r:1", &root, &p("linux/amd64")).unwrap().digest, amd.digest);
}

#[test]
fn a_lone_image_is_only_for_its_own_platform() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(t.path()).unwrap();
    let amd = put_image(&store, "linux/amd64");
    let plain = Descriptor::new(&amd.media_type, amd.digest.clone(), amd.size);
    assert_eq!(store.select_platform("a:1", &plain, &p("linux/amd64")).unwrap().digest, amd.digest);
    assert_eq!(store.select_platform("a:1", &plain, &p("x86_64")).unwrap().digest, amd.digest, "normalised");
    let e = store.select_platform("a:1", &plain, &p("linux/arm64")).unwrap_err();
    assert!(e.to_string().contains("a:1 has no image for linux/arm64 in the local store (it has: linux/amd64)"), "{e}");
    // kiln's own namespace is never pulled: the hint says so.
    let e = store.select_platform("kiln.local/a:1", &plain, &p("linux/arm64")).unwrap_err();
    assert!(e.to_string().ends_with("build or import it for linux/arm64"), "{e}");
    assert!(store.require_all_platforms("a:1", &plain).is_ok());
}
