//! Root file system tarballs for tests: a tiny busybox system, and big
//! random ones for transfer tests.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;

use crate::error::{io, Error, Result};

/// mtime of every entry: fixed so the tarball's digest depends only on its content.
pub const ROOTFS_MTIME: u64 = 946_684_800; // 2000-01-01T00:00:00Z

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

#[derive(Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    BigFile(std::path::PathBuf, u64),
}

#[derive(Debug)]
struct Entry {
    path: String,
    mode: u32,
    uid: u64,
    gid: u64,
    kind: Kind,
}

impl Entry {
    fn dir(path: &str, mode: u32) -> Entry {
        Entry { path: path.to_string(), mode, uid: 0, gid: 0, kind: Kind::Dir }
    }
    fn file(path: &str, mode: u32, data: &str) -> Entry {
        Entry { path: path.to_string(), mode, uid: 0, gid: 0, kind: Kind::File(data.as_bytes().to_vec()) }
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// `app` is also in `extra` (gid 1001): tests of `USER app` check that
/// supplementary groups are applied.
const GROUP: &str = "root:x:0:\n\
app:x:1000:\n\
extra:x:1001:app\n\
nogroup:x:65534:\n";

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

const RESOLV: &str = "# placeholder written by kiln-testkit; a sandbox may bind its own\n";

/// Writes a root file system tarball built from Debian's busybox-static.
///
/// Contents: `/bin/busybox`, every applet `busybox --list-full` names as a
/// symlink to `/bin/busybox` (so `/bin/sh`, `/bin/ls`, `/usr/bin/env`, ...),
/// `/etc/passwd` and `/etc/group` with `root`, `nobody` and `app` (uid/gid
/// 1000, also member of `extra`, gid 1001), `/etc/hosts`, an
/// `/etc/resolv.conf` placeholder, `/tmp` (1777), `/root` (0700),
/// `/home/app` (owned by app), and empty `/proc`, `/dev`, `/sys`.
///
/// Deterministic: entries sorted by path, owner root unless stated, mtime
/// [`ROOTFS_MTIME`], ustar headers — the same busybox gives the same bytes.
pub fn busybox_rootfs_tar(dest: &Path) -> Result<()> {
    let out = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(|e| Error::Tool { program: BUSYBOX.into(), detail: format!("{e} (install Debian package busybox-static)") })?;
    if !out.status.success() {
        return Err(Error::Tool { program: format!("{BUSYBOX} --list-full"), detail: String::from_utf8_lossy(&out.stderr).into_owned() });
    }
    let size = std::fs::metadata(BUSYBOX).map_err(io("stat busybox binary", BUSYBOX))?.len();
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::dir("dev", 0o755),
        Entry::dir("etc", 0o755),
        Entry::dir("home", 0o755),
        Entry { path: "home/app".into(), mode: 0o755, uid: 1000, gid: 1000, kind: Kind::Dir },
        Entry::dir("proc", 0o555),
        Entry::dir("root", 0o700),
        Entry::dir("sbin", 0o755),
        Entry::dir("sys", 0o555),
        Entry::dir("tmp", 0o1777),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::dir("usr/sbin", 0o755),
        Entry::dir("var", 0o755),
        Entry::file("etc/passwd", 0o644, PASSWD),
        Entry::file("etc/group", 0o644, GROUP),
        Entry::file("etc/hosts", 0o644, HOSTS),
        Entry::file("etc/resolv.conf", 0o644, RESOLV),
        Entry { path: "bin/busybox".into(), mode: 0o755, uid: 0, gid: 0, kind: Kind::BigFile(BUSYBOX.into(), size) },
    ];
    let known_dirs = ["bin", "sbin", "usr/bin", "usr/sbin"];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line.trim().trim_start_matches('/');
        let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        // Only applets in the standard dirs; anything odd would need new dirs.
        if path.is_empty() || path == "bin/busybox" || !known_dirs.contains(&parent) || path.contains("..") {
            continue;
        }
        entries.push(Entry { path: path.to_string(), mode: 0o777, uid: 0, gid: 0, kind: Kind::Symlink("/bin/busybox".into()) });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    write_entries(dest, &entries)
}

fn write_entries(dest: &Path, entries: &[Entry]) -> Result<()> {
    let file = File::create(dest).map_err(io("create rootfs tarball", dest))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(256 * 1024, file));
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(ROOTFS_MTIME);
        let _ = h.set_username(if e.uid == 0 { "root" } else { "" });
        let _ = h.set_groupname(if e.gid == 0 { "root" } else { "" });
        let res = match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                builder.append_data(&mut h, format!("{}/", e.path), std::io::empty())
            }
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, &e.path, &data[..])
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                builder.append_link(&mut h, &e.path, target)
            }
            Kind::BigFile(src, size) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                let f = File::open(src).map_err(io("open file for rootfs", src))?;
                // take(): a file that grew since stat must not corrupt the archive.
                builder.append_data(&mut h, &e.path, f.take(*size))
            }
        };
        res.map_err(io("write rootfs tar entry", dest))?;
    }
    let mut w = builder.into_inner().map_err(io("finish rootfs tarball", dest))?;
    w.flush().map_err(io("flush rootfs tarball", dest))?;
    w.get_ref().sync_all().map_err(io("sync rootfs tarball", dest))?;
    Ok(())
}

