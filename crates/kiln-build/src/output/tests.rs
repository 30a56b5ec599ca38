use super::*;

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn parse(s: &str) -> Output {
    Output::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    Output::parse(s).unwrap_err().to_string()
}

fn image(o: Output) -> ImageOutput {
    match o {
        Output::Image(i) => i,
        other => panic!("not an image output: {other:?}"),
    }
}

#[test]
fn the_seed_workflows_line_pushes_by_digest() {
    let i = image(parse("type=image,name=localhost:5000/app,push-by-digest=true,name-canonical=true,push=true"));
    assert_eq!(i.names, [r("localhost:5000/app")]);
    assert!(i.push && i.push_by_digest && i.name_canonical && i.store);
    assert_eq!(i.form, Form::default());
}

#[test]
fn image_and_registry_attributes_read_as_buildkit_documents_them() {
    let i = image(parse(
        r#"type=image,"name=a.io/x:1,b.io/y:2",push=1,store=false,compression=zstd,compression-level=3,force-compression=true"#,
    ));
    assert_eq!(i.names, [r("a.io/x:1"), r("b.io/y:2")]);
    assert!(i.push && !i.store);
    assert_eq!(i.form.codec, Codec::Zstd { level: 3 });
    assert!(i.form.force);
    let reg = image(parse("type=registry,registry.insecure=true"));
    assert!(reg.push && !reg.store && reg.insecure, "type=registry pushes and keeps nothing locally");
    assert!(image(parse("type=registry,store=true")).store);
    assert_eq!(image(parse("type=image,compression=uncompressed")).form.codec, Codec::Uncompressed);
    assert_eq!(image(parse("type=image,oci-mediatypes=true,unpack=false")).form, Form::default());
    let a = image(parse("type=image,annotation.org.opencontainers.image.title=T,annotation-index.k=v"));
    assert_eq!(a.form.annotations.len(), 2);
    assert!(image(parse("TYPE=image,Push=true")).push, "keys are case-insensitive, as buildx lower-cases them");
}

