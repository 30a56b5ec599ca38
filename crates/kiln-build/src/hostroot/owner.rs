//! An unprivileged `--isolation none` kiln stands for the image's root: in the layers it writes,
//! files owned by its own uid and gid are owned by 0 and 0, as a rootless build's single-id user
//! namespace would show them.
//!
//! The layer writer takes owners from `lstat`, so the tar it writes is rewritten block by block:
//! each header's ustar uid and gid fields that name kiln's ids are set to 0 and the header's
//! checksum recomputed; data blocks are copied as they are. (kiln's writer puts ids in PAX
//! records only above the ustar limit of 2097151, which an unprivileged uid mapped here never
//! reaches.)
//!
//! The base's files are kiln's own too: extracting a layer that gives a file to another user
//! cannot give it to them here. The flat snapshot remembers those owners by path
//! ([`crate::snapshot::Snapshotter::unkept_owners`]), and a layer that holds such a file changed
//! in place (the same inode, still kiln's) gets the remembered owner back, as the root build's
//! layer would have it. A file the step made anew is kiln's, so root's, as in a root build
//! where the step runs as root.

use std::collections::HashMap;
use std::io::{self, Read, Write};

const BLOCK: usize = 512;

fn octal(field: &[u8]) -> Option<u64> {
    let s: String = field.iter().take_while(|b| **b != 0 && **b != b' ').map(|b| *b as char).collect();
    u64::from_str_radix(s.trim(), 8).ok()
}

/// What [`map_to_root`] changes in a layer besides kiln's own ids, by layer path (`etc/shadow`).
#[derive(Debug, Default)]
pub struct Fixes {
    /// Files kiln had to make readable to write them: their real mode (see [`readable_for_writing`]).
    pub modes: HashMap<String, u32>,
    /// Files still owned by kiln that the image gives to someone else (the base's owners, which an
    /// unprivileged kiln could not give them on extraction): the ids to write instead of 0:0.
    pub owners: HashMap<String, (u64, u64)>,
}

/// Copies the tar stream `input` to `out`, giving `(uid, gid)` to root, or to the owner `fixes`
/// names for the entry, and setting the modes `fixes` names.
pub fn map_to_root<R: Read, W: Write>(mut input: R, mut out: W, uid: u32, gid: u32, fixes: &Fixes) -> io::Result<()> {
    let mut block = [0u8; BLOCK];
    let mut data_left: u64 = 0;
    // The data of the extension header being copied (PAX or GNU long name), and the full name it
    // gives the next entry, whose ustar name field may hold a truncated one.
    let mut ext: Option<(u8, Vec<u8>, u64)> = None;
    let mut long_name: Option<String> = None;
    loop {
        match input.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if data_left > 0 {
            data_left -= 1;
            out.write_all(&block)?;
            if let Some((kind, data, size)) = ext.as_mut() {
                data.extend_from_slice(&block);
                if data_left == 0 {
                    data.truncate(*size as usize);
                    long_name = extension_name(*kind, data).or(long_name.take());
                    ext = None;
                }
            }
            continue;
        }
        if block.iter().all(|b| *b == 0) {
            out.write_all(&block)?;
            continue;
        }
        let size = octal(&block[124..136]).unwrap_or(0);
        data_left = size.div_ceil(BLOCK as u64);
        let kind = block[156];
        // Extension headers carry no owner of their own; a name they give is for the next entry.
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            if matches!(kind, b'x' | b'L') && size <= 1 << 20 && data_left > 0 {
                ext = Some((kind, Vec::with_capacity(size as usize), size));
            }
            out.write_all(&block)?;
            continue;
        }
        let name = |r: std::ops::Range<usize>| String::from_utf8_lossy(&block[r]).trim_end_matches('\0').to_string();
        let full = long_name.take().unwrap_or_else(|| {
            let (prefix, short) = (name(345..500), name(0..100));
            if prefix.is_empty() {
                short
            } else {
                format!("{prefix}/{short}")
            }
        });
        let full = full.trim_end_matches('/');
        let owner = fixes.owners.get(full).copied();
        for (range, id, given) in [(108..116, uid, owner.map(|o| o.0)), (116..124, gid, owner.map(|o| o.1))] {
            if octal(&block[range.clone()]) == Some(u64::from(id)) {
                block[range.clone()].copy_from_slice(format!("{:07o}\0", given.unwrap_or(0)).as_bytes());
            }
        }
        if let Some(mode) = fixes.modes.get(full) {
            block[100..108].copy_from_slice(format!("{:07o}\0", mode & 0o7777).as_bytes());
        }
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.write_all(&block)?;
    }
    out.flush()
}

