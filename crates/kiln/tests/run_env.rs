//! `kiln build`'s RUN environment, checked from inside real RUN steps: `--network` (and a
//! step's own `RUN --network` over it), `--add-host`, `--shm-size`, `--ulimit`, and `--secret`
//! from files and environment variables with `RUN --mount=type=secret[,env=VAR]`, and `--ssh` with
//! a real `ssh-agent` and `RUN --mount=type=ssh` (the host's `ssh-add` run inside the step). What a RUN saw
//! is written to a file of its layer and read back with `kiln run`; the layers themselves are
//! read from the store with `tar`, to show that nothing of the environment (hosts lines, secret
//! values, agent sockets) is left in them. None of these flags is a step's cache input.
//!
//! Needs root, busybox-static and openssh-client.

mod support_build;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support_build::{assert_exit_1, assert_ok, digest, layer_steps, path_str, read_json, stderr, write_context, Kiln, BASE, KILN};

/// Interface names in a `/proc/net/dev` dump.
fn interfaces(dev: &str) -> Vec<String> {
    dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_string()).collect()
}

/// The store blob a digest names.
fn blob(k: &Kiln, digest: &str) -> PathBuf {
    k.store().join("blobs/sha256").join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// The image's layers, as plain tar files (gzipped ones decompressed into the test's temp dir).
fn layers(k: &Kiln, md: &Value) -> Vec<PathBuf> {
    let manifest = read_json(&blob(k, &digest(md)));
    let layers = manifest["layers"].as_array().unwrap_or_else(|| panic!("no layers in {manifest:#}"));
    layers
        .iter()
        .map(|l| {
            let path = blob(k, l["digest"].as_str().expect("layer digest"));
            if fs::read(&path).expect("layer blob").starts_with(&[0x1f, 0x8b]) {
                let o = Command::new("gzip").arg("-dc").arg(&path).output().expect("run gzip");
                assert_ok(&o, "gzip -dc");
                let plain = k.path(&format!("layer-{}.tar", support_build::unique()));
                fs::write(&plain, &o.stdout).unwrap();
                plain
            } else {
                path
            }
        })
        .collect()
}

/// The entries of a layer tar, without a leading `./`.
fn entries(tar: &Path) -> Vec<String> {
    let o = Command::new("tar").arg("-tf").arg(tar).output().expect("run tar");
    assert_ok(&o, "tar -tf");
    String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim_start_matches("./").to_string()).collect()
}

/// The layers the build made: every layer after the base image's one (the busybox base is a
/// single imported layer; the count is checked so that this cannot silently skip a layer).
fn built_layers(k: &Kiln, md: &Value, runs: usize) -> Vec<PathBuf> {
    let all = layers(k, md);
    assert_eq!(all.len(), 1 + runs, "one base layer and one per RUN");
    all[1..].to_vec()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `kiln build` with extra environment variables for the kiln process (for `--secret env=`).
fn build_with_env(k: &Kiln, ctx: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let base_arg = format!("BASE={BASE}");
    let mut cmd = Command::new(KILN);
    cmd.arg("--root").arg(&k.root).args(["build", path_str(ctx), "--build-arg", &base_arg, "--progress", "plain"]).args(extra);
    cmd.env_remove("SOURCE_DATE_EPOCH").env_remove("CI");
    // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
    cmd.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    for (key, v) in env {
        cmd.env(key, v);
    }
    cmd.output().expect("run kiln")
}

#[test]
fn network_none_leaves_only_lo_a_steps_own_flag_wins_and_neither_build_flag_is_keyed() {
    if !support_build::can_build() {
        return;
    }
    let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
    assert!(host.len() > 1, "this test needs a host with an interface besides lo: {host:?}");
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM ${BASE}\n\
             RUN cat /proc/net/dev > /net-build\n\
             RUN --network=default cat /proc/net/dev > /net-default\n\
             RUN --network=host cat /proc/net/dev > /net-host\n",
        )],
    );
    k.build_md(&ctx, &["-t", "kiln.test/net:none", "--network", "none"]);
    let seen = |image: &str, file: &str| interfaces(&k.run(image, &["cat", file]));
    assert_eq!(seen("kiln.test/net:none", "/net-build"), ["lo"], "--network none: only lo");
    assert_eq!(seen("kiln.test/net:none", "/net-default"), ["lo"], "RUN --network=default takes the build's network");
    assert_eq!(seen("kiln.test/net:none", "/net-host"), host, "RUN --network=host wins over --network none");

    // The build's network is no step's input (as in BuildKit): the same steps, all hits.
    let md = k.build_md(&ctx, &["-t", "kiln.test/net:again", "--network", "host"]);
    for s in layer_steps(&md) {
        assert_eq!(s.cache, "hit-local", "--network is not keyed: {} ran again", s.instruction);
    }
    // Run again, `default` and `host` are the host's network in kiln.
    for mode in ["default", "host"] {
        let tag = format!("kiln.test/net:{mode}");
        k.build_md(&ctx, &["-t", &tag, "--no-cache", "--network", mode]);
        assert_eq!(seen(&tag, "/net-build"), host, "--network {mode}");
        assert_eq!(seen(&tag, "/net-default"), host, "--network {mode}");
    }

    let o = k.build(&ctx, &["--network", "bridge"]);
    assert_exit_1(&o, "--network bridge");
    assert!(stderr(&o).contains("--network \"bridge\": expected default, none or host"), "{}", stderr(&o));
}

