//! Build failures. Each says what failed, where (Dockerfile file:line for a step), and what to do.
//!
//! Every message includes its cause, so an error flattened with `to_string()` still says why; a
//! printer that walks `source()` (the CLI) skips a cause whose text is already in the message, so
//! nothing is said twice.

use std::io;
use std::path::PathBuf;

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    NamedContext(#[from] crate::named_context::NamedContextError),
    #[error(transparent)]
    Parse(#[from] kiln_dockerfile::ParseError),
    #[error(transparent)]
    Instruction(#[from] kiln_dockerfile::instructions::InstructionError),
    /// A step failed (boxed: a failure carries its typed cause, and most results never fail).
    #[error(transparent)]
    Step(Box<StepError>),
    /// `--isolation none` cannot build here (not in a container, or its root cannot be reset).
    #[error(transparent)]
    HostRoot(#[from] crate::hostroot::HostRootError),
    #[error("cannot read the Dockerfile {}: {source}", path.display())]
    Dockerfile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] kiln_oci::StoreError),
    #[error("attestations: {0}")]
    Attest(#[from] kiln_attest::LayoutError),
    /// An SBOM option BuildKit has and kiln does not (refused before anything runs).
    #[error("{0}")]
    SbomUnsupported(String),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        #[source]
        source: kiln_oci::layer::LayerError,
    },
    #[error("snapshot: {0}")]
    Snapshot(#[source] SnapshotError),
    #[error("base image {reference}: {source}")]
    Base {
        reference: String,
        #[source]
        source: BaseFailure,
    },
    /// An image `kiln run` was asked for could not be found or pulled.
    #[error("image {reference}: {source}")]
    Image {
        reference: String,
        #[source]
        source: BaseFailure,
    },
    /// `COPY --from`'s source path is not in the other stage's or image's root.
    #[error("\"{rel}\": not found in the source image ({source})")]
    NotInImage {
        rel: String,
        #[source]
        source: kiln_oci::fsroot::RootError,
    },
    /// `COPY --exclude` patterns that do not parse.
    #[error("--exclude: {0}")]
    Exclude(#[source] kiln_dockerfile::dockerignore::IgnoreError),
    /// `kiln run` could not pull its image; `had` says what was tried first (ends in "; and " or
    /// is "not in the local store, and ", or empty).
    #[error("image {image}: {had}pulling it failed: {source}")]
    Pull {
        image: String,
        had: String,
        #[source]
        source: Box<kiln_registry::RegistryError>,
    },
    /// A failure given again: a base image is looked up once per build however often it is named,
    /// and its failure is shared by every mention.
    #[error(transparent)]
    Again(std::sync::Arc<BuildError>),
    /// The sandbox for `kiln run` could not be set up, or its command could not be run.
    #[error("{}{source}", prefix(image))]
    Run {
        image: String,
        #[source]
        source: kiln_sandbox::Error,
    },
    /// An output cannot be written as asked (see [`crate::output`]).
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// The build context, or a file in it, cannot be used.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A `.dockerignore` that does not parse.
    #[error("{}: {source}", path.display())]
    Dockerignore {
        path: PathBuf,
        #[source]
        source: kiln_dockerfile::dockerignore::IgnoreError,
    },
    /// A COPY/ADD destination runs through something that is not a directory.
    #[error("cannot copy to {}: {} is not a directory", dest.display(), component.display())]
    CopyDestination { dest: PathBuf, component: PathBuf },
    /// The sandbox could not be prepared before the first RUN.
    #[error("cannot prepare the sandbox: {0}")]
    SandboxSetup(#[source] kiln_sandbox::Error),
    /// A thread of kiln's own panicked (a bug in kiln); `what` names the work it was doing.
    #[error("{what} panicked")]
    Panicked { what: &'static str },
    /// The stage asked for was not among the stages built (a bug in kiln's stage selection).
    #[error("the target stage {target:?} was not built")]
    TargetNotBuilt { target: String },
    /// `kiln run` cannot run the image as asked.
    #[error(transparent)]
    RunImage(#[from] RunRefusal),
    /// `--test CMD` did not succeed on a platform: nothing was tagged, exported or pushed.
    #[error("--test {command:?} failed on {platform} ({status}); nothing was tagged, exported or pushed")]
    TestFailed { command: String, platform: String, status: kiln_sandbox::ExitStatus },
    /// A `--cache-to` that was asked not to ignore errors (`ignore-error=false`) failed.
    #[error("output --cache-to {sink}: {source} (ignore-error=false was asked for)")]
    CacheExport {
        sink: String,
        #[source]
        source: Box<kiln_cache::CacheError>,
    },
    /// Pushing to a registry failed.
    #[error("output push {target}: {source}")]
    Push {
        target: String,
        #[source]
        source: Box<PushFailure>,
    },
    /// A step failed for a reason that is not the step's own (a full disk, a store error): the
    /// step's place and text, then the cause.
    #[error("{at}: {step}: {source}")]
    InStep {
        at: String,
        step: String,
        #[source]
        source: Box<BuildError>,
    },
    /// The build was cancelled (a signal); what finished is kept (see [`crate::Cancel`]).
    #[error("build cancelled: {kept}")]
    Cancelled { kept: String },
}

/// Why the build context (or a file in it) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("the build context {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// `rel` is relative to the context.
    #[error("{0}: a symlink in the build context points outside it")]
    SymlinkOutside(String),
    #[error("{0}: only files, directories and symlinks can be copied")]
    UnsupportedType(String),
}

/// Why `kiln run` cannot run an image.
#[derive(Debug, thiserror::Error)]
pub enum RunRefusal {
    /// Not in the store, and the pull policy (`how`, e.g. " (--pull never)") forbids pulling.
    #[error(
        "image {image} is not in the local store{how}; pull it (kiln pull {image}), or run without --pull never to let kiln run pull it"
    )]
    NotInStore { image: String, how: String },
    /// `kiln.local/…` names are made by builds and imports, never pulled.
    #[error("image {image} is not in the local store, and kiln.local names are never pulled: build it, or import it with `kiln import ROOTFS.tar -t {image}`")]
    LocalNameMissing { image: String },
    #[error("{image} has no ENTRYPOINT or CMD: give a command, e.g. `kiln run {image} -- sh`")]
    NoCommand { image: String },
}

/// Why a push failed: the registry's answer, or a manifest or layer kiln could not send.
#[derive(Debug, thiserror::Error)]
pub enum PushFailure {
    #[error(transparent)]
    Registry(#[from] kiln_registry::RegistryError),
    #[error(transparent)]
    Manifest(#[from] kiln_oci::ManifestError),
    #[error("layer {0} is neither in the local store nor in a known cache repository")]
    LayerNowhere(kiln_oci::Digest),
}

impl BuildError {
    /// Places an error in the step it happened in, unless it already says where (or is a cancel).
    pub(crate) fn in_step(self, at: &str, step: &str) -> BuildError {
        match self {
            e @ (BuildError::Step(_) | BuildError::InStep { .. } | BuildError::Cancelled { .. }) => e,
            e => BuildError::InStep { at: at.to_string(), step: step.to_string(), source: Box::new(e) },
        }
    }

    /// A step refused by a check of kiln's own (see [`StepFailure::Refused`]).
    pub(crate) fn refused(at: impl std::fmt::Display, refusal: Refusal) -> BuildError {
        BuildError::failed(at, StepFailure::Refused(refusal))
    }

    /// A step failed at `at` (`file:line`) the way `failure` says.
    pub(crate) fn failed(at: impl std::fmt::Display, failure: StepFailure) -> BuildError {
        BuildError::Step(Box::new(StepError { at: at.to_string(), failure }))
    }
}

/// A step that failed: where (`file:line` in the Dockerfile) and how. Its `source()` is the
/// [`StepFailure`], whose own `source()` is the typed cause, if there is one.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {failure}")]
pub struct StepError {
    pub at: String,
    #[source]
    pub failure: StepFailure,
}

/// How a step failed. Each variant that has a cause keeps it as its `source()`; `what` is the
/// part of the step it was doing (`--chown=app`, `ADD x.tar`), empty when the step says enough.
#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    /// A check kiln makes itself (a required secret not given, a bad flag value, a stage not
    /// built): the [`Refusal`] is the whole story, there is no cause underneath. It is the
    /// `source()` too, so a caller walking the chain can downcast to it.
    #[error("{0}")]
    Refused(#[source] Refusal),
    /// A base image's `ONBUILD` trigger does not parse.
    #[error("ONBUILD trigger {trigger:?} of {image}: {source}")]
    OnBuild {
        trigger: String,
        image: String,
        #[source]
        source: Box<BuildError>,
    },
    /// RUN's command ran and did not succeed; `tail` is its last lines of output.
    #[error("{}", exited(text, status, command, tail))]
    Exited { text: String, status: kiln_sandbox::ExitStatus, command: String, tail: Vec<String> },
    /// RUN's command could not be run (namespaces, mounts, exec).
    #[error("{text}: {source}")]
    Sandbox {
        text: String,
        #[source]
        source: kiln_sandbox::Error,
    },
    /// A foreign platform's binaries cannot run here (no binfmt_misc handler).
    #[error("cannot run {platform} binaries: {source}")]
    Emulation {
        platform: String,
        #[source]
        source: kiln_sandbox::arch::ArchError,
    },
    /// A user or group name not found in the image (`--chown`, `USER`).
    #[error("{}{source}", prefix(what))]
    User {
        what: String,
        #[source]
        source: kiln_sandbox::user::UserError,
    },
    /// A path that would leave the root file system, or cannot be resolved in it.
    #[error("{}{source}", prefix(what))]
    Root {
        what: String,
        #[source]
        source: kiln_oci::fsroot::RootError,
    },
    #[error("{}{source}", prefix(what))]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{}{source}", prefix(what))]
    Platform {
        what: String,
        #[source]
        source: kiln_oci::PlatformError,
    },
    /// An archive that ADD unpacks could not be applied.
    #[error("{}{source}", prefix(what))]
    Layer {
        what: String,
        #[source]
        source: kiln_oci::layer::LayerError,
    },
    /// A COPY source names nothing in the build context.
    #[error("COPY failed: {0}")]
    Source(#[source] SourceMiss),
    /// ADD could not download `url`.
    #[error("ADD {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    /// Something the step needed failed on its own (a base image, a walk of another stage's root).
    #[error("{}{source}", prefix(what))]
    Build {
        what: String,
        #[source]
        source: Box<BuildError>,
    },
}

/// A step kiln refuses by a check of its own: an option it does not support, a value that
/// cannot be used, or something the build should have given it. Nothing fails underneath, so
/// none has a `source()`; the message is the whole story and says what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// An unprivileged kiln (`--isolation none` as an ordinary user) stands for the image's root
    /// and cannot give files to other owners: an archive that has some is refused, not flattened.
    #[error(
        "{what}: {count} entries belong to owners other than root (first: {first}), and kiln runs without the privilege to give files to other ids; run kiln as root in the container, or use an archive whose files belong to 0:0"
    )]
    OwnersLost { what: String, count: u64, first: String },
    /// BuildKit runs `--security=insecure` unconfined; kiln has no such mode, and running the
    /// step confined would not be what was asked.
    #[error(
        "RUN --security=insecure is not supported by kiln: its steps always run confined (drop the flag, or build this image with buildx)"
    )]
    InsecureSecurity,
    /// A `--mount=type=ssh,required` whose id was not given with `--ssh`.
    #[error("ssh agent {id:?} is required: pass --ssh {id} (the agent of $SSH_AUTH_SOCK) or --ssh {id}=SOCKET")]
    SshRequired { id: String },
    /// A `--mount` whose target is empty or `/` (as written, before WORKDIR is applied).
    #[error("invalid --mount target {target:?}: give target=PATH (not /)")]
    MountTarget { target: String },
    /// A bind mount's `source=` climbs out of the build context.
    #[error("--mount source {path:?} is outside the build context")]
    MountSourceOutside { path: String },
    /// A `--mount=type=secret,required` whose id was not given with `--secret`.
    #[error("secret {id:?} is required: pass --secret id={id},src=PATH")]
    SecretRequired { id: String },
    /// A `--secret` taken from an environment variable that kiln's process no longer has.
    #[error("secret {id:?}: environment variable {var} is not set")]
    SecretEnvUnset { id: String, var: String },
    /// An ADD URL that the fetch before planning did not download (a bug in kiln).
    #[error("ADD {url}: not downloaded")]
    AddNotDownloaded { url: String },
    /// `ADD --checksum` that the downloaded content does not have.
    #[error("ADD {url}: --checksum {want} does not match the download ({got})")]
    ChecksumMismatch { url: String, want: String, got: kiln_oci::Digest },
    /// `--chmod` that is not an octal mode.
    #[error("--chmod={mode}: expected an octal mode such as 0755")]
    Chmod { mode: String },
    /// A stage used as a base before it was built (a bug in kiln's stage order).
    #[error("stage {stage} was not built before this one")]
    BaseStageNotBuilt { stage: usize },
    /// A stage a `--from` or `--mount from=` names that has not been built (a bug in kiln's stage
    /// order).
    #[error("stage {stage} is not built")]
    SourceStageNotBuilt { stage: usize },
}

/// Why a base image (or the image of `kiln run`) could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BaseFailure {
    #[error("{0}")]
    Reference(#[source] kiln_oci::ReferenceError),
    #[error("not in the local store ({reference}); run `kiln pull {image}` or `kiln import ROOTFS.tar -t {image}` first")]
    NotLocal { reference: String, image: String },
    #[error("{digest} is an index where an image manifest was expected")]
    NotAnImage { digest: kiln_oci::Digest },
    #[error("its config lists {config} layers but its manifest {manifest}")]
    LayerCount { config: usize, manifest: usize },
    #[error("--build-context {name}: {} is not an OCI layout (no oci-layout file in it); write one with `kiln build -o type=oci,dest=DIR,tar=false`", path.display())]
    NoLayout { name: String, path: PathBuf },
    #[error("--build-context {name}: the OCI layout {} has no image tagged {tag:?} (its tags: {tags})", path.display())]
    LayoutTag { name: String, path: PathBuf, tag: String, tags: String },
    #[error("--build-context {name}: the OCI layout {} has no manifest {digest}", path.display())]
    LayoutDigest { name: String, path: PathBuf, digest: kiln_oci::Digest },
    /// Not here (`why`), and the pull failed.
    #[error(
        "{why}, and pulling it failed: {source}. Pull it with `kiln pull --platform {platform} {image}` (kiln login first if it is private) or import it with `kiln import --platform {platform} ROOTFS.tar -t {image}`"
    )]
    Pull {
        why: String,
        platform: String,
        image: String,
        /// Boxed: a registry error is large (the chain still reaches it, as a `Box`).
        #[source]
        source: Box<kiln_registry::RegistryError>,
    },
}

