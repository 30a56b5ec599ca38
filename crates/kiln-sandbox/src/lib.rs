//! kiln-sandbox: run one process in a root file system, as root, the way a `RUN` step runs.
//!
//! # Model
//!
//! A [`Spec`] says what to run (argv, env, user, working dir), where (a root directory, usually
//! an overlay of the parent layers), with which extra [`Mount`]s and which [`Network`].
//! [`Sandbox::run`] re-executes kiln's own binary in a hidden init mode (selected by an argv
//! marker *and* an environment variable that no user types), hands it the spec as JSON on an
//! inherited pipe, streams the command's stdout and stderr back line by line, and returns an
//! [`Outcome`] with the exit status.
//!
//! Inside, the init process (the *outer init*) first asks the kernel to SIGKILL it when its
//! caller dies, and moves to a process group of its own so that a terminal's Ctrl-C reaches
//! kiln alone; then it unshares a PID namespace and forks; the child, PID 1 of that
//! namespace, unshares mount, UTS and IPC namespaces (and a network namespace with only `lo`
//! for [`Network::None`]), makes every mount private, mounts a fresh `/proc`, a minimal `/dev`
//! (tmpfs with the usual nodes, `pts`, `shm` of [`Spec::shm_size`]), a read-only `/sys`, the
//! host's `/etc/hosts` (with [`Spec::extra_hosts`] appended in a private copy) and
//! `/etc/resolv.conf` read-only, then the step's mounts, pivots into the root, sets
//! [`Spec::rlimits`], switches to the user resolved from the *image's* `/etc/passwd` and
//! `/etc/group` (with the primary gid among the supplementary groups, as runc is given them; see
//! [`user`]), creates the working dir and execs the command (with [`Spec::secret_env`] added to
//! its environment), which thus runs as PID 1, as under Docker. No capability is dropped (like
//! BuildKit's default for build steps). When the command exits, the kernel kills whatever it left
//! running in the namespace, so the call returns as soon as the command is done.
//!
//! The same code runs as uid 0 of a user namespace (kiln's rootless mode, `kiln-rootless`), where
//! the kernel refuses a few things real root may do: device nodes cannot be made, so `/dev`'s are
//! the host's, bind-mounted over empty files; a fresh sysfs needs a network namespace of our own,
//! so `/sys` is the host's, bound read-only; the flags of mounts inherited from the host are
//! locked, so a read-only remount keeps them; with one id mapped, devpts takes no `gid=5` and
//! setgroups(2) is denied (the groups stay as they are).
//!
//! Every link of that chain dies with the one before it: PID 1 has a parent-death signal towards
//! the outer init, the outer init towards kiln, and the rest of the namespace dies with PID 1.
//! So a SIGKILLed kiln leaves no step running.
//!
//! # Cancelling
//!
//! A [`Cancel`] handle given to [`Sandbox::with_cancel`] stops runs from another thread (kiln's
//! signal-handling thread, on the first SIGINT or SIGTERM): [`Cancel::cancel`] SIGKILLs the
//! outer init of every run in progress, which takes the namespace down as above, and every later
//! run fails at once without starting anything. A stopped run still removes the mount points it
//! created, waits until no process of the step is left, and returns [`Error::Cancelled`].
//!
//! Mount targets that did not exist are created for the run and removed afterwards (only if
//! still empty, never following symlinks, with the parent's times restored), so they do not end
//! up in the step's layer; [`Outcome::mount_points`] lists them. Secrets (and an `/etc/hosts`
//! with extra entries) are copied into a private tmpfs and bind-mounted read-only: their content
//! never touches the root. Secret values are [`SecretValue`]s, whose `Debug` is `<redacted>`.
//! An ssh agent ([`Mount::Ssh`]) is a socket of the caller's, bind-mounted read-only over such a
//! mount point: the step can connect to it, and the root never holds it.
//!
//! # Why re-exec rather than crun or runc
//!
//! Debian ships `crun` (installed alongside buildah) and `runc`. Either would need an OCI bundle
//! written per step (config.json with every mount, user lookup done by us anyway, since the
//! image's passwd must be read), a state directory, and output plumbing through their console
//! handling; every `RUN` would pay their start-up and JSON round trip, and kiln would gain a
//! runtime dependency that CI machines must install. What a build step needs is small and
//! fixed: a handful of namespaces and mounts, no cgroups, no seccomp profile, no capability
//! juggling. Doing it in kiln's own binary keeps the install to one file, gives exact control of
//! mount-point creation and cleanup (which layers depend on), and reports setup errors as
//! structured data instead of a runtime's stderr text. The price is this crate's small, audited
//! `unsafe` surface, all of it in the private `sys` module.
//!
//! # Without isolation
//!
//! [`direct`] runs a command straight in `/` for `--isolation none` (kiln inside an unprivileged
//! container, where nothing can be unshared or mounted), confined by Landlock where it can be;
//! [`host`] tells whether this process is in a container at all.
//!
//! # Using it
//!
//! The binary that re-executes itself must call [`init::maybe_run`] first thing in `main`.
//! [`arch`] tells whether binaries of a foreign architecture can run (via QEMU and
//! `binfmt_misc`), for multi-platform builds.

mod cancel;
mod cleanup;
mod error;
mod output;
mod protocol;
mod run;
mod spec;
mod sys;

pub mod arch;
pub mod direct;
pub mod host;
pub mod init;
pub mod landlock;
pub mod user;

pub use cancel::Cancel;
pub use cleanup::MountPoint;
pub use error::Error;
pub use output::{LineSplitter, Stream};
pub use run::{ExitStatus, Outcome, Sandbox, TAIL_LINES};
pub use spec::{HostEntry, Mount, Network, Resource, Rlimit, SecretEnv, SecretSource, SecretValue, Spec};
