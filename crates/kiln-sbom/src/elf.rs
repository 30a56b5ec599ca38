//! Just enough ELF to find two sections by name: Go's `.go.buildinfo` and cargo-auditable's
//! `.dep-v0` (the ELF format: the System V ABI's "Object Files" chapter; 32- and 64-bit, either byte
//! order). Only the header, the section header table, the section-name table and the two sections are
//! read, so a file-backed scan touches a few kilobytes of each binary.

use std::fs::File;
use std::os::unix::fs::FileExt;

pub(crate) const MAGIC: [u8; 4] = *b"\x7fELF";
/// Go's build-info header magic (`debug/buildinfo`).
pub(crate) const GO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// A section larger than this is not build information (real ones are kilobytes).
const SECTION_LIMIT: u64 = 16 << 20;

/// The build information an executable carries, raw; [`crate::golang`] and [`crate::rust`] parse it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BinaryInfo {
    /// The bytes of `.go.buildinfo` (or, in a binary without section headers, from the magic on).
    pub go_buildinfo: Option<Vec<u8>>,
    /// The bytes of `.dep-v0` (zlib-compressed JSON).
    pub cargo_auditable: Option<Vec<u8>>,
}

/// Random access to a binary's bytes.
pub(crate) trait Source {
    fn len(&self) -> u64;
    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, String>;
}

pub(crate) struct FileSource<'a> {
    file: &'a File,
    len: u64,
}

impl<'a> FileSource<'a> {
    pub(crate) fn new(file: &'a File, len: u64) -> Self {
        FileSource { file, len }
    }
}

impl Source for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        check_range(offset, len, self.len)?;
        let mut buf = vec![0; len as usize];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| format!("reading {len} bytes at offset {offset}: {e}"))?;
        Ok(buf)
    }
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        check_range(offset, len, Source::len(self))?;
        Ok(self[offset as usize..(offset + len) as usize].to_vec())
    }
}

fn check_range(offset: u64, len: u64, size: u64) -> Result<(), String> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(format!("malformed ELF: {len} bytes at offset {offset} run past the end of the {size}-byte file")),
    }
}

struct Reader {
    big: bool,
}

impl Reader {
    fn u16(&self, b: &[u8], at: usize) -> u64 {
        let a = [b[at], b[at + 1]];
        (if self.big { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }) as u64
    }
    fn u32(&self, b: &[u8], at: usize) -> u64 {
        let a: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        (if self.big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }) as u64
    }
    fn u64(&self, b: &[u8], at: usize) -> u64 {
        let a: [u8; 8] = b[at..at + 8].try_into().expect("8 bytes");
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
}

/// The build information of an ELF file, `None` when it has none; `Err` says what is malformed.
pub(crate) fn inspect(src: &dyn Source) -> Result<Option<BinaryInfo>, String> {
    let header = src.read_at(0, 64.min(src.len()))?;
    if header.len() < 52 || header[..4] != MAGIC {
        return Ok(None);
    }
    let wide = match header[4] {
        1 => false,
        2 => true,
        c => return Err(format!("malformed ELF: unknown class {c}")),
    };
    let r = Reader { big: header[5] == 2 };
    if wide && header.len() < 64 {
        return Err("malformed ELF: header shorter than 64 bytes".into());
    }
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (r.u64(&header, 0x28), r.u16(&header, 0x3a), r.u16(&header, 0x3c), r.u16(&header, 0x3e))
    } else {
        (r.u32(&header, 0x20), r.u16(&header, 0x2e), r.u16(&header, 0x30), r.u16(&header, 0x32))
    };
    let mut info = BinaryInfo::default();
    if shnum == 0 || shoff == 0 {
        // No section table (stripped with sstrip, say): Go's own reader then searches the data for
        // the magic, aligned to 16 bytes, and so do we.
        if src.len() <= SECTION_LIMIT * 8 {
            let all = src.read_at(0, src.len())?;
            info.go_buildinfo = search_go_magic(&all);
        }
        return Ok(finish(info));
    }
    let min_entsize = if wide { 64 } else { 40 };
    if shentsize < min_entsize || shstrndx >= shnum {
        return Err(format!("malformed ELF: section header entries of {shentsize} bytes, name table index {shstrndx} of {shnum}"));
    }
    let table = src.read_at(shoff, shentsize * shnum)?;
    // (name offset, file offset, size, type) of section `i`.
    let section = |i: u64| {
        let at = (i * shentsize) as usize;
        if wide {
            (r.u32(&table, at), r.u64(&table, at + 0x18), r.u64(&table, at + 0x20), r.u32(&table, at + 4))
        } else {
            (r.u32(&table, at), r.u32(&table, at + 0x10), r.u32(&table, at + 0x14), r.u32(&table, at + 4))
        }
    };
    let (_, names_off, names_size, _) = section(shstrndx);
    if names_size > SECTION_LIMIT {
        return Err(format!("malformed ELF: section name table of {names_size} bytes"));
    }
    let names = src.read_at(names_off, names_size)?;
    for i in 0..shnum {
        let (name_off, off, size, kind) = section(i);
        let name = names.get(name_off as usize..).and_then(|n| n.split(|&b| b == 0).next()).unwrap_or_default();
        let slot = match name {
            b".go.buildinfo" => &mut info.go_buildinfo,
            b".dep-v0" => &mut info.cargo_auditable,
            _ => continue,
        };
        // SHT_NOBITS has no bytes in the file.
        if kind == 8 {
            continue;
        }
        if size > SECTION_LIMIT {
            return Err(format!("malformed ELF: section {} of {size} bytes", String::from_utf8_lossy(name)));
        }
        *slot = Some(src.read_at(off, size)?);
    }
    Ok(finish(info))
}

