//! Test helpers: a raw tar builder that can write entries no well-behaved archiver would, and a
//! snapshot of a directory tree for "nothing changed outside the root" checks.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Builds tar archives byte by byte, without the safety checks of `tar::Builder::set_path`.
#[derive(Default)]
pub struct RawTar {
    buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }

    fn header(kind: tar::EntryType, name: &[u8], link: &[u8], size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            let n = name.len().min(100);
            u.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            u.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) {
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, name.as_bytes(), b"", data.len() as u64, 0o644);
        self.push(h, data);
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, name.as_bytes(), b"", 0, 0o755);
        self.push(h, b"");
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Symlink, name.as_bytes(), target.as_bytes(), 0, 0o777);
        self.push(h, b"");
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(tar::EntryType::Link, name.as_bytes(), target.as_bytes(), 0, 0o644);
        self.push(h, b"");
        self
    }

    pub fn device(&mut self, kind: tar::EntryType, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, name.as_bytes(), b"", 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"");
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = 3 + k.len() + v.len();
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let h = Self::header(tar::EntryType::XHeader, b"PaxHeaders/x", b"", data.len() as u64, 0o644);
        self.push(h, &data);
        self
    }

    /// A GNU long-name entry applying to the next entry (`././@LongLink`, type L).
    pub fn gnu_long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(name.len() as u64 + 1);
        h.set_mode(0o644);
        let mut data = name.to_vec();
        data.push(0);
        self.push(h, &data);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend(std::iter::repeat_n(0u8, 1024));
        b
    }

    pub fn gzip(&self) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&self.bytes()).unwrap();
        e.finish().unwrap()
    }
}

/// Type, mode, owner, content / link target of everything below `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        let desc = if md.file_type().is_symlink() {
            format!("link->{}", fs::read_link(&p).unwrap().display())
        } else if md.is_dir() {
            walk(base, &p, out);
            format!("dir {:o}", md.mode())
        } else if md.is_file() {
            format!("file {:o} {}:{} {:?}", md.mode(), md.uid(), md.gid(), fs::read(&p).unwrap())
        } else {
            format!("other {:o} {}", md.mode(), md.rdev())
        };
        out.insert(rel, desc);
    }
}
