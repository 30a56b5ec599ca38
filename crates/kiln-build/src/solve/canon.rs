//! The canonical text of an expanded instruction: the `instruction` input of every step's key.
//!
//! Written by hand per instruction kind with [`Canon`] (length-prefixed strings, fixed field names
//! in a fixed order), never with `Debug`, so that renaming a field of the AST cannot change a key.
//! Every struct is destructured without `..`: a field added to `kiln_dockerfile`'s instructions does
//! not compile here until someone decides how it enters the key (a field the step can observe must;
//! a bump of [`kiln_cache::KEY_VERSION`] goes with any change to what is written).

use kiln_cache::inputs::Canon;
use kiln_dockerfile::instructions::{
    ArgDecl, CommandLine, Copy, CopySource, From, Healthcheck, Instruction, Mount, MountType, Network, Run, Security, Sharing,
};
use kiln_dockerfile::Heredoc;

/// The `instruction` input of a step.
pub(crate) fn instruction(i: &Instruction) -> String {
    match i {
        Instruction::From(From { image, name, platform }) => {
            Canon::new("FROM").str("image", image).opt_str("name", name.as_deref()).opt_str("platform", platform.as_deref())
        }
        Instruction::Run(r) => run(r),
        Instruction::Copy(c) => copy(c),
        Instruction::Env(pairs) => Canon::new("ENV").list("pairs", &flat(pairs)),
        // An ARG changes nothing a step can observe by itself: its value reaches the image only
        // through later steps, which key what they see (RUN's `arg:NAME`, expanded instructions).
        // So only the names it declares are written, and a new build arg does not make every
        // later step miss.
        Instruction::Arg(decls) => {
            Canon::new("ARG").list("names", &decls.iter().map(|ArgDecl { name, default: _ }| name).collect::<Vec<_>>())
        }
        Instruction::Workdir(p) => Canon::new("WORKDIR").str("path", p),
        Instruction::User(u) => Canon::new("USER").str("user", u),
        Instruction::Label(pairs) => Canon::new("LABEL").list("pairs", &flat(pairs)),
        Instruction::Expose(ports) => Canon::new("EXPOSE").list("ports", ports),
        Instruction::Volume(v) => Canon::new("VOLUME").list("paths", v),
        Instruction::StopSignal(s) => Canon::new("STOPSIGNAL").str("signal", s),
        Instruction::Healthcheck(h) => healthcheck(h),
        Instruction::Maintainer(m) => Canon::new("MAINTAINER").str("name", m),
        Instruction::Shell(argv) => Canon::new("SHELL").list("argv", argv),
        Instruction::Entrypoint(cl) => command(Canon::new("ENTRYPOINT"), "command", Some(cl)),
        Instruction::Cmd(cl) => command(Canon::new("CMD"), "command", Some(cl)),
        Instruction::Onbuild(text, typed) => Canon::new("ONBUILD").str("trigger", text).str("typed", &instruction(typed)),
    }
    .finish()
}

/// The `mount:N` input of a RUN: one typed, expanded `--mount`.
pub(crate) fn mount(m: &Mount) -> String {
    let Mount { kind, target, source, from, readonly, id, sharing, required, mode, uid, gid, size, env } = m;
    let kind = match kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    };
    let sharing = match sharing {
        Sharing::Shared => "shared",
        Sharing::Private => "private",
        Sharing::Locked => "locked",
    };
    Canon::new("mount")
        .word("type", kind)
        .str("target", target)
        .opt_str("source", source.as_deref())
        .opt_str("from", from.as_deref())
        .flag("readonly", *readonly)
        .opt_str("id", id.as_deref())
        .word("sharing", sharing)
        .flag("required", *required)
        .num("mode", mode.map(u128::from))
        .num("uid", uid.map(u128::from))
        .num("gid", gid.map(u128::from))
        .num("size", size.map(u128::from))
        .opt_str("env", env.as_deref())
        .finish()
}

/// One line of a source listing (a COPY source or a bind mount from the context): the entry's
/// path in the source, its mode and its content (a digest, `dir`, or a link target).
pub(crate) fn listing_entry(rel: &str, mode: u32, content: &str) -> String {
    Canon::new("entry").str("path", rel).num("mode", Some(u128::from(mode))).str("content", content).finish()
}