#[test]
fn add_host_lines_are_in_every_runs_etc_hosts_and_in_no_layer() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM ${BASE}\n\
             RUN cat /etc/hosts > /hosts-1\n\
             RUN --network=none cat /etc/hosts > /hosts-2 && (echo x >> /etc/hosts) 2>/dev/null || echo read-only > /hosts-ro\n",
        )],
    );
    let md = k.build_md(
        &ctx,
        &["-t", "kiln.test/hosts:1", "--add-host", "db.internal:10.1.2.3", "--add-host", "host6:::1", "--add-host", "eq=[2001:db8::7]"],
    );
    let host_file = fs::read_to_string("/etc/hosts").unwrap_or_default();
    for file in ["/hosts-1", "/hosts-2"] {
        let seen = k.run("kiln.test/hosts:1", &["cat", file]);
        let want = "10.1.2.3\tdb.internal\n::1\thost6\n2001:db8::7\teq\n";
        assert!(seen.ends_with(want), "{file}: the entries come last, in order:\n{seen}");
        assert!(seen.starts_with(host_file.trim_end()), "{file}: the host's /etc/hosts comes first:\n{seen}\n---\n{host_file}");
    }
    assert_eq!(k.run("kiln.test/hosts:1", &["cat", "/hosts-ro"]), "read-only\n", "/etc/hosts is read-only in RUN");

    // No layer the build made holds /etc/hosts, and the base's own file is untouched.
    for layer in built_layers(&k, &md, 2) {
        let names = entries(&layer);
        assert!(!names.iter().any(|n| n.starts_with("etc")), "{}: {names:?}", layer.display());
    }
    let o = k.cmd(&["run", "kiln.test/hosts:1", "--", "cat", "/etc/hosts"]);
    assert_ok(&o, "kiln run cat /etc/hosts");
    assert!(!support_build::stdout(&o).contains("db.internal"), "the image's /etc/hosts gained the entry");

    // Another host list: nothing runs again (not keyed).
    let md = k.build_md(&ctx, &["--add-host", "other:10.9.9.9"]);
    for s in layer_steps(&md) {
        assert_eq!(s.cache, "hit-local", "--add-host is not keyed: {} ran again", s.instruction);
    }

    for (value, want) in [
        ("nohost", "--add-host \"nohost\": expected HOST:IP or HOST=IP"),
        ("db:999.1.1.1", "--add-host \"db:999.1.1.1\": \"999.1.1.1\" is not an IP address"),
        ("gw:host-gateway", "kiln has no host-gateway"),
    ] {
        let o = k.build(&ctx, &["--add-host", value]);
        assert_exit_1(&o, value);
        assert!(stderr(&o).contains(want), "{value}: {}", stderr(&o));
    }
}

