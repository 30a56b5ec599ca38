//! The registry cache against a real `docker-registry` (kiln-testkit): round trip, misses,
//! concurrent writers, platforms, pruning, and the failures that must stay warnings.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use kiln_cache::{
    export, export_at, CacheFrom, CacheMode, CacheSource, CacheTo, ExportOutcome, ExportReport, LayerRecord, LayerSources, Opened, Record,
    RegistryCache, RegistryExport, CACHE_CONFIG_MEDIA_TYPE,
};
use kiln_oci::{media, Descriptor, Digest, Reference, Store};
use kiln_registry::{Client, ClientOptions};
use kiln_testkit::{require_tool, Registry, TokenServerOptions};

fn client(docker_config: &Path) -> Client {
    Client::new(ClientOptions {
        docker_config: docker_config.join("config.json"),
        max_attempts: 3,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..ClientOptions::default()
    })
}

/// Pseudo-random bytes from a seed, so every layer is distinct and no RNG crate is needed.
fn blob(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Digest::sha256_of(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(block.hex().as_bytes());
        block = Digest::sha256_of(block.hex().as_bytes());
    }
    out.truncate(len);
    out
}

/// A chain of `n` steps for `branch` on `platform`, each with a small layer put into `store`; the
/// last step only changes the config (no layer), like an ENV or CMD.
fn chain(store: &Store, branch: &str, platform: &str, n: usize) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for i in 0..n {
        let name = format!("{branch}/{platform}/{i}");
        let layer = if i + 1 < n {
            let bytes = blob(&name, 2048 + i * 100);
            let info = store.put_blob_bytes(&bytes).expect("store blob");
            Some(LayerRecord {
                descriptor: Descriptor::new(media::OCI_LAYER_GZIP, info.digest, info.size),
                diff_id: Digest::sha256_of(format!("tar {name}").as_bytes()),
            })
        } else {
            None
        };
        let mut inputs = BTreeMap::new();
        inputs.insert("platform".to_string(), platform.to_string());
        inputs.insert("arg:BRANCH".to_string(), branch.to_string());
        out.push(Record::new(
            Digest::sha256_of(name.as_bytes()),
            out.last().map(|p| p.key.clone()),
            format!("RUN step {i} of {branch}"),
            inputs,
            layer,
        ));
    }
    out
}

fn target(reference: &Reference) -> RegistryExport {
    RegistryExport::new(reference.clone())
}

fn exported(outcome: ExportOutcome) -> kiln_cache::ExportSummary {
    match outcome {
        ExportOutcome::Exported(s) => s,
        other => panic!("expected an export, got {other:?}"),
    }
}

fn open<'c>(client: &'c Client, reference: &Reference) -> RegistryCache<'c> {
    match RegistryCache::open(client, reference) {
        Opened::Opened(c) => c,
        other => panic!("expected a cache, got {other:?}"),
    }
}

fn skopeo_raw(reference: &Reference) -> serde_json::Value {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("skopeo printed JSON")
}

