//! COPY/ADD features beyond the basics: `ADD <url>` with `--checksum` (served by a local HTTP server
//! in the test), `COPY --exclude`, `COPY --parents`, and independent stages running side by side.

mod support_build;

use std::io::{Read, Write};
use std::net::TcpListener;

use support_build::*;

/// Serves `body` for every request on a loopback port, for `requests` requests, then stops.
fn serve(body: &'static [u8], requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    (format!("http://{addr}"), h)
}

const BODY: &[u8] = b"fetched over http\n";

fn body_sha() -> String {
    // Computed with sha256sum, independently of kiln.
    let mut child =
        std::process::Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(BODY).unwrap();
    let out = child.wait_with_output().unwrap();
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap())
}

#[test]
fn add_url_with_checksum_lands_0600_and_a_wrong_checksum_fails_at_the_line() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let (url, server) = serve(BODY, 2);
    let ctx = k.path("ctx");
    let good = format!("ARG BASE\nFROM ${{BASE}}\nADD --checksum={} {url}/dir/file.txt /dl/\n", body_sha());
    write_context(&ctx, &[("Dockerfile", &good)]);
    k.build_md(&ctx, &["-t", "kiln.test/add:1"]);
    assert_eq!(k.run("kiln.test/add:1", &["cat", "/dl/file.txt"]), "fetched over http\n");
    let mode = k.run("kiln.test/add:1", &["stat", "-c", "%a %u", "/dl/file.txt"]);
    assert_eq!(mode.trim(), "600 0", "Docker gives files fetched by ADD mode 0600");

    let bad = format!("ARG BASE\nFROM ${{BASE}}\nADD --checksum=sha256:{} {url}/file.txt /dl/\n", "0".repeat(64));
    write_context(&ctx, &[("Dockerfile", &bad)]);
    let o = k.build(&ctx, &[]);
    assert_exit_1(&o, "ADD with a wrong checksum");
    let err = stderr(&o);
    assert!(err.contains("Dockerfile:3") && err.contains("does not match"), "{err}");
    server.join().unwrap();
}

#[test]
fn copy_exclude_and_parents() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[
            (
                "Dockerfile",
                "ARG BASE\nFROM ${BASE}\nCOPY --exclude=*.log --exclude=sub/skip.txt src /ex/\nCOPY --parents src/sub/c.txt /par/\n",
            ),
            ("src/a.txt", "a"),
            ("src/b.log", "b"),
            ("src/sub/c.txt", "c"),
            ("src/sub/skip.txt", "s"),
        ],
    );
    k.build_md(&ctx, &["-t", "kiln.test/ex:1"]);
    let listing = k.run("kiln.test/ex:1", &["find", "/ex", "/par", "-type", "f"]);
    let mut files: Vec<&str> = listing.lines().collect();
    files.sort();
    assert_eq!(files, vec!["/ex/a.txt", "/ex/sub/c.txt", "/par/src/sub/c.txt"]);
}

#[test]
fn independent_stages_run_side_by_side() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    // Each stage waits until the other has started: built one after the other, the first would
    // wait forever (bounded here: it gives up after 20 s and the build fails).
    let df = "ARG BASE\n\
        FROM ${BASE} AS a\n\
        RUN --mount=type=cache,id=rendezvous,target=/r touch /r/a && i=0; while [ ! -e /r/b ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; test -e /r/b && echo a > /a\n\
        FROM ${BASE} AS b\n\
        RUN --mount=type=cache,id=rendezvous,target=/r touch /r/b && i=0; while [ ! -e /r/a ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; test -e /r/a && echo b > /b\n\
        FROM ${BASE}\n\
        COPY --from=a /a /a\n\
        COPY --from=b /b /b\n";
    write_context(&ctx, &[("Dockerfile", df)]);
    k.build_md(&ctx, &["-t", "kiln.test/par:1"]);
    assert_eq!(k.run("kiln.test/par:1", &["cat", "/a", "/b"]), "a\nb\n");
}

#[test]
fn the_native_snapshotter_builds_the_same_file_system_as_overlay() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let df = "ARG BASE\nFROM ${BASE}\n\
        RUN mkdir -p /d/sub && echo 1 > /d/sub/f && echo x > /gone && ln -s /d/sub/f /link && ln /d/sub/f /hard\n\
        RUN rm /gone && rm -r /d/sub && mkdir /d/sub && echo 2 > /d/sub/g && chmod 4755 /d/sub/g && chown 1000:1000 /d\n\
        COPY a.txt /d/\n";
    write_context(&ctx, &[("Dockerfile", df), ("a.txt", "a")]);
    let list = "find / -xdev \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -print0 | sort -z | xargs -0 stat -c '%n %F %a %u %g %s' ; cat /d/sub/g /d/a.txt";
    k.build_md(&ctx, &["-t", "kiln.test/ov:1", "--snapshotter", "overlay"]);
    let overlay = k.run("kiln.test/ov:1", &["sh", "-c", list]);
    k.build_md(&ctx, &["-t", "kiln.test/na:1", "--snapshotter", "native", "--no-cache"]);
    let native = k.run("kiln.test/na:1", &["sh", "-c", list]);
    assert!(
        overlay.contains("/d/sub/g regular file 4755 0 0 2") && !overlay.contains("/gone ") && !overlay.contains("/d/sub/f"),
        "{overlay}"
    );
    assert_eq!(native, overlay);
}

