//! Pulls into the local store against a real `docker-registry`: an index is kept verbatim with only
//! the platforms asked for fetched, a second platform joins the same index, and the store's tag
//! moves (or not) as [`Tagging`] says.

use std::io::Read;
use std::time::Duration;

use kiln_oci::{media, Digest, Platform, Reference, Store};
use kiln_registry::{pull_to_store, Client, ClientOptions, NoProgress, PlatformSelection, RegistryError, Repo, Tagging};
use kiln_testkit::Registry;

fn client(dir: &std::path::Path) -> Client {
    Client::new(ClientOptions {
        docker_config: dir.join("config.json"),
        backoff_base: Duration::from_millis(20),
        ..ClientOptions::default()
    })
}

fn push_blob(c: &Client, repo: &Repo, data: &[u8]) -> (Digest, u64) {
    let d = Digest::sha256_of(data);
    let open = |off: u64| -> std::io::Result<Box<dyn Read + Send>> { Ok(Box::new(std::io::Cursor::new(data[off as usize..].to_vec()))) };
    c.push_blob(repo, &d, data.len() as u64, None, &open).unwrap();
    (d, data.len() as u64)
}

/// Pushes a one-layer image for `arch` (its layer's bytes differ by `seed`) and returns its
/// manifest's (digest, size).
fn push_image(c: &Client, repo: &Repo, arch: &str, seed: &str) -> (Digest, u64) {
    let layer = format!("layer of {arch} {seed}").into_bytes();
    let (ld, ls) = push_blob(c, repo, &layer);
    let config =
        serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld.to_string()]}, "config": {}});
    let (cd, cs) = push_blob(c, repo, config.to_string().as_bytes());
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": cd.to_string(), "size": cs},
        "layers": [{"mediaType": media::OCI_LAYER_TAR, "digest": ld.to_string(), "size": ls}]});
    let bytes = m.to_string().into_bytes();
    let d = c.put_manifest(repo, &Digest::sha256_of(&bytes).to_string(), media::OCI_MANIFEST, &bytes).unwrap();
    (d, bytes.len() as u64)
}

/// Pushes an index of `images` (arch, manifest) under `tag` and returns its digest.
fn push_index(c: &Client, repo: &Repo, tag: &str, images: &[(&str, (Digest, u64))]) -> Digest {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(arch, (d, s))| serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.to_string(), "size": s, "platform": {"architecture": arch, "os": "linux"}}))
        .collect();
    let ix = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests});
    c.put_manifest(repo, tag, media::OCI_INDEX, ix.to_string().as_bytes()).unwrap()
}

fn only(arch: &str) -> PlatformSelection {
    PlatformSelection::Only(vec![Platform::parse(&format!("linux/{arch}")).unwrap()])
}

/// (platform, present) of what `reference` names in the store.
fn present(store: &Store, reference: &Reference) -> Vec<(String, bool)> {
    let root = store.resolve(reference).unwrap().expect("tagged");
    store.platform_images(&root).unwrap().into_iter().map(|i| (i.label(), i.present)).collect()
}

fn blob_count(store: &Store) -> usize {
    std::fs::read_dir(store.dir().join("blobs/sha256")).unwrap().count()
}

