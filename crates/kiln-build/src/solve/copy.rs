//! COPY/ADD execution (and WORKDIR's directory): the planned sources made into `copy::Source`s
//! (context paths, a read-only mount of the `--from` stage or image, heredoc files, downloads) and
//! copied into the step's root through the one safe path resolver.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::{Copy, CopySource, Instruction, Step};
use kiln_oci::Digest;

use super::plan::{context_entries, is_url, CopyItem, CopyPlan};
use super::{at, lookup_user, Solver};
use crate::context::{Entry, Kind};
use crate::copy::{Attrs, SourceRoot};
use crate::error::{BuildError, FetchError, Refusal, StepFailure};
use crate::snapshot::{remove_tree, Mounted};
use crate::state::{ImageState, LayerRef};

/// ADD's URLs, downloaded before the step is planned (their content is in the key); each in a temp
/// dir removed when this is dropped.
#[derive(Default)]
pub(super) struct Downloads {
    files: Vec<Download>,
}

struct Download {
    url: String,
    dir: PathBuf,
    name: String,
    digest: Digest,
}

impl Downloads {
    /// Each URL's content digest, for [`super::plan::PlanContext::urls`].
    pub(super) fn digests(&self) -> HashMap<String, Digest> {
        self.files.iter().rev().map(|d| (d.url.clone(), d.digest.clone())).collect()
    }

    fn get(&self, url: &str) -> Option<&Download> {
        self.files.iter().find(|d| d.url == url)
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        for d in &self.files {
            remove_tree(&d.dir);
        }
    }
}

