//! Foreign-architecture detection: which CPU an ELF binary is for, and whether the kernel can
//! run it through a `binfmt_misc` handler (QEMU user emulation).
//!
//! The kernel picks a handler by comparing the first bytes of the file, under a mask, with each
//! registered handler's magic. We do the same comparison, either against a real binary's header
//! or against a minimal header synthesised for an architecture, so the answer is the kernel's,
//! not a guess from handler names.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where the kernel exposes `binfmt_misc`.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// A CPU architecture, as OCI platforms name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    I386,
    Arm64,
    Arm,
    Riscv64,
    Ppc64le,
    S390x,
    /// Any other ELF machine number.
    Other {
        machine: u16,
        class64: bool,
        little_endian: bool,
    },
}

const EM_386: u16 = 3;
const EM_S390: u16 = 22;
const EM_PPC64: u16 = 21;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const EM_RISCV: u16 = 243;

impl Arch {
    /// The architecture this program was built for.
    pub fn host() -> Arch {
        if cfg!(target_arch = "x86_64") {
            Arch::Amd64
        } else if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else if cfg!(target_arch = "x86") {
            Arch::I386
        } else if cfg!(target_arch = "arm") {
            Arch::Arm
        } else if cfg!(target_arch = "riscv64") {
            Arch::Riscv64
        } else if cfg!(target_arch = "powerpc64") {
            Arch::Ppc64le
        } else if cfg!(target_arch = "s390x") {
            Arch::S390x
        } else {
            Arch::Other { machine: 0, class64: cfg!(target_pointer_width = "64"), little_endian: cfg!(target_endian = "little") }
        }
    }

    /// From an OCI platform architecture (`amd64`, `arm64`, `arm`, `386`, ...).
    pub fn from_oci(name: &str) -> Option<Arch> {
        Some(match name {
            "amd64" => Arch::Amd64,
            "386" => Arch::I386,
            "arm64" => Arch::Arm64,
            "arm" => Arch::Arm,
            "riscv64" => Arch::Riscv64,
            "ppc64le" => Arch::Ppc64le,
            "s390x" => Arch::S390x,
            _ => return None,
        })
    }

    /// The OCI platform name.
    pub fn oci_name(&self) -> String {
        match self {
            Arch::Amd64 => "amd64".into(),
            Arch::I386 => "386".into(),
            Arch::Arm64 => "arm64".into(),
            Arch::Arm => "arm".into(),
            Arch::Riscv64 => "riscv64".into(),
            Arch::Ppc64le => "ppc64le".into(),
            Arch::S390x => "s390x".into(),
            Arch::Other { machine, .. } => format!("elf-machine-{machine}"),
        }
    }

    /// QEMU's name for it, as in `qemu-aarch64` and `update-binfmts --enable qemu-aarch64`.
    pub fn qemu_name(&self) -> String {
        match self {
            Arch::Amd64 => "x86_64".into(),
            Arch::I386 => "i386".into(),
            Arch::Arm64 => "aarch64".into(),
            Arch::Arm => "arm".into(),
            Arch::Riscv64 => "riscv64".into(),
            Arch::Ppc64le => "ppc64le".into(),
            Arch::S390x => "s390x".into(),
            Arch::Other { machine, .. } => format!("elf-machine-{machine}"),
        }
    }

    /// (64-bit, little-endian, e_machine)
    fn elf_ident(&self) -> (bool, bool, u16) {
        match *self {
            Arch::Amd64 => (true, true, EM_X86_64),
            Arch::I386 => (false, true, EM_386),
            Arch::Arm64 => (true, true, EM_AARCH64),
            Arch::Arm => (false, true, EM_ARM),
            Arch::Riscv64 => (true, true, EM_RISCV),
            Arch::Ppc64le => (true, true, EM_PPC64),
            Arch::S390x => (true, false, EM_S390),
            Arch::Other { machine, class64, little_endian } => (class64, little_endian, machine),
        }
    }

