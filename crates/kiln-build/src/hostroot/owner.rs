//! An unprivileged `--isolation none` kiln stands for the image's root: in the layers it writes,
//! files owned by its own uid and gid are owned by 0 and 0, as a rootless build's single-id user
//! namespace would show them.
//!
//! The layer writer takes owners from `lstat`, so the tar it writes is rewritten block by block:
//! each header's ustar uid and gid fields that name kiln's ids are set to 0 and the header's
//! checksum recomputed; data blocks are copied as they are. (kiln's writer puts ids in PAX
//! records only above the ustar limit of 2097151, which an unprivileged uid mapped here never
//! reaches.)

use std::io::{self, Read, Write};

const BLOCK: usize = 512;

fn octal(field: &[u8]) -> Option<u64> {
    let s: String = field.iter().take_while(|b| **b != 0 && **b != b' ').map(|b| *b as char).collect();
    u64::from_str_radix(s.trim(), 8).ok()
}

/// Copies the tar stream `input` to `out`, giving `(uid, gid)` to root, and setting the mode of
/// the entries named in `modes` (files kiln had to make readable to write them: see
/// [`readable_for_writing`]).
pub fn map_to_root<R: Read, W: Write>(
    mut input: R,
    mut out: W,
    uid: u32,
    gid: u32,
    modes: &std::collections::HashMap<String, u32>,
) -> io::Result<()> {
    let mut block = [0u8; BLOCK];
    let mut data_left: u64 = 0;
    loop {
        match input.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if data_left > 0 {
            data_left -= 1;
            out.write_all(&block)?;
            continue;
        }
        if block.iter().all(|b| *b == 0) {
            out.write_all(&block)?;
            continue;
        }
        let size = octal(&block[124..136]).unwrap_or(0);
        data_left = size.div_ceil(BLOCK as u64);
        let kind = block[156];
        // Extension headers (PAX, GNU long names) carry no owner of their own.
        if !matches!(kind, b'x' | b'g' | b'L' | b'K') {
            for (range, id) in [(108..116, uid), (116..124, gid)] {
                if octal(&block[range.clone()]) == Some(u64::from(id)) {
                    block[range.clone()].copy_from_slice(b"0000000\0");
                }
            }
            let name = |r: std::ops::Range<usize>| String::from_utf8_lossy(&block[r]).trim_end_matches('\0').to_string();
            let (prefix, short) = (name(345..500), name(0..100));
            let full = if prefix.is_empty() { short } else { format!("{prefix}/{short}") };
            if let Some(mode) = modes.get(&full) {
                block[100..108].copy_from_slice(format!("{:07o}\0", mode & 0o7777).as_bytes());
            }
            block[148..156].copy_from_slice(b"        ");
            let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
            block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        out.write_all(&block)?;
    }
    out.flush()
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
        let mut modes = std::collections::HashMap::new();
        modes.insert("other".to_string(), 0o000);
        map_to_root(&tar[..], &mut out, 1000, 1000, &modes).unwrap();
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
}
