#!/usr/bin/env bash
# The cold CI total (issue 14): build + cache export (mode=max where the tool has it) + push of the
# image to a loopback registry, from a machine holding only the base image. kiln against buildah and
# BuildKit, in one run, on three workloads; Markdown report on stdout.
#
#   sudo bench/cold-ci.sh
#   RUNS=5 CASES="big-sleep" sudo bench/cold-ci.sh
#   KILN=/path/to/kiln sudo bench/cold-ci.sh     # skip `cargo build --release -p kiln`
#
# Workloads (Dockerfiles written by this script, over the project's offline busybox base):
#   big-sleep     RUN: 100 MB from /dev/urandom (incompressible), then RUN sleep 5 (a test step).
#   compressible  four RUNs, each writing 50 MB of `seq` output (gzip takes it to about a fifth).
#   files         two stages: COPY of a 5,000-file context (seeded, 256 B-4 KiB each) and a small
#                 RUN in the first, COPY --from of the tree and a small RUN in the second.
# Tools, each timed as one shell command (median of RUNS; before each run, untimed: the registry is
# stopped, its storage deleted and restarted, and the tool starts from "only the base" in state
# directories of its own, never written to or deleted from before: see prep):
#   kiln      kiln build --cache-to type=registry,ref=R/C-cache:buildcache,mode=max -t R/C:kiln --push
#   buildah   buildah bud --isolation chroot --layers --cache-to R/C-buildah-cache -t R/C:buildah,
#             then buildah push (buildah 1.28 pushes each intermediate layer to --cache-to; that is
#             its mode=max), overlay storage (vfs when overlay does not work here)
#   BuildKit  dockerd's built-in BuildKit: DOCKER_BUILDKIT=1 docker build --build-arg
#             BUILDKIT_INLINE_CACHE=1 -t R/C:buildkit, then docker push. Without buildx (this
#             machine's docker has none), inline is the only cache export dockerd offers: it is
#             mode=min, so BuildKit uploads less than the others on the two-stage workload.
#   work      the RUN lines replayed with chroot in a freshly extracted base: the RUNs' own time.
# Overhead = median total - work. The goal: kiln's overhead <= 0.5x the best peer's.
#
# Needs root, buildah, docker.io (dockerd + docker), docker-registry, python3, bc. Every temp dir,
# the registry and dockerd are removed/stopped (by PID) on exit.
set -euo pipefail

RUNS=${RUNS:-3}
CASES=${CASES:-"big-sleep compressible files"}
BASE_REF=bench.local/busybox:latest
here=$(cd "$(dirname "$0")/.." && pwd)
start_s=$(date +%s)

log() { echo "[cold-ci $(( $(date +%s) - start_s ))s] $*" >&2; }
die() { echo "bench/cold-ci.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root: the builds need namespaces, chroot and dockerd"
for t in buildah dockerd docker-registry python3 tar bc; do
  command -v "$t" >/dev/null || die "missing tool: $t (apt-get install buildah docker.io docker-registry python3 bc)"
done
DOCKER=/usr/bin/docker  # the distribution's CLI: a newer one refuses DOCKER_BUILDKIT=1 without buildx
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || true)
[[ -n "$DOCKER" ]] || die "no docker CLI (apt-get install docker.io)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -z "${KILN:-}" ]]; then
  command -v cargo >/dev/null || die "cargo not found; build kiln yourself and pass KILN=/path/to/kiln"
  log "cargo build --release -p kiln"
  (cd "$here" && cargo build --release -p kiln >&2)
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
[[ -x "$KILN" ]] || die "kiln binary not found at $KILN"

