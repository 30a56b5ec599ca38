//! RUN execution: the sandbox spec from the plan, and each `--mount` made real (tmpfs, cache dirs
//! and their locks, secrets, ssh agents, binds of the context or of another stage's or image's
//! root).

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::instructions::{Mount, MountType, Sharing, Source, Step};
use kiln_oci::Digest;
use kiln_sandbox::{SecretEnv, SecretValue, Spec, Stream};

use super::plan::RunPlan;
use super::{at, Solver};
use crate::error::{BuildError, Refusal, SnapshotError, StepFailure};
use crate::run_env::SecretSource;
use crate::snapshot::{remove_tree, Mounted};
use crate::state::ImageState;

impl Solver<'_> {
    pub(super) fn exec_run(&mut self, step: &Step, run: &RunPlan, mounted: &Mounted, state: &ImageState) -> Result<(), BuildError> {
        // A foreign platform's binaries run through binfmt_misc (qemu-user-static); say how to get it.
        if let Some(arch) = kiln_sandbox::arch::Arch::from_oci(&state.platform.architecture) {
            if !arch.runs_natively_on(kiln_sandbox::arch::Arch::host()) {
                kiln_sandbox::arch::ensure_runnable(arch, std::path::Path::new(kiln_sandbox::arch::BINFMT_DIR)).map_err(|source| {
                    BuildError::failed(at(&step.location), StepFailure::Emulation { platform: state.platform.to_string(), source })
                })?;
            }
        }
        let mut spec = Spec::new(&mounted.merged, run.argv.clone());
        spec.env = run.env.clone();
        spec.user = run.user.clone();
        spec.workdir = PathBuf::from(&run.workdir);
        // The build's RUN environment (none of it is keyed: see `run_env`).
        let env = &self.shared.opts.run_env;
        spec.network = env.network.for_step(run.network);
        spec.extra_hosts = env.extra_hosts.clone();
        spec.shm_size = env.shm_size;
        spec.rlimits = env.rlimits();
        let mut holds = StepHolds::default();
        let mut ssh_index = 0;
        for (m, src) in step.mounts.iter().zip(step.mount_sources.iter()) {
            if m.kind == MountType::Secret {
                self.secret_mount(step, m, &run.workdir, &mut spec)?;
            } else if m.kind == MountType::Ssh {
                self.ssh_mount(step, m, ssh_index, &run.workdir, &mut spec, &mut holds)?;
                ssh_index += 1;
            } else if let Some(sm) = self.sandbox_mount(step, m, src.as_ref(), &run.workdir, &mut holds)? {
                spec.mounts.push(sm);
            }
        }
        let progress = self.shared.progress;
        let text = step.original.trim().to_string();
        let mut sink = |_s: Stream, line: &[u8]| progress.output(&text, line);
        let outcome = match self.direct() {
            Some(direct) => direct.run(&spec, &mut sink),
            None => self.sandbox.run(&spec, &mut sink),
        }
        .map_err(|source| BuildError::failed(at(&step.location), StepFailure::Sandbox { text: text.clone(), source }))?;
        drop(holds);
        if !outcome.success() {
            let kiln_sandbox::Outcome { status, command, tail, .. } = outcome;
            return Err(BuildError::failed(at(&step.location), StepFailure::Exited { text, status, command, tail }));
        }
        Ok(())
    }

    fn sandbox_mount(
        &mut self,
        step: &Step,
        m: &Mount,
        src: Option<&Source>,
        wd: &str,
        holds: &mut StepHolds,
    ) -> Result<Option<kiln_sandbox::Mount>, BuildError> {
        let target = if m.target.starts_with('/') { PathBuf::from(&m.target) } else { Path::new(wd).join(&m.target) };
        if m.kind != MountType::Secret && m.kind != MountType::Ssh && (target.as_os_str().is_empty() || target == Path::new("/")) {
            return Err(BuildError::refused(at(&step.location), Refusal::MountTarget { target: m.target.clone() }));
        }
        Ok(Some(match m.kind {
            MountType::Tmpfs => kiln_sandbox::Mount::Tmpfs { target, size_bytes: m.size },
            MountType::Cache => kiln_sandbox::Mount::Cache { source: self.cache_mount_dir(m, holds)?, target },
            MountType::Secret | MountType::Ssh => return Ok(None),
            MountType::Bind => kiln_sandbox::Mount::Bind { source: self.bind_source(step, m, src, holds)?, target, readonly: m.readonly },
        }))
    }

    /// `--mount=type=secret`: a file at the target (unless only `env=` was given), the variable
    /// `env=` names, or both. A secret the build was not given is left out, or refused when
    /// `required`. The value goes into the spec only, never into the plan (whose env is keyed).
    fn secret_mount(&self, step: &Step, m: &Mount, wd: &str, spec: &mut Spec) -> Result<(), BuildError> {
        let id =
            m.id.clone().unwrap_or_else(|| Path::new(&m.target).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        let Some(source) = self.shared.opts.run_env.secrets.get(&id) else {
            if m.required {
                return Err(BuildError::refused(at(&step.location), Refusal::SecretRequired { id }));
            }
            return Ok(());
        };
        let value = |what: &str| -> Result<SecretValue, BuildError> {
            match source {
                SecretSource::File(path) => fs::read(path).map(SecretValue::new).map_err(|source| {
                    BuildError::failed(
                        at(&step.location),
                        StepFailure::Io { what: format!("reading secret {id:?} {what} from {}", path.display()), source },
                    )
                }),
                SecretSource::Env(var) => match std::env::var_os(var) {
                    Some(v) => Ok(SecretValue::new(v.into_encoded_bytes())),
                    None => Err(BuildError::refused(at(&step.location), Refusal::SecretEnvUnset { id: id.clone(), var: var.clone() })),
                },
            }
        };
        if let Some(name) = &m.env {
            spec.secret_env.push(SecretEnv { name: name.clone(), value: value(&format!("for ${name}"))? });
        }
        if m.env.is_none() || !m.target.is_empty() {
            let target = if m.target.is_empty() {
                None
            } else if m.target.starts_with('/') {
                Some(PathBuf::from(&m.target))
            } else {
                Some(Path::new(wd).join(&m.target))
            };
            // A file secret is read by the sandbox when it mounts it, as before; one from the
            // environment is handed over as bytes.
            let source = match source {
                SecretSource::File(path) => kiln_sandbox::SecretSource::File(path.clone()),
                SecretSource::Env(_) => kiln_sandbox::SecretSource::Value(value("file")?),
            };
            spec.mounts.push(kiln_sandbox::Mount::Secret {
                id,
                source,
                target,
                mode: m.mode,
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            });
        }
        Ok(())
    }

    /// `--mount=type=ssh`: a socket at the target that forwards to the `--ssh` agent of the
    /// mount's id (see [`crate::ssh`]), left out when the build has no such agent, or refused when
    /// `required`. The step's first ssh mount (`index` 0) names `SSH_AUTH_SOCK`, unless the
    /// step's environment sets it; as in BuildKit, that is so whether or not the agent was given,
    /// and it comes from the mount, which is keyed, so it need not be keyed itself.
    fn ssh_mount(&self, step: &Step, m: &Mount, index: usize, wd: &str, spec: &mut Spec, holds: &mut StepHolds) -> Result<(), BuildError> {
        let target = if m.target.starts_with('/') { PathBuf::from(&m.target) } else { Path::new(wd).join(&m.target) };
        if index == 0 && !spec.env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            spec.env.push(format!("SSH_AUTH_SOCK={}", target.display()));
        }
        let id = m.id.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| crate::run_env::DEFAULT_SSH_ID.to_string());
        let Some(agent) = self.shared.opts.run_env.ssh.get(&id) else {
            if m.required {
                return Err(BuildError::refused(at(&step.location), Refusal::SshRequired { id }));
            }
            return Ok(());
        };
        // The private dir is removed when the step ends (with the proxy stopped first).
        let dir = self.snaps.temp_dir("ssh")?;
        holds.scratch.push(dir.clone());
        let (proxy, socket) = crate::ssh::AgentProxy::start(
            &dir,
            "agent.sock",
            agent.clone(),
            m.uid.unwrap_or(0),
            m.gid.unwrap_or(0),
            m.mode.unwrap_or(0o600),
        )
        .map_err(|source| {
            BuildError::failed(
                at(&step.location),
                StepFailure::Io { what: format!("forwarding ssh agent {id:?} ({})", agent.display()), source },
            )
        })?;
        holds.proxies.push(proxy);
        spec.mounts.push(kiln_sandbox::Mount::Ssh { id, socket, target });
        Ok(())
    }

    /// A cache mount's host dir, shared across builds by id, locked or made private as `sharing`
    /// says.
    fn cache_mount_dir(&mut self, m: &Mount, holds: &mut StepHolds) -> Result<PathBuf, BuildError> {
        let id = m.id.clone().unwrap_or_else(|| m.target.clone());
        let dir = self.shared.opts.root.join("cache").join("mounts").join(Digest::sha256_of(id.as_bytes()).hex());
        fs::create_dir_all(&dir).map_err(|e| BuildError::Io { action: "create cache mount", path: dir.clone(), source: e })?;
        let source = match m.sharing {
            Sharing::Shared => dir,
            // locked: one step at a time, across builds (flock on a file beside the dir).
            Sharing::Locked => {
                holds.locks.push(lock_file(&dir, true)?.ok_or_else(|| BuildError::Snapshot(SnapshotError::Lock))?);
                dir
            }
            // private: the shared dir when it is free, else a fresh one for this step alone.
            Sharing::Private => match lock_file(&dir, false)? {
                Some(l) => {
                    holds.locks.push(l);
                    dir
                }
                None => {
                    let d = self.snaps.temp_dir("private-cache")?;
                    holds.scratch.push(d.clone());
                    d
                }
            },
        };
        if let (Some(u), Some(g)) = (m.uid, m.gid) {
            let _ = std::os::unix::fs::chown(&source, Some(u), Some(g));
        }
        if let Some(mode) = m.mode {
            let _ = fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(mode));
        }
        Ok(source)
    }

    /// A bind mount's host path: in the context, or in a read-only mount of the `from=` stage or
    /// image (held until the step ends).
    fn bind_source(&mut self, step: &Step, m: &Mount, src: Option<&Source>, holds: &mut StepHolds) -> Result<PathBuf, BuildError> {
        let source_rel = m.source.clone().unwrap_or_else(|| "/".to_string());
        Ok(match src {
            None => {
                let rel = crate::context::clean_rel(&source_rel)
                    .ok_or_else(|| BuildError::refused(at(&step.location), Refusal::MountSourceOutside { path: source_rel.clone() }))?;
                self.shared.context.root().join(rel)
            }
            Some(s) => {
                let layers = self.source_layers(step, s)?;
                let mnt = self.mount_layers(&layers, false)?;
                let root = mnt.merged.clone();
                holds.mounts.push(mnt);
                kiln_oci::fsroot::safe_join(&root, Path::new(&source_rel), true)
                    .map_err(|source| BuildError::failed(at(&step.location), StepFailure::Root { what: String::new(), source }))?
            }
        })
    }
}

/// What a RUN step holds while it runs: read-only mounts of other stages, cache-mount locks, ssh
/// agent forwarders, and private dirs (removed when dropped).
#[derive(Default)]
struct StepHolds {
    mounts: Vec<Mounted>,
    locks: Vec<fs::File>,
    proxies: Vec<crate::ssh::AgentProxy>,
    scratch: Vec<PathBuf>,
}

impl Drop for StepHolds {
    fn drop(&mut self) {
        self.proxies.clear();
        self.mounts.clear();
        self.locks.clear();
        for d in &self.scratch {
            remove_tree(d);
        }
    }
}

/// Takes an exclusive flock on `<dir>.lock`: waiting for it (`wait`), or `None` when it is held.
fn lock_file(dir: &Path, wait: bool) -> Result<Option<fs::File>, BuildError> {
    use std::os::fd::AsRawFd;
    let path = dir.with_extension("lock");
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| BuildError::Io {
        action: "open",
        path: path.clone(),
        source: e,
    })?;
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(Some(f))
    } else {
        let e = std::io::Error::last_os_error();
        if !wait && e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(BuildError::Io { action: "lock", path, source: e })
        }
    }
}
