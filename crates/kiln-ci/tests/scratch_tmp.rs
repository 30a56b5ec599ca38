use kiln_ci::*;
#[test]
fn show() {
    let s = synth::Synth::two_arch(7);
    let d = tempfile::tempdir().unwrap();
    s.write_dir(d.path(), 30).unwrap();
    let h = read_dir(d.path()).unwrap();
    let r = analyze(&h, &Options::default());
    eprintln!("{}", render::table(&r));
    eprintln!("{:?}", s.ledger.cancel_kinds);
    let h = read_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/github-api"))).unwrap();
    let r = analyze(&h, &Options::default());
    eprintln!("{}", render::table(&r));
}