#[test]
fn shm_size_and_ulimits_reach_run() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM ${BASE}\n\
             RUN grep ' /dev/shm ' /proc/mounts > /shm && ulimit -Sn > /nofile && ulimit -Hn > /nofile-hard \
                 && ulimit -c > /core && ulimit -Su > /nproc\n",
        )],
    );
    k.build_md(
        &ctx,
        &["-t", "kiln.test/lim:1", "--shm-size", "32m", "--ulimit", "nofile=1024:2048", "--ulimit", "core=-1", "--ulimit", "nproc=300:400"],
    );
    let read = |image: &str, f: &str| k.run(image, &["cat", f]);
    let shm = read("kiln.test/lim:1", "/shm");
    assert!(shm.contains(" tmpfs ") && shm.contains("size=32768k"), "--shm-size 32m: {shm}");
    assert_eq!(read("kiln.test/lim:1", "/nofile"), "1024\n");
    assert_eq!(read("kiln.test/lim:1", "/nofile-hard"), "2048\n");
    assert_eq!(read("kiln.test/lim:1", "/core"), "unlimited\n");
    assert_eq!(read("kiln.test/lim:1", "/nproc"), "300\n");

    // Not keyed: other values are a hit; run again, the defaults (64m, kiln's own limits).
    let md = k.build_md(&ctx, &["--shm-size", "1g", "--ulimit", "nofile=99"]);
    for s in layer_steps(&md) {
        assert_eq!(s.cache, "hit-local", "--shm-size/--ulimit are not keyed: {} ran again", s.instruction);
    }
    k.build_md(&ctx, &["-t", "kiln.test/lim:default", "--no-cache"]);
    let shm = read("kiln.test/lim:default", "/shm");
    assert!(shm.contains("size=65536k"), "the default /dev/shm is 64m: {shm}");
    let ours = inherited_nofile();
    assert_eq!(read("kiln.test/lim:default", "/nofile"), format!("{ours}\n"), "without --ulimit, RUN keeps kiln's limit");

    for (flag, value, want) in [
        ("--shm-size", "lots", "--shm-size \"lots\": expected a size such as 64m, 2g or a number of bytes"),
        ("--ulimit", "files=10", "--ulimit \"files=10\": unknown ulimit type \"files\""),
        ("--ulimit", "nofile=10:5", "--ulimit \"nofile=10:5\": the soft limit is above the hard limit"),
        ("--ulimit", "nofile", "--ulimit \"nofile\": expected TYPE=SOFT[:HARD]"),
    ] {
        let o = k.build(&ctx, &[flag, value]);
        assert_exit_1(&o, value);
        assert!(stderr(&o).contains(want), "{flag} {value}: {}", stderr(&o));
    }
}

/// The soft open-files limit a child of this test gets (what kiln, and so a RUN without
/// `--ulimit`, starts with), read the way the RUN reads its own.
fn inherited_nofile() -> String {
    let o = Command::new("sh").args(["-c", "ulimit -Sn"]).output().expect("run sh");
    assert_ok(&o, "sh -c 'ulimit -Sn'");
    support_build::stdout(&o).trim().to_string()
}

