//! rpm packages: the SQLite rpm database.
//!
//! rpm ≥ 4.16 keeps its database in `rpmdb.sqlite`, under `/var/lib/rpm/` (RHEL, CentOS Stream,
//! Rocky, Alma, Amazon Linux 2023) or `/usr/lib/sysimage/rpm/` (Fedora ≥ 36, openSUSE). Its
//! `Packages` table (`hnum INTEGER PRIMARY KEY, blob BLOB`) holds one *rpm header* per installed
//! package, read here with the crate's own read-only SQLite reader (`src/sqlite.rs`).
//!
//! An rpm header blob, as the database stores it (rpm's `headerImport`, without the magic of a
//! package file's header): two big-endian u32s, the index entry count `il` and the data length
//! `dl`; then `il` index entries of 16 bytes (tag, type, offset into the data, count); then `dl`
//! bytes of data. Strings are NUL-terminated at their offset; `I18NSTRING` is one string per locale,
//! the first being the untranslated one; `INT32` values are big-endian. The tags read: NAME 1000,
//! VERSION 1001, RELEASE 1002, EPOCH 1003, VENDOR 1011, LICENSE 1014, ARCH 1022, SOURCERPM 1044.
//! (A first entry with tag 61–63 is a *region* trailer describing the signed part; it is skipped.)
//!
//! The purl is syft's (and the purl specification's: the epoch is a qualifier, not part of the
//! version): `pkg:rpm/ID/NAME@VERSION-RELEASE?arch=ARCH&distro=ID-VERSION_ID&epoch=E&upstream=SRPM`,
//! `ID` from os-release (`rhel` written `redhat`, as syft and Red Hat's own SBOMs do), else the
//! vendor's first word in lowercase. The package's version is `EPOCH:VERSION-RELEASE` when an epoch
//! is set, as rpm's `%{EVR}` and syft write it. `gpg-pubkey` entries (imported signing keys, not
//! packages) are left out, as syft does.
//!
//! The older formats are **not read**: BerkeleyDB (`Packages`, RHEL ≤ 8, CentOS 7, Amazon Linux 2)
//! and ndb (`Packages.db`, SUSE before 2021). When one is present, the SBOM says so in
//! [`crate::Catalog::skipped`], so an rpm image never gets an SBOM that silently omits its OS
//! packages. The same goes for an `rpmdb.sqlite-wal` file that still holds changes (rpm checkpoints
//! when it closes the database, so a finished image normally has an empty one).

use crate::dpkg::os_release;
use crate::sqlite;
use crate::tree::{Item, Tree};
use crate::{purl_encode, Catalog, Ecosystem, Package, Skipped};

const DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// Files noted only by their presence: the formats not read, and SQLite's write-ahead log.
pub(crate) fn is_noted_path(path: &str) -> bool {
    DIRS.iter().any(|d| {
        path.strip_prefix(d)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|name| matches!(name, "Packages" | "Packages.db" | "rpmdb.sqlite-wal"))
    })
}

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    let (id, version_id) = os_release(tree);
    for dir in DIRS {
        for (name, format) in [("Packages", "BerkeleyDB"), ("Packages.db", "ndb")] {
            let path = format!("{dir}/{name}");
            if tree.get(&path).is_some() {
                out.skipped.push(Skipped {
                    path,
                    reason: format!(
                        "an rpm database in the {format} format, which kiln does not read (only rpmdb.sqlite, rpm ≥ 4.16): its rpm packages are missing from this SBOM"
                    ),
                });
            }
        }
        let path = format!("{dir}/rpmdb.sqlite");
        let Some(bytes) = tree.file(&path) else { continue };
        // `/var/lib/rpm` is a symlink to `/usr/lib/sysimage/rpm` on Fedora: one database, read once.
        if dir == DIRS[1] && tree.file(&format!("{}/rpmdb.sqlite", DIRS[0])).is_some_and(|b| b == bytes) {
            continue;
        }
        if let Some(Item::Present(size)) = tree.get(&format!("{path}-wal")) {
            if *size > 0 {
                out.skipped.push(Skipped {
                    path: format!("{path}-wal"),
                    reason: format!("{size} bytes of changes not yet written to rpmdb.sqlite are not read: packages installed or removed last may be missing or still listed"),
                });
            }
        }
        let headers = match packages_table(bytes) {
            Ok(h) => h,
            Err(e) => {
                out.skipped.push(Skipped { path: path.clone(), reason: format!("cannot read the rpm database: {e}") });
                continue;
            }
        };
        for (hnum, blob) in headers {
            match Header::parse(&blob).and_then(|h| package(&h, id.as_deref(), version_id.as_deref(), &path)) {
                Ok(Some(p)) => out.packages.push(p),
                Ok(None) => {}
                Err(e) => out.skipped.push(Skipped { path: path.clone(), reason: format!("header {hnum}: {e}") }),
            }
        }
    }
}