fn finish(info: BinaryInfo) -> Option<BinaryInfo> {
    (info.go_buildinfo.is_some() || info.cargo_auditable.is_some()).then_some(info)
}

fn search_go_magic(data: &[u8]) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + GO_MAGIC.len() <= data.len() {
        if &data[at..at + GO_MAGIC.len()] == GO_MAGIC {
            let end = data.len().min(at + (1 << 20));
            return Some(data[at..end].to_vec());
        }
        at += 16;
    }
    None
}

/// Test support: a minimal little-endian ELF64 file with the given named sections.
#[cfg(test)]
pub(crate) fn build_elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
    let mut names = vec![0u8];
    let mut name_offs = Vec::new();
    for (name, _) in sections {
        name_offs.push(names.len() as u32);
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    let shstrtab_name = names.len() as u32;
    names.extend_from_slice(b".shstrtab\0");
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    let mut placed = Vec::new();
    for (_, data) in sections {
        placed.push((out.len() as u64, data.len()));
        out.extend_from_slice(data);
    }
    let names_off = out.len() as u64;
    out.extend_from_slice(&names);
    while out.len() & 7 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    let shnum = sections.len() as u16 + 2;
    out.extend_from_slice(&[0u8; 64]);
    let mut entry = |name: u32, kind: u32, off: u64, size: u64| {
        let mut e = [0u8; 64];
        e[..4].copy_from_slice(&name.to_le_bytes());
        e[4..8].copy_from_slice(&kind.to_le_bytes());
        e[0x18..0x20].copy_from_slice(&off.to_le_bytes());
        e[0x20..0x28].copy_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&e);
    };
    for (i, (off, size)) in placed.iter().enumerate() {
        entry(name_offs[i], 1, *off, *size);
    }
    entry(shstrtab_name, 3, names_off, names.len() as u64);
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    out[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
    out[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sections_by_name() {
        let elf = build_elf(&[(".text", b"code"), (".dep-v0", b"zzz")]);
        let info = inspect(&elf.as_slice()).unwrap().unwrap();
        assert_eq!(info.cargo_auditable.as_deref(), Some(&b"zzz"[..]));
        assert_eq!(info.go_buildinfo, None);
    }

    #[test]
    fn plain_elf_has_nothing() {
        let elf = build_elf(&[(".text", b"code")]);
        assert_eq!(inspect(&elf.as_slice()).unwrap(), None);
    }

    #[test]
    fn truncated_elf_is_an_error_not_a_panic() {
        let elf = build_elf(&[(".dep-v0", b"zzz")]);
        for cut in [10, 52, 64, elf.len() - 8] {
            let short = &elf[..cut];
            // Either nothing or a clear error; never a panic.
            if let Err(e) = inspect(&short) {
                assert!(e.contains("malformed ELF"), "{e}");
            }
        }
        let mut bad = elf.clone();
        bad[0x3a] = 3; // section entries of 3 bytes
        assert!(inspect(&bad.as_slice()).unwrap_err().contains("section header"));
    }
}