/// A snapshot (a step's root file system, its layers, its diff) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// `cp -a` of the parent for a native snapshot exited non-zero.
    #[error("copying {} for a native snapshot failed ({status})", lower.display())]
    Copy { lower: PathBuf, status: std::process::ExitStatus },
    #[error("the path {path} contains ':' or ',', which overlayfs cannot take; choose a --root without them")]
    OverlayPath { path: String },
    /// overlayfs refused the mount; `options` are the faithful-diff options asked for.
    #[error(
        "cannot mount overlayfs at {} with {options} ({source}); kiln needs root and a kernel with overlayfs that takes these \
         options (they keep each step's upper dir a faithful diff), or use --snapshotter native",
        target.display()
    )]
    Overlay {
        target: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
    /// The native snapshotter's tree diff failed.
    #[error("comparing {} with its parent: {source}", merged.display())]
    Diff {
        merged: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} is neither in the store nor in an imported cache")]
    LayerMissing { digest: kiln_oci::Digest },
    /// Boxed: a cache error is large and rare (the chain still reaches it, as a `Box`).
    #[error("could not fetch cached layer {digest}: {source}")]
    Fetch {
        digest: kiln_oci::Digest,
        #[source]
        source: Box<kiln_cache::CacheError>,
    },
    /// A blocking lock returned as held (cannot happen with a working flock).
    #[error("cache mount lock")]
    Lock,
    /// A path inside a root file system could not be resolved safely.
    #[error("{0}")]
    Root(#[source] kiln_oci::fsroot::RootError),
}

/// Why a COPY source names nothing in the build context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceMiss {
    #[error("{src}: the path is outside the build context")]
    Outside { src: String },
    #[error("\"{src}\": not found in the build context (or excluded by .dockerignore)")]
    NotFound { src: String },
    #[error("\"{src}\": no file in the build context matches")]
    NoMatch { src: String },
}