#[test]
fn what_kiln_does_not_act_on_is_refused_by_name() {
    let e = err("type=image,dangling-name-prefix=x");
    assert!(e.starts_with(r#"--output "type=image,dangling-name-prefix=x": kiln does not support dangling-name-prefix= for type=image yet (accepted: name, push,"#), "{e}");
    assert!(err("type=image,unpack=true").contains("unpack=\"true\": kiln does not support it: "));
    assert!(err("type=image,oci-mediatypes=false,compression=zstd").contains("Docker's media types have no zstd layers"));
    assert!(err("type=image,oci-mediatypes=maybe").ends_with(r#"oci-mediatypes="maybe": expected true or false"#));
    assert!(err("type=image,oci-artifact=true").contains("kiln does not support oci-artifact= for type=image"));
    assert!(err("type=image,compression=estargz").contains("estargz is not supported"));
    assert!(err("type=image,compression-level=12").contains("compression-level=12: gzip takes 0 to 9"));
    assert!(err("type=image,push=yes").ends_with(r#"push="yes": expected true or false"#));
    assert!(err("type=image,dest=x").contains("kiln does not support dest= for type=image"));
    assert!(err("type=local,dest=o,compression=zstd")
        .ends_with("kiln does not support compression= for type=local yet (accepted: dest, platform-split)"));
    assert!(err("type=image,push").ends_with(r#""push" is not KEY=VALUE"#));
    assert!(err("type=s3,dest=x").ends_with(r#"unknown type "s3": use image, registry, oci, docker, local or tar"#));
    assert!(err("dest=x").ends_with("missing type= (image, registry, oci, docker, local or tar)"));
    assert!(err("type=oci").ends_with("type=oci needs dest=PATH (or dest=- for stdout)"));
    assert!(err("type=local").ends_with("type=local needs dest=PATH (or dest=- for stdout)"));
    assert!(err("type=local,dest=-").contains("files cannot go to stdout"));
    assert!(err("type=docker,dest=x,tar=false").contains("a docker archive is a tarball"));
    assert!(err("type=oci,dest=-,tar=false").contains("a directory cannot go to stdout"));
    assert!(err("type=image,name=x@sha256:zz").contains("name=\"x@sha256:zz\": "));
    assert!(err(r#"type=image,na"me=x"#).contains("a double quote at byte 13"));
    assert!(err("type=image,annotation-layer.k=v").contains("unknown annotation type \"layer\""));
}

#[test]
fn media_types_default_as_buildkit_defaults_them() {
    assert!(image(parse("type=image")).form.oci_mediatypes);
    assert!(!image(parse("type=registry,oci-mediatypes=false")).form.oci_mediatypes);
    let Output::Docker(d) = parse("type=docker,dest=x") else { panic!() };
    assert!(!d.form.oci_mediatypes, "type=docker writes Docker's media types unless asked");
    let Output::Docker(d) = parse("type=docker,dest=x,oci-mediatypes=true") else { panic!() };
    assert!(d.form.oci_mediatypes);
    let Output::Oci(o) = parse("type=oci,dest=x") else { panic!() };
    assert!(o.form.oci_mediatypes);
    let ann = Annotation::parse_flag("k=v").unwrap();
    let flags = OutputFlags { annotations: &ann, ..Default::default() };
    assert!(matches!(Output::resolve(vec![parse("type=docker,dest=x")], &flags), Err(OutputError::AnnotationsNeedOci)));
    assert!(Output::resolve(vec![parse("type=docker,dest=x,oci-mediatypes=true")], &flags).is_ok());
}

#[test]
fn files_and_the_short_forms() {
    assert_eq!(parse("out"), Output::Local(RootfsOutput { dest: Dest::Path("out".into()), platform_split: None }));
    assert_eq!(parse("-"), Output::Tar(RootfsOutput { dest: Dest::Stdout, platform_split: None }));
    assert_eq!(
        parse("type=local,dest=o,platform-split=false"),
        Output::Local(RootfsOutput { dest: Dest::Path("o".into()), platform_split: Some(false) })
    );
    assert_eq!(parse("type=tar,dest=-"), Output::Tar(RootfsOutput { dest: Dest::Stdout, platform_split: None }));
    let Output::Oci(o) = parse("type=oci,dest=o.tar,tar=false,name=x/y:1") else { panic!() };
    assert_eq!((o.dest, o.tar, o.names), (Some(Dest::Path("o.tar".into())), false, vec![r("x/y:1")]));
    let Output::Docker(d) = parse("type=docker") else { panic!() };
    assert_eq!(d.dest, None, "type=docker without dest loads into the engine");
    let Output::Docker(d) = parse("type=docker,dest=-") else { panic!() };
    assert_eq!(d.dest, Some(Dest::Stdout));
}

#[test]
fn push_and_load_resolve_as_buildx_resolves_them() {
    let t = [r("localhost:5000/app:1")];
    let flags = |push, load| OutputFlags { push, load, tags: &t, ..Default::default() };
    let named = |mut i: ImageOutput| {
        i.names = t.to_vec();
        Output::Image(i)
    };
    assert_eq!(Output::resolve(vec![], &flags(false, false)).unwrap(), [named(ImageOutput::store())]);
    assert_eq!(Output::resolve(vec![], &flags(true, false)).unwrap(), [named(ImageOutput::registry())]);
    // --push sets push=true on an image output rather than adding one.
    let got = Output::resolve(vec![parse("type=image")], &flags(true, false)).unwrap();
    assert_eq!(got, [named(ImageOutput { push: true, ..ImageOutput::store() })]);
    let got = Output::resolve(vec![parse("type=oci,dest=x.tar")], &flags(true, true)).unwrap();
    assert!(matches!(&got[..], [Output::Oci(_), Output::Image(i), Output::Docker(LayoutOutput { dest: None, .. })] if i.push && !i.store));
    // --load adds nothing when a type=docker without dest is there.
    assert_eq!(Output::resolve(vec![parse("type=docker")], &flags(false, true)).unwrap().len(), 1);
    // name= wins over the tags.
    let got = Output::resolve(vec![parse("type=image,name=other.io/x:2")], &flags(false, false)).unwrap();
    assert_eq!(image(got[0].clone()).names, [r("other.io/x:2")]);
}

#[test]
fn what_resolving_refuses() {
    let none = OutputFlags::default();
    assert_eq!(
        Output::resolve(vec![], &OutputFlags { push: true, ..none.clone() }).unwrap_err().to_string(),
        "pushing needs a name: add -t REGISTRY/NAME[:TAG]"
    );
    assert!(matches!(Output::resolve(vec![parse("type=registry")], &none), Err(OutputError::PushWithoutName)));
    assert!(matches!(Output::resolve(vec![parse("-"), parse("type=oci,dest=-")], &none), Err(OutputError::StdoutTwice(2))));
    let tty = OutputFlags { stdout_is_terminal: true, ..none.clone() };
    assert!(matches!(Output::resolve(vec![parse("type=docker,dest=-")], &tty), Err(OutputError::StdoutIsTerminal)));
    assert!(Output::resolve(vec![parse("type=docker,dest=x")], &tty).is_ok());
    let ann = Annotation::parse_flag("k=v").unwrap();
    let with_ann = OutputFlags { annotations: &ann, ..none.clone() };
    assert!(matches!(Output::resolve(vec![parse("out")], &with_ann), Err(OutputError::NothingToAnnotate)));
    let got = Output::resolve(vec![parse("out"), parse("type=oci,dest=o")], &with_ann).unwrap();
    assert_eq!(got[1].clone().form_mut().unwrap().annotations, ann, "--annotation goes to the outputs that write an image");
    let two = OutputFlags { load: true, platforms: 2, ..none.clone() };
    assert!(matches!(Output::resolve(vec![], &two), Err(OutputError::DockerOnePlatform { count: 2 })), "--load of two platforms");
    assert!(Output::resolve(vec![], &OutputFlags { load: true, platforms: 1, ..none.clone() }).is_ok());
    let rewrite = vec![parse("type=image,rewrite-timestamp=true")];
    assert!(matches!(Output::resolve(rewrite.clone(), &none), Err(OutputError::RewriteWithoutEpoch)));
    assert!(Output::resolve(rewrite, &OutputFlags { source_date_epoch: Some(1), ..none.clone() }).is_ok());
    let off = vec![parse("type=image,rewrite-timestamp=false")];
    assert!(matches!(
        Output::resolve(off.clone(), &OutputFlags { source_date_epoch: Some(1), ..none.clone() }),
        Err(OutputError::RewriteOff)
    ));
    assert!(Output::resolve(off, &none).is_ok());
}

#[test]
fn insecure_outputs_name_their_registries() {
    let o = parse("type=image,name=reg.lan:5000/a:1,insecure=true");
    assert_eq!(o.insecure_hosts(), ["reg.lan:5000"]);
    assert!(parse("type=image,name=reg.lan:5000/a:1").insecure_hosts().is_empty());
}
