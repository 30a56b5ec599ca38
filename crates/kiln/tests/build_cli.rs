//! `kiln build` and `kiln run` end to end, with the real binary over a busybox base: a two-stage
//! build, the local cache (full hits, a late miss, `--no-cache`), `--target`, every RUN mount type,
//! `--network=none`, heredocs, `--test`, and how a failing RUN is reported.
//!
//! Needs root (overlayfs, namespaces) and busybox-static; see `support_build::can_build`.

mod support_build;

use support_build::{assert_exit_1, assert_ok, digest, layer_steps, path_str, stderr, steps, write_context, Kiln};

const TWO_STAGE: &str = "\
ARG BASE
FROM ${BASE} AS builder
RUN mkdir /out && echo built-in-builder > /out/built.txt
COPY hello.txt /out/
FROM ${BASE}
COPY --from=builder /out /app
RUN echo from-run > /app/run.txt
COPY late.txt /app/
RUN cat /app/built.txt /app/hello.txt /app/run.txt /app/late.txt > /app/all.txt
CMD [\"cat\", \"/app/all.txt\"]
";

fn two_stage_context(k: &Kiln) -> std::path::PathBuf {
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", TWO_STAGE), ("hello.txt", "hello\n"), ("late.txt", "late-1\n")]);
    ctx
}

#[test]
fn two_stage_build_runs_and_rebuild_hits_every_step() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = two_stage_context(&k);
    let md1 = k.build_md(&ctx, &["-t", "kiln.test/app:1"]);
    let first = layer_steps(&md1);
    assert_eq!(first.len(), 6, "six layer steps (2 RUN/COPY in builder, 4 in the final stage): {first:#?}");
    assert!(first.iter().all(|s| s.cache == "miss"), "a fresh root has nothing cached: {first:#?}");
    assert!(steps(&md1).iter().any(|s| s.stage == "builder"), "steps name their stage: {:#?}", steps(&md1));

    // The image's CMD cats the file assembled from both stages.
    assert_eq!(k.run("kiln.test/app:1", &[]), "built-in-builder\nhello\nfrom-run\nlate-1\n");
    // A command after `--` replaces CMD.
    assert_eq!(k.run("kiln.test/app:1", &["cat", "/app/hello.txt"]), "hello\n");
    // `kiln run` passes the command's exit code on.
    let o = k.cmd(&["run", "kiln.test/app:1", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "kiln run exits with the command's code: {}", stderr(&o));

    let md2 = k.build_md(&ctx, &["-t", "kiln.test/app:1"]);
    let second = layer_steps(&md2);
    assert_eq!(second.len(), first.len(), "same steps on rebuild: {second:#?}");
    for s in &second {
        assert_eq!(s.cache, "hit-local", "rebuild with nothing changed: every layer step is a local hit, but {s:?}");
    }
    assert_eq!(digest(&md1), digest(&md2), "an all-cached rebuild gives the same image digest");
    assert_eq!(md1["containerimage.config.digest"], md2["containerimage.config.digest"]);
}

#[test]
fn changing_a_late_copy_source_misses_only_from_that_copy_on() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = two_stage_context(&k);
    let md1 = k.build_md(&ctx, &["-t", "kiln.test/app:1"]);
    write_context(&ctx, &[("late.txt", "late-2\n")]);
    let md2 = k.build_md(&ctx, &["-t", "kiln.test/app:1"]);

    let layer = layer_steps(&md2);
    let copy_at = layer
        .iter()
        .position(|s| s.instruction.starts_with("COPY late.txt"))
        .unwrap_or_else(|| panic!("no `COPY late.txt` step in {layer:#?}"));
    for (i, s) in layer.iter().enumerate() {
        let want = if i < copy_at { "hit-local" } else { "miss" };
        assert_eq!(s.cache, want, "step {i} ({}) after changing late.txt: {layer:#?}", s.instruction);
    }
    assert_ne!(digest(&md1), digest(&md2), "new content, new image");
    assert_eq!(k.run("kiln.test/app:1", &[]), "built-in-builder\nhello\nfrom-run\nlate-2\n");
}

#[test]
fn no_cache_runs_every_step() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = two_stage_context(&k);
    let md1 = k.build_md(&ctx, &["-t", "kiln.test/app:1"]);
    let md2 = k.build_md(&ctx, &["-t", "kiln.test/app:1", "--no-cache"]);
    let layer = layer_steps(&md2);
    assert_eq!(layer.len(), layer_steps(&md1).len());
    for s in &layer {
        assert_eq!(s.cache, "miss", "--no-cache must run every step: {layer:#?}");
    }
    assert_eq!(k.run("kiln.test/app:1", &[]), "built-in-builder\nhello\nfrom-run\nlate-1\n");
}