#[test]
fn export_then_import_round_trip_is_lazy() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("a")).unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{}/app/cache:buildcache", reg.host())).unwrap();
    let records = chain(&store, "main", "linux/amd64", 4);

    let s = exported(export(&c, &target(&reference), &records, &store, &LayerSources::new()).unwrap());
    assert_eq!((s.exported, s.records, s.layers_uploaded, s.unavailable), (4, 4, 3, 0), "{s:?}");

    let raw = skopeo_raw(&reference);
    assert_eq!(raw["mediaType"], media::OCI_MANIFEST);
    assert_eq!(raw["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(3));

    // A fresh machine: an empty store. Opening fetches no layer.
    let fresh = Store::open(&dir.path().join("b")).unwrap();
    let cache = open(&c, &reference);
    assert_eq!(cache.len(), 4);
    assert_eq!(Some(cache.manifest_digest()), s.digest.as_ref());
    for r in &records {
        let got = cache.lookup(&r.key).expect("record present");
        assert_eq!(&got, r);
        assert_eq!(cache.platform_of(&r.key), Some("linux/amd64"));
        if let Some(l) = &r.layer {
            assert!(!fresh.has_blob(&l.descriptor.digest), "import must be lazy");
        }
    }
    let wanted = &records[1];
    let info = cache.fetch_layer(wanted, &fresh).unwrap();
    let layer = wanted.layer.as_ref().unwrap();
    assert_eq!(info.digest, layer.descriptor.digest);
    assert_eq!(fresh.read_blob(&info.digest).unwrap(), store.read_blob(&info.digest).unwrap());
    assert!(!fresh.has_blob(&records[0].layer.as_ref().unwrap().descriptor.digest), "only the asked-for layer");
    assert!(cache.fetch_layer(&records[3], &fresh).is_err(), "a config-only record has no layer");

    // Exporting the same records again moves no layer.
    let again = exported(export(&c, &target(&reference), &records, &store, &LayerSources::new()).unwrap());
    assert_eq!((again.layers_uploaded, again.records), (0, 4), "{again:?}");
}

#[test]
fn a_missing_ref_is_a_miss_with_one_warning() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{}/nothing/here:cache", reg.host())).unwrap();
    let outcome = RegistryCache::open(&c, &reference);
    let Opened::Missing(warning) = &outcome else { panic!("expected a miss, got {outcome:?}") };
    assert!(warning.contains(&reference.to_string()) && warning.contains("not found"), "{warning}");
    assert_eq!(warning.lines().count(), 1);
    assert!(outcome.cache().is_none());
}

#[test]
fn a_ref_that_is_not_a_cache_is_unusable_and_never_overwritten() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{}/app:latest", reg.host())).unwrap();
    let repo = kiln_registry::Repo::new(reference.registry(), reference.repository());
    // An ordinary image config under the tag.
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg_desc = Descriptor::for_bytes(media::OCI_CONFIG, cfg);
    c.push_blob(&repo, &cfg_desc.digest, cfg_desc.size, None, &|o| {
        Ok(Box::new(std::io::Cursor::new(cfg[o as usize..].to_vec())) as Box<dyn std::io::Read + Send>)
    })
    .unwrap();
    let m = kiln_oci::Manifest::Image(kiln_oci::ImageManifest::new_oci(cfg_desc, vec![])).to_json();
    let before = c.put_manifest(&repo, "latest", media::OCI_MANIFEST, &m).unwrap();

    let outcome = RegistryCache::open(&c, &reference);
    let warning = outcome.warning().unwrap_or_default().to_string();
    assert!(matches!(outcome, Opened::Unusable(_)), "{outcome:?}");
    assert!(warning.contains("not a kiln cache"), "{warning}");

    let records = chain(&store, "main", "linux/amd64", 2);
    let out = export(&c, &target(&reference), &records, &store, &LayerSources::new()).unwrap();
    assert!(matches!(out, ExportOutcome::Failed { .. }), "{out:?}");
    assert_eq!(c.get_manifest(&repo, "latest").unwrap().digest, before, "the image tag was overwritten");
}

