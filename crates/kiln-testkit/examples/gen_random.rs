//! Writes a random rootfs tarball: `cargo run -p kiln-testkit --example gen_random -- OUT BYTES FILES SEED`.
//! Used to prepare benchmark inputs and to time the generator itself.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: gen_random OUT BYTES FILES SEED".into());
    }
    let out = std::path::Path::new(&args[1]);
    let bytes: u64 = args[2].parse()?;
    let files: usize = args[3].parse()?;
    let seed: u64 = args[4].parse()?;
    kiln_testkit::random_rootfs_tar(out, bytes, files, seed)?;
    Ok(())
}