/// (hnum, header blob) of every row of the `Packages` table.
fn packages_table(bytes: &[u8]) -> Result<Vec<(i64, Vec<u8>)>, String> {
    let db = sqlite::Db::open(bytes).map_err(|e| e.0)?;
    let root = db.table_root("Packages").map_err(|e| e.0)?.ok_or("no Packages table")?;
    let mut out = Vec::new();
    for row in db.rows(root).map_err(|e| format!("table Packages: {e}"))? {
        let rec = sqlite::record(&row.payload).map_err(|e| format!("row {}: {e}", row.rowid))?;
        match rec.get(1) {
            Some(sqlite::Value::Blob(b)) => out.push((row.rowid, b.to_vec())),
            other => return Err(format!("row {}: the blob column is {other:?}, not a blob", row.rowid)),
        }
    }
    Ok(out)
}

const NAME: u32 = 1000;
const VERSION: u32 = 1001;
const RELEASE: u32 = 1002;
const EPOCH: u32 = 1003;
const VENDOR: u32 = 1011;
const LICENSE: u32 = 1014;
const ARCH: u32 = 1022;
const SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// A parsed rpm header: its index entries and data store.
#[derive(Debug)]
pub struct Header<'a> {
    /// (tag, type, offset, count)
    entries: Vec<(u32, u32, usize, usize)>,
    data: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks the blob's layout: counts, lengths and every entry's offset within the data.
    pub fn parse(blob: &'a [u8]) -> Result<Header<'a>, String> {
        let be = |at: usize| u32::from_be_bytes(blob[at..at + 4].try_into().unwrap());
        if blob.len() < 8 {
            return Err(format!("{} bytes, too short for an rpm header", blob.len()));
        }
        let (il, dl) = (be(0) as usize, be(4) as usize);
        // rpm's own limits (header.c: HEADER_TAGS_MAX, HEADER_DATA_MAX).
        if il == 0 || il > 0xffff || dl > 0x0fff_ffff {
            return Err(format!("{il} index entries and {dl} data bytes are outside rpm's limits"));
        }
        let data_at = 8 + 16 * il;
        if data_at + dl > blob.len() {
            return Err(format!("{il} index entries and {dl} data bytes need {} bytes, the blob has {}", data_at + dl, blob.len()));
        }
        let data = &blob[data_at..data_at + dl];
        let mut entries = Vec::with_capacity(il);
        for i in 0..il {
            let e = 8 + 16 * i;
            let (tag, ty, offset, count) = (be(e), be(e + 4), be(e + 8) as i32, be(e + 12) as usize);
            if offset < 0 || offset as usize > dl {
                return Err(format!("entry {i} (tag {tag}): offset {offset} is outside the {dl} data bytes"));
            }
            entries.push((tag, ty, offset as usize, count));
        }
        Ok(Header { entries, data })
    }

    fn entry(&self, tag: u32) -> Option<(u32, usize, usize)> {
        self.entries.iter().find(|e| e.0 == tag).map(|&(_, ty, off, count)| (ty, off, count))
    }

    /// A string tag (`STRING`, or the first of an `I18NSTRING` or `STRING_ARRAY`).
    pub fn string(&self, tag: u32) -> Result<Option<String>, String> {
        let Some((ty, off, _)) = self.entry(tag) else { return Ok(None) };
        if !matches!(ty, TYPE_STRING | TYPE_I18NSTRING | TYPE_STRING_ARRAY) {
            return Err(format!("tag {tag} has type {ty}, not a string"));
        }
        let rest = &self.data[off..];
        let end = rest.iter().position(|&b| b == 0).ok_or_else(|| format!("tag {tag}: the string has no terminating NUL"))?;
        Ok(Some(String::from_utf8_lossy(&rest[..end]).into_owned()))
    }

    /// The first value of an `INT32` tag.
    pub fn int32(&self, tag: u32) -> Result<Option<u32>, String> {
        let Some((ty, off, count)) = self.entry(tag) else { return Ok(None) };
        if ty != TYPE_INT32 || count == 0 {
            return Err(format!("tag {tag} has type {ty} and {count} values, not an INT32"));
        }
        let b = self.data.get(off..off + 4).ok_or_else(|| format!("tag {tag}: the value runs past the data"))?;
        Ok(Some(u32::from_be_bytes(b.try_into().unwrap())))
    }
}