/// Deterministic incompressible bytes (splitmix64), streamed.
struct RandomReader {
    state: u64,
    left: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl RandomReader {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        let buf = &mut buf[..want];
        // Leftover bytes of the last word first, then whole words, then a tail.
        let head = want.min(self.pending_len);
        let start = 8 - self.pending_len;
        buf[..head].copy_from_slice(&self.pending[start..start + head]);
        self.pending_len -= head;
        let mut words = buf[head..].chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.pending = self.next_u64().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.pending[..n]);
            self.pending_len = 8 - n;
        }
        self.left -= want as u64;
        Ok(want)
    }
}

/// Writes a tarball of `files` regular files (at least one) holding
/// `total_bytes` of random data in all, under `data/`.
///
/// The bytes come from a seeded generator: the same `seed` gives the same
/// tarball, a new seed a "fresh" image no registry has seen (its layers
/// cannot be deduplicated or mounted). Streamed: memory stays flat for any
/// size. Entries are sorted and carry [`ROOTFS_MTIME`].
pub fn random_rootfs_tar(dest: &Path, total_bytes: u64, files: usize, seed: u64) -> Result<()> {
    let files = files.max(1);
    let file = File::create(dest).map_err(io("create random rootfs tarball", dest))?;
    let mut builder = tar::Builder::new(BufWriter::with_capacity(1024 * 1024, file));
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(ROOTFS_MTIME);
    builder.append_data(&mut dir, "data/", std::io::empty()).map_err(io("write random rootfs tar entry", dest))?;
    let per = total_bytes / files as u64;
    for i in 0..files {
        let size = if i + 1 == files { total_bytes - per * (files as u64 - 1) } else { per };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(ROOTFS_MTIME);
        let reader = RandomReader {
            // Per-file streams: files differ from each other, not just the image.
            state: seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            left: size,
            pending: [0; 8],
            pending_len: 0,
        };
        builder.append_data(&mut h, format!("data/file-{i:06}.bin"), reader).map_err(io("write random rootfs tar entry", dest))?;
    }
    let mut w = builder.into_inner().map_err(io("finish random rootfs tarball", dest))?;
    w.flush().map_err(io("flush random rootfs tarball", dest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_reader_stream_does_not_depend_on_read_sizes() {
        let mk = || RandomReader { state: 9, left: 1000, pending: [0; 8], pending_len: 0 };
        let mut whole = Vec::new();
        mk().read_to_end(&mut whole).expect("read");
        assert_eq!(whole.len(), 1000);
        let mut r = mk();
        let mut pieces = Vec::new();
        for size in [1usize, 3, 7, 8, 13, 64, 5].iter().cycle() {
            let mut b = vec![0u8; *size];
            let n = r.read(&mut b).expect("read");
            if n == 0 {
                break;
            }
            pieces.extend_from_slice(&b[..n]);
        }
        assert_eq!(pieces, whole);
    }
}
