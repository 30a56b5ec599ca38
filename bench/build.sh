#!/usr/bin/env bash
# Build benchmark: kiln against buildah (--layers; vfs and overlay storage) and BuildKit (dockerd),
# on the same Dockerfiles over the same offline busybox base, measured in one run.
#
#   sudo bench/build.sh                       # everything; prints a Markdown report on stdout
#   RUNS_COLD=3 RUNS_NOOP=5 BUILDAH_RUNS_COLD=1 BUILDAH_RUNS_NOOP=2 sudo bench/build.sh
#   CASES="many-runs" TOOLS="kiln buildkit" sudo bench/build.sh
#   KILN=/path/to/kiln sudo bench/build.sh    # skip `cargo build --release -p kiln`
#
# Measures, per Dockerfile in bench/build/*/ and per tool:
#   cold    a build from empty build state: kiln a fresh --root holding only the imported base (unpacked, as the peers hold theirs);
#           buildah a fresh storage dir holding only the base; BuildKit after `docker builder prune -af`
#           and removing the built image (the base stays in dockerd's image store).
#   no-op   the same build again with everything cached (after one unmeasured warm-up build).
#   work    the RUN commands' own time: every `RUN` line of the Dockerfile, in order, run with
#           `chroot DIR /bin/sh -c CMD` in a freshly extracted copy of the base root file system.
#           Overhead of a tool = median cold build - median work. (RUN lines in these Dockerfiles are
#           single-line shell form and do not read files that COPY brought in, so the replay is faithful.)
# Timing: hyperfine, median of RUNS_COLD / RUNS_NOOP runs (buildah: BUILDAH_RUNS_*, it is much slower);
# the untimed --prepare resets the state before each cold run.
# Each tool/case is first built once untimed; a failure is recorded (with its last output lines)
# and the case is kept in the report.
#
# Needs root, hyperfine, buildah, busybox-static, python3, GNU tar; installs Debian's docker.io with
# apt if dockerd is missing. Starts its own dockerd on private dirs (no iptables, no bridge) and
# stops it by PID at the end; every temp dir is removed on exit. Bounded: measurements stop when
# BUDGET seconds (default 1080) have passed since the start and the rest is reported as skipped.
set -euo pipefail

RUNS_COLD=${RUNS_COLD:-5}
RUNS_NOOP=${RUNS_NOOP:-10}
# buildah takes 5-20x longer per build here; fewer runs keep the whole run inside the time budget.
BUILDAH_RUNS_COLD=${BUILDAH_RUNS_COLD:-3}
BUILDAH_RUNS_NOOP=${BUILDAH_RUNS_NOOP:-5}
BUDGET=${BUDGET:-1080}
CASES=${CASES:-"multistage copy-heavy many-runs big-run"}
TOOLS=${TOOLS:-"kiln buildah-vfs buildah-overlay buildkit"}
BASE_REF=bench.local/busybox:latest
here=$(cd "$(dirname "$0")/.." && pwd)
start_s=$(date +%s)

log() { echo "[bench $(( $(date +%s) - start_s ))s] $*" >&2; }
die() { echo "bench/build.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (sudo bench/build.sh): the builds need namespaces, chroot and dockerd"
for t in hyperfine buildah python3 tar chroot mknod; do
  command -v "$t" >/dev/null || die "missing tool: $t (apt-get install hyperfine buildah python3 tar coreutils)"
done
[[ -x /bin/busybox ]] || die "missing /bin/busybox (apt-get install busybox-static)"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -z "${KILN:-}" ]]; then
  # sudo's secure_path usually lacks rustup's bin dir.
  command -v cargo >/dev/null || for d in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin}" "$HOME/.cargo/bin"; do
    [[ -n "$d" && -x "$d/cargo" ]] && { PATH="$d:$PATH"; break; }
  done
  command -v cargo >/dev/null || die "cargo not found; build kiln yourself and pass KILN=/path/to/kiln"
  log "cargo build --release -p kiln"
  (cd "$here" && cargo build --release -p kiln >&2)
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
[[ -x "$KILN" ]] || die "kiln binary not found at $KILN"

if [[ " $TOOLS " == *" buildkit "* ]] && ! command -v dockerd >/dev/null; then
  log "dockerd missing: apt-get install docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >&2 \
    || die "apt-get install docker.io failed"
fi
# The docker.io package's CLI carries BuildKit's client; a newer CLI without the buildx plugin refuses
# DOCKER_BUILDKIT=1, so prefer the packaged one.
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || true)