#[test]
fn secrets_from_files_and_env_reach_run_as_files_and_variables_and_nothing_keeps_them() {
    if !support_build::can_build() {
        return;
    }
    let k = Kiln::new();
    let u = support_build::unique();
    let (file_secret, env_secret, both_secret, named_secret) =
        (format!("file-secret-{u}"), format!("env-secret-{u}"), format!("both-secret-{u}"), format!("named-secret-{u}"));
    let secret_file = k.path("tok.txt");
    fs::write(&secret_file, &file_secret).unwrap();
    let sha = |s: &str| kiln_oci::Digest::sha256_of(s.as_bytes()).hex().to_string();
    let ctx = k.path("ctx");
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            "ARG BASE\nFROM ${BASE}\n\
             RUN --mount=type=secret,id=f sha256sum /run/secrets/f | cut -c1-64 > /f.sha\n\
             RUN --mount=type=secret,id=e,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /e.sha \
                 && ls /run/secrets > /e.files 2>&1; true\n\
             RUN --mount=type=secret,id=both,env=BOTH,target=/both.txt printf %s \"$BOTH\" | sha256sum | cut -c1-64 > /both.env.sha \
                 && sha256sum /both.txt | cut -c1-64 > /both.file.sha\n\
             RUN --mount=type=secret,id=KILN_TEST_NAMED,env=NAMED printf %s \"$NAMED\" | sha256sum | cut -c1-64 > /named.sha\n\
             RUN --mount=type=secret,id=f,env=FROMFILE printf %s \"$FROMFILE\" | sha256sum | cut -c1-64 > /fromfile.sha\n\
             RUN env > /env.after && test ! -e /both.txt && echo gone > /both.gone\n",
        )],
    );
    let md_path = k.path("md.json");
    let secret_f = format!("id=f,src={}", path_str(&secret_file));
    let o = build_with_env(
        &k,
        &ctx,
        &[
            "-t",
            "kiln.test/secrets:1",
            "--metadata-file",
            path_str(&md_path),
            "--secret",
            &secret_f,
            "--secret",
            "id=e,env=KILN_TEST_E",
            "--secret",
            "id=both,type=env,src=KILN_TEST_B",
            // Neither src nor env: the variable named like the id.
            "--secret",
            "id=KILN_TEST_NAMED",
        ],
        &[("KILN_TEST_E", &env_secret), ("KILN_TEST_B", &both_secret), ("KILN_TEST_NAMED", &named_secret)],
    );
    assert_ok(&o, "build with secrets");
    let read = |f: &str| k.run("kiln.test/secrets:1", &["cat", f]).trim().to_string();
    assert_eq!(read("/f.sha"), sha(&file_secret), "a file secret as a file");
    assert_eq!(read("/e.sha"), sha(&env_secret), "an env secret as a variable");
    assert_eq!(read("/e.files"), "ls: /run/secrets: No such file or directory", "env= alone mounts no file");
    assert_eq!(read("/both.env.sha"), sha(&both_secret), "env= and target=: the variable");
    assert_eq!(read("/both.file.sha"), sha(&both_secret), "env= and target=: the file");
    assert_eq!(read("/named.sha"), sha(&named_secret), "id only: the variable named like the id");
    assert_eq!(read("/fromfile.sha"), sha(&file_secret), "a file secret as a variable");
    assert_eq!(read("/both.gone"), "gone", "the target is removed after the step");
    let after = read("/env.after");
    for name in ["TOKEN=", "BOTH=", "NAMED=", "FROMFILE="] {
        assert!(!after.lines().any(|l| l.starts_with(name)), "{name} leaked into a later RUN:\n{after}");
    }

    // No value anywhere: layers, config, manifest, metadata, output, anything under the root.
    let md = read_json(&md_path);
    let values = [&file_secret, &env_secret, &both_secret, &named_secret];
    let layers = built_layers(&k, &md, 6);
    for layer in &layers {
        let bytes = fs::read(layer).unwrap();
        for v in values {
            assert!(!contains(&bytes, v.as_bytes()), "a secret is in layer {}", layer.display());
        }
    }
    for rel in support_build::list_files(&k.root) {
        let bytes = fs::read(k.root.join(&rel)).unwrap_or_default();
        for v in values {
            assert!(!contains(&bytes, v.as_bytes()), "a secret is in {rel} under the kiln root");
        }
    }
    for v in values {
        assert!(!contains(&o.stdout, v.as_bytes()) && !contains(&o.stderr, v.as_bytes()), "a secret is in the build's output");
        assert!(!contains(&fs::read(&md_path).unwrap(), v.as_bytes()), "a secret is in the metadata file");
    }
    let cfg_hex = md["containerimage.config.digest"].as_str().and_then(|d| d.strip_prefix("sha256:")).expect("config digest");
    let cfg = fs::read_to_string(k.store().join("blobs/sha256").join(cfg_hex)).unwrap();
    assert!(!cfg.contains("TOKEN=") && !cfg.contains("BOTH="), "a secret variable is in the image config: {cfg}");

    // Other values for the same ids: no step runs again (values are never keyed).
    let other = k.path("other.txt");
    fs::write(&other, "rotated").unwrap();
    let secret_other = format!("id=f,src={}", path_str(&other));
    let o = build_with_env(
        &k,
        &ctx,
        &[
            "--metadata-file",
            path_str(&md_path),
            "--secret",
            &secret_other,
            "--secret",
            "id=e,env=KILN_TEST_E",
            "--secret",
            "id=both,env=KILN_TEST_B",
            "--secret",
            "id=KILN_TEST_NAMED",
        ],
        &[("KILN_TEST_E", "rotated"), ("KILN_TEST_B", "rotated"), ("KILN_TEST_NAMED", "rotated")],
    );
    assert_ok(&o, "build with rotated secrets");
    for s in layer_steps(&read_json(&md_path)) {
        assert_eq!(s.cache, "hit-local", "a secret's value is not keyed: {} ran again", s.instruction);
    }

    // A missing source is refused before anything runs, naming the secret.
    for (args, want) in [
        (vec!["--secret", "id=e,env=KILN_TEST_UNSET"], "--secret id=e: environment variable KILN_TEST_UNSET is not set"),
        (vec!["--secret", "id=f,src=/nonexistent/tok"], "--secret id=f: cannot read /nonexistent/tok: No such file or directory"),
        (vec!["--secret", "id=KILN_TEST_UNSET"], "--secret id=KILN_TEST_UNSET: cannot read KILN_TEST_UNSET"),
        (vec!["--secret", "src=/etc/hostname"], "the secret has no id: pass id=ID"),
        (vec!["--secret", "id=f,type=ssh"], "unsupported secret type \"ssh\""),
    ] {
        let o = build_with_env(&k, &ctx, &args, &[]);
        assert_exit_1(&o, &format!("{args:?}"));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // A required secret that was not given is still refused at its step.
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN --mount=type=secret,id=tok,env=T,required true\n")]);
    let o = k.build(&ctx, &[]);
    assert_exit_1(&o, "required secret missing");
    assert!(stderr(&o).contains("secret \"tok\" is required"), "{}", stderr(&o));
}