#[test]
fn target_builds_only_the_stages_it_needs() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE} AS broken\n\
             RUN exit 1\n\
             FROM ${BASE} AS dep\n\
             RUN echo dep > /dep.txt\n\
             FROM ${BASE} AS unrelated\n\
             RUN echo unrelated > /unrelated.txt\n\
             FROM ${BASE} AS wanted\n\
             COPY --from=dep /dep.txt /dep.txt\n\
             RUN cat /dep.txt > /wanted.txt\n\
             FROM broken AS last\n\
             RUN echo never\n",
        )],
    );
    // Without --target the last stage needs `broken`, so the build must fail: the Dockerfile
    // really does hold a failing stage that --target has to leave out.
    let o = k.build(&ctx, &["-t", "kiln.test/t:all"]);
    assert_exit_1(&o, "build of the last stage, which needs the broken one");

    let md = k.build_md(&ctx, &["-t", "kiln.test/t:wanted", "--target", "wanted"]);
    let stages: std::collections::BTreeSet<String> = steps(&md).into_iter().map(|s| s.stage).collect();
    let want: std::collections::BTreeSet<String> = ["dep", "wanted"].iter().map(|s| s.to_string()).collect();
    assert_eq!(stages, want, "only the target and what it needs are built: {:#?}", steps(&md));
    assert_eq!(k.run("kiln.test/t:wanted", &["cat", "/wanted.txt"]), "dep\n");
}

#[test]
fn cache_mount_persists_across_builds() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE}\n\
             ARG ROUND\n\
             RUN --mount=type=cache,target=/var/cache/app,id=kiln-test-cache \
             echo \"round-$ROUND\" >> /var/cache/app/log && cp /var/cache/app/log /seen.txt\n",
        )],
    );
    let md1 = k.build_md(&ctx, &["-t", "kiln.test/c:1", "--build-arg", "ROUND=1"]);
    assert_eq!(k.run("kiln.test/c:1", &["cat", "/seen.txt"]), "round-1\n");

    // A different build-arg changes the RUN's input, so the step runs again and finds what the
    // first build left in the cache mount.
    let md2 = k.build_md(&ctx, &["-t", "kiln.test/c:2", "--build-arg", "ROUND=2"]);
    let run2 = layer_steps(&md2);
    assert_eq!(run2.len(), 1, "one layer step, the RUN: {run2:#?}");
    assert_eq!(run2[0].cache, "miss", "the RUN's input changed: {run2:#?}");
    assert_eq!(k.run("kiln.test/c:2", &["cat", "/seen.txt"]), "round-1\nround-2\n");

    // The cache mount's content is not part of any image.
    let o = k.cmd(&["run", "kiln.test/c:2", "--", "sh", "-c", "ls -A /var/cache/app 2>/dev/null | wc -l"]);
    assert_ok(&o, "list the cache mount target in the image");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0", "the cache dir's files must not land in the layer");
    assert_ne!(digest(&md1), digest(&md2));
}

#[test]
fn tmpfs_mount_is_a_fresh_tmpfs_and_stays_out_of_the_layer() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE}\n\
             RUN --mount=type=tmpfs,target=/scratch \
             awk '$2 == \"/scratch\" { print $3 }' /proc/mounts > /fstype.txt && \
             ls -A /scratch | wc -l > /count.txt && echo junk > /scratch/junk\n",
        )],
    );
    k.build_md(&ctx, &["-t", "kiln.test/tmpfs:1"]);
    assert_eq!(k.run("kiln.test/tmpfs:1", &["cat", "/fstype.txt", "/count.txt"]).split_whitespace().collect::<Vec<_>>(), ["tmpfs", "0"]);
    let o = k.cmd(&["run", "kiln.test/tmpfs:1", "--", "test", "-e", "/scratch/junk"]);
    assert!(!o.status.success(), "a file written to the tmpfs mount must not be in the image");
}

#[test]
fn bind_mounts_from_the_context_and_from_a_stage() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[
            (
                "Dockerfile",
                "ARG BASE\n\
                 FROM ${BASE} AS gen\n\
                 RUN mkdir /gen && echo from-stage > /gen/g.txt\n\
                 FROM ${BASE}\n\
                 RUN --mount=type=bind,source=data,target=/mnt/ctx cat /mnt/ctx/in.txt > /from-ctx.txt\n\
                 RUN --mount=type=bind,source=data,target=/mnt/ctx \
                 if touch /mnt/ctx/probe 2>/dev/null; then echo rw; else echo ro; fi > /bind-mode.txt\n\
                 RUN --mount=type=bind,from=gen,source=/gen,target=/mnt/stage cat /mnt/stage/g.txt > /from-stage.txt\n",
            ),
            ("data/in.txt", "from-context\n"),
        ],
    );
    k.build_md(&ctx, &["-t", "kiln.test/bind:1"]);
    assert_eq!(k.run("kiln.test/bind:1", &["cat", "/from-ctx.txt", "/from-stage.txt"]), "from-context\nfrom-stage\n");
    // Bind mounts are read-only unless `rw` is given (BuildKit's default), and never write back.
    assert_eq!(k.run("kiln.test/bind:1", &["cat", "/bind-mode.txt"]), "ro\n");
    assert!(!ctx.join("data/probe").exists(), "a RUN must never write into the build context");
    for p in ["/mnt/ctx/in.txt", "/mnt/stage/g.txt", "/gen"] {
        let o = k.cmd(&["run", "kiln.test/bind:1", "--", "test", "-e", p]);
        assert!(!o.status.success(), "{p} was only bind-mounted; it must not be in the image");
    }
}