# Not /tmp: every test on this machine creates and deletes files there, and ext4's inode allocator
# then spends up to a second per 2,000 creates skipping recently freed inodes (`recently_deleted` in
# perf) in that directory's block groups: a COPY of 2,000 files took 1.0 s under /tmp and 0.2 s
# under /var/tmp on the same disk. Every tool's state lives under this one dir. BENCH_TMP overrides.
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-build.XXXXXX")
# And each directory made directly in $work starts in a fresh block group (Orlov's TOPDIR, chattr +T),
# so a tool's cold run does not pay for inodes another tool's clean-up freed seconds before.
chattr +T "$work" 2>/dev/null || true
dockerd_pid=""
stop_dockerd() {
  [[ -n "$dockerd_pid" ]] || return 0
  local ctrd_pid=""
  [[ -f "$work/d/exec/containerd/containerd.pid" ]] && ctrd_pid=$(cat "$work/d/exec/containerd/containerd.pid" 2>/dev/null || true)
  kill "$dockerd_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  # dockerd stops the containerd it started; if it was killed hard, that containerd is ours to stop.
  if [[ -n "$ctrd_pid" ]] && kill -0 "$ctrd_pid" 2>/dev/null; then
    kill "$ctrd_pid" 2>/dev/null || true; sleep 1; kill -9 "$ctrd_pid" 2>/dev/null || true
  fi
  dockerd_pid=""
}
cleanup() {
  set +e +o pipefail
  stop_dockerd
  # Anything still mounted under the work dir (overlay storage, docker's netns files) goes first.
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work" || echo "bench/build.sh: could not remove $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- base root file system (offline)
# busybox-static with every applet as a symlink, /etc/passwd, /etc/group, /tmp; deterministic tar.
make_rootfs() {
  # The project's own offline base (busybox-static, applet symlinks, passwd/group, /tmp), shared by
  # kiln's demo and tests.
  "$here/scripts/busybox-rootfs" "$work/rootfs.tar"
}

# ---------------------------------------------------------------- build contexts
make_contexts() {
  mkdir -p "$work/ctx"
  for c in $CASES; do
    [[ -f "$here/bench/build/$c/Dockerfile" ]] || die "unknown case $c (no bench/build/$c/Dockerfile)"
    cp -a "$here/bench/build/$c" "$work/ctx/$c"
  done
  if [[ -d "$work/ctx/copy-heavy" ]]; then
    # 2000 files of 256 B..4 KiB in 40 dirs (~4 MB), seeded so every run copies the same bytes.
    python3 - "$work/ctx/copy-heavy" <<'PY'
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
  fi
}

# ---------------------------------------------------------------- tools
tool_label() {
  case $1 in kiln) echo kiln;; buildah-vfs) echo "buildah (vfs)";; buildah-overlay) echo "buildah (overlay)";; buildkit) echo "BuildKit (dockerd)";; esac
}

# Each tool gets a template state holding only the base image, extracted as the peers hold it
# (dockerd's `docker import` and buildah's commit leave it unpacked in their storage; `kiln run`
# unpacks it into kiln's snapshot cache); a cold run copies the template afresh.
setup_kiln() {
  "$KILN" --root "$work/kiln-base" import "$work/rootfs.tar" -t "$BASE_REF" >/dev/null
  "$KILN" --root "$work/kiln-base" run "$BASE_REF" -- true
}
setup_buildah() { # DRIVER
  local d=$1 b=(buildah --root "$work/bh-$1-base" --runroot "$work/bh-$1-baserun" --storage-driver "$1")
  local ctr
  ctr=$("${b[@]}" from scratch) || return 1
  "${b[@]}" add "$ctr" "$work/rootfs.tar" / >/dev/null || return 1
  "${b[@]}" commit --quiet --format oci "$ctr" "$BASE_REF" >/dev/null || return 1
  "${b[@]}" rm "$ctr" >/dev/null || return 1
  # A probe build tells us whether this storage driver works on this machine at all.
  "${b[@]}" bud --isolation chroot --pull=never -q --build-arg "BASE=$BASE_REF" -t probe - <<<$'ARG BASE\nFROM ${BASE}\nRUN true' >/dev/null || return 1
  "${b[@]}" rmi -f probe >/dev/null
  # The runroot holds only locks and mount state; a cold run starts with an empty one.
  rm -rf "$work/bh-$d-baserun"
}
DH=""
start_dockerd() {
  mkdir -p "$work/d/data/overlay2" "$work/d/exec"
  chattr +T "$work/d/data/overlay2" 2>/dev/null || true  # each layer dir in a fresh group too
  DH="unix://$work/d/docker.sock"
  dockerd --iptables=false --bridge=none --data-root "$work/d/data" --exec-root "$work/d/exec" \
    --pidfile "$work/d/docker.pid" -H "$DH" > "$work/d/log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 150); do
    if "$DOCKER" -H "$DH" version >/dev/null 2>&1; then return 0; fi
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$work/d/log" >&2
  return 1
}
setup_buildkit() {
  start_dockerd || return 1
  "$DOCKER" -H "$DH" import "$work/rootfs.tar" "$BASE_REF" >/dev/null
}