/// A real `ssh-agent` on a socket of the test's, stopped (by its pid) when dropped.
struct Agent {
    socket: PathBuf,
    pid: String,
}

impl Agent {
    /// `ssh-agent -a SOCKET` forks and exits once the socket is listening, so it is ready when
    /// this returns.
    fn start(socket: PathBuf) -> Agent {
        let o = Command::new("ssh-agent").arg("-s").arg("-a").arg(&socket).output().expect("run ssh-agent");
        assert_ok(&o, "ssh-agent");
        let out = String::from_utf8_lossy(&o.stdout);
        let pid = out
            .split(';')
            .find_map(|f| f.trim().strip_prefix("SSH_AGENT_PID="))
            .unwrap_or_else(|| panic!("no SSH_AGENT_PID in ssh-agent's output: {out}"))
            .to_string();
        Agent { socket, pid }
    }

    fn ssh_add(&self, args: &[&str]) -> Output {
        Command::new("ssh-add").args(args).env("SSH_AUTH_SOCK", &self.socket).output().expect("run ssh-add")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

/// The host's `ssh-add` with the shared libraries it loads and its loader, copied into `dir`: busybox
/// has no ssh client, and its `nc` cannot open a unix socket, so a step speaks the agent protocol
/// through these (`dir/ld.so --library-path dir dir/ssh-add …`).
fn copy_ssh_add(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let exe = Path::new("/usr/bin/ssh-add");
    fs::copy(exe, dir.join("ssh-add")).unwrap();
    let o = Command::new("ldd").arg(exe).output().expect("run ldd");
    assert_ok(&o, "ldd ssh-add");
    let mut loader = false;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if !path.starts_with('/') {
            continue; // linux-vdso.so.1 is the kernel's, not a file
        }
        let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ld-linux") {
            fs::copy(path, dir.join("ld.so")).unwrap();
            loader = true;
        } else {
            fs::copy(path, dir.join(name)).unwrap();
        }
    }
    assert!(loader, "no dynamic loader in ldd's output for ssh-add:\n{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn ssh_agents_reach_run_as_sockets_the_agent_answers_through_and_no_layer_keeps() {
    if !support_build::can_build() {
        return;
    }
    for tool in ["ssh-agent", "ssh-add", "ssh-keygen", "ldd"] {
        assert!(
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).status().unwrap().success(),
            "this test needs {tool} (Debian packages openssh-client, libc-bin: run scripts/deps)"
        );
    }
    let k = Kiln::new();
    let ctx = k.path("ctx");
    let tools = ctx.join("tools");
    copy_ssh_add(&tools);
    let key = k.path("id_ed25519");
    let o = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-ssh-test", "-f"]).arg(&key).output().unwrap();
    assert_ok(&o, "ssh-keygen");
    fs::copy(key.with_extension("pub"), tools.join("id.pub")).unwrap();
    let agent = Agent::start(k.path("agent.sock"));
    assert_ok(&agent.ssh_add(&[path_str(&key)]), "ssh-add KEY");
    let listed = agent.ssh_add(&["-l"]);
    assert_ok(&listed, "ssh-add -l");
    let fingerprint = String::from_utf8_lossy(&listed.stdout).trim().to_string();
    assert!(fingerprint.contains("kiln-ssh-test"), "{fingerprint}");