fn run(r: &Run) -> Canon {
    let Run { command: cl, heredocs: docs, mounts, network, security } = r;
    let network = match network {
        None => "unset",
        Some(Network::Default) => "default",
        Some(Network::None) => "none",
        Some(Network::Host) => "host",
    };
    let security = match security {
        None => "unset",
        Some(Security::Sandbox) => "sandbox",
        Some(Security::Insecure) => "insecure",
    };
    // The typed mounts are inputs of their own (`mount:N`); the text as written is kept too.
    let c = command(Canon::new("RUN"), "command", Some(cl)).list("heredocs", &docs.iter().map(heredoc).collect::<Vec<_>>());
    c.list("mounts", mounts).word("network", network).word("security", security)
}

fn copy(c: &Copy) -> Canon {
    let Copy { add, sources, dest, from, chown, chmod, link, parents, exclude, checksum, keep_git_dir, unpack } = c;
    let mut out = Canon::new(if *add { "ADD" } else { "COPY" }).num("sources", Some(sources.len() as u128));
    for s in sources {
        out = match s {
            CopySource::Path(p) => out.str("path", p),
            CopySource::Heredoc(h) => out.str("heredoc", &heredoc(h)),
        };
    }
    let unpack = match unpack {
        None => "unset",
        Some(true) => "true",
        Some(false) => "false",
    };
    out.str("dest", dest)
        .opt_str("from", from.as_deref())
        .opt_str("chown", chown.as_deref())
        .opt_str("chmod", chmod.as_deref())
        .flag("link", *link)
        .flag("parents", *parents)
        .list("exclude", exclude)
        .opt_str("checksum", checksum.as_deref())
        .flag("keep-git-dir", *keep_git_dir)
        .word("unpack", unpack)
}

fn healthcheck(h: &Healthcheck) -> Canon {
    let Healthcheck { test, interval, timeout, start_period, start_interval, retries } = h;
    let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos());
    command(Canon::new("HEALTHCHECK"), "test", test.as_ref())
        .num("interval", ns(interval))
        .num("timeout", ns(timeout))
        .num("start-period", ns(start_period))
        .num("start-interval", ns(start_interval))
        .num("retries", retries.map(u128::from))
}

/// A command line as two fields: its form (`exec`, `shell` or `none`) and its words.
fn command(c: Canon, name: &str, cl: Option<&CommandLine>) -> Canon {
    match cl {
        Some(CommandLine::Exec(argv)) => c.word(name, "exec").list("argv", argv),
        Some(CommandLine::Shell(s)) => c.word(name, "shell").list("argv", std::slice::from_ref(s)),
        None => c.word(name, "none").list::<&str>("argv", &[]),
    }
}

fn heredoc(h: &Heredoc) -> String {
    let Heredoc { name, file_descriptor, expand, chomp, content } = h;
    Canon::new("heredoc")
        .str("name", name)
        .num("fd", Some(u128::from(*file_descriptor)))
        .flag("expand", *expand)
        .flag("chomp", *chomp)
        .str("content", content)
        .finish()
}