# build_cmd TOOL CASE: the measured command (a string for hyperfine's shell).
build_cmd() {
  local t=$1 c=$2 ctx=$work/ctx/$2
  case $t in
    kiln) echo "'$KILN' --root '$work/kiln-root' build --progress plain --build-arg BASE=$BASE_REF -t bench.local/$c:latest -f '$ctx/Dockerfile' '$ctx'";;
    buildah-*) local d=${t#buildah-}
      echo "buildah --root '$work/bh-$d' --runroot '$work/bh-$d-run' --storage-driver $d bud --isolation chroot --layers --pull=never --build-arg BASE=$BASE_REF -t bench.local/$c:latest -f '$ctx/Dockerfile' '$ctx'";;
    buildkit) echo "DOCKER_BUILDKIT=1 '$DOCKER' -H '$DH' build --network host --progress plain --build-arg BASE=$BASE_REF -t bench.local/$c:latest -f '$ctx/Dockerfile' '$ctx'";;
  esac
}
# trash DIR: a command that moves DIR aside, to be deleted at exit. Deleting thousands of files just
# before a timed build makes ext4's inode allocator scan the freshly freed inodes (recently_deleted)
# on every create, which measured the file system's churn rather than the tool.
trash() { echo "{ [ ! -e '$1' ] || mv '$1' \"$work/trash/\$(date +%s%N)\"; }"; }
# cold_prep TOOL CASE: resets the tool to "only the base image", untimed.
cold_prep() {
  local t=$1 c=$2
  case $t in
    kiln) echo "$(trash "$work/kiln-root") && cp -a '$work/kiln-base' '$work/kiln-root'";;
    buildah-*) local d=${t#buildah-}
      echo "$(trash "$work/bh-$d") && $(trash "$work/bh-$d-run") && cp -a '$work/bh-$d-base' '$work/bh-$d'";;
    buildkit) echo "'$DOCKER' -H '$DH' rmi -f bench.local/$c:latest >/dev/null 2>&1; '$DOCKER' -H '$DH' builder prune -af >/dev/null";;
  esac
}

# ---------------------------------------------------------------- measuring
mkdir -p "$work/res" "$work/trash"
remaining() { echo $(( BUDGET - ($(date +%s) - start_s) )); }

# hf NAME PREP CMD RUNS [WARMUP]: median seconds into $work/res/NAME, or a failure note.
hf() {
  local name=$1 prep=$2 cmd=$3 runs=$4 warm=${5:-0} left
  left=$(remaining)
  if (( left < 20 )); then echo "skipped (time budget)" > "$work/res/$name"; return; fi
  local args=(--runs "$runs" --warmup "$warm" --style none --export-json "$work/res/$name.json")
  [[ -n "$prep" ]] && args+=(--prepare "$prep")
  if timeout "$left" hyperfine "${args[@]}" "$cmd" >"$work/res/$name.log" 2>&1; then
    python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' \
      "$work/res/$name.json" > "$work/res/$name"
  else
    echo "failed during timing: $(tail -3 "$work/res/$name.log" | tr '\n' ' ')" > "$work/res/$name"
  fi
}