# Not /tmp (see bench/build.sh: ext4's allocator and the tests' churn there).
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-coldci.XXXXXX")
chattr +T "$work" 2>/dev/null || true
dockerd_pid=""
reg_pid=""
stop_dockerd() {
  [[ -n "$dockerd_pid" ]] || return 0
  local ctrd_pid=""
  [[ -f "$DROOT/exec/containerd/containerd.pid" ]] && ctrd_pid=$(cat "$DROOT/exec/containerd/containerd.pid" 2>/dev/null || true)
  kill "$dockerd_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  if [[ -n "$ctrd_pid" ]] && kill -0 "$ctrd_pid" 2>/dev/null; then
    kill "$ctrd_pid" 2>/dev/null || true; sleep 1; kill -9 "$ctrd_pid" 2>/dev/null || true
  fi
  dockerd_pid=""
}
stop_registry() {
  [[ -n "$reg_pid" ]] || return 0
  kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; reg_pid=""
}
unmount_under() { findmnt -rn -o TARGET | grep "^$1" | sort -r | while read -r m; do umount -l "$m"; done; }
cleanup() {
  set +e +o pipefail
  stop_dockerd
  stop_registry
  if [[ -n "${KEEP_LOGS:-}" ]]; then mkdir -p "$KEEP_LOGS" && cp -a "$work/res/." "$KEEP_LOGS/"; fi
  unmount_under "$work/"
  rm -rf "$work" || echo "bench/cold-ci.sh: could not remove $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- base and contexts
make_contexts() {
  mkdir -p "$work/ctx/big-sleep" "$work/ctx/compressible" "$work/ctx/files"
  cat > "$work/ctx/big-sleep/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE}
RUN dd if=/dev/urandom of=/big bs=1M count=100
RUN sleep 5
EOF
  {
    printf 'ARG BASE\nFROM ${BASE}\n'
    for i in 1 2 3 4; do printf 'RUN seq %d 8000000 | head -c 52428800 > /layer%d\n' "$i" "$i"; done
  } > "$work/ctx/compressible/Dockerfile"
  cat > "$work/ctx/files/Dockerfile" <<'EOF'
ARG BASE
FROM ${BASE} AS build
COPY tree /src
RUN echo built > /built
FROM ${BASE}
COPY --from=build /src /app
RUN echo ready > /ready
EOF
  python3 - "$work/ctx/files" <<'PY'
import os, random, sys
root = sys.argv[1]; rng = random.Random(20261203)
for i in range(5000):
    d = os.path.join(root, "tree", f"d{i % 50:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:04d}.dat"), "wb") as f:
        f.write(rng.randbytes(rng.randint(256, 4096)))
PY
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
REG="127.0.0.1:$PORT"
# A fresh registry for every run: a blob left by an earlier run would be skipped (HEAD) or mounted.
reset_registry() {
  stop_registry
  rm -rf "$work/reg"
  mkdir -p "$work/reg/data"
  cat > "$work/reg/config.yml" <<YML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/reg/data } }
http: { addr: $REG }
YML
  docker-registry serve "$work/reg/config.yml" > "$work/reg/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 200); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://$REG/v2/')" 2>/dev/null && return 0
    sleep 0.05
  done
  die "registry did not start: $(cat "$work/reg/log")"
}
DH=""
DROOT=""  # the current dockerd's directory: one per BuildKit run (see prep)
start_dockerd() {
  mkdir -p "$DROOT/data/overlay2" "$DROOT/exec"
  chattr +T "$DROOT/data/overlay2" 2>/dev/null || true
  DH="unix://$DROOT/docker.sock"
  dockerd --iptables=false --bridge=none --data-root "$DROOT/data" --exec-root "$DROOT/exec" \
    --pidfile "$DROOT/docker.pid" -H "$DH" > "$DROOT/log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 150); do
    "$DOCKER" -H "$DH" version >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$DROOT/log" >&2
  return 1
}
BH_DRIVER=""
setup_buildah() { # DRIVER
  local bah=(buildah --root "$work/bh-base" --runroot "$work/bh-baserun" --storage-driver "$1") ctr
  rm -rf "$work/bh-base" "$work/bh-baserun"
  ctr=$("${bah[@]}" from scratch) || return 1
  "${bah[@]}" add "$ctr" "$work/rootfs.tar" / >/dev/null || return 1
  "${bah[@]}" commit --quiet --format oci "$ctr" "$BASE_REF" >/dev/null || return 1
  "${bah[@]}" rm "$ctr" >/dev/null || return 1
  "${bah[@]}" bud --isolation chroot --pull=never -q --build-arg "BASE=$BASE_REF" -t probe - <<<$'ARG BASE\nFROM ${BASE}\nRUN true' >/dev/null || return 1
  "${bah[@]}" rmi -f probe >/dev/null
  unmount_under "$work/bh-base"
  rm -rf "$work/bh-baserun"
  BH_DRIVER=$1
}