#[test]
fn an_index_is_kept_whole_and_gains_platforms_and_the_tag_moves_only_as_told() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let repo = Repo::new(reg.host(), "multi/base");
    let amd = push_image(&c, &repo, "amd64", "1");
    let arm = push_image(&c, &repo, "arm64", "1");
    let first = push_index(&c, &repo, "1", &[("amd64", amd.clone()), ("arm64", arm.clone())]);
    let reference = Reference::parse(&format!("{}/multi/base:1", reg.host())).unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();

    // A platform the index does not list fails before anything is fetched.
    let e = pull_to_store(&c, &store, &reference, &only("s390x"), Tagging::Follow, &NoProgress).unwrap_err();
    assert!(matches!(e, RegistryError::NoPlatform { .. }) && e.to_string().contains("linux/arm64"), "{e}");
    assert_eq!(blob_count(&store), 0);

    let p = pull_to_store(&c, &store, &reference, &only("amd64"), Tagging::Follow, &NoProgress).unwrap();
    assert_eq!((p.root.digest.clone(), p.tagged), (first.clone(), true));
    assert_eq!(p.images.iter().map(|d| d.digest.clone()).collect::<Vec<_>>(), vec![amd.0.clone()]);
    assert_eq!(present(&store, &reference), vec![("linux/amd64".into(), true), ("linux/arm64".into(), false)]);
    // Verbatim: the stored index is the registry's bytes.
    assert_eq!(Digest::sha256_of(&store.read_blob(&first).unwrap()), first);

    // The tag moves upstream (a new amd64 image); a pull for arm64 made because arm64 was missing
    // completes the stored index by its digest, and the tag stays on it.
    let amd2 = push_image(&c, &repo, "amd64", "2");
    let second = push_index(&c, &repo, "1", &[("amd64", amd2.clone()), ("arm64", arm.clone())]);
    let p = pull_to_store(&c, &store, &reference, &only("arm64"), Tagging::Keep, &NoProgress).unwrap();
    assert_eq!((p.root.digest.clone(), p.tagged), (first.clone(), true));
    assert_eq!(present(&store, &reference), vec![("linux/amd64".into(), true), ("linux/arm64".into(), true)]);

    // A platform the stored index does not list sends Keep to the registry's tag; the new index
    // lacks the stored amd64 image, so the tag stays and the pull is used by digest.
    let riscv = push_image(&c, &repo, "riscv64", "1");
    let third = push_index(&c, &repo, "1", &[("amd64", amd2.clone()), ("arm64", arm.clone()), ("riscv64", riscv.clone())]);
    let p = pull_to_store(&c, &store, &reference, &only("riscv64"), Tagging::Keep, &NoProgress).unwrap();
    assert_eq!((p.root.digest.clone(), p.tagged), (third.clone(), false));
    assert_eq!(store.resolve(&reference).unwrap().unwrap().digest, first);
    let pinned = store.resolve(&reference.with_digest(third.clone())).unwrap().unwrap();
    let riscv_here = store.select_platform("pinned", &pinned, &Platform::parse("linux/riscv64").unwrap()).unwrap();
    assert_eq!(riscv_here.digest, riscv.0);

    // An explicit pull follows the registry.
    let p = pull_to_store(&c, &store, &reference, &only("amd64"), Tagging::Follow, &NoProgress).unwrap();
    assert_eq!((p.root.digest.clone(), p.tagged), (third.clone(), true));
    assert_eq!(store.resolve(&reference).unwrap().unwrap().digest, third);
    let _ = second;

    // Keep moves a tag when nothing is lost: the next index lists everything the store has of this one.
    let s390 = push_image(&c, &repo, "s390x", "1");
    let fourth = push_index(&c, &repo, "1", &[("amd64", amd2), ("arm64", arm), ("riscv64", riscv), ("s390x", s390)]);
    let p = pull_to_store(&c, &store, &reference, &only("s390x"), Tagging::Keep, &NoProgress).unwrap();
    assert_eq!((p.root.digest.clone(), p.tagged), (fourth.clone(), true));
    assert_eq!(store.resolve(&reference).unwrap().unwrap().digest, fourth);
}

#[test]
fn a_lone_image_for_another_platform_than_asked_is_refused_unless_none_was_asked() {
    if !kiln_testkit::require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let repo = Repo::new(reg.host(), "single");
    let (d, _) = push_image(&c, &repo, "arm64", "1");
    let bytes = c.get_manifest(&repo, &d.to_string()).unwrap().bytes;
    c.put_manifest(&repo, "1", media::OCI_MANIFEST, &bytes).unwrap();
    let reference = Reference::parse(&format!("{}/single:1", reg.host())).unwrap();
    let store = Store::open(&tmp.path().join("root")).unwrap();

    let e = pull_to_store(&c, &store, &reference, &only("amd64"), Tagging::Follow, &NoProgress).unwrap_err();
    assert!(matches!(e, RegistryError::WrongPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/arm64") && e.to_string().contains("linux/amd64"), "{e}");
    assert!(store.resolve(&reference).unwrap().is_none());

    // `kiln pull` without --platform takes it as it is, as docker pull does.
    let host = PlatformSelection::Host(Platform::parse("linux/amd64").unwrap());
    let p = pull_to_store(&c, &store, &reference, &host, Tagging::Follow, &NoProgress).unwrap();
    assert_eq!((p.root.digest, p.tagged), (d, true));
    // and the store then says it has arm64, not amd64.
    let root = store.resolve(&reference).unwrap().unwrap();
    let e = store.select_platform(&reference.to_string(), &root, &Platform::parse("linux/amd64").unwrap()).unwrap_err();
    assert!(e.to_string().contains("has no image for linux/amd64 in the local store (it has: linux/arm64)"), "{e}");
}