impl Solver<'_> {
    /// Downloads the URLs an ADD step names (none for any other step).
    pub(super) fn download(&mut self, step: &Step) -> Result<Downloads, BuildError> {
        let mut downloads = Downloads::default();
        let Instruction::Copy(c) = &step.instruction else { return Ok(downloads) };
        for s in c.sources.iter().filter(|_| c.add) {
            let CopySource::Path(p) = s else { continue };
            if !is_url(p) {
                continue;
            }
            let dir = self.snaps.temp_dir("add-url")?;
            let name = url_file_name(p);
            let digest = match fetch_url(p, &dir.join(&name)) {
                Ok(d) => d,
                Err(source) => {
                    remove_tree(&dir);
                    return Err(BuildError::failed(at(&step.location), StepFailure::Fetch { url: p.clone(), source }));
                }
            };
            downloads.files.push(Download { url: p.clone(), dir, name, digest });
        }
        Ok(downloads)
    }

    /// Copies a planned COPY/ADD into `mounted`; `from` is the `--from` source's layers.
    pub(super) fn exec_copy(
        &mut self,
        step: &Step,
        plan: &CopyPlan<'_>,
        from: Option<&[LayerRef]>,
        downloads: &Downloads,
        mounted: &Mounted,
        state: &ImageState,
    ) -> Result<(), BuildError> {
        let c = plan.copy;
        let wd = state.workdir();
        let dest = if c.dest.starts_with('/') { c.dest.clone() } else { format!("{}/{}", wd.trim_end_matches('/'), c.dest) };
        let attrs = copy_attrs(step, c, &mounted.merged)?;
        let many = plan.items.len() > 1;
        let dest_is_dir = c.dest.ends_with('/') || many;
        // Sources from another stage or image are read from a read-only overlay of its layers.
        let src_mount = match from {
            Some(layers) => Some(self.mount_layers(layers, false)?),
            None => None,
        };
        let tmp_heredocs = self.snaps.temp_dir("heredoc")?;
        let result = write_heredocs(step, plan, &tmp_heredocs).and_then(|heredoc_dirs| {
            let sources = self.copy_sources(step, plan, src_mount.as_ref(), &heredoc_dirs, downloads, &mounted.merged, &dest)?;
            crate::copy::copy_into(&mounted.merged, &sources, &dest, dest_is_dir, attrs)
        });
        remove_tree(&tmp_heredocs);
        drop(src_mount);
        result
    }

    /// The planned items as sources to copy; an ADD of a local archive is unpacked into `dest` here
    /// instead.
    #[allow(clippy::too_many_arguments)]
    fn copy_sources<'x>(
        &'x self,
        step: &Step,
        plan: &CopyPlan<'_>,
        src_mount: Option<&'x Mounted>,
        heredoc_dirs: &'x [PathBuf],
        downloads: &'x Downloads,
        root: &Path,
        dest: &str,
    ) -> Result<Vec<crate::copy::Source<'x>>, BuildError> {
        let c = plan.copy;
        let one = |dir: &'x Path, name: &str, kind: Kind, mode: u32| crate::copy::Source {
            root: SourceRoot { dir, keep_owner: false },
            rel: name.to_string(),
            entries: vec![Entry { rel: name.to_string(), kind, mode, uid: 0, gid: 0 }],
            parents: false,
        };
        let context = self.copy_context(step);
        let mut sources = Vec::new();
        for (i, item) in plan.items.iter().enumerate() {
            match item {
                CopyItem::Context(rel) => {
                    let entries = context_entries(context, rel, c)?;
                    if c.add && entries.len() == 1 && c.unpack != Some(false) {
                        let host = context.host_path(rel);
                        if is_archive(&host) {
                            unpack_into(root, dest, &host, &format!("ADD {rel}")).map_err(|f| BuildError::failed(at(&step.location), f))?;
                            continue;
                        }
                    }
                    sources.push(crate::copy::Source {
                        root: SourceRoot { dir: context.root(), keep_owner: false },
                        rel: rel.clone(),
                        entries,
                        parents: c.parents,
                    });
                }
                CopyItem::Stage(p) => {
                    let Some(m) = src_mount else { continue };
                    let (_, entries) = crate::copy::walk_root(&m.merged, p.trim_start_matches('/')).map_err(|err| {
                        BuildError::failed(at(&step.location), StepFailure::Build { what: "COPY --from".into(), source: Box::new(err) })
                    })?;
                    let rel = entries.first().map(|x| x.rel.clone()).unwrap_or_default();
                    sources.push(crate::copy::Source {
                        root: SourceRoot { dir: &m.merged, keep_owner: true },
                        rel,
                        entries,
                        parents: false,
                    });
                }
                CopyItem::Url(url) => {
                    let d = downloads
                        .get(url)
                        .ok_or_else(|| BuildError::refused(at(&step.location), Refusal::AddNotDownloaded { url: url.clone() }))?;
                    let meta = fs::metadata(d.dir.join(&d.name))
                        .map_err(|source| BuildError::failed(at(&step.location), StepFailure::Io { what: String::new(), source }))?;
                    sources.push(one(&d.dir, &d.name, Kind::File { size: meta.len() }, 0o600));
                }
                CopyItem::Heredoc(name, content) => {
                    sources.push(one(&heredoc_dirs[i], name, Kind::File { size: content.len() as u64 }, 0o644));
                }
            }
        }
        Ok(sources)
    }

    /// WORKDIR creates the directory, owned by the current USER as BuildKit does.
    pub(super) fn exec_workdir(&mut self, step: &Step, dir: &str, user: &str, mounted: &Mounted) -> Result<(), BuildError> {
        let e = |f: StepFailure| BuildError::failed(at(&step.location), f);
        let root =
            kiln_oci::fsroot::RootDir::open(&mounted.merged).map_err(|source| e(StepFailure::Root { what: String::new(), source }))?;
        let mut attrs = Attrs::default();
        if !user.is_empty() {
            let id = lookup_user(&mounted.merged, user).map_err(|source| e(StepFailure::User { what: format!("USER {user}"), source }))?;
            attrs.chown = Some((id.uid, id.gid));
        }
        crate::copy::make_dirs(&root, Path::new(dir), attrs)
    }
}

/// `--chown` (looked up in the root being written) and `--chmod`.
fn copy_attrs(step: &Step, c: &Copy, root: &Path) -> Result<Attrs, BuildError> {
    let mut attrs = Attrs::default();
    if let Some(ch) = &c.chown {
        let id = lookup_user(root, ch)
            .map_err(|source| BuildError::failed(at(&step.location), StepFailure::User { what: format!("--chown={ch}"), source }))?;
        attrs.chown = Some((id.uid, id.gid));
    }
    if let Some(m) = &c.chmod {
        attrs.chmod =
            Some(u32::from_str_radix(m, 8).map_err(|_| BuildError::refused(at(&step.location), Refusal::Chmod { mode: m.clone() }))?);
    }
    Ok(attrs)
}