#[test]
fn eight_concurrent_branch_exports_all_survive() {
    if !require_tool("docker-registry") || !require_tool("skopeo") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = Reference::parse(&format!("{}/app/cache:shared", reg.host())).unwrap();
    let branches: Vec<String> = (0..8).map(|i| format!("branch-{i}")).collect();
    let all: Vec<Vec<Record>> = std::thread::scope(|s| {
        let handles: Vec<_> = branches
            .iter()
            .map(|b| {
                let root = dir.path().join(b);
                let reference = reference.clone();
                s.spawn(move || {
                    // One client and store per writer: eight separate builds.
                    let store = Store::open(&root).unwrap();
                    let c = client(&root);
                    let records = chain(&store, b, "linux/amd64", 3);
                    let s = exported(export(&c, &target(&reference), &records, &store, &LayerSources::new()).unwrap());
                    assert!(s.attempts >= 1);
                    records
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
    });

    let raw = skopeo_raw(&reference);
    assert_eq!(raw["config"]["mediaType"], CACHE_CONFIG_MEDIA_TYPE);
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(16), "2 layers per branch");

    let c = client(dir.path());
    let cache = open(&c, &reference);
    let keys: HashSet<Digest> = cache.records().into_iter().map(|r| r.key).collect();
    for (b, records) in branches.iter().zip(&all) {
        for r in records {
            assert!(keys.contains(&r.key), "{b}: record {:?} lost", r.instruction);
        }
    }
    assert_eq!(cache.len(), 24);
}

#[test]
fn two_platforms_share_one_ref() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{}/app:cache", reg.host())).unwrap();
    let amd = chain(&store, "main", "linux/amd64", 3);
    let arm = chain(&store, "main", "linux/arm64", 3);
    exported(export(&c, &target(&reference), &amd, &store, &LayerSources::new()).unwrap());
    let s = exported(export(&c, &target(&reference), &arm, &store, &LayerSources::new()).unwrap());
    assert_eq!(s.records, 6);
    let cache = open(&c, &reference);
    for r in &amd {
        assert_eq!(cache.platform_of(&r.key), Some("linux/amd64"));
    }
    for r in &arm {
        assert_eq!(cache.platform_of(&r.key), Some("linux/arm64"));
    }
    // mode=min of one platform's result keeps only that platform's chain.
    let both: Vec<Record> = amd.iter().chain(&arm).cloned().collect();
    let min = kiln_cache::select(CacheMode::Min, &both, &[arm[2].key.clone()]);
    assert_eq!(min, arm);
}

#[test]
fn ttl_and_max_size_prune_on_export() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{}/app:cache", reg.host())).unwrap();
    const DAY: u64 = 86400;
    let now = 2_000_000_000;
    let old = chain(&store, "old", "linux/amd64", 3);
    let mid = chain(&store, "mid", "linux/amd64", 3);
    let new = chain(&store, "new", "linux/amd64", 3);
    let none = LayerSources::new();
    exported(export_at(&c, &target(&reference), &old, &store, &none, now - 15 * DAY).unwrap());
    // 13 days after the first export: still within the default 14 days.
    let s = exported(export_at(&c, &target(&reference), &mid, &store, &none, now - 2 * DAY).unwrap());
    assert_eq!((s.pruned_ttl, s.records), (0, 6), "{s:?}");
    let s = exported(export_at(&c, &target(&reference), &new, &store, &none, now).unwrap());
    assert_eq!((s.pruned_ttl, s.records), (3, 6), "{s:?}");
    let cache = open(&c, &reference);
    assert!(old.iter().all(|r| cache.lookup(&r.key).is_none()), "old records outlived the ttl");
    assert!(mid.iter().chain(&new).all(|r| cache.lookup(&r.key).is_some()));

    // A budget that holds one chain's layers: the newest chain stays, whole.
    let one_chain: u64 = new.iter().filter_map(|r| r.layer.as_ref()).map(|l| l.descriptor.size).sum();
    let mut budget = target(&reference);
    budget.max_size = Some(one_chain);
    let s = exported(export_at(&c, &budget, &new, &store, &none, now + 60).unwrap());
    assert_eq!((s.pruned_size, s.records, s.layer_bytes), (3, 3, one_chain), "{s:?}");
    let cache = open(&c, &reference);
    assert!(new.iter().all(|r| cache.lookup(&r.key).is_some()));
    assert!(mid.iter().all(|r| cache.lookup(&r.key).is_none()));

    // `kiln cache prune` is an export of no records: a month later, everything has aged out.
    let s = exported(export_at(&c, &target(&reference), &[], &store, &none, now + 30 * DAY).unwrap());
    assert_eq!((s.pruned_ttl, s.records, s.exported), (3, 0, 0), "{s:?}");
    assert!(open(&c, &reference).is_empty());
}

#[test]
fn a_read_only_credential_turns_export_off_with_a_warning() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_token(TokenServerOptions {
        read_only: Some(("reader".into(), "reader-pw".into())),
        ..TokenServerOptions::default()
    })
    .unwrap();
    let reference = Reference::parse(&format!("{}/app:cache", reg.host())).unwrap();
    let (user, pw) = reg.credentials().unwrap();

    // The full user writes the cache first.
    let writer_dir = tempfile::tempdir().unwrap();
    kiln_registry::credentials::store(&writer_dir.path().join("config.json"), &reg.host(), user, pw).unwrap();
    let writer = client(writer_dir.path());
    let store = Store::open(&writer_dir.path().join("s")).unwrap();
    let first = chain(&store, "main", "linux/amd64", 2);
    let s = exported(export(&writer, &target(&reference), &first, &store, &LayerSources::new()).unwrap());

    // The reader can import, but not export.
    let reader_dir = tempfile::tempdir().unwrap();
    kiln_registry::credentials::store(&reader_dir.path().join("config.json"), &reg.host(), "reader", "reader-pw").unwrap();
    let reader = client(reader_dir.path());
    assert_eq!(open(&reader, &reference).len(), 2);
    let more = chain(&store, "feature", "linux/amd64", 2);
    let out = export(&reader, &target(&reference), &more, &store, &LayerSources::new()).unwrap();
    let ExportOutcome::Denied { warning } = &out else { panic!("expected denied, got {out:?}") };
    assert!(warning.contains("turned off") && warning.contains(&reference.to_string()), "{warning}");
    assert!(!warning.contains("reader-pw"), "a credential leaked into the warning");

    let mut strict = target(&reference);
    strict.ignore_error = false;
    let err = export(&reader, &strict, &more, &store, &LayerSources::new()).unwrap_err();
    assert!(err.is_denied(), "{err}");
    assert_eq!(
        writer.get_manifest(&kiln_registry::Repo::new(reference.registry(), reference.repository()), "cache").unwrap().digest,
        s.digest.unwrap(),
        "the ref changed"
    );
}