#[test]
fn run_network_none_sees_only_loopback() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    // /proc/net/dev lists the interfaces of the network namespace the process is in.
    let list = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort";
    write_context(
        &ctx,
        &[("Dockerfile", &format!("ARG BASE\nFROM ${{BASE}}\nRUN --network=none {list} > /none.txt\nRUN {list} > /default.txt\n"))],
    );
    k.build_md(&ctx, &["-t", "kiln.test/net:1"]);
    assert_eq!(k.run("kiln.test/net:1", &["cat", "/none.txt"]), "lo\n");
    // The default is the host network (as BuildKit's default); when the host has more than lo,
    // the default RUN must see more than lo, which shows --network=none did something.
    let host = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    if host.lines().skip(2).count() > 1 {
        let default = k.run("kiln.test/net:1", &["cat", "/default.txt"]);
        assert_ne!(default, "lo\n", "default RUN network should be the host's");
    }
}

#[test]
fn heredocs_in_run_and_copy() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE}\n\
             RUN <<EOF\n\
             echo first > /heredoc-run.txt\n\
             echo second >> /heredoc-run.txt\n\
             EOF\n\
             COPY <<EOF /etc/app.conf\n\
             key=value\n\
             other=2\n\
             EOF\n\
             RUN <<A cat > /two.txt && <<B cat >> /two.txt\n\
             from-a\n\
             A\n\
             from-b\n\
             B\n",
        )],
    );
    k.build_md(&ctx, &["-t", "kiln.test/heredoc:1"]);
    assert_eq!(k.run("kiln.test/heredoc:1", &["cat", "/heredoc-run.txt"]), "first\nsecond\n");
    assert_eq!(k.run("kiln.test/heredoc:1", &["cat", "/etc/app.conf"]), "key=value\nother=2\n");
    assert_eq!(k.run("kiln.test/heredoc:1", &["cat", "/two.txt"]), "from-a\nfrom-b\n");
}

fn test_flag_context(k: &Kiln) -> std::path::PathBuf {
    let ctx = k.path("ctx");
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo ready > /ready.txt\n")]);
    ctx
}

#[test]
fn test_flag_passing_tags_and_exports() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = test_flag_context(&k);
    let out = k.path("out.tar");
    let dest = format!("type=oci,dest={}", path_str(&out));
    let o =
        k.build(&ctx, &["-t", "kiln.test/tested:ok", "--test", "grep -q ready /ready.txt", "--output", "type=image", "--output", &dest]);
    assert_ok(&o, "build with a passing --test");
    assert!(k.image_refs().iter().any(|r| r == "kiln.test/tested:ok"), "tagged after a passing test: {:?}", k.image_refs());
    assert!(out.is_file(), "the --output file is written after a passing test");
}

#[test]
fn test_flag_failing_fails_the_build_and_tags_nothing() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = test_flag_context(&k);
    let out = k.path("out.tar");
    let dest = format!("type=oci,dest={}", path_str(&out));
    let o =
        k.build(&ctx, &["-t", "kiln.test/tested:bad", "--test", "grep -q missing /ready.txt", "--output", "type=image", "--output", &dest]);
    assert_exit_1(&o, "build with a failing --test");
    let err = stderr(&o);
    assert!(err.contains("grep -q missing /ready.txt"), "the error names the test command:\n{err}");
    let refs = k.image_refs();
    assert!(!refs.iter().any(|r| r.contains("tested")), "a failed --test must not tag the image: {refs:?}");
    // Nor leave any other name behind (e.g. the temporary one the test ran under).
    let index = support_build::read_json(&k.store().join("index.json"));
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .map(|m| m.iter().filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, [support_build::BASE], "only the base image is named in the store after a failed --test");
    assert!(!out.exists(), "a failed --test must not write the --output file");
}

#[test]
fn failing_run_names_step_command_exit_code_and_last_output() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\n\
             FROM ${BASE}\n\
             RUN echo fine\n\
             RUN for i in $(seq 1 200); do echo line-$i; done; echo boom-on-stderr >&2; exit 7\n",
        )],
    );
    let o = k.build(&ctx, &["-t", "kiln.test/fail:1"]);
    assert_exit_1(&o, "build with a failing RUN");
    let err = stderr(&o);
    // The error itself (not only the streamed output) must carry everything: find it and look after it.
    let at = err.rfind("Dockerfile:4").unwrap_or_else(|| panic!("the error names the step as Dockerfile:4:\n{err}"));
    let tail = &err[at..];
    assert!(tail.contains("seq 1 200"), "the error names the command:\n{tail}");
    assert!(tail.contains("exit code 7"), "the error gives the exit code:\n{tail}");
    assert!(tail.contains("line-200") && tail.contains("boom-on-stderr"), "the error shows the last lines of output:\n{tail}");
    assert!(!tail.contains("line-1\n"), "only the last lines, not the whole output:\n{tail}");
    assert!(!k.image_refs().iter().any(|r| r.contains("fail")), "nothing is tagged");
}
