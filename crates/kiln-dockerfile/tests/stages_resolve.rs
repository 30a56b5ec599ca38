//! Stage resolution: ARG scoping, build args, platform ARGs, ENV order,
//! stage references, targets and the stages a target needs.

use std::collections::BTreeMap;

use kiln_dockerfile::instructions::resolve::BaseConfig;
use kiln_dockerfile::instructions::{
    parse_build, resolve, CommandLine, CopySource, ErrorKind, Instruction, InstructionError, PlatformArgs, ResolveOptions, Resolved, Source,
};
use kiln_dockerfile::parse_str;

fn platform() -> PlatformArgs {
    PlatformArgs {
        target_platform: "linux/arm64/v8".into(),
        target_os: "linux".into(),
        target_arch: "arm64".into(),
        target_variant: "v8".into(),
        build_platform: "linux/amd64".into(),
        build_os: "linux".into(),
        build_arch: "amd64".into(),
        build_variant: String::new(),
    }
}

fn run(src: &str, build_args: &[(&str, &str)], target: Option<&str>) -> Result<Resolved, InstructionError> {
    let df = parse_str(src).expect("parses");
    let build = parse_build(&df, "Dockerfile")?;
    let opts = ResolveOptions {
        build_args: build_args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        platform: platform(),
        base_config: None,
    };
    resolve(&build, &opts)
}