#[test]
fn registry_down_during_export_is_a_warning() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let host = reg.host();
    drop(reg);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{host}/app:cache")).unwrap();
    let records = chain(&store, "main", "linux/amd64", 2);
    let out = export(&c, &target(&reference), &records, &store, &LayerSources::new()).unwrap();
    let ExportOutcome::Failed { warning } = &out else { panic!("expected a warning, got {out:?}") };
    assert!(warning.contains(&host), "{warning}");

    let mut strict = target(&reference);
    strict.ignore_error = false;
    assert!(export(&c, &strict, &records, &store, &LayerSources::new()).is_err());

    let imported = RegistryCache::open(&c, &reference);
    assert!(matches!(imported, Opened::Unusable(_)), "{imported:?}");
}

#[test]
fn layers_missing_locally_are_mounted_from_their_source_repository() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = client(dir.path());
    let first = Reference::parse(&format!("{}/team/a:cache", reg.host())).unwrap();
    let second = Reference::parse(&format!("{}/team/b:cache", reg.host())).unwrap();
    let records = chain(&store, "main", "linux/amd64", 3);
    exported(export(&c, &target(&first), &records, &store, &LayerSources::new()).unwrap());

    // Another machine: nothing in its store, the records came from the first ref.
    let empty = Store::open(&dir.path().join("empty")).unwrap();
    let cache = open(&c, &first);
    let s = exported(export(&c, &target(&second), &cache.records(), &empty, &cache.layer_sources()).unwrap());
    assert_eq!((s.layers_mounted, s.layers_uploaded, s.unavailable), (2, 0, 0), "{s:?}");
    assert_eq!(open(&c, &second).len(), 3);

    // Without a source, records whose layers are nowhere are left out, with the ones built on them.
    let s = exported(
        export(&c, &target(&Reference::parse(&format!("{}/team/c:cache", reg.host())).unwrap()), &records, &empty, &LayerSources::new())
            .unwrap(),
    );
    assert_eq!((s.unavailable, s.digest.clone()), (3, None), "{s:?}");
}

#[test]
fn export_and_import_ride_out_a_flaky_registry() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let proxy =
        kiln_testkit::FaultProxy::start(&reg.host(), kiln_testkit::FaultProxyOptions { fault_rate: 0.2, seed: 7, ..Default::default() })
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = Client::new(ClientOptions {
        docker_config: dir.path().join("config.json"),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..ClientOptions::default()
    });
    let reference = Reference::parse(&format!("{}/app:cache", proxy.host())).unwrap();
    let records = chain(&store, "main", "linux/amd64", 5);
    let s = exported(export(&c, &target(&reference), &records, &store, &LayerSources::new()).unwrap());
    assert_eq!(s.records, 5);
    let cache = open(&c, &reference);
    let fresh = Store::open(&dir.path().join("fresh")).unwrap();
    for r in records.iter().filter(|r| r.layer.is_some()) {
        cache.fetch_layer(r, &fresh).unwrap();
    }
    assert!(proxy.faults() > 0, "the proxy injected no fault; the test proves nothing");
}

