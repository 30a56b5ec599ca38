//! Scans an unpacked root (or, with `--layers`, layer tars, lowest first, plain or gzip) and writes its
//! SPDX 2.3 JSON document to stdout; the package count and skipped entries go to stderr.
//! Used by `bench/sbom.sh`: `cargo run --release -p kiln-sbom --example scan -- ROOT`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, layers @ ..] if flag == "--layers" && !layers.is_empty() => {
            let files: Result<Vec<_>, _> = layers.iter().map(std::fs::File::open).collect();
            match files {
                Ok(files) => kiln_sbom::scan_layers(files.into_iter().map(layer)),
                Err(e) => {
                    eprintln!("scan: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        [root] => kiln_sbom::scan_dir(std::path::Path::new(root)),
        _ => {
            eprintln!("usage: scan ROOT | scan --layers LAYER.tar...");
            return ExitCode::from(2);
        }
    };
    let catalog = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scan: {e}");
            return ExitCode::FAILURE;
        }
    };
    for s in &catalog.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    eprintln!("{} packages", catalog.packages.len());
    let doc = kiln_sbom::DocumentInfo {
        name: args.last().cloned().unwrap_or_default(),
        namespace: "https://kiln.invalid/spdx/scan".into(),
        created: "1970-01-01T00:00:00Z".into(),
        tool: format!("kiln-sbom-{}", env!("CARGO_PKG_VERSION")),
    };
    println!("{}", serde_json::to_string_pretty(&kiln_sbom::spdx_json(&catalog, &doc)).expect("JSON"));
    ExitCode::SUCCESS
}

/// A layer blob as its tar stream: gzip (by its magic bytes) is decompressed as it is read.
fn layer(f: std::fs::File) -> Box<dyn std::io::Read> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    let gzip = r.fill_buf().is_ok_and(|b| b.starts_with(&[0x1f, 0x8b]));
    if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    }
}