/// The package a header describes; `None` for an imported signing key.
fn package(h: &Header, id: Option<&str>, version_id: Option<&str>, path: &str) -> Result<Option<Package>, String> {
    let name = h.string(NAME)?.filter(|s| !s.is_empty()).ok_or("no NAME")?;
    if name == "gpg-pubkey" {
        return Ok(None);
    }
    let version = h.string(VERSION)?.filter(|s| !s.is_empty()).ok_or_else(|| format!("package {name} has no VERSION"))?;
    let release = h.string(RELEASE)?.unwrap_or_default();
    let epoch = h.int32(EPOCH)?;
    let arch = h.string(ARCH)?.unwrap_or_default();
    let vendor = h.string(VENDOR)?.unwrap_or_default();
    let license = h.string(LICENSE)?.unwrap_or_default();
    // Source packages have none; the source rpm of a binary package.
    let srpm = h.string(SOURCERPM)?.unwrap_or_default();

    let vr = if release.is_empty() { version.clone() } else { format!("{version}-{release}") };
    let namespace = match id {
        Some("rhel") => "redhat".to_string(),
        Some(id) => id.to_string(),
        None => vendor.split_whitespace().next().map(|w| w.to_ascii_lowercase()).unwrap_or_else(|| "rpm".into()),
    };
    let mut q = Vec::new();
    if !arch.is_empty() {
        q.push(format!("arch={}", purl_encode(&arch)));
    }
    match (id, version_id) {
        (Some(id), Some(v)) => q.push(format!("distro={}", purl_encode(&format!("{id}-{v}")))),
        (Some(id), None) => q.push(format!("distro={}", purl_encode(id))),
        _ => {}
    }
    if let Some(e) = epoch {
        q.push(format!("epoch={e}"));
    }
    if !srpm.is_empty() {
        q.push(format!("upstream={}", purl_encode(&srpm)));
    }
    let mut purl = format!("pkg:rpm/{}/{}@{}", purl_encode(&namespace), purl_encode(&name), purl_encode(&vr));
    if !q.is_empty() {
        purl.push('?');
        purl.push_str(&q.join("&"));
    }
    Ok(Some(Package {
        ecosystem: Ecosystem::Rpm,
        version: match epoch {
            Some(e) => format!("{e}:{vr}"),
            None => vr,
        },
        name,
        purl,
        licenses: if license.is_empty() { Vec::new() } else { vec![license] },
        found_in: path.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob with `entries` (tag, type, data bytes), laid out as rpm writes it.
    fn blob(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, bytes) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&ty.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    #[test]
    fn a_header_names_a_package_with_syfts_purl() {
        let b = blob(&[
            (NAME, TYPE_STRING, b"bash\0"),
            (VERSION, TYPE_STRING, b"5.1.8\0"),
            (RELEASE, TYPE_STRING, b"9.el9\0"),
            (EPOCH, TYPE_INT32, &1u32.to_be_bytes()),
            (ARCH, TYPE_STRING, b"x86_64\0"),
            (LICENSE, TYPE_STRING, b"GPLv3+\0"),
            (SOURCERPM, TYPE_STRING, b"bash-5.1.8-9.el9.src.rpm\0"),
            (VENDOR, TYPE_STRING, b"Red Hat, Inc.\0"),
        ]);
        let h = Header::parse(&b).unwrap();
        let p = package(&h, Some("rhel"), Some("9.4"), "/var/lib/rpm/rpmdb.sqlite").unwrap().unwrap();
        assert_eq!(p.version, "1:5.1.8-9.el9");
        assert_eq!(p.purl, "pkg:rpm/redhat/bash@5.1.8-9.el9?arch=x86_64&distro=rhel-9.4&epoch=1&upstream=bash-5.1.8-9.el9.src.rpm");
        assert_eq!(p.licenses, ["GPLv3+"]);
        // Without os-release, the vendor names the namespace.
        let p = package(&h, None, None, "/x").unwrap().unwrap();
        assert!(p.purl.starts_with("pkg:rpm/red/bash@"), "{}", p.purl);
    }

    #[test]
    fn bad_headers_are_errors_and_keys_are_not_packages() {
        assert!(Header::parse(&[0, 0]).unwrap_err().contains("too short"));
        let mut b = blob(&[(NAME, TYPE_STRING, b"x\0")]);
        b[7] = 200; // dl larger than the blob
        assert!(Header::parse(&b).unwrap_err().contains("need"));
        let b = blob(&[(NAME, TYPE_STRING, b"no-nul")]);
        assert!(Header::parse(&b).unwrap().string(NAME).unwrap_err().contains("NUL"));
        let b = blob(&[(NAME, TYPE_INT32, &[0, 0, 0, 1])]);
        assert!(package(&Header::parse(&b).unwrap(), None, None, "/x").unwrap_err().contains("not a string"));
        let b = blob(&[(NAME, TYPE_STRING, b"x\0")]);
        assert!(package(&Header::parse(&b).unwrap(), None, None, "/x").unwrap_err().contains("no VERSION"));
        let b = blob(&[(NAME, TYPE_STRING, b"gpg-pubkey\0"), (VERSION, TYPE_STRING, b"1\0")]);
        assert_eq!(package(&Header::parse(&b).unwrap(), None, None, "/x").unwrap(), None);
    }

    #[test]
    fn old_formats_and_pending_wal_are_reported_never_silent() {
        let mut t = Tree::default();
        t.insert("/var/lib/rpm/Packages", Item::Present(1 << 20));
        t.insert("/usr/lib/sysimage/rpm/Packages.db", Item::Present(1 << 20));
        t.insert("/var/lib/rpm/rpmdb.sqlite", Item::File(b"garbage".to_vec()));
        t.insert("/var/lib/rpm/rpmdb.sqlite-wal", Item::Present(4096));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let reasons: Vec<String> = c.skipped.iter().map(|s| format!("{}: {}", s.path, s.reason)).collect();
        assert_eq!(reasons.len(), 4, "{reasons:#?}");
        assert!(reasons.iter().any(|r| r.starts_with("/usr/lib/sysimage/rpm/Packages.db: an rpm database in the ndb format")));
        assert!(reasons.iter().any(|r| r.starts_with("/var/lib/rpm/Packages: an rpm database in the BerkeleyDB format")));
        assert!(reasons.iter().any(|r| r.starts_with("/var/lib/rpm/rpmdb.sqlite-wal: 4096 bytes")));
        assert!(reasons.iter().any(|r| r.starts_with("/var/lib/rpm/rpmdb.sqlite: cannot read the rpm database: not an SQLite 3")));
    }
}
