//! Every real-world Dockerfile that BuildKit accepts must type and resolve,
//! with every named stage as the target: these files build with BuildKit.

use kiln_dockerfile::instructions::{parse_build, resolve, ErrorKind, PlatformArgs, ResolveOptions};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/conformance/real-world/files");

#[test]
fn real_world_files_resolve_for_every_target() {
    let entries = std::fs::read_dir(DIR).unwrap_or_else(|e| panic!("cannot read {DIR}: {e}"));
    let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    let platform = PlatformArgs {
        target_platform: "linux/amd64".into(),
        target_os: "linux".into(),
        target_arch: "amd64".into(),
        build_platform: "linux/amd64".into(),
        build_os: "linux".into(),
        build_arch: "amd64".into(),
        ..PlatformArgs::default()
    };
    let (mut files, mut targets, mut failures) = (0, 0, Vec::new());
    for path in names.iter().filter(|p| p.extension().is_some_and(|e| e == "Dockerfile")) {
        if path.with_extension("reject").exists() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let df = kiln_dockerfile::parse_file(&name, &bytes).unwrap_or_else(|e| panic!("{e}"));
        files += 1;
        // A jq template (SOURCES.md: "not a buildable Dockerfile"): it parses,
        // but its `{{` lines are unknown instructions to a build.
        if name == "golang-linux-template.Dockerfile" {
            let e = parse_build(&df, &name).expect_err("a template is not buildable");
            assert_eq!(*e.kind, ErrorKind::UnknownInstruction("{{".into()));
            assert_eq!(e.location.start_line, 1);
            continue;
        }
        let build = match parse_build(&df, &name) {
            Ok(b) => b,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let mut wanted: Vec<Option<String>> = vec![None];
        wanted.extend(build.stages.iter().filter_map(|s| s.name().map(|n| Some(n.to_string()))));
        for target in wanted {
            targets += 1;
            let opts = ResolveOptions { target: target.clone(), platform: platform.clone(), ..ResolveOptions::default() };
            match resolve(&build, &opts) {
                Ok(r) => assert_eq!(r.stages.last().map(|s| s.index), Some(r.target)),
                Err(e) => failures.push(format!("{e} (target {target:?})")),
            }
        }
    }
    eprintln!("{files} files, {targets} targets resolved");
    assert!(files >= 35, "only {files} files");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
