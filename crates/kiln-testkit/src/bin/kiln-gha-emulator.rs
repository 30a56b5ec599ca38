//! `kiln-gha-emulator`: the GitHub Actions cache emulator ([`kiln_testkit::GhaService`]) as a
//! process, for benchmarks and by-hand runs: it starts on loopback, prints the runner's
//! environment (`ACTIONS_RESULTS_URL`, `ACTIONS_CACHE_URL`, `ACTIONS_RUNTIME_TOKEN`) as shell
//! assignments on stdout, and serves until it is killed.
//!
//! ```text
//! kiln-gha-emulator [--write-scope REF] [--read-scope REF]... [--download-url-lifetime SECS]
//!                   [--upload-url-lifetime SECS] [--throttle BYTES_PER_SEC] [--rate-429 FRACTION]
//!                   [--rate-503 FRACTION]
//! ```

use std::time::Duration;

use kiln_testkit::{GhaOptions, GhaService};

fn usage(why: &str) -> ! {
    eprintln!("kiln-gha-emulator: {why}");
    eprintln!(
        "usage: kiln-gha-emulator [--write-scope REF] [--read-scope REF]... [--download-url-lifetime SECS] \
         [--upload-url-lifetime SECS] [--throttle BYTES_PER_SEC] [--rate-429 FRACTION] [--rate-503 FRACTION]"
    );
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    let v = v.unwrap_or_else(|| usage(&format!("{flag} needs a value")));
    v.parse().unwrap_or_else(|_| usage(&format!("{flag} {v:?} is not a number")))
}

fn main() {
    let mut opts = GhaOptions::default();
    let mut write = Some("refs/heads/main".to_string());
    let mut read: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--write-scope" => write = Some(args.next().unwrap_or_else(|| usage("--write-scope needs a ref"))).filter(|s| !s.is_empty()),
            "--read-scope" => read.push(args.next().unwrap_or_else(|| usage("--read-scope needs a ref"))),
            "--download-url-lifetime" => opts.download_url_lifetime = Duration::from_secs_f64(number(&a, args.next())),
            "--upload-url-lifetime" => opts.upload_url_lifetime = Duration::from_secs_f64(number(&a, args.next())),
            "--throttle" => opts.throttle = Some(number(&a, args.next())),
            "--rate-429" => opts.twirp_429_rate = number(&a, args.next()),
            "--rate-503" => opts.blob_503_rate = number(&a, args.next()),
            "-h" | "--help" => usage("serves the GitHub Actions cache (v2 and v1) on loopback"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let svc = GhaService::start(opts).unwrap_or_else(|e| {
        eprintln!("kiln-gha-emulator: cannot start: {e}");
        std::process::exit(1)
    });
    let reads: Vec<&str> = read.iter().map(String::as_str).collect();
    let token = svc.mint_token(&reads, write.as_deref(), Duration::from_secs(6 * 3600));
    println!("ACTIONS_RESULTS_URL={}", svc.url());
    println!("ACTIONS_CACHE_URL={}", svc.cache_url());
    println!("ACTIONS_RUNTIME_TOKEN={token}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
