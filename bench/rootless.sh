#!/usr/bin/env bash
# Rootless benchmark: the same kiln binary as root and as an ordinary user (rootless mode: a user
# namespace with the user's /etc/subuid and /etc/subgid ranges, overlayfs with userxattr), on the
# same Dockerfiles over the same offline busybox base, measured in one run.
#
#   sudo bench/rootless.sh                     # prints a Markdown table on stdout
#   RUNS_COLD=3 RUNS_NOOP=5 sudo bench/rootless.sh
#   KILN=/path/to/kiln sudo bench/rootless.sh  # skip `cargo build --release -p kiln`
#
# Cases: bench/build/*/ (multistage, copy-heavy, many-runs, big-run), examples/hello, two corpus
# cases of tests/build_diff/ (whiteouts, an opaque dir) and one that chowns and switches USER.
# Measures, per case and mode:
#   cold    a build from a fresh --root holding only the imported base (the reset and the import
#           are hyperfine's untimed --prepare);
#   no-op   the same build again with every step cached (after one unmeasured warm-up build).
# The rootless runs are `setpriv --reuid U --regid U --init-groups` to the user kiln's tests use
# (kiln-rootless-test; created with a 65,536-id range when missing, never removed), with a clean
# environment and a --root the user owns; the root runs go through the same setpriv (to uid 0).
#
# Needs root, hyperfine, jq, python3, setpriv, newuidmap (uidmap), GNU tar. Temp dirs are removed on exit.
set -euo pipefail

RUNS_COLD=${RUNS_COLD:-5}
RUNS_NOOP=${RUNS_NOOP:-10}
USER_NAME=${USER_NAME:-kiln-rootless-test}
BASE_REF=bench.local/busybox:latest
here=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "bench/rootless.sh: $*" >&2; exit 1; }
log() { echo "[bench] $*" >&2; }

[[ $EUID -eq 0 ]] || die "run as root (sudo bench/rootless.sh): it creates the test user and compares with root builds"
for t in hyperfine jq python3 setpriv newuidmap newgidmap tar useradd; do
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
# copy-heavy's tree, made as bench/build.sh makes it: 2000 files of 256 B..4 KiB in 40 dirs, seeded.
python3 - "$work/ctx-copy-heavy" <<'PY'
import os, random, sys
root = sys.argv[1]; rng = random.Random(20261127)
for i in range(2000):
    d = os.path.join(root, "tree", f"d{i % 40:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:04d}.dat"), "wb") as f:
        f.write(rng.randbytes(rng.randint(256, 4096)))
with open(os.path.join(root, "blob.bin"), "wb") as f:
    f.write(rng.randbytes(1 << 20))
PY
cp -r "$here/examples/hello" "$work/ctx-hello"; cases+=(hello)
for n in whiteout_files whiteout_opaque_dir; do
  cp -r "$here/crates/kiln/tests/build_diff/$n" "$work/ctx-$n"; rm -f "$work/ctx-$n/case.json"; cases+=("$n")
done
# The corpus's chown and USER cases name users of kiln-testkit's base; this one is numeric.
mkdir "$work/ctx-chown-user"
echo x > "$work/ctx-chown-user/f"
cat > "$work/ctx-chown-user/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
RUN mkdir -p /own/tree/sub && echo a > /own/tree/sub/a && chown -R 1000:1000 /own/tree && chown 65534:65534 /own
COPY --chown=1000:1001 f /f
USER 1000:1001
RUN touch /tmp/mine && id
USER root
RUN rm -rf /own/tree && mkdir /own/tree && echo new > /own/tree/n
EOF
cases+=(chown-user)
chmod -R a+rX "$work"/ctx-*

# Both modes start through the same setpriv and env, so its own cost (NSS for --init-groups) is in both.
as() { echo "setpriv --reuid $1 --regid $2 --init-groups env -i HOME=$3 PATH=/usr/local/bin:/usr/bin:/bin TMPDIR=/tmp BUILDX_NO_DEFAULT_ATTESTATIONS=1"; }
declare -A run_prefix=([root]="$(as 0 0 /root)" [rootless]="$(as "$uid" "$gid" "$home")")
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
