//! `kiln build --build-context NAME=VALUE` and `--pull`, for real: a local directory read by
//! `COPY --from=NAME` (and keyed by the files read), `docker-image://` and `oci-layout://` contexts
//! standing in for a `FROM` image and for a stage, values kiln refuses, and `--pull` following a tag
//! that moved in a loopback registry.

#[path = "support_build/mod.rs"]
mod support_build;

use kiln_testkit::Registry;
use support_build::{assert_exit_1, assert_ok, digest, layer_steps, path_str, stderr, steps, write_context, Kiln};

fn can_run() -> bool {
    support_build::can_build() && kiln_testkit::require_tool("docker-registry")
}

/// Builds `FROM $BASE` + a marker file as `image` in `k`'s store and pushes it.
fn push_marked(k: &Kiln, image: &str, marker: &str) -> String {
    let ctx = k.path(&format!("marked-{}", support_build::unique()));
    write_context(&ctx, &[("Dockerfile", &format!("ARG BASE\nFROM ${{BASE}}\nRUN echo {marker} > /marker\n"))]);
    k.build_md(&ctx, &["-t", image]);
    let o = k.cmd(&["push", image]);
    assert_ok(&o, "kiln push");
    // The registry's digest (the push compresses the layers the build kept plain).
    support_build::stdout(&o).split_whitespace().last().expect("kiln push prints the digest").to_string()
}

/// The digest the store's tag `image` names.
fn stored_digest(k: &Kiln, image: &str) -> String {
    let o = k.cmd(&["inspect", image]);
    assert_ok(&o, "kiln inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("kiln inspect prints JSON");
    v["digest"].as_str().expect("inspect has a digest").to_string()
}

fn cache_of(md: &serde_json::Value) -> Vec<(String, String)> {
    layer_steps(md).into_iter().map(|s| (s.instruction, s.cache)).collect()
}

#[test]
fn a_local_directory_is_a_copy_from_source_keyed_by_the_files_read() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let extra = k.path("extra");
    write_context(
        &ctx,
        &[
            (
                "Dockerfile",
                "ARG BASE\nFROM ${BASE}\nCOPY --from=extra a.txt /extra/\nCOPY --from=extra sub /extra/sub\nCOPY a.txt /main.txt\n",
            ),
            ("a.txt", "from the main context\n"),
        ],
    );
    write_context(&extra, &[("a.txt", "from extra\n"), ("sub/b.txt", "b\n"), ("unread.txt", "1\n"), (".dockerignore", "sub/ignored\n")]);
    write_context(&extra, &[("sub/ignored", "never copied\n")]);
    let flag = format!("extra={}", path_str(&extra));
    let md = k.build_md(&ctx, &["--build-context", &flag, "-t", "kiln.test/ctx:1"]);
    assert!(layer_steps(&md).iter().all(|s| s.cache == "miss"), "{:#?}", steps(&md));
    let out = k.run("kiln.test/ctx:1", &["sh", "-c", "cat /extra/a.txt /extra/sub/b.txt /main.txt; ls /extra/sub"]);
    assert_eq!(out, "from extra\nb\nfrom the main context\nb.txt\n", "the named directory's .dockerignore applies to it");

    // Unchanged, and a file of it that no COPY reads changed: every step hits.
    let again = k.build_md(&ctx, &["--build-context", &flag]);
    assert!(layer_steps(&again).iter().all(|s| s.cache == "hit-local"), "{:#?}", steps(&again));
    assert_eq!(digest(&again), digest(&md));
    write_context(&extra, &[("unread.txt", "2\n")]);
    let unread = k.build_md(&ctx, &["--build-context", &flag]);
    assert!(layer_steps(&unread).iter().all(|s| s.cache == "hit-local"), "{:#?}", steps(&unread));

    // A file it reads changed: that COPY misses (and what follows it), the one before hits.
    write_context(&extra, &[("sub/b.txt", "b2\n")]);
    let changed = k.build_md(&ctx, &["--build-context", &flag, "-t", "kiln.test/ctx:2"]);
    let want = ["hit-local", "miss", "miss"];
    assert_eq!(cache_of(&changed).iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>(), want, "{:#?}", steps(&changed));
    assert_eq!(k.run("kiln.test/ctx:2", &["cat", "/extra/sub/b.txt"]), "b2\n");

    // Another directory with the same files under the same name: the same keys.
    let dir2 = k.path("extra2");
    write_context(&dir2, &[("a.txt", "from extra\n"), ("sub/b.txt", "b2\n")]);
    let other_name = k.build_md(&ctx, &["--build-context", &format!("extra={}", path_str(&dir2))]);
    assert_eq!(
        cache_of(&other_name).iter().filter(|(_, c)| c == "hit-local").count(),
        3,
        "same files, same keys: {:#?}",
        steps(&other_name)
    );
}