    /// The first 20 bytes of an executable for this architecture, enough for binfmt matching.
    pub fn synthetic_header(&self) -> [u8; 20] {
        let (class64, le, machine) = self.elf_ident();
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if class64 { 2 } else { 1 };
        h[5] = if le { 1 } else { 2 };
        h[6] = 1;
        let (e_type, e_machine) =
            if le { (2u16.to_le_bytes(), machine.to_le_bytes()) } else { (2u16.to_be_bytes(), machine.to_be_bytes()) };
        h[16..18].copy_from_slice(&e_type);
        h[18..20].copy_from_slice(&e_machine);
        h
    }

    /// Whether this host's CPU runs `self` without emulation.
    pub fn runs_natively_on(&self, host: Arch) -> bool {
        *self == host || (host == Arch::Amd64 && *self == Arch::I386)
    }
}

/// Reads the architecture from the start of an ELF file; `None` when it is not ELF.
pub fn elf_arch(header: &[u8]) -> Option<Arch> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match header[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little_endian = match header[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let m = [header[18], header[19]];
    let machine = if little_endian { u16::from_le_bytes(m) } else { u16::from_be_bytes(m) };
    Some(match (machine, class64, little_endian) {
        (EM_X86_64, true, true) => Arch::Amd64,
        (EM_386, false, true) => Arch::I386,
        (EM_AARCH64, true, true) => Arch::Arm64,
        (EM_ARM, false, true) => Arch::Arm,
        (EM_RISCV, true, true) => Arch::Riscv64,
        (EM_PPC64, true, true) => Arch::Ppc64le,
        (EM_S390, true, false) => Arch::S390x,
        _ => Arch::Other { machine, class64, little_endian },
    })
}

/// The architecture of the binary at `path`, or `None` when it is not ELF (a script, say).
pub fn binary_arch(path: &Path) -> Result<Option<Arch>, ArchError> {
    Ok(elf_arch(&read_header(path)?))
}

fn read_header(path: &Path) -> Result<Vec<u8>, ArchError> {
    let io = |source| ArchError::Read { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 128];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).map_err(io)? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// A registered, enabled `binfmt_misc` handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinfmtHandler {
    /// The entry name, e.g. `qemu-aarch64`.
    pub name: String,
    pub interpreter: PathBuf,
    /// Flag `F`: the interpreter was opened at registration, so it need not exist inside the
    /// root. Without it, the interpreter path must be present in the sandbox.
    pub fix_binary: bool,
}

#[derive(Debug, Error)]
pub enum ArchError {
    #[error("cannot read {path} to tell its architecture: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot run linux/{arch} binaries on this linux/{host} host: {reason}. \
         Install QEMU user emulation (`apt-get install qemu-user-static binfmt-support`), \
         then enable it with `update-binfmts --enable qemu-{qemu}`"
    )]
    NoEmulator { arch: String, host: String, qemu: String, reason: String },
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

struct Entry {
    enabled: bool,
    interpreter: PathBuf,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Option<Vec<u8>>,
}

