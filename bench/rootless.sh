#!/usr/bin/env bash
# Rootless benchmark: the same kiln binary as root and as an ordinary user (rootless mode: a user
# namespace with the user's /etc/subuid and /etc/subgid ranges, overlayfs with userxattr), on the
# same Dockerfiles over the same offline busybox base, measured in one run.
#
#   sudo bench/rootless.sh                     # prints a Markdown table on stdout
#   RUNS_COLD=3 RUNS_NOOP=5 sudo bench/rootless.sh
#   KILN=/path/to/kiln sudo bench/rootless.sh  # skip `cargo build --release -p kiln`
#
# Cases: bench/build/*/ (multistage, copy-heavy, many-runs, big-run), examples/hello, and three
# corpus cases of tests/build_diff/ that chown, switch USER and make an opaque dir.
# Measures, per case and mode:
#   cold    a build from a fresh --root holding only the imported base (the reset and the import
#           are hyperfine's untimed --prepare);
#   no-op   the same build again with every step cached (after one unmeasured warm-up build).
# The rootless runs are `setpriv --reuid U --regid U --init-groups` to the user kiln's tests use
# (kiln-rootless-test; created with a 65,536-id range when missing, never removed), with a clean
# environment and a --root the user owns; the root runs are plain `kiln --root DIR`.
#
# Needs root, hyperfine, jq, setpriv, newuidmap (uidmap), GNU tar. Temp dirs are removed on exit.
set -euo pipefail

RUNS_COLD=${RUNS_COLD:-5}
RUNS_NOOP=${RUNS_NOOP:-10}
USER_NAME=${USER_NAME:-kiln-rootless-test}
BASE_REF=bench.local/busybox:latest
here=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "bench/rootless.sh: $*" >&2; exit 1; }
log() { echo "[bench] $*" >&2; }

[[ $EUID -eq 0 ]] || die "run as root (sudo bench/rootless.sh): it creates the test user and compares with root builds"
for t in hyperfine jq setpriv newuidmap newgidmap tar useradd; do
  command -v "$t" >/dev/null || die "missing tool: $t (apt-get install hyperfine jq util-linux uidmap tar passwd)"
done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -z "${KILN:-}" ]]; then
  log "cargo build --release -p kiln"
  (cd "$here" && cargo build --release -p kiln >&2)
  KILN=$here/target/release/kiln
fi

if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh "$USER_NAME"
fi
if ! grep -q "^$USER_NAME:" /etc/subuid || ! grep -q "^$USER_NAME:" /etc/subgid; then
  start=$(awk -F: '{e=$2+$3; if (e>m) m=e} END {print (m>100000?m:100000)}' /etc/subuid /etc/subgid)
  usermod --add-subuids "$start-$((start + 65535))" --add-subgids "$start-$((start + 65535))" "$USER_NAME"
fi
uid=$(id -u "$USER_NAME"); gid=$(id -g "$USER_NAME"); home=$(getent passwd "$USER_NAME" | cut -d: -f6)

work=$(mktemp -d /tmp/kiln-bench-rootless.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/user" && chown "$uid:$gid" "$work/user"
# The user must be able to run the binary: a copy outside the build tree, which may be private.
install -m 0755 "$KILN" "$work/kiln"
"$here/scripts/busybox-rootfs" "$work/busybox.tar" >/dev/null
chmod 644 "$work/busybox.tar"

# Contexts: the user reads them (world-readable copies; git keeps no owners anyway).
cases=()
for d in "$here"/bench/build/*/; do
  n=$(basename "$d"); cp -r "$d" "$work/ctx-$n"; cases+=("$n")
done
cp -r "$here/examples/hello" "$work/ctx-hello"; cases+=(hello)
for n in copy_chown_chmod user_workdir whiteout_opaque_dir; do
  cp -r "$here/crates/kiln/tests/build_diff/$n" "$work/ctx-$n"; rm -f "$work/ctx-$n/case.json"; cases+=("$n")
done
chmod -R a+rX "$work"/ctx-*

as_user="setpriv --reuid $uid --regid $gid --init-groups env -i HOME=$home USER=$USER_NAME PATH=/usr/local/bin:/usr/bin:/bin TMPDIR=/tmp BUILDX_NO_DEFAULT_ATTESTATIONS=1"
declare -A run_prefix=([root]="env BUILDX_NO_DEFAULT_ATTESTATIONS=1" [rootless]="$as_user")
declare -A root_dir=([root]="$work/root-state" [rootless]="$work/user/state")

median() { jq -r '.results[0].median' "$1"; }

rows=()
for n in "${cases[@]}"; do
  declare -A cold=() noop=()
  for mode in root rootless; do
    k="${run_prefix[$mode]} $work/kiln --root ${root_dir[$mode]}"
    reset="rm -rf ${root_dir[$mode]} && $k import $work/busybox.tar -t $BASE_REF >/dev/null"
    build="$k build $work/ctx-$n --build-arg BASE=$BASE_REF -t bench/$n:latest -q"
    log "$n $mode: check"
    if ! bash -c "$reset && $build" >"$work/out.log" 2>&1; then
      tail -5 "$work/out.log" >&2; die "$n failed as $mode"
    fi
    hyperfine -N --style none --runs "$RUNS_COLD" --prepare "bash -c '$reset'" --export-json "$work/c.json" "$build" >/dev/null 2>&1 \
      || die "$n $mode: cold run failed"
    cold[$mode]=$(median "$work/c.json")
    hyperfine -N --style none --runs "$RUNS_NOOP" --warmup 1 --export-json "$work/n.json" "$build" >/dev/null 2>&1 \
      || die "$n $mode: no-op run failed"
    noop[$mode]=$(median "$work/n.json")
  done
  rows+=("$(awk -v n="$n" -v rc="${cold[root]}" -v lc="${cold[rootless]}" -v rn="${noop[root]}" -v ln="${noop[rootless]}" \
    'BEGIN { printf "| %s | %.3f | %.3f | %.2f× | %.1f | %.1f | %.2f× |", n, rc, lc, lc/rc, rn*1000, ln*1000, ln/rn }')")
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "kiln $($KILN --version | cut -d' ' -f2), $(nproc) cores, load average at start $load_start, at end $load_end;"
echo "cold: median of $RUNS_COLD, no-op: median of $RUNS_NOOP."
echo
echo "| case | root cold (s) | rootless cold (s) | rootless/root | root no-op (ms) | rootless no-op (ms) | rootless/root |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