#[test]
fn cache_mount_sharing_locked_serialises_parallel_steps() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    // Two independent stages (run side by side) use one cache id. Each fails if it finds the other
    // inside: with sharing=locked they take turns, so both pass.
    let run = "RUN --mount=type=cache,id=L,target=/c,sharing=locked test ! -e /c/busy && touch /c/busy && sleep 1 && rm /c/busy && echo ok > /done";
    let df = format!("ARG BASE\nFROM ${{BASE}} AS a\n{run}\nFROM ${{BASE}} AS b\n{run}\nFROM ${{BASE}}\nCOPY --from=a /done /a\nCOPY --from=b /done /b\n");
    write_context(&ctx, &[("Dockerfile", &df)]);
    k.build_md(&ctx, &["-t", "kiln.test/locked:1"]);
    assert_eq!(k.run("kiln.test/locked:1", &["cat", "/a", "/b"]), "ok\nok\n");
}

/// An overlayfs mount made by the test; unmounted on drop.
struct OverlayMount(std::path::PathBuf);

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn auto_snapshotter_falls_back_to_copies_where_overlayfs_cannot_mount() {
    if !can_build() {
        return;
    }
    // overlayfs cannot use a directory on another overlayfs as its upper dir: a kiln root inside an
    // overlay mount is a real "overlay unavailable here" machine.
    let t = tempfile::tempdir().unwrap();
    for d in ["l", "u", "w", "m"] {
        std::fs::create_dir(t.path().join(d)).unwrap();
    }
    let p = |d: &str| t.path().join(d).display().to_string();
    let opts = format!("lowerdir={},upperdir={},workdir={}", p("l"), p("u"), p("w"));
    let st = std::process::Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts, &p("m")]).status().unwrap();
    assert!(st.success(), "mount the test's overlay");
    let _guard = OverlayMount(t.path().join("m"));
    let root = t.path().join("m/root");
    let kiln = |args: &[&str]| std::process::Command::new(KILN).arg("--root").arg(&root).args(args).env_remove("CI").output().unwrap();
    let tar = t.path().join("busybox.tar");
    kiln_testkit::busybox_rootfs_tar(&tar).unwrap();
    assert_ok(&kiln(&["import", path_str(&tar), "-t", BASE]), "import");
    let ctx = t.path().join("ctx");
    write_context(
        &ctx,
        &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo made > /made && rm /etc/group\nCOPY a.txt /a.txt\n"), ("a.txt", "a")],
    );
    let base = format!("BASE={BASE}");
    let forced = kiln(&["build", path_str(&ctx), "--build-arg", &base, "--snapshotter", "overlay"]);
    assert_exit_1(&forced, "--snapshotter overlay where overlayfs cannot mount");
    assert!(stderr(&forced).contains("--snapshotter native"), "the error says what to do: {}", stderr(&forced));
    let o = kiln(&["build", path_str(&ctx), "--build-arg", &base, "-t", "kiln.test/fallback:1"]);
    assert_ok(&o, "build with --snapshotter auto");
    assert!(stderr(&o).contains("falling back to the copying snapshotter"), "one warning says so: {}", stderr(&o));
    let r = kiln(&["run", "kiln.test/fallback:1", "--", "sh", "-c", "cat /made /a.txt; test -e /etc/group || echo no-group"]);
    assert_ok(&r, "kiln run where overlayfs cannot mount");
    assert_eq!(stdout(&r), "made\nano-group\n");
}

#[test]
fn copy_link_reuses_its_layer_when_an_earlier_step_changes() {
    if !can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let df = |v: &str| {
        format!("ARG BASE\nFROM ${{BASE}}\nRUN echo {v} > /a\nCOPY --link --chown=nobody:nogroup app.txt /opt/app/\nRUN cat /opt/app/app.txt /a > /b\n")
    };
    write_context(&ctx, &[("Dockerfile", &df("one")), ("app.txt", "app\n")]);
    let md1 = k.build_md(&ctx, &["-t", "kiln.test/link:1"]);
    write_context(&ctx, &[("Dockerfile", &df("two"))]);
    let md2 = k.build_md(&ctx, &["-t", "kiln.test/link:2"]);
    let status: Vec<(String, String)> = layer_steps(&md2).into_iter().map(|s| (s.instruction, s.cache)).collect();
    let of = |prefix: &str| status.iter().find(|(i, _)| i.starts_with(prefix)).map(|(_, c)| c.clone()).unwrap_or_default();
    assert_eq!(of("RUN echo"), "miss", "{status:?}");
    assert_eq!(of("COPY --link"), "hit-local", "the --link layer does not depend on the changed RUN: {status:?}");
    assert_eq!(of("RUN cat"), "miss", "{status:?}");

    // The very same layer sits in both images, on different parents.
    let diff_ids = |md: &serde_json::Value| -> Vec<String> {
        let cfg = read_json(
            &k.store().join("blobs/sha256").join(md["containerimage.config.digest"].as_str().unwrap().trim_start_matches("sha256:")),
        );
        cfg["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect()
    };
    let (a, b) = (diff_ids(&md1), diff_ids(&md2));
    assert_eq!(a.len(), b.len());
    let n = a.len();
    assert_ne!(a[n - 3], b[n - 3], "the RUN before it changed");
    assert_eq!(a[n - 2], b[n - 2], "the --link layer is re-used as is");

    // The image is what a plain COPY would give: content, the chown resolved in the image's passwd.
    assert_eq!(k.run("kiln.test/link:2", &["cat", "/b"]), "app\ntwo\n");
    assert_eq!(k.run("kiln.test/link:2", &["stat", "-c", "%u:%g", "/opt/app/app.txt"]), "65534:65534\n");
}
