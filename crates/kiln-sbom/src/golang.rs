//! Go modules compiled into executables: the build information Go writes into every binary.
//!
//! The `.go.buildinfo` ELF section (found by [`crate::tree`]) starts with the 14-byte magic
//! `\xff Go buildinf:`, a pointer-size byte and a flags byte; since Go 1.18 (flag bit 2) the Go
//! version and the module information follow the 32-byte header inline, each as a varint length and
//! the bytes (Go's `debug/buildinfo`). The module information is text, framed by 16-byte sentinels:
//! `path`, `mod PATH VERSION SUM` (the main module), `dep PATH VERSION SUM` lines, each optionally
//! followed by `=> PATH VERSION SUM` when replaced (the replacement is what is compiled in, and what
//! we list, as syft does), and `build` settings. Binaries from Go before 1.18 (pointer format) are
//! skipped with that reason.
//!
//! Packages: the main module (version `(devel)` for a local build, as Go records it), every dep, and
//! the standard library as syft writes it (`stdlib`, version `go1.22.1`, purl
//! `pkg:golang/stdlib@1.22.1`). purls are `pkg:golang/MODULE@VERSION`.

use crate::tree::{Item, Tree};
use crate::{purl_encode, Catalog, Ecosystem, Package, Skipped};

/// What one binary's build information says: the Go version and the module text.
pub fn parse_buildinfo(data: &[u8]) -> Result<(String, String), String> {
    if data.len() < 32 || &data[..14] != crate::elf::GO_MAGIC {
        return Err("Go build info without its magic header".into());
    }
    if data[15] & 2 == 0 {
        return Err("Go build info in the pre-1.18 pointer format, which is not read".into());
    }
    let mut at = 32;
    let mut string = || -> Result<&[u8], String> {
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *data.get(at).ok_or("Go build info truncated in a length")?;
            at += 1;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("Go build info has a malformed varint".to_string());
            }
        }
        let end = at
            .checked_add(len as usize)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| format!("Go build info string of {len} bytes runs past the section"))?;
        let s = &data[at..end];
        at = end;
        Ok(s)
    };
    let version = String::from_utf8_lossy(string()?).into_owned();
    let mut modinfo = string()?;
    // The sentinels are arbitrary bytes: strip them before any UTF-8 decoding changes lengths.
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    Ok((version, String::from_utf8_lossy(modinfo).into_owned()))
}

fn module_purl(path: &str, version: &str) -> String {
    let path: Vec<String> = path.split('/').map(purl_encode).collect();
    // syft writes Go's `(devel)` with its parentheses.
    let version = purl_encode(version).replace("%28", "(").replace("%29", ")");
    format!("pkg:golang/{}@{}", path.join("/"), version)
}

pub fn catalog(tree: &Tree, out: &mut Catalog) {
    for (path, item) in tree.iter() {
        let Item::Binary(info) = item else { continue };
        let Some(data) = &info.go_buildinfo else { continue };
        let (go_version, modinfo) = match parse_buildinfo(data) {
            Ok(v) => v,
            Err(reason) => {
                out.skipped.push(Skipped { path: path.to_string(), reason });
                continue;
            }
        };
        let mut push = |name: &str, version: &str, purl: String| {
            out.packages.push(Package {
                ecosystem: Ecosystem::Go,
                name: name.to_string(),
                version: version.to_string(),
                purl,
                licenses: Vec::new(),
                found_in: path.to_string(),
            })
        };
        let go = go_version.split_whitespace().next().unwrap_or("");
        if let Some(v) = go.strip_prefix("go") {
            push("stdlib", go, format!("pkg:golang/stdlib@{}", purl_encode(v)));
        }
        // (path, version) of the dep being read, emitted when the next line is not its replacement.
        let mut pending: Option<(String, String)> = None;
        let mut main_path = None;
        let mut saw_mod = false;
        for line in modinfo.lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            if parts.first() == Some(&"mod") {
                saw_mod = true;
            }
            match parts.as_slice() {
                ["path", p] => main_path = Some(p.to_string()),
                ["=>", p, v, ..] => {
                    pending = Some((p.to_string(), v.to_string()));
                }
                [kind, p, v, ..] if *kind == "mod" || *kind == "dep" => {
                    if let Some((p, v)) = pending.take() {
                        push(&p, &v, module_purl(&p, &v));
                    }
                    pending = Some((p.to_string(), v.to_string()));
                }
                // A main module without a version (`mod PATH` from an old toolchain).
                ["mod", p] => {
                    if let Some((p, v)) = pending.take() {
                        push(&p, &v, module_purl(&p, &v));
                    }
                    pending = Some((p.to_string(), "(devel)".to_string()));
                }
                _ => {}
            }
        }
        if let Some((p, v)) = pending.take() {
            push(&p, &v, module_purl(&p, &v));
        }
        // A GOPATH-mode build (Debian's Go packages) records only `path`: syft lists that as the
        // main module, version `(devel)`, and so do we.
        if let (false, Some(p)) = (saw_mod, main_path) {
            push(&p, "(devel)", module_purl(&p, "(devel)"));
        }
    }
}