#[test]
fn docker_image_contexts_replace_a_from_image_and_a_stage() {
    if !can_run() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let image = format!("{}/ctx/base:1", reg.host());
    let pushed = push_marked(&Kiln::new(), &image, "pushed");

    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM ${BASE} AS tools\nRUN echo from-the-stage > /marker\n\
             FROM alpine:3.19\nCOPY --from=tools /marker /tools-marker\nRUN cat /marker /tools-marker > /both\n",
        )],
    );
    let value = format!("docker-image://{image}");
    let md = k.build_md(
        &ctx,
        &[
            "--build-context",
            &format!("tools={value}"),
            "--build-context",
            &format!("docker.io/library/alpine:3.19={value}"),
            "-t",
            "kiln.test/di:1",
        ],
    );
    assert_eq!(k.run("kiln.test/di:1", &["cat", "/both"]), "pushed\npushed\n");
    let all = steps(&md);
    assert!(!all.iter().any(|s| s.instruction.contains("from-the-stage")), "the named context wins over the stage: {all:#?}");
    assert!(k.image_refs().contains(&image), "the context's image was pulled into the store: {:?}", k.image_refs());
    assert_eq!(stored_digest(&k, &image), pushed, "the store has the pushed image");

    // Keyed by the image's digest: the same context again hits; without it, the stage runs.
    let again = k.build_md(&ctx, &["--build-context", &format!("tools={value}"), "--build-context", &format!("alpine:3.19={value}")]);
    assert!(layer_steps(&again).iter().all(|s| s.cache == "hit-local"), "{:#?}", steps(&again));
    let plain = k.build(&ctx, &["--build-context", &format!("alpine:3.19={value}"), "-t", "kiln.test/di:2"]);
    assert_ok(&plain, "build without the tools context");
    assert_eq!(k.run("kiln.test/di:2", &["cat", "/both"]), "pushed\nfrom-the-stage\n");
}

#[test]
fn an_oci_layout_written_by_kiln_is_a_context() {
    if !support_build::can_build() {
        return;
    }
    let a = Kiln::new();
    let ctx = a.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo from-the-layout > /marker\n")]);
    let layout = a.path("layout");
    let out = format!("type=oci,dest={},tar=false", path_str(&layout));
    let made = a.build_md(&ctx, &["-t", "kiln.test/lay:v2", "-o", &out]);

    let b = Kiln::new();
    let ctx = b.path("ctx");
    write_context(&ctx, &[("Dockerfile", "FROM base\nRUN cat /marker > /seen\n")]);
    let md =
        b.build_md(&ctx, &["--build-context", &format!("base=oci-layout://{}:v2", path_str(&layout)), "-t", "kiln.test/from-layout:1"]);
    assert_eq!(b.run("kiln.test/from-layout:1", &["cat", "/seen"]), "from-the-layout\n");
    let by_digest = format!("base=oci-layout://{}@{}", path_str(&layout), digest(&made));
    let again = b.build_md(&ctx, &["--build-context", &by_digest]);
    assert!(layer_steps(&again).iter().all(|s| s.cache == "hit-local"), "the same image by digest has the same key: {:#?}", steps(&again));
    assert_eq!(digest(&again), digest(&md));
    assert!(!layout.join("ingest").exists(), "the layout is left as it was");

    // No such tag: the layout's tags are named.
    let o = b.build(&ctx, &["--build-context", &format!("base=oci-layout://{}", path_str(&layout))]);
    assert_exit_1(&o, "a missing tag");
    assert!(stderr(&o).contains("has no image tagged \"latest\" (its tags: v2)"), "{}", stderr(&o));
}

#[test]
fn bad_build_context_values_name_the_flag_and_the_value() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY --from=src a /a\n")]);
    let missing = k.path("nowhere");
    let missing_flag = format!("src={}", path_str(&missing));
    let not_layout = format!("src=oci-layout://{}", path_str(&ctx));
    let cases: Vec<(String, String)> = vec![
        ("src".into(), "--build-context \"src\": expected NAME=VALUE".into()),
        (
            "src=https://github.com/o/r.git".into(),
            "--build-context \"src=https://github.com/o/r.git\": Git contexts are not supported by kiln".into(),
        ),
        ("src=target:base".into(), "--build-context \"src=target:base\": target: contexts belong to `docker buildx bake`".into()),
        ("src=docker-image://Bad".into(), "--build-context \"src=docker-image://Bad\": not an image reference".into()),
        (missing_flag.clone(), format!("--build-context {missing_flag:?}: {} is not a directory (it does not exist)", path_str(&missing))),
        (not_layout.clone(), format!("--build-context src: {} is not an OCI layout", path_str(&ctx))),
    ];
    for (value, want) in cases {
        let o = k.build(&ctx, &["--build-context", &value]);
        assert_exit_1(&o, &value);
        assert!(stderr(&o).contains(&want), "{value}: {}", stderr(&o));
    }
}