/// Why ADD could not download a URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered, with a status that is not 2xx.
    #[error("HTTP {code} {text}")]
    Status { code: u16, text: String },
    /// No answer (DNS, connect, TLS, timeout).
    #[error(transparent)]
    Request(Box<ureq::Error>),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The body stopped before its end.
    #[error("download broke off: {0}")]
    BrokeOff(#[source] io::Error),
    /// Finishing the downloaded file (flush, permissions) failed.
    #[error("{0}")]
    Finish(#[source] io::Error),
}

fn prefix(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    }
}

fn exited(text: &str, status: &kiln_sandbox::ExitStatus, command: &str, tail: &[String]) -> String {
    let mut msg = format!("`{text}` failed: {status} ({command})");
    if !tail.is_empty() {
        msg.push_str("\nlast lines of output:\n");
        for l in tail {
            msg.push_str("  ");
            msg.push_str(l);
            msg.push('\n');
        }
    }
    msg.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io::ErrorKind;

    use super::*;

    /// The chain of `source()`s below `e`, for tests that look for a typed cause in it.
    fn chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Vec<&'a (dyn std::error::Error + 'static)> {
        let mut out = Vec::new();
        let mut cur = e.source();
        while let Some(c) = cur {
            out.push(c);
            cur = c.source();
        }
        out
    }

    #[test]
    fn a_sandbox_failure_keeps_the_sandbox_error_as_its_source() {
        let failure = StepFailure::Sandbox {
            text: "RUN make".into(),
            source: kiln_sandbox::Error::Spawn {
                binary: "/proc/self/exe".into(),
                source: io::Error::new(ErrorKind::PermissionDenied, "denied"),
            },
        };
        let e = BuildError::failed("Dockerfile:3", failure);
        assert_eq!(e.to_string(), "Dockerfile:3: RUN make: cannot start the sandbox init process /proc/self/exe: denied");
        let causes = chain(&e);
        assert!(matches!(causes[0].downcast_ref::<StepFailure>(), Some(StepFailure::Sandbox { .. })), "{causes:?}");
        let sandbox = causes.iter().find_map(|c| c.downcast_ref::<kiln_sandbox::Error>()).expect("a kiln_sandbox::Error in the chain");
        assert!(matches!(sandbox, kiln_sandbox::Error::Spawn { .. }));
        let io = causes.iter().find_map(|c| c.downcast_ref::<io::Error>()).expect("the io::Error under it");
        assert_eq!(io.kind(), ErrorKind::PermissionDenied);
    }

    #[test]
    fn an_io_failure_reaches_the_io_error_with_its_kind() {
        let e =
            BuildError::failed("Dockerfile:7", StepFailure::Io { what: String::new(), source: io::Error::from(ErrorKind::StorageFull) });
        let io = chain(&e).into_iter().find_map(|c| c.downcast_ref::<io::Error>()).expect("an io::Error in the chain");
        assert_eq!(io.kind(), ErrorKind::StorageFull);
        assert!(e.to_string().starts_with("Dockerfile:7: "), "{e}");
    }

    #[test]
    fn a_user_lookup_failure_keeps_the_user_error_and_names_the_flag() {
        let source = kiln_sandbox::user::resolve("nobody-here", Some("root:x:0:0::/root:/bin/sh\n"), None).unwrap_err();
        let text = source.to_string();
        let e = BuildError::failed("Dockerfile:2", StepFailure::User { what: "--chown=nobody-here".into(), source });
        assert_eq!(e.to_string(), format!("Dockerfile:2: --chown=nobody-here: {text}"));
        assert!(chain(&e).iter().any(|c| c.downcast_ref::<kiln_sandbox::user::UserError>().is_some()));
    }

    #[test]
    fn an_exited_command_reads_as_before_with_its_tail() {
        let failure = StepFailure::Exited {
            text: "RUN false".into(),
            status: kiln_sandbox::ExitStatus::Code(1),
            command: "/bin/sh -c false".into(),
            tail: vec!["one".into(), "two".into()],
        };
        assert_eq!(failure.to_string(), "`RUN false` failed: exit code 1 (/bin/sh -c false)\nlast lines of output:\n  one\n  two");
        let bare = StepFailure::Exited {
            text: "RUN false".into(),
            status: kiln_sandbox::ExitStatus::Signal(9),
            command: "/bin/sh -c false".into(),
            tail: vec![],
        };
        assert_eq!(bare.to_string(), "`RUN false` failed: signal 9 (/bin/sh -c false)");
        assert!(bare.source().is_none());
    }

    #[test]
    fn a_refused_step_reads_as_its_refusal_and_keeps_it_typed() {
        let e = BuildError::refused("Dockerfile:4", Refusal::SshRequired { id: "gh".into() });
        assert_eq!(
            e.to_string(),
            "Dockerfile:4: ssh agent \"gh\" is required: pass --ssh gh (the agent of $SSH_AUTH_SOCK) or --ssh gh=SOCKET"
        );
        let BuildError::Step(s) = &e else { panic!("not a step error: {e:?}") };
        assert!(matches!(&s.failure, StepFailure::Refused(Refusal::SshRequired { id }) if id == "gh"), "{e:?}");
        // The refusal is the last link: a caller walking the chain can downcast to it, and there
        // is nothing below it.
        let causes = chain(&e);
        let last = causes.last().expect("a cause");
        assert_eq!(last.downcast_ref::<Refusal>(), Some(&Refusal::SshRequired { id: "gh".into() }), "{causes:?}");
        assert!(last.source().is_none());
    }

    /// Each refusal's text, byte for byte: users (and the CLI tests) read these.
    #[test]
    fn every_refusal_reads_as_before() {
        let digest = kiln_oci::Digest::sha256_of(b"x");
        let cases: Vec<(Refusal, String)> = vec![
            (
                Refusal::InsecureSecurity,
                "RUN --security=insecure is not supported by kiln: its steps always run confined (drop the flag, or build this image with buildx)"
                    .into(),
            ),
            (
                Refusal::SshRequired { id: "gh".into() },
                "ssh agent \"gh\" is required: pass --ssh gh (the agent of $SSH_AUTH_SOCK) or --ssh gh=SOCKET".into(),
            ),
            (Refusal::MountTarget { target: "/".into() }, "invalid --mount target \"/\": give target=PATH (not /)".into()),
            (Refusal::MountTarget { target: String::new() }, "invalid --mount target \"\": give target=PATH (not /)".into()),
            (
                Refusal::MountSourceOutside { path: "../x".into() },
                "--mount source \"../x\" is outside the build context".into(),
            ),
            (Refusal::SecretRequired { id: "tok".into() }, "secret \"tok\" is required: pass --secret id=tok,src=PATH".into()),
            (
                Refusal::SecretEnvUnset { id: "tok".into(), var: "GH_TOKEN".into() },
                "secret \"tok\": environment variable GH_TOKEN is not set".into(),
            ),
            (Refusal::AddNotDownloaded { url: "http://h/a".into() }, "ADD http://h/a: not downloaded".into()),
            (
                Refusal::ChecksumMismatch { url: "http://h/a".into(), want: "sha256:00".into(), got: digest.clone() },
                format!("ADD http://h/a: --checksum sha256:00 does not match the download ({digest})"),
            ),
            (Refusal::Chmod { mode: "rwx".into() }, "--chmod=rwx: expected an octal mode such as 0755".into()),
            (Refusal::BaseStageNotBuilt { stage: 2 }, "stage 2 was not built before this one".into()),
            (Refusal::SourceStageNotBuilt { stage: 0 }, "stage 0 is not built".into()),
        ];
        for (refusal, want) in cases {
            assert_eq!(refusal.to_string(), want, "{refusal:?}");
            assert!(refusal.source().is_none(), "{refusal:?}");
            assert_eq!(StepFailure::Refused(refusal).to_string(), want);
        }
    }

    #[test]
    fn a_base_image_failure_in_a_step_keeps_the_build_error() {
        let inner = BuildError::Io { action: "read", path: "/x".into(), source: io::Error::from(ErrorKind::NotFound) };
        let inner_text = inner.to_string();
        let e = BuildError::failed(
            "Dockerfile:1",
            StepFailure::Build { what: "no stage is named \"b\", so it was taken as an image".into(), source: Box::new(inner) },
        );
        assert_eq!(e.to_string(), format!("Dockerfile:1: no stage is named \"b\", so it was taken as an image: {inner_text}"));
        let io = chain(&e).into_iter().find_map(|c| c.downcast_ref::<io::Error>()).expect("the io::Error at the bottom");
        assert_eq!(io.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn a_fetch_failure_keeps_the_io_error() {
        let e = BuildError::failed(
            "Dockerfile:5",
            StepFailure::Fetch { url: "http://h/x".into(), source: FetchError::BrokeOff(io::Error::from(ErrorKind::ConnectionReset)) },
        );
        assert!(e.to_string().starts_with("Dockerfile:5: ADD http://h/x: download broke off: "), "{e}");
        let io = chain(&e).into_iter().find_map(|c| c.downcast_ref::<io::Error>()).expect("an io::Error");
        assert_eq!(io.kind(), ErrorKind::ConnectionReset);
        let status = StepFailure::Fetch { url: "http://h/x".into(), source: FetchError::Status { code: 404, text: "Not Found".into() } };
        assert_eq!(status.to_string(), "ADD http://h/x: HTTP 404 Not Found");
    }

    #[test]
    fn an_overlay_mount_failure_keeps_the_os_error() {
        let e = BuildError::Snapshot(SnapshotError::Overlay {
            target: "/m".into(),
            options: "redirect_dir=off".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(e.to_string().starts_with("snapshot: cannot mount overlayfs at /m with redirect_dir=off ("), "{e}");
        assert!(e.to_string().ends_with("or use --snapshotter native"), "{e}");
        let io = chain(&e).into_iter().find_map(|c| c.downcast_ref::<io::Error>()).expect("an io::Error");
        assert_eq!(io.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn a_bad_exclude_pattern_keeps_the_ignore_error() {
        let Err(source) = kiln_dockerfile::dockerignore::Matcher::new(&["["]) else { panic!("\"[\" should not parse") };
        let text = source.to_string();
        let e = BuildError::Exclude(source);
        assert_eq!(e.to_string(), format!("--exclude: {text}"));
        assert!(e.source().and_then(|s| s.downcast_ref::<kiln_dockerfile::dockerignore::IgnoreError>()).is_some());
    }
}