/// Heredoc bodies become files in a temp dir first (one dir per item), so the sources can borrow it.
fn write_heredocs(step: &Step, plan: &CopyPlan<'_>, tmp: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let e = |source: std::io::Error| BuildError::failed(at(&step.location), StepFailure::Io { what: String::new(), source });
    for (i, item) in plan.items.iter().enumerate() {
        if let CopyItem::Heredoc(name, content) = item {
            let d = tmp.join(i.to_string());
            fs::create_dir_all(&d).map_err(e)?;
            fs::write(d.join(name), content).map_err(e)?;
        }
    }
    Ok((0..plan.items.len()).map(|i| tmp.join(i.to_string())).collect())
}

/// The file name an ADD of `url` gets: the last path segment, or `index.html` for a bare host.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    match after_host.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
        _ => "index.html".to_string(),
    }
}

/// Streams `url` to `dest`, returning the content's sha256. Redirects are followed; a non-2xx
/// answer is an error naming the status.
fn fetch_url(url: &str, dest: &Path) -> Result<Digest, FetchError> {
    let resp =
        ureq::AgentBuilder::new().timeout_connect(std::time::Duration::from_secs(30)).redirects(10).build().get(url).call().map_err(
            |e| match e {
                ureq::Error::Status(code, r) => FetchError::Status { code, text: r.status_text().to_string() },
                other => FetchError::Request(Box::new(other)),
            },
        )?;
    let write_err = |source| FetchError::Write { path: dest.to_path_buf(), source };
    let f = fs::File::create(dest).map_err(write_err)?;
    let mut w = kiln_oci::DigestWriter::new(std::io::BufWriter::new(f));
    std::io::copy(&mut resp.into_reader(), &mut w).map_err(FetchError::BrokeOff)?;
    let (mut inner, digest, _) = w.finish();
    std::io::Write::flush(&mut inner).map_err(FetchError::Finish)?;
    // Docker: files fetched by ADD are 0600.
    fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(FetchError::Finish)?;
    Ok(digest)
}

/// ADD's archive test: a tar, maybe compressed (gzip, zstd), recognised by content, not by name.
fn is_archive(p: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = fs::File::open(p) else { return false };
    let Ok(mut r) = kiln_oci::layer::decompress(std::io::BufReader::new(f)) else { return false };
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got == 512 && &head[257..262] == b"ustar"
}

/// Unpacks `archive` into `dest` inside `root`; a failure says `what` (`ADD x.tar`) and keeps its cause.
fn unpack_into(root: &Path, dest: &str, archive: &Path, what: &str) -> Result<(), StepFailure> {
    let root_err = |source| StepFailure::Root { what: what.to_string(), source };
    let io_err = |source| StepFailure::Io { what: what.to_string(), source };
    let rootdir = kiln_oci::fsroot::RootDir::open(root).map_err(root_err)?;
    let r = rootdir.resolve(Path::new(dest), true, kiln_oci::fsroot::Missing::Create).map_err(root_err)?;
    if !r.host_path.exists() {
        fs::create_dir(&r.host_path).map_err(io_err)?;
    }
    let f = fs::File::open(archive).map_err(io_err)?;
    let report = kiln_oci::layer::apply_layer(std::io::BufReader::new(f), &r.host_path, &kiln_oci::layer::ApplyOptions::default())
        .map_err(|source| StepFailure::Layer { what: what.to_string(), source })?;
    // Not root (only `--isolation none` as an ordinary user gets here): owners were not kept.
    if let (count, Some(first)) = report.owners_lost() {
        return Err(StepFailure::Refused(crate::error::Refusal::OwnersLost { what: what.to_string(), count, first }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn unpacking_a_missing_archive_keeps_the_io_error_and_says_which_add() {
        let root = tempfile::tempdir().unwrap();
        let f = unpack_into(root.path(), "/dst", &root.path().join("no-such.tar"), "ADD no-such.tar").unwrap_err();
        assert!(f.to_string().starts_with("ADD no-such.tar: "), "{f}");
        let io = f.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error as source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        let e = BuildError::failed("Dockerfile:9", f);
        assert!(e.to_string().starts_with("Dockerfile:9: ADD no-such.tar: "), "{e}");
    }
}