#[test]
fn a_local_directory_is_a_root_file_system_for_from_and_a_run_mount_source() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let extra = k.path("extra");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM ${BASE} AS tool\nRUN --mount=from=extra,target=/mnt cat /mnt/a.txt /mnt/sub/b.txt > /seen\n\
             FROM extra\nCOPY --from=tool /seen /seen\n",
        )],
    );
    write_context(&extra, &[("a.txt", "A\n"), ("sub/b.txt", "B\n"), ("skip.txt", "x\n"), (".dockerignore", "skip.txt\n")]);
    let flag = format!("extra={}", path_str(&extra));
    let out = k.path("out");
    let local = format!("type=local,dest={}", path_str(&out));
    let md = k.build_md(&ctx, &["--build-context", &flag, "-o", &local]);
    assert!(layer_steps(&md).iter().all(|s| s.cache == "miss"), "{:#?}", steps(&md));
    let read = |rel: &str| std::fs::read_to_string(out.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!((read("a.txt"), read("sub/b.txt"), read("seen")), ("A\n".into(), "B\n".into(), "A\nB\n".into()));
    assert!(!out.join("skip.txt").exists(), "the directory's .dockerignore applies");

    // Rewritten with the same content (a new mtime): the same image, every step hits.
    write_context(&extra, &[("a.txt", "A\n")]);
    let same = k.build_md(&ctx, &["--build-context", &flag]);
    assert!(layer_steps(&same).iter().all(|s| s.cache == "hit-local"), "{:#?}", steps(&same));
    assert_eq!(digest(&same), digest(&md));
    // New content: the mount's RUN and the stage built on the directory miss.
    write_context(&extra, &[("sub/b.txt", "B2\n")]);
    let changed = k.build_md(&ctx, &["--build-context", &flag]);
    assert!(layer_steps(&changed).iter().all(|s| s.cache == "miss"), "{:#?}", steps(&changed));
}

#[test]
fn pull_resolves_a_moved_tag_at_the_registry_and_without_it_the_store_wins() {
    if !can_run() {
        return;
    }
    let reg = Registry::start_plain().unwrap();
    let image = format!("{}/pull/base:1", reg.host());
    let pusher = Kiln::new();
    let v1 = push_marked(&pusher, &image, "v1");

    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", &format!("FROM {image}\nRUN cat /marker > /seen\n"))]);
    let first = k.build_md(&ctx, &["-t", "kiln.test/pulled:1"]);
    assert_eq!(k.run("kiln.test/pulled:1", &["cat", "/seen"]), "v1\n", "a base the store lacks is pulled");
    assert_eq!(stored_digest(&k, &image), v1);

    let v2 = push_marked(&pusher, &image, "v2");
    assert_ne!(v1, v2);
    // Without --pull: the store's tag, v1 (what kiln has always done: store first, registry when missing).
    let stored = k.build_md(&ctx, &["-t", "kiln.test/pulled:2"]);
    assert_eq!(k.run("kiln.test/pulled:2", &["cat", "/seen"]), "v1\n");
    assert_eq!(stored_digest(&k, &image), v1, "the store's tag stays");
    assert_eq!(digest(&stored), digest(&first));
    assert!(layer_steps(&stored).iter().all(|s| s.cache == "hit-local"), "{:#?}", steps(&stored));
    // With --pull: the registry's v2, and the store's tag follows it.
    let pulled = k.build_md(&ctx, &["--pull", "-t", "kiln.test/pulled:3"]);
    assert_eq!(k.run("kiln.test/pulled:3", &["cat", "/seen"]), "v2\n");
    assert!(layer_steps(&pulled).iter().all(|s| s.cache == "miss"), "a new base misses: {:#?}", steps(&pulled));
    assert_eq!(stored_digest(&k, &image), v2, "the store's tag moved to v2");

    // With --pull, an unreachable registry is an error, not the store's copy.
    drop(reg);
    let o = k.build(&ctx, &["--pull"]);
    assert_exit_1(&o, "--pull with the registry gone");
    assert!(stderr(&o).contains("--pull resolves it at its registry, and pulling it failed"), "{}", stderr(&o));
    let o = k.build(&ctx, &[]);
    assert_ok(&o, "without --pull the store is enough");
}
