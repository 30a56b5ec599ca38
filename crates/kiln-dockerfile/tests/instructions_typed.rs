//! Typing of each instruction: flags, argument counts, mounts, ONBUILD.

use std::time::Duration;

use kiln_dockerfile::instructions::{
    parse_build, Build, CommandLine, CopySource, ErrorKind, Instruction, InstructionError, Mount, MountType, Network, Security, Sharing,
};
use kiln_dockerfile::parse_str;

fn build(src: &str) -> Result<Build, InstructionError> {
    let df = parse_str(src).expect("parses");
    parse_build(&df, "Dockerfile")
}

fn only(src: &str) -> Instruction {
    let b = build(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    b.stages[0].commands[0].instruction.clone()
}

fn fails(src: &str) -> InstructionError {
    match build(src) {
        Ok(b) => panic!("{src:?} should fail, gave {b:?}"),
        Err(e) => e,
    }
}

#[test]
fn from_platform_and_stage_name() {
    let b = build("ARG V=1\nFROM --platform=$BUILDPLATFORM golang:${V} AS Builder\nFROM scratch\n").unwrap();
    assert_eq!(b.global_args.len(), 1);
    assert_eq!(b.global_args[0].1.name, "V");
    assert_eq!(b.stages.len(), 2);
    let f = &b.stages[0].from;
    assert_eq!(f.image, "golang:${V}");
    assert_eq!(f.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(f.name.as_deref(), Some("builder"));
    assert_eq!(b.stages[0].location.start_line, 2);
    assert_eq!(b.stages[1].index, 1);
    assert_eq!(b.stages[1].name(), None);
}

#[test]
fn from_errors() {
    assert_eq!(*fails("FROM a AS 1x\n").kind, ErrorKind::BadStageName("1x".into()));
    assert!(matches!(*fails("FROM a b c\n").kind, ErrorKind::Arguments { .. }));
    assert!(matches!(*fails("FROM a AS\n").kind, ErrorKind::Arguments { .. }));
    assert!(matches!(*fails("FROM --pull a\n").kind, ErrorKind::UnknownFlag { .. }));
    let e = fails("FROM a AS x\nRUN true\nFROM b AS X\n");
    assert_eq!(*e.kind, ErrorKind::DuplicateStage("x".into()));
    assert_eq!(e.to_string(), "Dockerfile:3: duplicate stage name \"x\": each `FROM … AS name` needs its own name");
    let e = fails("# c\nRUN x\nFROM a\n");
    assert_eq!(*e.kind, ErrorKind::NoStage("RUN".into()));
    assert_eq!(e.location.start_line, 2);
    assert_eq!(*fails("ARG A\n").kind, ErrorKind::NoFrom);
    assert_eq!(*fails("FROM a\nFOO bar\n").kind, ErrorKind::UnknownInstruction("FOO".into()));
}

#[test]
fn run_flags_and_mounts() {
    let Instruction::Run(r) = only(
        "FROM a\nRUN --network=none --security=insecure --mount=type=cache,target=/root/.cache,sharing=locked,id=go \\\n    --mount=type=secret,id=tok --mount=target=/src,from=build,rw go build\n",
    ) else {
        panic!()
    };
    assert_eq!(r.network, Some(Network::None));
    assert_eq!(r.security, Some(Security::Insecure));
    assert_eq!(r.command, CommandLine::Shell("go build".into()));
    assert_eq!(r.mounts.len(), 3);
    let cache = Mount::parse(&r.mounts[0], 0).unwrap();
    assert_eq!((cache.kind, cache.sharing, cache.id.as_deref()), (MountType::Cache, Sharing::Locked, Some("go")));
    assert!(!cache.readonly);
    let secret = Mount::parse(&r.mounts[1], 0).unwrap();
    assert_eq!((secret.kind, secret.target.as_str(), secret.readonly), (MountType::Secret, "/run/secrets/tok", true));
    let bind = Mount::parse(&r.mounts[2], 0).unwrap();
    assert_eq!((bind.kind, bind.from.as_deref(), bind.readonly), (MountType::Bind, Some("build"), false));

    let Instruction::Run(r) = only("FROM a\nRUN [\"echo\", \"hi\"]\n") else { panic!() };
    assert_eq!(r.command, CommandLine::Exec(vec!["echo".into(), "hi".into()]));
    let Instruction::Run(r) = only("FROM a\nRUN <<EOF\necho hi\nEOF\n") else { panic!() };
    assert_eq!(r.heredocs.len(), 1);
    assert_eq!(r.heredocs[0].content, "echo hi\n");
}

#[test]
fn mount_defaults_and_errors() {
    let m = Mount::parse("type=tmpfs,target=/tmp,size=64m", 0).unwrap();
    assert_eq!((m.kind, m.size), (MountType::Tmpfs, Some(64 << 20)));
    let m = Mount::parse("type=ssh", 2).unwrap();
    assert_eq!(m.target, "/run/buildkit/ssh_agent.2");
    let m = Mount::parse("type=cache,target=/c,mode=0700,uid=1000,gid=1000", 0).unwrap();
    assert_eq!((m.mode, m.uid, m.gid, m.id.as_deref()), (Some(0o700), Some(1000), Some(1000), Some("/c")));
    let m = Mount::parse("type=secret,target=/etc/key,required", 0).unwrap();
    assert_eq!((m.id.as_deref(), m.required), (Some("key"), true));
    let m = Mount::parse("type=secret,id=tok,env=TOKEN", 0).unwrap();
    assert_eq!((m.env.as_deref(), m.target.as_str()), (Some("TOKEN"), ""));
    let m = Mount::parse("type=secret,id=tok,env=TOKEN,target=/tok", 0).unwrap();
    assert_eq!((m.id.as_deref(), m.env.as_deref(), m.target.as_str()), (Some("tok"), Some("TOKEN"), "/tok"));
    let m = Mount::parse("type=cache", 0).unwrap();
    assert_eq!((m.target.as_str(), m.readonly), ("", false), "an empty target means the working directory");
    let m = Mount::parse("type=secret,source=npmrc,target=/root/.npmrc", 0).unwrap();
    assert_eq!(m.id.as_deref(), Some("npmrc"));
    for bad in [
        "type=bogus,target=/x",
        "required,type=secret,id=x",
        "bogus",
        "type=bind,target=/x,mode=0600",
        "type=cache,target=/x,uid=x",
        "type=bind,target=/x,size=1m",
        "type=secret,id=a,from=b",
        "type=secret,id=a,source=b",
        "target=/x,colour=red",
        "type=cache,target=/x,sharing=sometimes",
        "type=cache,target=/x,mode=9",
        "type=tmpfs,target=/x,size=lots",
        "type=secret",
        "type=secret,env=TOKEN",
        "type=bind,target=/x,ro=maybe",
        "type=bind,target=/x,sharing=locked",
        "\"target=/x",
    ] {
        assert!(Mount::parse(bad, 0).is_err(), "{bad:?} should be refused");
    }
    let e = fails("FROM a\n\nRUN --mount=type=cache,sharing=sometimes echo\n");
    assert!(matches!(*e.kind, ErrorKind::Mount(_)));
    assert!(e.to_string().starts_with("Dockerfile:3: invalid --mount=\"type=cache,sharing=sometimes\": unsupported sharing value"), "{e}");
    let e = fails("FROM a\nRUN --mount=from=$STAGE,target=/x true\n");
    assert!(e.to_string().contains("define alias stage instead"), "{e}");
    assert!(matches!(*fails("FROM a\nRUN --network=bridge x\n").kind, ErrorKind::BadFlagValue { .. }));
    assert!(matches!(*fails("FROM a\nRUN --security=x y\n").kind, ErrorKind::BadFlagValue { .. }));
    assert!(matches!(*fails("FROM a\nRUN --net=none x\n").kind, ErrorKind::UnknownFlag { .. }));
}

#[test]
fn copy_and_add_flags() {
    let Instruction::Copy(c) =
        only("FROM a\nCOPY --from=build --chown=1:2 --chmod=0755 --link --parents --exclude=*.md --exclude=x a b /dst/\n")
    else {
        panic!()
    };
    assert!(!c.add);
    assert_eq!(c.sources, vec![CopySource::Path("a".into()), CopySource::Path("b".into())]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!((c.chown.as_deref(), c.chmod.as_deref()), (Some("1:2"), Some("0755")));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, ["*.md", "x"]);

    let Instruction::Copy(c) = only("FROM a\nADD --checksum=sha256:abc --keep-git-dir=true --link=false https://x/y.tgz /y\n") else {
        panic!()
    };
    assert!(c.add && c.keep_git_dir && !c.link);
    assert_eq!(c.checksum.as_deref(), Some("sha256:abc"));

    let Instruction::Copy(c) = only("FROM a\nCOPY <<one <<-\"two\" /dst/\nfirst\none\n\tsecond\n\ttwo\n") else { panic!() };
    assert_eq!(c.sources.len(), 2);
    assert!(matches!(&c.sources[0], CopySource::Heredoc(h) if h.name == "one" && h.content == "first\n"));
    assert!(matches!(&c.sources[1], CopySource::Heredoc(h) if h.name == "two" && !h.expand));

    assert!(matches!(*fails("FROM a\nADD --from=x a b\n").kind, ErrorKind::UnknownFlag { .. }));
    assert!(matches!(*fails("FROM a\nCOPY --checksum=x a b\n").kind, ErrorKind::UnknownFlag { .. }));
    assert!(matches!(*fails("FROM a\nCOPY onlyone\n").kind, ErrorKind::Arguments { .. }));
    assert_eq!(*fails("FROM a\nCOPY --from a b\n").kind, ErrorKind::MissingFlagValue("from".into()));
    assert_eq!(*fails("FROM a\nCOPY --from=x --from=y a b\n").kind, ErrorKind::DuplicateFlag("from".into()));
    assert!(matches!(*fails("FROM a\nCOPY --link=yes a b\n").kind, ErrorKind::BadFlagValue { .. }));
}

#[test]
fn simple_instructions() {
    assert_eq!(
        only("FROM a\nENV A=1 B=\"two words\"\n"),
        Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "\"two words\"".into())])
    );
    assert_eq!(only("FROM a\nENV A 1 2\n"), Instruction::Env(vec![("A".into(), "1 2".into())]));
    assert_eq!(only("FROM a\nLABEL a=b\n"), Instruction::Label(vec![("a".into(), "b".into())]));
    let Instruction::Arg(args) = only("FROM a\nARG X Y=2\n") else { panic!() };
    assert_eq!((args[0].name.as_str(), args[0].default.as_deref()), ("X", None));
    assert_eq!((args[1].name.as_str(), args[1].default.as_deref()), ("Y", Some("2")));
    assert_eq!(only("FROM a\nWORKDIR /app\n"), Instruction::Workdir("/app".into()));
    assert_eq!(only("FROM a\nUSER nobody:nogroup\n"), Instruction::User("nobody:nogroup".into()));
    assert_eq!(only("FROM a\nEXPOSE 80/tcp 443\n"), Instruction::Expose(vec!["80/tcp".into(), "443".into()]));
    assert_eq!(only("FROM a\nVOLUME [\"/a\", \"/b\"]\n"), Instruction::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(only("FROM a\nVOLUME /a /b\n"), Instruction::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(only("FROM a\nSTOPSIGNAL SIGKILL\n"), Instruction::StopSignal("SIGKILL".into()));
    assert_eq!(only("FROM a\nMAINTAINER Jane <j@x>\n"), Instruction::Maintainer("Jane <j@x>".into()));
    assert_eq!(only("FROM a\nSHELL [\"/bin/sh\", \"-c\"]\n"), Instruction::Shell(vec!["/bin/sh".into(), "-c".into()]));
    assert!(matches!(*fails("FROM a\nSHELL /bin/sh -c\n").kind, ErrorKind::Arguments { .. }));
    assert_eq!(only("FROM a\nCMD [\"a\"]\n"), Instruction::Cmd(CommandLine::Exec(vec!["a".into()])));
    assert_eq!(only("FROM a\nENTRYPOINT exec x\n"), Instruction::Entrypoint(CommandLine::Shell("exec x".into())));
    assert!(matches!(*fails("FROM a\nWORKDIR\n").kind, ErrorKind::Arguments { .. }));
    assert!(matches!(*fails("FROM a\nENV --x=1 A=1\n").kind, ErrorKind::UnknownFlag { .. }));
    assert!(matches!(*fails("FROM a\nEXPOSE\n").kind, ErrorKind::Arguments { .. }));
}

#[test]
fn healthcheck() {
    let Instruction::Healthcheck(h) =
        only("FROM a\nHEALTHCHECK --interval=30s --timeout=1m30s --start-period=0 --retries=3 CMD curl -f http://x/\n")
    else {
        panic!()
    };
    assert_eq!(h.test, Some(CommandLine::Shell("curl -f http://x/".into())));
    assert_eq!(h.interval, Some(Duration::from_secs(30)));
    assert_eq!(h.timeout, Some(Duration::from_secs(90)));
    assert_eq!(h.start_period, Some(Duration::ZERO));
    assert_eq!(h.retries, Some(3));
    let Instruction::Healthcheck(h) = only("FROM a\nHEALTHCHECK CMD [\"true\"]\n") else { panic!() };
    assert_eq!(h.test, Some(CommandLine::Exec(vec!["true".into()])));
    let Instruction::Healthcheck(h) = only("FROM a\nHEALTHCHECK NONE\n") else { panic!() };
    assert_eq!(h.test, None);
    assert!(matches!(*fails("FROM a\nHEALTHCHECK --interval=1us CMD x\n").kind, ErrorKind::BadFlagValue { .. }));
    assert!(matches!(*fails("FROM a\nHEALTHCHECK --interval=soon CMD x\n").kind, ErrorKind::BadFlagValue { .. }));
    assert!(matches!(*fails("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").kind, ErrorKind::BadFlagValue { .. }));
    assert!(matches!(*fails("FROM a\nHEALTHCHECK NONE x\n").kind, ErrorKind::Arguments { .. }));
    assert!(matches!(*fails("FROM a\nHEALTHCHECK --interval=1s NONE\n").kind, ErrorKind::Arguments { .. }));
    assert!(matches!(*fails("FROM a\nHEALTHCHECK SOMETIMES x\n").kind, ErrorKind::Arguments { .. }));
}

#[test]
fn onbuild() {
    let Instruction::Onbuild(text, inner) = only("FROM a\nONBUILD RUN echo hi\n") else { panic!() };
    assert_eq!(text, "RUN echo hi");
    assert!(matches!(*inner, Instruction::Run(_)));
    let Instruction::Onbuild(_, inner) = only("FROM a\nONBUILD COPY --chown=1 a /b\n") else { panic!() };
    assert!(matches!(*inner, Instruction::Copy(ref c) if c.chown.as_deref() == Some("1")));
    assert!(matches!(*fails("FROM a\nONBUILD ONBUILD RUN x\n").kind, ErrorKind::BadOnbuild(_)));
    assert!(matches!(*fails("FROM a\nONBUILD FROM b\n").kind, ErrorKind::BadOnbuild(_)));
    assert!(matches!(*fails("FROM a\nONBUILD MAINTAINER b\n").kind, ErrorKind::BadOnbuild(_)));
}