    let ssh_add = "/tools/ld.so --library-path /tools /tools/ssh-add";
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "ARG BASE\nFROM ${{BASE}}\n\
                 RUN --mount=type=ssh test -S /run/buildkit/ssh_agent.0 && echo \"$SSH_AUTH_SOCK\" > /default.env \
                     && stat -c '%a %u %g %F' /run/buildkit/ssh_agent.0 > /default.stat\n\
                 RUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh,id=gh,target=/tmp/gh.sock,required=true \
                     --mount=type=ssh,id=gh,uid=1000,gid=1000,mode=0660 \
                     {ssh_add} -l > /gh.list && {ssh_add} -T /tools/id.pub && echo signed > /gh.signed \
                     && echo \"$SSH_AUTH_SOCK\" > /gh.env && stat -c '%a %u %g %F' /run/buildkit/ssh_agent.1 > /gh.stat\n\
                 RUN --mount=type=ssh,id=absent echo \"$SSH_AUTH_SOCK\" > /absent.env \
                     && if test -e /run/buildkit/ssh_agent.0; then echo there; else echo none; fi > /absent.there\n\
                 RUN env > /env.after && ls -a / > /root.after\n"
            ),
        )],
    );
    let ssh_gh = format!("gh={}", path_str(&agent.socket));
    let md_path = k.path("md.json");
    let o = build_with_env(
        &k,
        &ctx,
        &["-t", "kiln.test/ssh:1", "--metadata-file", path_str(&md_path), "--ssh", "default", "--ssh", &ssh_gh],
        &[("SSH_AUTH_SOCK", path_str(&agent.socket))],
    );
    assert_ok(&o, "build with --ssh");
    let read = |f: &str| k.run("kiln.test/ssh:1", &["cat", f]).trim().to_string();
    assert_eq!(read("/default.env"), "/run/buildkit/ssh_agent.0", "SSH_AUTH_SOCK names the default target");
    assert_eq!(read("/default.stat"), "600 0 0 socket", "BuildKit's default owner and mode");
    assert_eq!(read("/gh.list"), fingerprint, "the agent lists its key inside the step");
    assert_eq!(read("/gh.signed"), "signed", "the agent signs with the key inside the step");
    assert_eq!(read("/gh.env"), "/tmp/gh.sock", "SSH_AUTH_SOCK names the step's first ssh mount");
    assert_eq!(read("/gh.stat"), "660 1000 1000 socket", "uid=, gid=, mode= of the mount");
    assert_eq!(read("/absent.env"), "/run/buildkit/ssh_agent.0", "as in BuildKit, set even when the agent is left out");
    assert_eq!(read("/absent.there"), "none", "an agent the build was not given is left out (required=false)");
    let after = read("/env.after");
    assert!(!after.contains("SSH_AUTH_SOCK"), "SSH_AUTH_SOCK leaked into a later RUN:\n{after}");
    let root = read("/root.after");
    assert!(!root.lines().any(|l| l == "run"), "the mount point's parent /run was left in the root:\n{root}");
    let config = k.run("kiln.test/ssh:1", &["env"]);
    assert!(!config.contains("SSH_AUTH_SOCK"), "SSH_AUTH_SOCK is in the image's config:\n{config}");

    // No layer holds a socket, a mount point or its parent.
    let md = read_json(&md_path);
    for layer in built_layers(&k, &md, 4) {
        for e in entries(&layer) {
            assert!(!e.starts_with("run") && !e.contains("ssh_agent") && !e.contains("gh.sock"), "{e} is in a layer");
            assert!(!e.starts_with("tools"), "the bind mount point {e} is in a layer");
        }
    }

    // Another agent under the same ids: nothing is rebuilt (only the mounts are keyed).
    let other = Agent::start(k.path("other.sock"));
    let ssh_other = format!("gh={}", path_str(&other.socket));
    let ssh_default_other = format!("default={}", path_str(&other.socket));
    let md = k.build_md(&ctx, &["-t", "kiln.test/ssh:2", "--ssh", &ssh_default_other, "--ssh", &ssh_other]);
    for s in layer_steps(&md) {
        assert_eq!(s.cache, "hit-local", "the agent is not keyed: {} ran again", s.instruction);
    }

    // required=true without the agent: refused, naming the id; a key file: refused by name.
    write_context(&ctx, &[("Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN --mount=type=ssh,id=deploy,required=true true\n")]);
    let o = build_with_env(&k, &ctx, &["--ssh", &ssh_gh], &[]);
    assert_exit_1(&o, "required ssh agent missing");
    assert!(
        stderr(&o).contains("ssh agent \"deploy\" is required: pass --ssh deploy (the agent of $SSH_AUTH_SOCK) or --ssh deploy=SOCKET"),
        "{}",
        stderr(&o)
    );
    // A key file: served by kiln's own agent, with no ssh-agent anywhere (SSH_AUTH_SOCK unset).
    write_context(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "ARG BASE\nFROM ${{BASE}}\nRUN --mount=type=bind,source=tools,target=/tools --mount=type=ssh,id=deploy,required=true \
                 {ssh_add} -l > /deploy.list && {ssh_add} -T /tools/id.pub && echo signed > /deploy.signed\n"
            ),
        )],
    );
    let key_flag = format!("deploy={}", path_str(&key));
    let o = build_with_env(&k, &ctx, &["-t", "kiln.test/ssh:keys", "--ssh", &key_flag], &[("SSH_AUTH_SOCK", "")]);
    assert_ok(&o, "--ssh with a key file");
    let listed = k.run("kiln.test/ssh:keys", &["cat", "/deploy.list"]);
    assert_eq!(listed.trim(), fingerprint, "kiln's agent lists the key file's key, as ssh-agent did");
    assert_eq!(k.run("kiln.test/ssh:keys", &["cat", "/deploy.signed"]).trim(), "signed", "and signs with it");
    // Key types kiln's agent does not serve are refused by name.
    let rsa = k.path("id_rsa");
    let o = Command::new("ssh-keygen").args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"]).arg(&rsa).output().unwrap();
    assert_ok(&o, "ssh-keygen -t rsa");
    let o = build_with_env(&k, &ctx, &["--ssh", &format!("deploy={}", path_str(&rsa))], &[]);
    assert_exit_1(&o, "--ssh with an rsa key file");
    assert!(stderr(&o).contains("is an ssh-rsa key; kiln's own agent serves ssh-ed25519 keys only"), "{}", stderr(&o));
    let o = build_with_env(&k, &ctx, &["--ssh", "default"], &[("SSH_AUTH_SOCK", "")]);
    assert_exit_1(&o, "--ssh default without SSH_AUTH_SOCK");
    assert!(stderr(&o).contains("--ssh default: SSH_AUTH_SOCK is not set"), "{}", stderr(&o));
}