# ---------------------------------------------------------------- one tool, one case
# prep TOOL CASE: back to "only the base" (untimed). cmd TOOL CASE: the timed cold CI command.
# Every timed run gets state directories of its own (RUNNO) and nothing is deleted until the report:
# ext4 hands out the inodes a big `rm -rf` just freed only after scanning past them, which cost a
# 5,000-file COPY 1 s -> 5-10 s of kernel time when it followed the previous run's clean-up (measured
# with `time`: sys 0.3 s in a fresh directory, 2-10 s right after removing an equal tree). A CI machine
# starts on a fresh disk, and each tool here must too. So BuildKit gets a fresh dockerd per run.
RUNNO=0
prep() {
  RUNNO=$((RUNNO + 1))
  reset_registry
  case $1 in
    kiln) KROOT=$work/kiln-root.$RUNNO; cp -a "$work/kiln-base" "$KROOT";;
    buildah) BHROOT=$work/bh.$RUNNO; BHRUN=$work/bh-run.$RUNNO; cp -a "$work/bh-base" "$BHROOT";;
    buildkit) stop_dockerd; DROOT=$work/d.$RUNNO; start_dockerd || return 1
      "$DOCKER" -H "$DH" import "$work/rootfs.tar" "$BASE_REF" >/dev/null;;
    work) REPLAY=$work/replay.$RUNNO; mkdir "$REPLAY"; tar -xf "$work/rootfs.tar" -C "$REPLAY"
      mknod -m 666 "$REPLAY/dev/null" c 1 3; mknod -m 666 "$REPLAY/dev/urandom" c 1 9;;
  esac
}
cmd() {
  local c=$2 ctx=$work/ctx/$2
  case $1 in
    kiln) echo "'$KILN' --root '$KROOT' build --progress plain --build-arg BASE=$BASE_REF --cache-to type=registry,ref=$REG/$c-cache:buildcache,mode=max -t $REG/$c:kiln --push '$ctx'";;
    buildah) local b="buildah --root '$BHROOT' --runroot '$BHRUN' --storage-driver $BH_DRIVER"
      echo "$b bud --isolation chroot --layers --pull=never --tls-verify=false --build-arg BASE=$BASE_REF --cache-to $REG/$c-buildah-cache -t $REG/$c:buildah '$ctx' && $b push --tls-verify=false $REG/$c:buildah docker://$REG/$c:buildah";;
    buildkit) local d="'$DOCKER' -H '$DH'"
      echo "DOCKER_BUILDKIT=1 $d build --network host --progress plain --build-arg BASE=$BASE_REF --build-arg BUILDKIT_INLINE_CACHE=1 -t $REG/$c:buildkit '$ctx' && $d push $REG/$c:buildkit";;
    work) echo 'set -e'
      sed -n 's/^RUN //p' "$ctx/Dockerfile" | while IFS= read -r line; do
        printf 'env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot %q /bin/sh -c %q\n' "$REPLAY" "$line"
      done;;
  esac
}
# measure TOOL CASE LABEL: RUNS timed runs; the median to res/LABEL, or "FAIL: ..." on a failure.
measure() {
  local t=$1 c=$2 out=$work/res/$3 times=() i s e
  local script=$work/res/cmd.$t.$c.sh
  for i in $(seq "$RUNS"); do
    # Not in a subshell: prep sets the run's directories for cmd.
    prep "$t" "$c" > "$work/res/prep.$t.$c.log" 2>&1 || { echo "FAIL: prep: $(tail -2 "$work/res/prep.$t.$c.log" | tr '\n' ' ')" > "$out"; return; }
    cmd "$t" "$c" > "$script"
    s=$(date +%s.%N)
    if ! bash "$script" > "$work/res/$3.$i.log" 2>&1; then
      echo "FAIL: $(grep -v '^\s*$' "$work/res/$3.$i.log" | tail -3 | tr '\n' ' ' | sed 's/|/\\|/g')" > "$out"
      log "$3 FAILED: $(cat "$out")"; return
    fi
    e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc -l)")
  done
  python3 -c 'import statistics,sys; print("%.4f" % statistics.median(float(x) for x in sys.argv[1:]))' "${times[@]}" > "$out"
  log "$3: $(cat "$out") s (runs: ${times[*]})"
}