#[cfg(test)]
pub(crate) fn make_buildinfo(version: &str, modinfo: &str) -> Vec<u8> {
    let mut out = crate::elf::GO_MAGIC.to_vec();
    out.push(8);
    out.push(2);
    out.resize(32, 0);
    let mut put = |s: &[u8]| {
        let mut n = s.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(s);
    };
    put(version.as_bytes());
    // Real sentinels are not UTF-8 (Go's `debug/buildinfo` infoStart/infoEnd).
    let mut framed = b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
    framed.extend_from_slice(modinfo.as_bytes());
    framed.push(b'\n');
    framed.extend_from_slice(b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2");
    put(&framed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::BinaryInfo;

    #[test]
    fn modules_replacements_and_stdlib() {
        let modinfo = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgithub.com/pkg/errors\tv0.9.1\th1:abc=\ndep\tgolang.org/x/sys\tv0.1.0\th1:x=\n=>\tgithub.com/fork/sys\tv0.2.0\th1:y=\nbuild\t-compiler=gc";
        let mut t = Tree::default();
        t.insert(
            "/usr/bin/app",
            Item::Binary(BinaryInfo { go_buildinfo: Some(make_buildinfo("go1.22.1", modinfo)), cargo_auditable: None }),
        );
        t.insert(
            "/usr/bin/old",
            Item::Binary(BinaryInfo {
                go_buildinfo: Some({
                    let mut b = make_buildinfo("go1.16", "");
                    b[15] = 0;
                    b
                }),
                cargo_auditable: None,
            }),
        );
        t.insert(
            "/usr/bin/cut",
            Item::Binary(BinaryInfo { go_buildinfo: Some(make_buildinfo("go1.22.1", modinfo)[..40].to_vec()), cargo_auditable: None }),
        );
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let purls: Vec<_> = c.packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:golang/stdlib@1.22.1",
                "pkg:golang/example.com/app@(devel)",
                "pkg:golang/github.com/pkg/errors@v0.9.1",
                "pkg:golang/github.com/fork/sys@v0.2.0",
            ]
        );
        let reasons: Vec<_> = c.skipped.iter().map(|s| (s.path.as_str(), s.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                ("/usr/bin/cut", "Go build info string of 8 bytes runs past the section"),
                ("/usr/bin/old", "Go build info in the pre-1.18 pointer format, which is not read"),
            ]
        );
    }

    #[test]
    fn gopath_build_names_its_path_as_main_module() {
        let mut t = Tree::default();
        let info = make_buildinfo("go1.19.8", "path\tgithub.com/junegunn/fzf\nbuild\t-compiler=gc");
        t.insert("/usr/bin/fzf", Item::Binary(BinaryInfo { go_buildinfo: Some(info), cargo_auditable: None }));
        let mut c = Catalog::default();
        catalog(&t, &mut c);
        let purls: Vec<_> = c.packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(purls, ["pkg:golang/stdlib@1.19.8", "pkg:golang/github.com/junegunn/fzf@(devel)"]);
    }
}