# The RUN commands' own time: replay them with chroot in a fresh extracted base.
replay_script() { # CASE -> prints a bash script taking the root dir as $1
  echo 'set -e'
  sed -n 's/^RUN //p' "$work/ctx/$1/Dockerfile" | while IFS= read -r cmd; do
    printf 'env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$1" /bin/sh -c %q\n' "$cmd"
  done
}
measure_work() { # CASE
  local c=$1 dir=$work/replay
  if ! grep -q '^RUN ' "$work/ctx/$c/Dockerfile"; then echo "0.0000" > "$work/res/work.$c"; return; fi
  replay_script "$c" > "$work/replay-$c.sh"
  local prep="rm -rf '$dir' && mkdir '$dir' && tar -xf '$work/rootfs.tar' -C '$dir' && mknod -m 666 '$dir/dev/null' c 1 3 && mknod -m 666 '$dir/dev/zero' c 1 5 && mknod -m 666 '$dir/dev/urandom' c 1 9"
  hf "work.$c" "$prep" "bash '$work/replay-$c.sh' '$dir'" "$RUNS_COLD"
  rm -rf "$dir"
}

measure_tool_case() { # TOOL CASE
  local t=$1 c=$2 prep cmd
  prep=$(cold_prep "$t" "$c"); cmd=$(build_cmd "$t" "$c")
  if (( $(remaining) < 20 )); then
    echo "skipped (time budget)" | tee "$work/res/cold.$t.$c" > "$work/res/noop.$t.$c"; return
  fi
  # One untimed build first: a failure is recorded with its last lines instead of aborting the run.
  if ! bash -c "$prep" >/dev/null 2>&1 || ! timeout "$(remaining)" bash -c "$cmd" > "$work/res/probe.$t.$c.log" 2>&1; then
    local why
    why=$(grep -v '^\s*$' "$work/res/probe.$t.$c.log" | tail -4 | tr '\n' ' ' | sed 's/|/\\|/g')
    echo "FAIL: $why" | tee "$work/res/cold.$t.$c" > "$work/res/noop.$t.$c"
    log "$t $c FAILED: $why"
    return
  fi
  local rc=$RUNS_COLD rn=$RUNS_NOOP
  [[ $t == buildah-* ]] && { rc=$BUILDAH_RUNS_COLD; rn=$BUILDAH_RUNS_NOOP; }
  hf "cold.$t.$c" "$prep" "$cmd" "$rc"
  # After the last cold run everything is cached; one more warm-up build, then the no-op rebuilds.
  hf "noop.$t.$c" "" "$cmd" "$rn" 1
  log "$t $c: cold $(cat "$work/res/cold.$t.$c") s, no-op $(cat "$work/res/noop.$t.$c") s"
}

# ---------------------------------------------------------------- run
log "work dir $work; cases: $CASES; tools: $TOOLS; runs: cold $RUNS_COLD, no-op $RUNS_NOOP"
make_rootfs
make_contexts
declare -A tool_note=()
active=""
for t in $TOOLS; do
  case $t in
    kiln) setup_kiln || die "kiln import of the base failed";;
    buildah-vfs|buildah-overlay) if ! setup_buildah "${t#buildah-}" > "$work/res/setup.$t.log" 2>&1; then
        tool_note[$t]="storage driver does not work here: $(tail -2 "$work/res/setup.$t.log" | tr '\n' ' ')"
        log "$t: ${tool_note[$t]}"; continue; fi;;
    buildkit) [[ -n "$DOCKER" ]] || die "no docker CLI"
      setup_buildkit || die "dockerd did not start (log above)";;
    *) die "unknown tool $t (kiln buildah-vfs buildah-overlay buildkit)";;
  esac
  active+=" $t"
done
# ext4 skips inodes freed in the last 60 s when it allocates (360 s once their inode-table block is
# dirty again, which the next allocation in it makes it), and each skip costs a buffer lookup: after
# something deleted many files (a test suite, the last bench run's clean-up) a 2,000-file COPY took
# 0.7-1.3 s instead of 0.2 s, for whichever tool's files landed in those block groups. Flush, then let
# the 360 s pass before measuring anything (a 65 s wait did not help).
settle() { log "sync, then ${SETTLE:-370} s for recently freed inodes to age (SETTLE=0 skips)"; sync; sleep "${SETTLE:-370}"; }
settle
for c in $CASES; do
  measure_work "$c"
  log "work $c: $(cat "$work/res/work.$c") s"
  for t in $active; do measure_tool_case "$t" "$c"; done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n "$DH" ]]; then
  dockerd_version=$("$DOCKER" -H "$DH" version -f '{{.Server.Version}}' 2>/dev/null || true)
  docker_driver=$("$DOCKER" -H "$DH" info -f '{{.Driver}}' 2>/dev/null || true)
fi
elapsed=$(( $(date +%s) - start_s ))