#[test]
fn a_ref_whose_layer_the_registry_lost_heals_on_the_next_export() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path());
    let reference = Reference::parse(&format!("{}/app:cache", reg.host())).unwrap();
    let first_store = Store::open(&dir.path().join("first")).unwrap();
    let first = chain(&first_store, "main", "linux/amd64", 3);
    exported(export(&c, &target(&reference), &first, &first_store, &LayerSources::new()).unwrap());

    // A registry-side clean-up removes the second layer of the chain.
    let lost = first[1].layer.as_ref().unwrap().descriptor.digest.clone();
    let resp = kiln_testkit::http::request("DELETE", &format!("{}/v2/app/blobs/{lost}", reg.url()), &[], b"").unwrap();
    assert_eq!(resp.status, 202, "blob delete: {}", resp.text());

    // Another machine, which never had the first chain's layers, exports its own records.
    let other_store = Store::open(&dir.path().join("other")).unwrap();
    let second = chain(&other_store, "feature", "linux/amd64", 2);
    let s = exported(export(&c, &target(&reference), &second, &other_store, &LayerSources::new()).unwrap());
    assert!(s.attempts >= 2, "{s:?}");
    let cache = open(&c, &reference);
    assert!(cache.lookup(&first[0].key).is_some(), "a record whose layer survived is kept");
    assert!(cache.lookup(&first[1].key).is_none() && cache.lookup(&first[2].key).is_none(), "records on the lost layer are dropped");
    assert!(second.iter().all(|r| cache.lookup(&r.key).is_some()));
}

/// What a build does, through the backend interface only: open the `--cache-to` as a sink, export,
/// open the `--cache-from` as a source, look up and fetch. Then a down registry: a warning entry
/// naming the ref, or an error when `ignore-error=false` asked for one.
#[test]
fn registry_sink_and_source_through_the_backend_traits() {
    if !require_tool("docker-registry") {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s")).unwrap();
    let c = client(dir.path());
    let reference = format!("{}/app:cache", reg.host());
    let records = chain(&store, "main", "linux/amd64", 3);

    let to = CacheTo::parse(&format!("type=registry,ref={reference},mode=max")).unwrap();
    let Opened::Opened(sink) = to.open(Some(&c)) else { panic!("a registry sink opens without I/O") };
    assert_eq!((sink.mode(), sink.describe()), (CacheMode::Max, reference.clone()));
    let report = sink.export(&records, &store, &LayerSources::new()).unwrap();
    let ExportReport::Exported(summary) = &report else { panic!("expected an export, got {report:?}") };
    assert_eq!((summary.exported, summary.records, summary.layers_uploaded), (3, 3, 2));

    let from = CacheFrom::parse(&reference).unwrap();
    let source: Box<dyn CacheSource + '_> = match from.open(Some(&c)) {
        Opened::Opened(s) => s,
        other => panic!("expected the ref to open, got {other:?}"),
    };
    assert!(!source.layers_in_store());
    assert_eq!(source.describe(), reference);
    assert_eq!(source.records().len(), 3);
    let hit = source.lookup(&records[1].key).expect("a hit");
    let layer = hit.layer.clone().expect("a layer").descriptor.digest;
    assert!(source.layer_sources().get(&layer).is_some(), "a lazy hit's layer can be mounted from the ref");
    let fresh = Store::open(&dir.path().join("fresh")).unwrap();
    assert_eq!(source.fetch_layer(&hit, &fresh).unwrap().digest, layer);
    assert!(source.fetch_layer(&records[2], &fresh).is_err(), "a config-only record has no layer");

    let host = reg.host();
    drop(reg);
    let sink = to.open(Some(&c)).cache().unwrap();
    let report = sink.export(&records, &store, &LayerSources::new()).expect("ignore-error=true: a warning, not an error");
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["reference"], reference.as_str(), "{v}");
    assert!(v["warning"].as_str().is_some_and(|w| w.contains(&host)), "{v}");
    let strict = CacheTo::parse(&format!("type=registry,ref={reference},ignore-error=false")).unwrap();
    let err = strict.open(Some(&c)).cache().unwrap().export(&records, &store, &LayerSources::new()).unwrap_err();
    assert!(err.to_string().contains(&host), "{err}");
}