fn parse_entry(text: &str) -> Option<Entry> {
    let mut e = Entry { enabled: false, interpreter: PathBuf::new(), flags: String::new(), offset: 0, magic: Vec::new(), mask: None };
    for line in text.lines() {
        let line = line.trim();
        if line == "enabled" {
            e.enabled = true;
        } else if let Some(v) = line.strip_prefix("interpreter ") {
            e.interpreter = PathBuf::from(v.trim());
        } else if let Some(v) = line.strip_prefix("flags:") {
            e.flags = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("offset ") {
            e.offset = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("magic ") {
            e.magic = parse_hex(v)?;
        } else if let Some(v) = line.strip_prefix("mask ") {
            e.mask = Some(parse_hex(v)?);
        }
    }
    // Extension-matched entries have no magic; they cannot match an ELF header.
    (!e.magic.is_empty()).then_some(e)
}

fn matches(e: &Entry, header: &[u8]) -> bool {
    let Some(window) = header.get(e.offset..e.offset + e.magic.len()) else {
        return false;
    };
    window.iter().zip(&e.magic).enumerate().all(|(i, (h, m))| {
        let mask = e.mask.as_ref().and_then(|k| k.get(i)).copied().unwrap_or(0xff);
        h & mask == m & mask
    })
}

/// Finds the handler the kernel would use for a file starting with `header`. `Ok(None)` when no
/// entry matches; `Err(reason)` when `binfmt_misc` itself is unusable or the match is disabled.
fn find_handler(binfmt_dir: &Path, header: &[u8]) -> Result<Option<BinfmtHandler>, String> {
    let status = match std::fs::read_to_string(binfmt_dir.join("status")) {
        Ok(s) => s,
        Err(_) => {
            return Err(format!(
                "binfmt_misc is not mounted at {} (mount it with `mount -t binfmt_misc binfmt_misc {}`)",
                binfmt_dir.display(),
                binfmt_dir.display()
            ))
        }
    };
    if status.trim() != "enabled" {
        return Err(format!("binfmt_misc is disabled (enable it with `echo 1 > {}/status`)", binfmt_dir.display()));
    }
    let mut entries: Vec<_> =
        std::fs::read_dir(binfmt_dir).map_err(|e| format!("cannot list {}: {e}", binfmt_dir.display()))?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    let mut disabled = None;
    for de in entries {
        let name = de.file_name().to_string_lossy().into_owned();
        if name == "status" || name == "register" {
            continue;
        }
        let Some(entry) = std::fs::read_to_string(de.path()).ok().and_then(|t| parse_entry(&t)) else {
            continue;
        };
        if !matches(&entry, header) {
            continue;
        }
        if !entry.enabled {
            disabled.get_or_insert(name);
            continue;
        }
        if !entry.flags.contains('F') {
            tracing::warn!(handler = %name, interpreter = %entry.interpreter.display(),
                "binfmt handler lacks the F flag: its interpreter must exist inside the root");
        }
        return Ok(Some(BinfmtHandler { name, fix_binary: entry.flags.contains('F'), interpreter: entry.interpreter }));
    }
    match disabled {
        Some(name) => Err(format!("the binfmt_misc handler {name} is registered but disabled")),
        None => Ok(None),
    }
}

/// Checks that binaries for `arch` can run here: natively (`Ok(None)`) or through an enabled
/// `binfmt_misc` handler (`Ok(Some(handler))`). `binfmt_dir` is normally [`BINFMT_DIR`].
pub fn ensure_runnable(arch: Arch, binfmt_dir: &Path) -> Result<Option<BinfmtHandler>, ArchError> {
    check_header(arch, &arch.synthetic_header(), binfmt_dir)
}

/// Like [`ensure_runnable`] for the binary at `path`, matched by its real header. Files that are
/// not ELF (scripts) are `Ok(None)`: their interpreter is what gets checked.
pub fn ensure_binary_runnable(path: &Path, binfmt_dir: &Path) -> Result<Option<BinfmtHandler>, ArchError> {
    let header = read_header(path)?;
    match elf_arch(&header) {
        None => Ok(None),
        Some(arch) => check_header(arch, &header, binfmt_dir),
    }
}

fn check_header(arch: Arch, header: &[u8], binfmt_dir: &Path) -> Result<Option<BinfmtHandler>, ArchError> {
    let host = Arch::host();
    if arch.runs_natively_on(host) {
        return Ok(None);
    }
    let no = |reason: String| ArchError::NoEmulator { arch: arch.oci_name(), host: host.oci_name(), qemu: arch.qemu_name(), reason };
    match find_handler(binfmt_dir, header) {
        Ok(Some(h)) => Ok(Some(h)),
        Ok(None) => Err(no(format!("no binfmt_misc handler in {} matches {} executables", binfmt_dir.display(), arch.qemu_name()))),
        Err(reason) => Err(no(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn fake_binfmt(entries: &[(&str, &str)], status: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("status"), status).unwrap();
        std::fs::write(d.path().join("register"), "").unwrap();
        for (n, t) in entries {
            std::fs::write(d.path().join(n), t).unwrap();
        }
        d
    }

    fn foreign() -> Arch {
        if Arch::host() == Arch::Arm64 {
            Arch::S390x
        } else {
            Arch::Arm64
        }
    }

    #[test]
    fn host_binaries_are_the_host_arch() {
        for p in ["/bin/busybox", "/bin/sh", "/proc/self/exe"] {
            let path = Path::new(p);
            if !path.exists() {
                continue;
            }
            let arch = binary_arch(path).unwrap();
            assert_eq!(arch, Some(Arch::host()), "{p}");
            assert_eq!(ensure_binary_runnable(path, Path::new(BINFMT_DIR)).unwrap(), None);
        }
    }

    #[test]
    fn scripts_are_not_elf() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("script");
        std::fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(binary_arch(&p).unwrap(), None);
        assert_eq!(ensure_binary_runnable(&p, Path::new("/nonexistent")).unwrap(), None);
    }

    #[test]
    fn synthetic_headers_round_trip() {
        for a in [Arch::Amd64, Arch::I386, Arch::Arm64, Arch::Arm, Arch::Riscv64, Arch::Ppc64le, Arch::S390x] {
            assert_eq!(elf_arch(&a.synthetic_header()), Some(a));
            assert_eq!(Arch::from_oci(&a.oci_name()), Some(a));
        }
        assert_eq!(elf_arch(b"not an elf file at all"), None);
        assert_eq!(elf_arch(b"\x7fELF"), None);
    }

    #[test]
    fn enabled_matching_handler_is_found_by_magic() {
        // Named oddly on purpose: matching is by magic, not by name.
        let d = fake_binfmt(&[("zz-arm-emu", QEMU_AARCH64)], "enabled\n");
        let h = ensure_runnable(Arch::Arm64, d.path());
        if Arch::host() == Arch::Arm64 {
            assert_eq!(h.unwrap(), None);
            return;
        }
        let h = h.unwrap().unwrap();
        assert_eq!(h.name, "zz-arm-emu");
        assert!(h.fix_binary);
        // A real aarch64 header with a different OS ABI byte (masked out) matches too.
        let mut hdr = Arch::Arm64.synthetic_header().to_vec();
        hdr[7] = 3;
        hdr[16] = 3; // ET_DYN, allowed by the mask
        hdr.resize(64, 0);
        let f = d.path().join("bin");
        std::fs::write(&f, &hdr).unwrap();
        assert!(ensure_binary_runnable(&f, d.path()).unwrap().is_some());
        // But not an s390x one.
        let err = ensure_runnable(Arch::S390x, d.path()).unwrap_err().to_string();
        assert!(err.contains("update-binfmts --enable qemu-s390x"), "{err}");
    }

    #[test]
    fn missing_or_disabled_emulation_names_the_fix() {
        let a = foreign();
        let d = fake_binfmt(&[], "enabled\n");
        let err = ensure_runnable(a, d.path()).unwrap_err().to_string();
        assert!(err.contains("qemu-user-static"), "{err}");
        assert!(err.contains("binfmt-support"), "{err}");
        assert!(err.contains(&format!("update-binfmts --enable qemu-{}", a.qemu_name())), "{err}");

        let disabled = QEMU_AARCH64.replacen("enabled", "disabled", 1);
        let d = fake_binfmt(&[("qemu-aarch64", &disabled)], "enabled\n");
        if a == Arch::Arm64 {
            let err = ensure_runnable(a, d.path()).unwrap_err().to_string();
            assert!(err.contains("registered but disabled"), "{err}");
        }

        let d = fake_binfmt(&[("qemu-aarch64", QEMU_AARCH64)], "disabled\n");
        let err = ensure_runnable(a, d.path()).unwrap_err().to_string();
        assert!(err.contains("binfmt_misc is disabled"), "{err}");

        let err = ensure_runnable(a, Path::new("/nonexistent/binfmt")).unwrap_err().to_string();
        assert!(err.contains("not mounted"), "{err}");
    }

    #[test]
    fn host_arch_never_needs_emulation() {
        assert_eq!(ensure_runnable(Arch::host(), Path::new("/nonexistent")).unwrap(), None);
    }
}