# ---------------------------------------------------------------- report (Markdown on stdout)
val() { cat "$work/res/$1" 2>/dev/null || echo "n/a"; }
isnum() { [[ $1 =~ ^[0-9]+\.[0-9]+$ ]]; }
fmt() { if isnum "$1"; then printf '%.3f' "$1"; else printf '%s' "$1"; fi; }
ratio() { if isnum "$1" && isnum "$2" && [[ $(echo "$2 > 0" | bc) == 1 ]]; then printf '%.2fx' "$(echo "$1 / $2" | bc -l)"; else printf '—'; fi; }
sub() { if isnum "$1" && isnum "$2"; then printf '%.4f' "$(echo "$1 - $2" | bc -l)"; else printf 'n/a'; fi; }
peers=""; for t in $active; do [[ $t != kiln ]] && peers+=" $t"; done

table() { # KIND
  local kind=$1 hdr="| Dockerfile | kiln (s) |" sep="| --- | ---: |"
  for p in $peers; do hdr+=" $(tool_label "$p") (s) |"; sep+=" ---: |"; done
  for p in $peers; do hdr+=" kiln / $(tool_label "$p") |"; sep+=" ---: |"; done
  echo "$hdr"; echo "$sep"
  for c in $CASES; do
    local k row; k=$(val "$kind.kiln.$c"); row="| $c | $(fmt "$k") |"
    for p in $peers; do row+=" $(fmt "$(val "$kind.$p.$c")") |"; done
    for p in $peers; do row+=" $(ratio "$k" "$(val "$kind.$p.$c")") |"; done
    echo "$row"
  done
}

cat <<EOF
Command: \`sudo bench/build.sh\` (RUNS_COLD=$RUNS_COLD, RUNS_NOOP=$RUNS_NOOP, BUILDAH_RUNS_COLD=$BUILDAH_RUNS_COLD, BUILDAH_RUNS_NOOP=$BUILDAH_RUNS_NOOP, CASES="$CASES", TOOLS="$TOOLS").
Machine: $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB;
load average (1/5/15 min) at start $load_start, at end $load_end; run took ${elapsed} s on $(date -u +%Y-%m-%d).
Versions: kiln $(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$here" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted'), $(buildah --version | cut -d' ' -f1-3),
dockerd ${dockerd_version:-n/a} (BuildKit built in, ${docker_driver:-n/a} storage), $(hyperfine --version).
EOF
for t in $TOOLS; do [[ -n "${tool_note[$t]:-}" ]] && echo "Not measured: $(tool_label "$t"): ${tool_note[$t]}"; done
echo
echo "Cold build, median of $RUNS_COLD runs (buildah: $BUILDAH_RUNS_COLD) (s):"
echo
table cold
echo
echo "No-op rebuild (everything cached), median of $RUNS_NOOP runs (buildah: $BUILDAH_RUNS_NOOP) (s):"
echo
table noop
echo
echo "Overhead beyond the RUN commands' own time (cold build median − work median; work = the RUN lines"
echo "replayed with chroot in a fresh extracted base, median of $RUNS_COLD). Goal: kiln ≤ 0.5x BuildKit."
echo
ohdr="| Dockerfile | RUN work (s) | kiln overhead (s) |"; osep="| --- | ---: | ---: |"
for p in $peers; do ohdr+=" $(tool_label "$p") overhead (s) |"; osep+=" ---: |"; done
for p in $peers; do ohdr+=" kiln / $(tool_label "$p") |"; osep+=" ---: |"; done
echo "$ohdr"; echo "$osep"
for c in $CASES; do
  w=$(val "work.$c"); ko=$(sub "$(val "cold.kiln.$c")" "$w"); row="| $c | $(fmt "$w") | $(fmt "$ko") |"
  for p in $peers; do row+=" $(fmt "$(sub "$(val "cold.$p.$c")" "$w")") |"; done
  for p in $peers; do row+=" $(ratio "$ko" "$(sub "$(val "cold.$p.$c")" "$w")") |"; done
  echo "$row"
done
echo
noop_line="kiln no-op rebuild (goal < 0.1 s):"
for c in $CASES; do
  k=$(val "noop.kiln.$c")
  if isnum "$k"; then noop_line+=" $c $(fmt "$k") s $( [[ $(echo "$k < 0.1" | bc) == 1 ]] && echo '(met)' || echo '(missed)');"; else noop_line+=" $c $k;"; fi
done
echo "${noop_line%;}"