fn flat(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_base() -> Copy {
        Copy {
            add: false,
            sources: vec![CopySource::Path("src/".into())],
            dest: "/app/".into(),
            from: None,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: Vec::new(),
            checksum: None,
            keep_git_dir: false,
            unpack: None,
        }
    }

    fn mount_base() -> Mount {
        Mount {
            kind: MountType::Cache,
            target: "/root/.cache".into(),
            source: None,
            from: None,
            readonly: false,
            id: Some("go".into()),
            sharing: Sharing::Locked,
            required: false,
            mode: Some(0o755),
            uid: None,
            gid: None,
            size: None,
            env: None,
        }
    }

    /// Pins the canonical texts; a change here is a new key version (see `kiln_cache::KEY_VERSION`).
    #[test]
    fn golden_texts() {
        let run = Instruction::Run(Run {
            command: CommandLine::Shell("make -j4".into()),
            heredocs: Vec::new(),
            mounts: vec!["type=cache,target=/root/.cache".into()],
            network: Some(Network::None),
            security: None,
        });
        assert_eq!(
            instruction(&run),
            "RUN command=shell argv=[8:make -j4,] heredocs=[] mounts=[30:type=cache,target=/root/.cache,] network=none security=unset"
        );
        let mut c = copy_base();
        c.from = Some("builder".into());
        c.chmod = Some("0644".into());
        assert_eq!(
            instruction(&Instruction::Copy(c)),
            "COPY sources=1 path=4:src/, dest=5:/app/, from=7:builder, chown=- chmod=4:0644, link=false parents=false exclude=[] \
             checksum=- keep-git-dir=false unpack=unset"
        );
        let env = Instruction::Env(vec![("MODE".into(), "dev".into()), ("A".into(), "".into())]);
        assert_eq!(instruction(&env), "ENV pairs=[4:MODE,3:dev,1:A,0:,]");
        assert_eq!(
            instruction(&Instruction::Cmd(CommandLine::Exec(vec!["cat".into(), "/a".into()]))),
            "CMD command=exec argv=[3:cat,2:/a,]"
        );
        assert_eq!(
            mount(&mount_base()),
            "mount type=cache target=12:/root/.cache, source=- from=- readonly=false id=2:go, sharing=locked required=false mode=493 \
             uid=- gid=- size=- env=-"
        );
        assert_eq!(listing_entry("a b", 0o644, "sha256:x"), "entry path=3:a b, mode=420 content=8:sha256:x,");
    }

    type MountEdit = fn(&mut Mount);
    type Edit<T> = (&'static str, Box<dyn Fn(&mut T)>);

    /// Every field of COPY and of a mount reaches the text: changing any one of them changes it.
    #[test]
    fn every_field_changes_the_text() {
        let base = instruction(&Instruction::Copy(copy_base()));
        let h = Heredoc { name: "EOF".into(), file_descriptor: 0, expand: true, chomp: false, content: "x\n".into() };
        let edits: Vec<Edit<Copy>> = vec![
            ("add", Box::new(|c| c.add = true)),
            ("sources", Box::new(|c| c.sources.push(CopySource::Path("b".into())))),
            ("heredoc", Box::new(move |c| c.sources = vec![CopySource::Heredoc(h.clone())])),
            ("dest", Box::new(|c| c.dest = "/other/".into())),
            ("from", Box::new(|c| c.from = Some("".into()))),
            ("chown", Box::new(|c| c.chown = Some("1:1".into()))),
            ("chmod", Box::new(|c| c.chmod = Some("0755".into()))),
            ("link", Box::new(|c| c.link = true)),
            ("parents", Box::new(|c| c.parents = true)),
            ("exclude", Box::new(|c| c.exclude.push("*.o".into()))),
            ("checksum", Box::new(|c| c.checksum = Some("sha256:1".into()))),
            ("keep_git_dir", Box::new(|c| c.keep_git_dir = true)),
            ("unpack", Box::new(|c| c.unpack = Some(false))),
        ];
        let mut seen = std::collections::BTreeSet::from([base.clone()]);
        for (field, edit) in edits {
            let mut c = copy_base();
            edit(&mut c);
            let t = instruction(&Instruction::Copy(c));
            assert!(seen.insert(t.clone()), "changing COPY's {field} must change the text: {t}");
        }

        let mount_edits: Vec<(&str, MountEdit)> = vec![
            ("kind", |m| m.kind = MountType::Bind),
            ("target", |m| m.target = "/t".into()),
            ("source", |m| m.source = Some("s".into())),
            ("from", |m| m.from = Some("builder".into())),
            ("readonly", |m| m.readonly = true),
            ("id", |m| m.id = None),
            ("sharing", |m| m.sharing = Sharing::Private),
            ("required", |m| m.required = true),
            ("mode", |m| m.mode = None),
            ("uid", |m| m.uid = Some(0)),
            ("gid", |m| m.gid = Some(0)),
            ("size", |m| m.size = Some(1)),
            ("env", |m| m.env = Some("TOKEN".into())),
        ];
        let mut seen = std::collections::BTreeSet::from([mount(&mount_base())]);
        for (field, edit) in mount_edits {
            let mut m = mount_base();
            edit(&mut m);
            assert!(seen.insert(mount(&m)), "changing a mount's {field} must change the text");
        }
    }

    #[test]
    fn strings_cannot_imitate_fields_or_forms() {
        // One env pair whose value holds what looks like a second pair, against two pairs.
        let one = Instruction::Env(vec![("A".into(), "1,1:B,1:2".into())]);
        let two = Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "2".into())]);
        assert_ne!(instruction(&one), instruction(&two));
        // A RUN whose command holds a backslash and an `n` against one that holds a newline (version
        // 1 wrote both as `\n`).
        let run = |s: &str| {
            let r = Run { command: CommandLine::Shell(s.into()), heredocs: Vec::new(), mounts: Vec::new(), network: None, security: None };
            instruction(&Instruction::Run(r))
        };
        assert_ne!(run("printf 'a\\nb'"), run("printf 'a\nb'"));
        let platform = kiln_oci::Platform::parse("linux/amd64").unwrap();
        let key = |text: String| kiln_cache::StepInputs::new(text, &platform).key(&kiln_oci::Digest::sha256_of(b"p"));
        assert_ne!(key(run("printf 'a\\nb'")), key(run("printf 'a\nb'")));
        // Exec form with one word against shell form with the same text.
        let exec = Instruction::Cmd(CommandLine::Exec(vec!["echo hi".into()]));
        let shell = Instruction::Cmd(CommandLine::Shell("echo hi".into()));
        assert_ne!(instruction(&exec), instruction(&shell));
        // A path that holds a field separator stays one path.
        let mut tricky = copy_base();
        tricky.sources = vec![CopySource::Path("a, dest=1:b,".into())];
        let mut plain = copy_base();
        plain.sources = vec![CopySource::Path("a".into())];
        plain.dest = "b".into();
        assert_ne!(instruction(&Instruction::Copy(tricky)), instruction(&Instruction::Copy(plain)));
        // ARG's value is for later steps to key; its own text is its names.
        let one = Instruction::Arg(vec![ArgDecl { name: "X".into(), default: Some("1".into()) }]);
        let two = Instruction::Arg(vec![ArgDecl { name: "X".into(), default: Some("2".into()) }]);
        assert_eq!(instruction(&one), instruction(&two));
        assert_eq!(instruction(&one), "ARG names=[1:X,]");
        // A listing entry whose name holds a newline and a fake second entry.
        assert_ne!(
            listing_entry("a 644 sha256:1\nb", 0o644, "sha256:2"),
            format!("{}{}", listing_entry("a", 0o644, "sha256:1"), listing_entry("b", 0o644, "sha256:2"))
        );
    }
}