# ---------------------------------------------------------------- run
mkdir -p "$work/res"
log "work dir $work; cases: $CASES; runs: $RUNS"
"$here/scripts/busybox-rootfs" "$work/rootfs.tar"
make_contexts
SOURCE_DATE_EPOCH=0 "$KILN" --root "$work/kiln-base" import "$work/rootfs.tar" -t "$BASE_REF" >/dev/null || die "kiln import failed"
"$KILN" --root "$work/kiln-base" run "$BASE_REF" -- true >/dev/null 2>&1 || true  # unpack the base's snapshot
bh_note=""
if setup_buildah overlay > "$work/res/setup.buildah.log" 2>&1; then :
elif setup_buildah vfs >> "$work/res/setup.buildah.log" 2>&1; then :
else bh_note="FAIL: buildah storage does not work here: $(tail -2 "$work/res/setup.buildah.log" | tr '\n' ' ')"; fi
DROOT=$work/d.0
start_dockerd || die "dockerd did not start (log above)"
for c in $CASES; do
  measure work "$c" "work.$c"
  measure kiln "$c" "kiln.$c"
  if [[ -n "$BH_DRIVER" ]]; then measure buildah "$c" "buildah.$c"; else echo "$bh_note" > "$work/res/buildah.$c"; fi
  measure buildkit "$c" "buildkit.$c"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(( $(date +%s) - start_s ))

# ---------------------------------------------------------------- report
val() { cat "$work/res/$1" 2>/dev/null || echo "n/a"; }
isnum() { [[ $1 =~ ^-?[0-9]*\.[0-9]+$ ]]; }
fmt() { if isnum "$1"; then printf '%.2f' "$1"; else printf '%s' "$1"; fi; }
over() { if isnum "$1" && isnum "$2"; then echo "$1 - $2" | bc -l; else echo "n/a"; fi; }
cat <<EOF
Command: \`sudo bench/cold-ci.sh\` (RUNS=$RUNS, CASES="$CASES"); $(nproc) cores; load average (1/5/15 min)
at start $load_start, at end $load_end; ${elapsed} s on $(date -u +%Y-%m-%d). kiln $(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$here" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted'),
$(buildah --version | cut -d' ' -f1-3) (${BH_DRIVER:-no} storage), dockerd $("$DOCKER" -H "$DH" version -f '{{.Server.Version}}' 2>/dev/null || echo '?') (BuildKit built in, inline cache).

| workload | RUN alone (s) | kiln total | buildah total | BuildKit total | kiln overhead | buildah overhead | BuildKit overhead | kiln / best peer |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
for c in $CASES; do
  w=$(val "work.$c"); k=$(val "kiln.$c"); b=$(val "buildah.$c"); bk=$(val "buildkit.$c")
  ko=$(over "$k" "$w"); bo=$(over "$b" "$w"); bko=$(over "$bk" "$w")
  best=""; for p in "$bo" "$bko"; do isnum "$p" && { [[ -z "$best" ]] || [[ $(echo "$p < $best" | bc) == 1 ]]; } && best=$p; done
  r="—"; if isnum "$ko" && [[ -n "$best" ]] && [[ $(echo "$best > 0" | bc) == 1 ]]; then r=$(printf '%.2fx' "$(echo "$ko / $best" | bc -l)"); fi
  echo "| $c | $(fmt "$w") | $(fmt "$k") | $(fmt "$b") | $(fmt "$bk") | $(fmt "$ko") | $(fmt "$bo") | $(fmt "$bko") | $r |"
done