fn ok(src: &str, build_args: &[(&str, &str)], target: Option<&str>) -> Resolved {
    run(src, build_args, target).unwrap_or_else(|e| panic!("{e}"))
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn workdir_values(r: &Resolved) -> Vec<String> {
    r.stages
        .last()
        .unwrap()
        .steps
        .iter()
        .filter_map(|s| match &s.instruction {
            Instruction::Workdir(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn global_args_are_usable_in_from_only() {
    let src = "ARG BASE=alpine\nARG TAG=3.$MINOR\nFROM ${BASE}:${TAG}\nWORKDIR /$BASE\n";
    let r = ok(src, &[], None);
    let s = &r.stages[0];
    assert_eq!(s.base, Source::Image("alpine:3.".into()));
    // Not redeclared in the stage: invisible there.
    assert_eq!(workdir_values(&r), ["/"]);
    let r = ok(src, &[("TAG", "3.20")], None);
    assert_eq!(r.stages[0].base, Source::Image("alpine:3.20".into()));
    assert!(r.unused_build_args.is_empty());
}

#[test]
fn redeclared_arg_takes_global_value_and_build_args_override() {
    let src = "ARG V=1\nFROM a\nARG V\nWORKDIR /$V\nARG W=w$V\nWORKDIR /$W\nARG NOVALUE\nWORKDIR /x$NOVALUE\n";
    let r = ok(src, &[], None);
    assert_eq!(workdir_values(&r), ["/1", "/w1", "/x"]);
    let r = ok(src, &[("V", "9"), ("W", "over"), ("UNUSED", "z")], None);
    assert_eq!(workdir_values(&r), ["/9", "/over", "/x"]);
    assert_eq!(r.unused_build_args, ["UNUSED"]);
    let last = r.stages[0].steps.last().unwrap();
    assert_eq!(pairs(&last.args), [("V", "9"), ("W", "over")]);
}

#[test]
fn platform_args() {
    let src = "FROM --platform=$BUILDPLATFORM golang AS build\nARG TARGETOS TARGETARCH\nRUN echo\nWORKDIR /out/$TARGETOS-$TARGETARCH$BUILDARCH\nFROM --platform=${TARGETPLATFORM} alpine-$TARGETARCH\nCOPY --from=build /out /\n";
    let r = ok(src, &[], None);
    let build = r.stage(0).unwrap();
    assert_eq!(build.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(pairs(&build.steps[1].args), [("TARGETOS", "linux"), ("TARGETARCH", "arm64")]);
    assert_eq!(build.workdir, "/out/linux-arm64");
    let fin = r.stage(1).unwrap();
    assert_eq!(fin.platform.as_deref(), Some("linux/arm64/v8"));
    assert_eq!(fin.base, Source::Image("alpine-arm64".into()));
}

#[test]
fn env_and_arg_apply_in_order() {
    let src = "FROM a\nARG A=arg\nENV A=env B=$A\nENV C=${B}-x\nWORKDIR $C\nLABEL \"k$C\"=\"v $A\"\nARG A=again\nWORKDIR $A\nUSER ${UNSET:-nobody}\n";
    let r = ok(src, &[], None);
    let s = &r.stages[0];
    // ENV values are expanded with the scope before the instruction.
    assert_eq!(pairs(&s.env), [("A", "env"), ("B", "arg"), ("C", "arg-x")]);
    assert_eq!(s.steps[3].instruction, Instruction::Workdir("arg-x".into()));
    assert_eq!(s.steps[3].used.iter().collect::<Vec<_>>(), ["C"]);
    assert_eq!(s.steps[4].instruction, Instruction::Label(vec![("karg-x".into(), "v env".into())]));
    // A later ARG wins in the scope (as BuildKit's shared LLB env does) but
    // not in the image config's ENV.
    assert_eq!(s.steps[6].instruction, Instruction::Workdir("again".into()));
    assert_eq!(pairs(&s.vars), [("A", "again"), ("B", "arg"), ("C", "arg-x")]);
    assert_eq!(pairs(&s.args), [("A", "again")]);
    assert_eq!(s.steps[7].instruction, Instruction::User("nobody".into()));
    assert_eq!(s.workdir, "/arg-x/again");
}

#[test]
fn arg_defaults_follow_buildkit() {
    // Each name in one ARG sees the ones before it.
    let r = ok("FROM a\nARG A=1 B=${A}2\nWORKDIR /$B\n", &[], None);
    assert_eq!(r.stages[0].workdir, "/12");
    // A build arg wins, and the default it replaces is never expanded.
    let r = ok("FROM a\nARG X=${Y:?no-Y}\nWORKDIR /$X\n", &[("X", "given")], None);
    assert_eq!(r.stages[0].workdir, "/given");
    let e = run("FROM a\nARG X=${Y:?no-Y}\n", &[], None).unwrap_err();
    assert!(e.to_string().contains("Y: no-Y"), "{e}");
    let e = run("ARG G=${H:?h}\nFROM a\n", &[], None).unwrap_err();
    assert_eq!(e.location.start_line, 1);
    assert!(ok("ARG G=${H:?h}\nFROM a\n", &[("G", "x")], None).global_args.iter().any(|(k, v)| k == "G" && v == "x"));
    // A default can use a global ARG without redeclaring it.
    let r = ok("ARG G=g\nFROM a\nARG L=$G-l\nWORKDIR /$L/$G\n", &[], None);
    assert_eq!(r.stages[0].workdir, "/g-l");
    // The resolved ARG step holds the value each name took.
    let Instruction::Arg(decls) = &r.stages[0].steps[0].instruction else { panic!() };
    assert_eq!(decls[0].default.as_deref(), Some("g-l"));
}

#[test]
fn child_stage_inherits_env_args_and_workdir() {
    let src = "FROM a AS base\nARG X=1\nENV E=e\nWORKDIR /w\nFROM base\nRUN true\nWORKDIR sub/$X$E\n";
    let r = ok(src, &[], None);
    let child = r.stage(1).unwrap();
    assert_eq!(child.base, Source::Stage(0));
    assert_eq!(pairs(&child.steps[0].env), [("E", "e")]);
    assert_eq!(pairs(&child.steps[0].args), [("X", "1")]);
    assert_eq!(child.workdir, "/w/sub/1e");
}

#[test]
fn base_image_config_takes_part_in_expansion() {
    let df = parse_str("FROM golang\nWORKDIR $GOPATH/src\nENV PATH=/x:$PATH\n").unwrap();
    let build = parse_build(&df, "Dockerfile").unwrap();
    let cfg = |image: &str, _: Option<&str>| BaseConfig {
        env: if image == "golang" { vec![("GOPATH".into(), "/go".into()), ("PATH".into(), "/bin".into())] } else { vec![] },
        workdir: "/go".into(),
    };
    let opts = ResolveOptions { base_config: Some(&cfg), ..ResolveOptions::default() };
    let r = resolve(&build, &opts).unwrap();
    let s = &r.stages[0];
    assert_eq!(s.workdir, "/go/src");
    assert_eq!(pairs(&s.env), [("GOPATH", "/go"), ("PATH", "/x:/bin")]);
}

#[test]
fn stage_names_indices_targets_and_needed_stages() {
    let src = "\
FROM alpine AS Deps
RUN apk add gcc
FROM deps AS build
COPY --from=tools /t /t
RUN --mount=type=bind,from=assets,target=/a make
FROM busybox AS tools
FROM busybox AS assets
FROM broken AS unused
WORKDIR ${X:?must be set}
FROM scratch AS final
COPY --from=BUILD /out /
COPY --from=0 /etc/os-release /
COPY --from=nginx:1.27 /etc/nginx /etc/nginx
";
    let r = ok(src, &[], None);
    assert_eq!(r.target, 5);
    let order: Vec<usize> = r.stages.iter().map(|s| s.index).collect();
    // Dependencies first; stage 4 (unused) is not needed, so its error is never raised.
    assert_eq!(order.last(), Some(&5));
    assert!(!order.contains(&4));
    let pos = |i: usize| order.iter().position(|x| *x == i).unwrap();
    assert!(pos(0) < pos(1) && pos(2) < pos(1) && pos(3) < pos(1) && pos(1) < pos(5));
    let fin = r.stage(5).unwrap();
    assert_eq!(fin.base, Source::Scratch);
    assert_eq!(fin.steps[0].copy_from, Some(Source::Stage(1)));
    assert_eq!(fin.steps[1].copy_from, Some(Source::Stage(0)));
    assert_eq!(fin.steps[2].copy_from, Some(Source::Image("nginx:1.27".into())));
    let build = r.stage(1).unwrap();
    assert_eq!(build.base, Source::Stage(0));
    assert_eq!(build.steps[1].mount_sources, vec![Some(Source::Stage(3))]);
    assert_eq!(build.deps.iter().copied().collect::<Vec<_>>(), [0, 2, 3]);

    // --target picks a stage by case-insensitive name and builds only what it needs.
    let r = ok(src, &[], Some("BUILD"));
    let mut idx: Vec<usize> = r.stages.iter().map(|s| s.index).collect();
    idx.sort();
    assert_eq!((r.target, idx), (1, vec![0, 1, 2, 3]));
    let r = ok(src, &[], Some("tools"));
    assert_eq!(r.stages.len(), 1);
    // Build args only count as used when a needed stage declares them.
    let r = ok("FROM a AS one\nARG ONE\nFROM b AS two\nARG TWO\n", &[("ONE", "1"), ("TWO", "2")], Some("two"));
    assert_eq!(r.unused_build_args, ["ONE"]);

    // The unused stage fails when it is the target.
    let e = run(src, &[], Some("unused")).unwrap_err();
    assert_eq!(e.location.start_line, 9);
    assert!(e.to_string().starts_with("Dockerfile:9: failed to process \"${X:?must be set}\": X: must be set"), "{e}");

    let e = run(src, &[], Some("nope")).unwrap_err();
    assert_eq!(*e.kind, ErrorKind::UnknownTarget("nope".into()));
    assert!(e.to_string().starts_with("Dockerfile: target stage \"nope\" could not be found"));
}

#[test]
fn from_only_names_earlier_stages() {
    // A later stage with the name does not count: `FROM x` is an image.
    let r = ok("FROM later\nFROM alpine AS later\nCOPY --from=0 / /\n", &[], None);
    assert_eq!(r.stage(0).unwrap().base, Source::Image("later".into()));
    // A stage cannot be its own base.
    let r = ok("FROM self AS self\n", &[], None);
    assert_eq!(r.stages[0].base, Source::Image("self".into()));
}

#[test]
fn copy_from_errors_and_cycles() {
    let e = run("FROM a\nFROM b\nCOPY --from=7 / /\n", &[], None).unwrap_err();
    assert_eq!(*e.kind, ErrorKind::BadStageIndex("7".into()));
    assert_eq!(e.location.start_line, 3);
    let e = run("FROM a AS one\nCOPY --from=two / /\nFROM b AS two\nCOPY --from=one / /\n", &[], None).unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::Cycle(_)), "{e}");
    let e = run("FROM a AS me\nCOPY --from=me / /\n", &[], None).unwrap_err();
    assert_eq!(*e.kind, ErrorKind::Cycle("me".into()));
    // A --from value can use variables in scope.
    let r = ok("FROM a AS src\nFROM b\nARG FROM=src\nCOPY --from=$FROM / /\n", &[], None);
    assert_eq!(r.stage(1).unwrap().steps[1].copy_from, Some(Source::Stage(0)));
}

#[test]
fn expansion_in_copy_run_mounts_and_heredocs() {
    let src = "FROM a\nARG V=1.0 U=app\nCOPY --chown=$U:$U --chmod=0${MODE:-644} src-$V/* /opt/$U/\nRUN --mount=type=cache,target=/cache/$U,id=c-$V echo $V\nCOPY <<EOF /motd\nversion $V \"q\"\nEOF\nCOPY <<'RAW' /raw\nversion $V\nRAW\n";
    let r = ok(src, &[], None);
    let s = &r.stages[0];
    let Instruction::Copy(c) = &s.steps[1].instruction else { panic!() };
    assert_eq!((c.chown.as_deref(), c.chmod.as_deref()), (Some("app:app"), Some("0644")));
    assert_eq!(c.sources, vec![CopySource::Path("src-1.0/*".into())]);
    assert_eq!(c.dest, "/opt/app/");
    let m = &s.steps[2].mounts[0];
    assert_eq!((m.target.as_str(), m.id.as_deref()), ("/cache/app", Some("c-1.0")));
    // The RUN command line itself is left to the shell.
    let Instruction::Run(cmd) = &s.steps[2].instruction else { panic!() };
    assert_eq!(cmd.command, CommandLine::Shell("echo $V".into()));
    let Instruction::Copy(c) = &s.steps[3].instruction else { panic!() };
    assert!(matches!(&c.sources[0], CopySource::Heredoc(h) if h.content == "version 1.0 \"q\"\n"));
    let Instruction::Copy(c) = &s.steps[4].instruction else { panic!() };
    assert!(matches!(&c.sources[0], CopySource::Heredoc(h) if h.content == "version $V\n"));
    let r = ok("FROM a\nWORKDIR /src\nRUN --mount=type=cache,target=.cache --mount=from=a,target=/abs true\n", &[], None);
    let targets: Vec<&str> = r.stages[0].steps[1].mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/src/.cache", "/abs"]);
    assert_eq!(r.stages[0].steps[1].mount_sources, vec![None, Some(Source::Image("a".into()))]);
    // A secret with only env= keeps its empty target (no file); with a relative one, it is placed.
    let r = ok("FROM a\nWORKDIR /src\nRUN --mount=type=secret,id=t,env=T --mount=type=secret,id=u,env=U,target=u true\n", &[], None);
    let targets: Vec<&str> = r.stages[0].steps[1].mounts.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["", "/src/u"]);
    let e = run("FROM a\nRUN --mount=type=$T,target=/x true\n", &[], None).unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::Mount(_)), "{e}");
    assert_eq!(e.location.start_line, 2);
    let e = run("FROM a\nVOLUME $NOTHING\n", &[], None).unwrap_err();
    assert!(matches!(*e.kind, ErrorKind::Arguments { .. }));
}