#[cfg(test)]
mod golden_keys {
    use kiln_cache::inputs::{list, Input, StepInputs};
    use kiln_dockerfile::instructions::{CommandLine, Copy, CopySource, Instruction, Run};
    use kiln_oci::Digest;

    /// Fixed steps give fixed keys: the canonical instruction text and the key encoding together,
    /// on the parent `FROM scratch` gives on linux/amd64. A change here invalidates every cache.
    #[test]
    fn fixed_steps_give_fixed_keys() {
        let platform = kiln_oci::Platform::parse("linux/amd64").unwrap();
        let scratch = Digest::sha256_of(b"scratch linux/amd64");

        let env = Instruction::Env(vec![("MODE".into(), "dev".into())]);
        let env_key = StepInputs::new(super::instruction(&env), &platform).key(&scratch);
        assert_eq!(env_key.to_string(), "sha256:f049e50e9036e2aa904f31d5005e48bf7641efc9e8cb0f8a264b1612225a7a22");

        let run = Instruction::Run(Run {
            command: CommandLine::Shell("make".into()),
            heredocs: Vec::new(),
            mounts: Vec::new(),
            network: None,
            security: None,
        });
        let mut inputs = StepInputs::new(super::instruction(&run), &platform);
        inputs.set(Input::Run, list(&["/bin/sh", "-c", "make"]));
        inputs.set(Input::Env("MODE".into()), "dev");
        inputs.set(Input::Arg("VERSION".into()), "1.2");
        inputs.set(Input::User, "");
        inputs.set(Input::Workdir, "/");
        assert_eq!(inputs.key(&env_key).to_string(), "sha256:70a3c872608d94c4aabe9dfd8eaf938b035732d2a94c1f191965523a6db28203");

        let copy = Instruction::Copy(Copy {
            add: false,
            sources: vec![CopySource::Path("a.txt".into())],
            dest: "/a".into(),
            from: None,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            exclude: Vec::new(),
            checksum: None,
            keep_git_dir: false,
            unpack: None,
        });
        let mut inputs = StepInputs::new(super::instruction(&copy), &platform);
        let listing = super::listing_entry("a.txt", 0o644, &Digest::sha256_of(b"a\n").to_string());
        inputs.set(Input::Source(0, "a.txt".into()), Digest::sha256_of(listing.as_bytes()).to_string());
        inputs.set(Input::User, "");
        inputs.set(Input::Workdir, "/");
        assert_eq!(inputs.key(&env_key).to_string(), "sha256:76aa8894c3be4e9cf96f15963d0ffa809afe52b5657c9da2b27006b4ed06e9b9");
    }
}
