//! Pushes a fresh random image with skopeo through a throttled fault proxy
//! and prints what the proxy saw, plus this process's peak RSS (the proxy
//! runs in-process, so flat RSS shows it streams):
//!
//! `cargo run -p kiln-testkit --example proxy_soak -- MEGABYTES BYTES_PER_SEC [FAULT_RATE]`

use std::process::Command;
use std::time::Instant;

use kiln_testkit::{oci, random_rootfs_tar, FaultProxy, FaultProxyOptions, Registry};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok())))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mb: u64 = args.get(1).ok_or("usage: proxy_soak MEGABYTES BYTES_PER_SEC [FAULT_RATE]")?.parse()?;
    let bw: u64 = args.get(2).ok_or("missing BYTES_PER_SEC")?.parse()?;
    let rate: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.0);
    let tmp = tempfile::tempdir()?;
    let tar = tmp.path().join("layer.tar");
    random_rootfs_tar(&tar, mb << 20, 4, 7)?;
    let layout = tmp.path().join("oci");
    oci::write_oci_layout(&layout, "soak", &[&tar])?;
    let reg = Registry::start_plain()?;
    let proxy =
        FaultProxy::start(&reg.host(), FaultProxyOptions { fault_rate: rate, bandwidth: Some(bw), ..FaultProxyOptions::default() })?;
    let rss_before = peak_rss_kib();
    let t = Instant::now();
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-compress=false"])
        .arg(format!("oci:{}:soak", layout.display()))
        .arg(format!("docker://{}/soak/img:1", proxy.host()))
        .env("REGISTRY_AUTH_FILE", tmp.path().join("auth.json"))
        .output()?;
    println!(
        "skopeo ok={} secs={:.1} requests={} faults={} peak_rss_before={}KiB peak_rss_after={}KiB",
        out.status.success(),
        t.elapsed().as_secs_f64(),
        proxy.requests(),
        proxy.faults(),
        rss_before,
        peak_rss_kib()
    );
    if !out.status.success() {
        println!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