/// The entry name a PAX header (`path` record) or GNU long name header gives.
fn extension_name(kind: u8, data: &[u8]) -> Option<String> {
    if kind == b'L' {
        return Some(String::from_utf8_lossy(data).trim_end_matches('\0').to_string());
    }
    // PAX records: "<len> <key>=<value>\n", len counting the whole record.
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return None;
        }
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(v) = rec.strip_prefix(b"path=") {
            found = Some(String::from_utf8_lossy(v).into_owned());
        }
        rest = &rest[len..];
    }
    found
}

/// Regular files among `entries` that their owner cannot read (`chmod 0000`): an unprivileged
/// kiln (no CAP_DAC_OVERRIDE) must add the owner's read bit to write them into the layer. Returns
/// each one's layer path and real mode, for [`map_to_root`] to write, and [`restore`] to put back.
pub fn readable_for_writing(entries: &[kiln_oci::layer::LayerEntry]) -> Vec<(String, std::path::PathBuf, u32)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    for e in entries {
        let kiln_oci::layer::EntrySource::Host(p) = &e.source else { continue };
        let Ok(md) = std::fs::symlink_metadata(p) else { continue };
        if md.file_type().is_file()
            && md.mode() & 0o400 == 0
            && std::fs::set_permissions(p, std::fs::Permissions::from_mode((md.mode() & 0o7777) | 0o400)).is_ok()
        {
            out.push((e.path.clone(), p.clone(), md.mode() & 0o7777));
        }
    }
    out
}

/// Puts back the modes [`readable_for_writing`] changed.
pub fn restore(changed: &[(String, std::path::PathBuf, u32)]) {
    use std::os::unix::fs::PermissionsExt;
    for (_, p, mode) in changed {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ids_become_root_and_others_stay() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, uid, gid) in [("mine", 1000u64, 1000u64), ("other", 65534, 1000)] {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_cksum();
            b.append(&h, &b"abc"[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut out = Vec::new();
        let mut fixes = Fixes::default();
        fixes.modes.insert("other".to_string(), 0o000);
        map_to_root(&tar[..], &mut out, 1000, 1000, &fixes).unwrap();
        assert_eq!(out.len(), tar.len());
        let mut a = tar::Archive::new(&out[..]);
        let got: Vec<(String, u64, u64, u32, String)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                let h = e.header();
                (e.path().unwrap().to_string_lossy().into_owned(), h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap(), s)
            })
            .collect();
        assert_eq!(got, vec![("mine".into(), 0, 0, 0o644, "abc".into()), ("other".into(), 65534, 0, 0, "abc".into())]);
    }

    /// The base's owners come back for the paths `fixes` names, long (PAX) names included, and
    /// only where the header still names kiln's ids.
    #[test]
    fn remembered_owners_come_back_by_full_path() {
        let long = format!("home/app/{}/file", "d".repeat(120));
        let opts = kiln_oci::layer::WriteOptions { compression: kiln_oci::Compression::None, source_date_epoch: None };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(format!("home/app/{}", "d".repeat(120)))).unwrap();
        for p in ["home/app/short", long.as_str(), "home/app/new"] {
            std::fs::write(dir.path().join(p), b"x").unwrap();
        }
        let entries: Vec<kiln_oci::layer::LayerEntry> = ["home/app/short", long.as_str(), "home/app/new"]
            .iter()
            .map(|p| kiln_oci::layer::LayerEntry { path: p.to_string(), source: kiln_oci::layer::EntrySource::Host(dir.path().join(p)) })
            .collect();
        let (tar, _) = kiln_oci::layer::write_layer_from_entries(entries, Vec::new(), &opts).unwrap();
        // SAFETY: no arguments.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut fixes = Fixes::default();
        fixes.owners.insert("home/app/short".into(), (1000, 1001));
        fixes.owners.insert(long.clone(), (1002, 1003));
        let mut out = Vec::new();
        map_to_root(&tar[..], &mut out, uid, gid, &fixes).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let got: Vec<(String, u64, u64)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.header().uid().unwrap(), e.header().gid().unwrap())
            })
            .collect();
        assert_eq!(got, vec![(long, 1002, 1003), ("home/app/new".into(), 0, 0), ("home/app/short".into(), 1000, 1001)]);
    }
}
