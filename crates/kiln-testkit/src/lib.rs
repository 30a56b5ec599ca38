//! Real services for kiln's tests.
//!
//! kiln's tests talk to the real thing, not to mocks. This crate starts it,
//! one private instance per test, on a free port of `127.0.0.1`, and tears it
//! down when the handle is dropped (processes are killed by PID, temp dirs
//! removed), so tests stay parallel-safe. It is a dev-dependency only.
//!
//! The pieces, from the bottom up:
//! - [`Registry`]: Debian's `docker-registry serve` (distribution 2.8) with
//!   filesystem storage in a temp dir and deletes enabled, in three flavours:
//!   [`Registry::start_plain`] (no auth), [`Registry::start_basic`] (htpasswd,
//!   bcrypt) and [`Registry::start_token`] (`auth: token`).
//! - [`TokenServer`]: an in-process server for Docker's token protocol (GET
//!   with basic auth, OAuth2 POST with password and refresh grants). Its
//!   ES256 JWTs carry the signing certificate in `x5c`, and are backdated by
//!   the registry's 60 s leeway so they *really* expire after the configured
//!   lifetime; [`TokenServer::tokens_issued`] proves a client refreshed.
//! - [`FaultProxy`]: a streaming HTTP/1.1 proxy put between a client and a
//!   registry. It fails a seeded fraction of requests (500, 429 with
//!   `Retry-After: 1`, connection reset mid-body), can throttle bandwidth,
//!   and counts what it did.
//! - Images: [`busybox_rootfs_tar`] (a tiny deterministic root file system
//!   from `busybox-static`), [`random_rootfs_tar`] (big, seeded, streamed),
//!   and [`oci::write_oci_layout`] to wrap tarballs as an OCI layout.
//! - [`GhaService`]: an in-process emulator of the GitHub Actions cache
//!   service v2 (Twirp) and its Azure-Blob-style store, with runtime tokens,
//!   expiring signed URLs, throttling, injected 429/503/HTML-502 faults,
//!   a visibility delay and eviction.
//! - [`http::request`]: a minimal blocking client for probing services.
//!
//! Tests that need an installed tool or root first ask [`require_tool`] /
//! [`require_root`]: outside CI a missing tool skips the test (with a reason
//! on stderr), under `CI=true` it fails, because CI must run everything.
//!
//! ```no_run
//! use std::time::Duration;
//! use kiln_testkit::{require_tool, FaultProxy, FaultProxyOptions, Registry, TokenServerOptions};
//!
//! if !require_tool("docker-registry") {
//!     return;
//! }
//! let reg = Registry::start_token(TokenServerOptions {
//!     lifetime: Duration::from_secs(2),
//!     ..TokenServerOptions::default()
//! })
//! .unwrap();
//! let proxy = FaultProxy::start(&reg.host(), FaultProxyOptions {
//!     fault_rate: 0.10,
//!     bandwidth: Some(20 << 20),
//!     ..FaultProxyOptions::default()
//! })
//! .unwrap();
//! let (user, password) = reg.credentials().unwrap();
//! // Point the client under test at proxy.host() with user/password ...
//! # let _ = (user, password);
//! assert!(reg.token_server().unwrap().tokens_issued() > 1, "the client never refreshed");
//! ```

mod dockerd;
pub mod error;
mod gha;
pub mod http;
pub mod oci;
mod proxy;
mod registry;
mod rootfs;
mod server;
mod token;

pub use dockerd::Dockerd;
pub use error::{Error, Result};
pub use gha::{GhaEntry, GhaOptions, GhaService, GHA_CONTAINER, GHA_TWIRP_SERVICE};
pub use proxy::{FaultKind, FaultProxy, FaultProxyOptions};
pub use registry::{Registry, TOKEN_ISSUER, TOKEN_SERVICE};
pub use rootfs::{busybox_rootfs_tar, random_rootfs_tar, BUSYBOX, ROOTFS_MTIME};
pub use token::{Access, TokenServer, TokenServerOptions, REGISTRY_LEEWAY};

/// Debian packages that provide the tools tests ask for, so a CI failure says
/// what to install.
fn debian_package(tool: &str) -> &str {
    match tool {
        "docker-registry" => "docker-registry",
        "htpasswd" => "apache2-utils",
        "busybox" => "busybox-static",
        "skopeo" => "skopeo",
        "buildah" => "buildah",
        "umoci" => "umoci",
        "curl" => "curl",
        "hyperfine" => "hyperfine",
        other => other,
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether the program `name` is on `PATH`.
///
/// Returns `false` (after printing why) when it is missing outside CI, so the
/// test can `return` early. Under `CI=true` a missing tool panics, naming the
/// Debian package to install, because CI must not silently skip.
pub fn require_tool(name: &str) -> bool {
    check_tool(name, in_ci())
}

fn check_tool(name: &str, ci: bool) -> bool {
    if find_in_path(name).is_some() {
        return true;
    }
    let pkg = debian_package(name);
    if ci {
        panic!("required tool `{name}` is not installed; install the Debian package `{pkg}` (apt-get install {pkg})");
    }
    eprintln!("skipping: `{name}` is not installed (Debian package `{pkg}`)");
    false
}

/// Whether the test runs as root (uid 0).
///
/// Same contract as [`require_tool`]: skip with a reason outside CI, panic in CI.
/// Where `scripts/deps` unpacks the arm64 busybox used for multi-platform base images.
pub const ARM64_BUSYBOX: &str = "/var/lib/kiln-test/busybox-arm64/bin/busybox";

/// Whether arm64 binaries can run here: the arm64 busybox ([`ARM64_BUSYBOX`]) and the
/// qemu-aarch64 binfmt handler, both set up by `scripts/deps`. Panics under CI when missing, else
/// prints why the test is skipped.
pub fn require_arm64() -> bool {
    let have = std::path::Path::new(ARM64_BUSYBOX).exists() && std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists();
    if !have {
        assert!(!in_ci(), "CI must run scripts/deps: arm64 busybox or the qemu-aarch64 binfmt handler is missing");
        eprintln!("skipping: run scripts/deps first (arm64 busybox at {ARM64_BUSYBOX} and the qemu-aarch64 binfmt handler)");
    }
    have
}

pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!("this test needs root (uid 0); CI runs as root, so run it there or with sudo");
    }
    eprintln!("skipping: this test needs root (uid 0)");
    false
}

fn is_root() -> bool {
    // /proc/self/status avoids a libc dependency for one getuid() call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0")))
        .unwrap_or(false)
}

fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_skips_outside_ci_and_fails_in_ci() {
        assert!(check_tool("sh", true), "sh is always there");
        assert!(!check_tool("kiln-testkit-no-such-tool", false));
        let r = std::panic::catch_unwind(|| check_tool("docker-registry-missing-xyz", true));
        let msg = r.expect_err("must panic in CI").downcast::<String>().map(|b| *b).unwrap_or_default();
        assert!(msg.contains("docker-registry-missing-xyz"), "{msg}");
        assert_eq!(debian_package("htpasswd"), "apache2-utils");
    }
}
