#!/usr/bin/env bash
# Warm rebuild from a registry cache on a wiped machine: kiln against buildah (--layers
# --cache-from/--cache-to) and BuildKit's inline cache (dockerd), over the same offline busybox base,
# on the same Dockerfiles (bench/build/multistage and bench/build/big-run, a 100 MB RUN layer),
# with the time to download the final image alone as the floor. One run; Markdown report on stdout.
#
#   sudo bench/cache.sh
#   RUNS=3 CASES="big-run" sudo bench/cache.sh
#   KILN=/path/to/kiln sudo bench/cache.sh     # skip `cargo build --release -p kiln`
#
# Per case, against one local docker-registry on 127.0.0.1 (fresh temp storage, stopped by PID):
#   kiln      cold build with --cache-to type=registry,ref=R:cache,mode=max, then `kiln push` of the
#             image; timed: a fresh --root holding only the base (imported with SOURCE_DATE_EPOCH=0, so
#             its digest and every cache key match across roots) + `kiln build --cache-from R:cache`.
#             The last timed run's --metadata-file must show every layer step as `hit-registry`.
#   buildah   cold `buildah bud --layers --cache-to R-buildah-cache`; timed: fresh storage holding only
#             the base + `buildah bud --layers --cache-from R-buildah-cache` (overlay storage driver,
#             vfs if overlay does not work here).
#   BuildKit  cold `docker build --build-arg BUILDKIT_INLINE_CACHE=1 -t R:inline` + `docker push`; timed:
#             after `docker builder prune -af` and removing every image but the base,
#             `docker build --cache-from R:inline`.
#   floor     `kiln pull` of the pushed final image into a fresh root holding only the base (the same
#             starting state as kiln's warm build), and `skopeo copy docker://R oci:DIR` (every layer).
# Timing: hyperfine, median of RUNS (default 5); --prepare (untimed) does the wipes. Each tool's cold
# build and one untimed warm build run first; a failure or a cache flow that re-executes RUN steps is
# recorded in the report instead of a number.
#
# Needs root, hyperfine, buildah, docker.io (dockerd + /usr/bin/docker), docker-registry, skopeo,
# busybox-static, python3, bc. Every temp dir, the registry and dockerd are removed/stopped on exit.
# Bounded: measurements stop when BUDGET seconds (default 900, of which 370 s is the settle wait) have passed; the rest is "skipped".
set -euo pipefail

RUNS=${RUNS:-5}
BUDGET=${BUDGET:-900}
CASES=${CASES:-"multistage big-run"}
BASE_REF=bench.local/busybox:latest
here=$(cd "$(dirname "$0")/.." && pwd)
start_s=$(date +%s)

log() { echo "[cache-bench $(( $(date +%s) - start_s ))s] $*" >&2; }
die() { echo "bench/cache.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (sudo bench/cache.sh): the builds need namespaces, chroot and dockerd"
for t in hyperfine buildah dockerd docker-registry skopeo python3 tar bc; do
  command -v "$t" >/dev/null || die "missing tool: $t (apt-get install hyperfine buildah docker.io docker-registry skopeo python3 bc)"
done
[[ -x /bin/busybox ]] || die "missing /bin/busybox (apt-get install busybox-static)"
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker || true)
[[ -n "$DOCKER" ]] || die "no docker CLI (apt-get install docker.io)"

load_start=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -z "${KILN:-}" ]]; then
  command -v cargo >/dev/null || for d in "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin}" "$HOME/.cargo/bin"; do
    [[ -n "$d" && -x "$d/cargo" ]] && { PATH="$d:$PATH"; break; }
  done
  command -v cargo >/dev/null || die "cargo not found; build kiln yourself and pass KILN=/path/to/kiln"
  log "cargo build --release -p kiln"
  (cd "$here" && cargo build --release -p kiln >&2)
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
[[ -x "$KILN" ]] || die "kiln binary not found at $KILN"

# Not /tmp: every test on this machine creates and deletes files there, and ext4's inode allocator
# then spends up to a second per 2,000 creates skipping recently freed inodes (`recently_deleted` in
# perf) in that directory's block groups: a COPY of 2,000 files took 1.0 s under /tmp and 0.2 s
# under /var/tmp on the same disk. Every tool's state lives under this one dir. BENCH_TMP overrides.
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-cache.XXXXXX")
# And each directory made directly in $work starts in a fresh block group (Orlov's TOPDIR, chattr +T),
# so a tool's cold run does not pay for inodes another tool's clean-up freed seconds before.
chattr +T "$work" 2>/dev/null || true
dockerd_pid=""
reg_pid=""
# The same dockerd handling as bench/build.sh: private dirs, stopped by PID with its containerd.
stop_dockerd() {
  [[ -n "$dockerd_pid" ]] || return 0
  local ctrd_pid=""
  [[ -f "$work/d/exec/containerd/containerd.pid" ]] && ctrd_pid=$(cat "$work/d/exec/containerd/containerd.pid" 2>/dev/null || true)
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
cleanup() {
  set +e +o pipefail
  stop_dockerd
  stop_registry
  # KEEP_LOGS=DIR keeps every build log, hyperfine export and metadata file for inspection.
  if [[ -n "${KEEP_LOGS:-}" ]]; then mkdir -p "$KEEP_LOGS" && cp -a "$work/res/." "$KEEP_LOGS/"; fi
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work" || echo "bench/cache.sh: could not remove $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- base and contexts (as bench/build.sh)
make_rootfs() {
  # The project's own offline base (busybox-static, applet symlinks, passwd/group, /tmp), shared by
  # kiln's demo and tests.
  "$here/scripts/busybox-rootfs" "$work/rootfs.tar"
}
make_contexts() {
  mkdir -p "$work/ctx"
  for c in $CASES; do
    [[ -f "$here/bench/build/$c/Dockerfile" ]] || die "unknown case $c (no bench/build/$c/Dockerfile)"
    cp -a "$here/bench/build/$c" "$work/ctx/$c"
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REG=""
start_registry() {
  mkdir -p "$work/reg/data"
  local port; port=$(free_port)
  cat > "$work/reg/config.yml" <<YML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/reg/data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
YML
  docker-registry serve "$work/reg/config.yml" > "$work/reg/log" 2>&1 &
  reg_pid=$!
  REG="127.0.0.1:$port"
  for _ in $(seq 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://$REG/v2/')" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  die "registry did not start: $(cat "$work/reg/log")"
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
# trash DIR: move DIR aside, deleted at exit (see bench/build.sh: deleting just before a timed build
# measures ext4's inode allocator churn, not the tool).
trash() { echo "{ [ ! -e '$1' ] || mv '$1' \"$work/trash/\$(date +%s%N)\"; }"; }

BH_DRIVER=""
setup_buildah() { # DRIVER
  local d=$1 bah=(buildah --root "$work/bh-base" --runroot "$work/bh-baserun" --storage-driver "$1")
  rm -rf "$work/bh-base" "$work/bh-baserun"
  local ctr
  ctr=$("${bah[@]}" from scratch) || return 1
  "${bah[@]}" add "$ctr" "$work/rootfs.tar" / >/dev/null || return 1
  "${bah[@]}" commit --quiet --format oci "$ctr" "$BASE_REF" >/dev/null || return 1
  "${bah[@]}" rm "$ctr" >/dev/null || return 1
  "${bah[@]}" bud --isolation chroot --pull=never -q --build-arg "BASE=$BASE_REF" -t probe - <<<$'ARG BASE\nFROM ${BASE}\nRUN true' >/dev/null || return 1
  "${bah[@]}" rmi -f probe >/dev/null
  findmnt -rn -o TARGET | grep "^$work/bh-base" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work/bh-baserun"
  BH_DRIVER=$d
}

# ---------------------------------------------------------------- measuring
mkdir -p "$work/res" "$work/trash"
remaining() { echo $(( BUDGET - ($(date +%s) - start_s) )); }
note() { echo "$2" > "$work/res/$1"; log "$1: $2"; }
# hf NAME PREP CMD: median seconds of RUNS runs into $work/res/NAME, or a failure note.
hf() {
  local name=$1 prep=$2 cmd=$3 left
  left=$(remaining)
  if (( left < 20 )); then note "$name" "skipped (time budget)"; return 1; fi
  if timeout "$left" hyperfine --runs "$RUNS" --style none --export-json "$work/res/$name.json" \
      --prepare "$prep" "$cmd" >"$work/res/$name.log" 2>&1; then
    python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' \
      "$work/res/$name.json" > "$work/res/$name"
    log "$name: $(cat "$work/res/$name") s"
  else
    note "$name" "failed during timing: $(tail -3 "$work/res/$name.log" | tr '\n' ' ' | sed 's/|/\\|/g')"
    return 1
  fi
}
# run_logged LOG CMD: an untimed step; on failure prints the last lines of its output.
run_logged() {
  local lg=$1 cmd=$2
  if (( $(remaining) < 20 )); then echo "skipped (time budget)"; return 1; fi
  if ! timeout "$(remaining)" bash -c "$cmd" > "$lg" 2>&1; then
    echo "FAIL: $(grep -v '^\s*$' "$lg" | tail -4 | tr '\n' ' ' | sed 's/|/\\|/g')"; return 1
  fi
}

K() { echo "'$KILN' --root '$1'"; }

measure_kiln() { # CASE
  local c=$1 ctx=$work/ctx/$1 img=$REG/bench/$1:kiln cache=$REG/bench/$1:cache why
  local prep; prep="$(trash "$work/kiln-root") && cp -a '$work/kiln-base' '$work/kiln-root'"
  bash -c "$prep"
  if ! why=$(run_logged "$work/res/kiln-cold.$c.log" "$(K "$work/kiln-root") build --progress plain --build-arg BASE=$BASE_REF -t $img -f '$ctx/Dockerfile' --cache-to type=registry,ref=$cache,mode=max --metadata-file '$work/res/md-cold.$c.json' '$ctx' && $(K "$work/kiln-root") push $img"); then
    note "warm.kiln.$c" "$why"; note "floor.kiln.$c" "$why"; return
  fi
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["containerimage.config.digest"])' "$work/res/md-cold.$c.json" > "$work/res/digest-cold.$c"
  local warm; warm="$(K "$work/kiln-root") build --progress plain --build-arg BASE=$BASE_REF -t $img -f '$ctx/Dockerfile' --cache-from type=registry,ref=$cache --metadata-file '$work/res/md-warm.$c.json' '$ctx'"
  hf "warm.kiln.$c" "$prep" "$warm" || true
  # Every layer step of the last timed warm build must have come from the registry cache.
  if [[ -f "$work/res/md-warm.$c.json" ]]; then
    python3 - "$work/res/md-warm.$c.json" "$work/res/digest-cold.$c" > "$work/res/check.kiln.$c" <<'PY' || true
import json, sys
md = json.load(open(sys.argv[1])); cold = open(sys.argv[2]).read().strip()
steps = [s for s in md.get("kiln.steps", []) if s.get("cache") != "none"]
bad = [f'{s.get("instruction")}={s.get("cache")}' for s in steps if s.get("cache") != "hit-registry"]
same = md.get("containerimage.config.digest") == cold
print(("%d/%d layer steps hit-registry" % (len(steps) - len(bad), len(steps)))
      + ("" if not bad else " (NOT hit-registry: " + "; ".join(bad) + ")")
      + (", config digest = cold build's" if same else ", CONFIG DIGEST DIFFERS from the cold build's"))
PY
    log "kiln $c warm check: $(cat "$work/res/check.kiln.$c")"
  fi
  # Download floor: the final image alone, pulled into the warm build's starting state.
  hf "floor.kiln.$c" "$prep" "$(K "$work/kiln-root") pull $img" || true
  local sk="$work/skopeo-oci"
  hf "floor.skopeo.$c" "$(trash "$sk")" "skopeo copy -q --src-tls-verify=false docker://$img oci:$sk:t" || true
}

measure_buildah() { # CASE
  local c=$1 ctx=$work/ctx/$1 repo=$REG/bench/$1-buildah-cache why
  local b="buildah --root '$work/bh' --runroot '$work/bh-run' --storage-driver $BH_DRIVER"
  local prep; prep="$(trash "$work/bh") && $(trash "$work/bh-run") && cp -a '$work/bh-base' '$work/bh'"
  local common="bud --isolation chroot --layers --pull=never --tls-verify=false --build-arg BASE=$BASE_REF -t bench.local/$c:buildah -f '$ctx/Dockerfile'"
  bash -c "$prep"
  if ! why=$(run_logged "$work/res/buildah-cold.$c.log" "$b $common --cache-to $repo '$ctx'"); then
    note "warm.buildah.$c" "$why"; return
  fi
  stop_mounts "$work/bh"
  local warm="$b $common --cache-from $repo '$ctx'"
  # One untimed warm build to see whether the cache was used (buildah prints "Using cache" per hit).
  bash -c "$prep"
  if ! why=$(run_logged "$work/res/buildah-warm.$c.log" "$warm"); then
    note "warm.buildah.$c" "warm build failed: $why"; return
  fi
  local hits runs
  hits=$(grep -ciE "using cache|cache pulled" "$work/res/buildah-warm.$c.log" || true)
  runs=$(grep -c '^RUN ' "$ctx/Dockerfile" || true)
  echo "$hits 'Using cache'/'Cache pulled' lines; $(grep -cE 'STEP [0-9]+/[0-9]+' "$work/res/buildah-warm.$c.log" || true) steps; Dockerfile has $runs RUN" > "$work/res/check.buildah.$c"
  log "buildah $c warm check: $(cat "$work/res/check.buildah.$c")"
  stop_mounts "$work/bh"
  hf "warm.buildah.$c" "$(unmount_cmd "$work/bh") ; $prep" "$warm" || true
  stop_mounts "$work/bh"
}
# Overlay storage leaves mounts behind; a wipe must unmount them first.
unmount_cmd() { echo "findmnt -rn -o TARGET | grep '^$1' | sort -r | while read -r m; do umount -l \"\$m\"; done"; }
stop_mounts() { bash -c "$(unmount_cmd "$1")" || true; }

measure_buildkit() { # CASE
  local c=$1 ctx=$work/ctx/$1 img=$REG/bench/$1:inline why
  local d="'$DOCKER' -H '$DH'"
  local bk="DOCKER_BUILDKIT=1 $d build --network host --progress plain --build-arg BASE=$BASE_REF -f '$ctx/Dockerfile'"
  local prep="$d rmi -f $img >/dev/null 2>&1; $d builder prune -af >/dev/null"
  bash -c "$prep"
  if ! why=$(run_logged "$work/res/buildkit-cold.$c.log" "$bk --build-arg BUILDKIT_INLINE_CACHE=1 -t $img '$ctx' && $d push $img"); then
    note "warm.buildkit.$c" "$why"; return
  fi
  local warm="$bk --cache-from $img -t $img '$ctx'"
  bash -c "$prep"
  if ! why=$(run_logged "$work/res/buildkit-warm.$c.log" "$warm"); then
    note "warm.buildkit.$c" "warm build failed: $why"; return
  fi
  local cached runs
  cached=$(grep -c ' CACHED$' "$work/res/buildkit-warm.$c.log" || true)
  runs=$(grep -cE '^#[0-9]+ \[.*\] RUN ' "$work/res/buildkit-warm.$c.log" || true)
  local executed
  executed=$(python3 - "$work/res/buildkit-warm.$c.log" <<'PY'
import re, sys
# A vertex that ran prints "#N DONE"; one taken from the cache prints "#N CACHED".
names, state = {}, {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"#(\d+) (\[.*)", line.rstrip())
    if m and m.group(1) not in names: names[m.group(1)] = m.group(2)
    m = re.match(r"#(\d+) (CACHED|DONE)", line)
    if m: state[m.group(1)] = m.group(2)
ran = [names[k] for k, v in state.items() if v == "DONE" and k in names and re.search(r"\] (RUN|COPY)", names[k])]
print("; ".join(ran) if ran else "none")
PY
)
  echo "$cached steps CACHED; RUN/COPY steps executed: $executed" > "$work/res/check.buildkit.$c"
  log "buildkit $c warm check: $(cat "$work/res/check.buildkit.$c")"
  hf "warm.buildkit.$c" "$prep" "$warm" || true
}

# ---------------------------------------------------------------- run
log "work dir $work; cases: $CASES; runs: $RUNS"
make_rootfs
make_contexts
start_registry
log "registry $REG"
SOURCE_DATE_EPOCH=0 "$KILN" --root "$work/kiln-base" import "$work/rootfs.tar" -t "$BASE_REF" >/dev/null \
  || die "kiln import of the base failed"
bh_note=""
if setup_buildah overlay > "$work/res/setup.buildah.log" 2>&1; then :
elif setup_buildah vfs >> "$work/res/setup.buildah.log" 2>&1; then :
else bh_note="buildah storage does not work here: $(tail -2 "$work/res/setup.buildah.log" | tr '\n' ' ')"; fi
start_dockerd || die "dockerd did not start (log above)"
"$DOCKER" -H "$DH" import "$work/rootfs.tar" "$BASE_REF" >/dev/null

# ext4 skips inodes freed in the last 60 s when it allocates (360 s once their inode-table block is
# dirty again, which the next allocation in it makes it), and each skip costs a buffer lookup: after
# something deleted many files (a test suite, the last bench run's clean-up) a 2,000-file COPY took
# 0.7-1.3 s instead of 0.2 s, for whichever tool's files landed in those block groups. Flush, then let
# the 360 s pass before measuring anything (a 65 s wait did not help).
settle() { log "sync, then ${SETTLE:-370} s for recently freed inodes to age (SETTLE=0 skips)"; sync; sleep "${SETTLE:-370}"; }
settle
for c in $CASES; do
  measure_kiln "$c"
  if [[ -n "$BH_DRIVER" ]]; then measure_buildah "$c"; else note "warm.buildah.$c" "$bh_note"; fi
  measure_buildkit "$c"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
dockerd_version=$("$DOCKER" -H "$DH" version -f '{{.Server.Version}}' 2>/dev/null || true)
docker_driver=$("$DOCKER" -H "$DH" info -f '{{.Driver}}' 2>/dev/null || true)
elapsed=$(( $(date +%s) - start_s ))

# ---------------------------------------------------------------- report (Markdown on stdout)
val() { cat "$work/res/$1" 2>/dev/null || echo "n/a"; }
isnum() { [[ $1 =~ ^[0-9]+\.[0-9]+$ ]]; }
fmt() { if isnum "$1"; then printf '%.3f' "$1"; else printf '%s' "$1"; fi; }
ratio() { if isnum "$1" && isnum "$2" && [[ $(echo "$2 > 0" | bc) == 1 ]]; then printf '%.2fx' "$(echo "$1 / $2" | bc -l)"; else printf '—'; fi; }

cat <<EOF
Command: \`sudo bench/cache.sh\` (RUNS=$RUNS, CASES="$CASES").
Machine: $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB;
load average (1/5/15 min) at start $load_start, at end $load_end; run took ${elapsed} s on $(date -u +%Y-%m-%d).
Versions: kiln $(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$here" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted'), $(buildah --version | cut -d' ' -f1-3) (${BH_DRIVER:-no} storage),
dockerd ${dockerd_version:-n/a} (BuildKit built in, ${docker_driver:-n/a} storage), $(docker-registry --version 2>/dev/null | head -1 || echo docker-registry), $(skopeo --version), $(hyperfine --version).

Warm rebuild on a wiped machine from the registry cache, median of $RUNS runs (s):

| Dockerfile | kiln | buildah --cache-from | BuildKit inline cache | download floor: kiln pull | skopeo copy | kiln / buildah | kiln / BuildKit | kiln / floor (kiln pull) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
for c in $CASES; do
  k=$(val "warm.kiln.$c"); b=$(val "warm.buildah.$c"); bk=$(val "warm.buildkit.$c"); f=$(val "floor.kiln.$c"); s=$(val "floor.skopeo.$c")
  echo "| $c | $(fmt "$k") | $(fmt "$b") | $(fmt "$bk") | $(fmt "$f") | $(fmt "$s") | $(ratio "$k" "$b") | $(ratio "$k" "$bk") | $(ratio "$k" "$f") |"
done
echo
for c in $CASES; do
  k=$(val "warm.kiln.$c"); b=$(val "warm.buildah.$c"); bk=$(val "warm.buildkit.$c"); f=$(val "floor.kiln.$c")
  best=""; for p in "$b" "$bk"; do isnum "$p" && { [[ -z "$best" ]] || [[ $(echo "$p < $best" | bc) == 1 ]]; } && best=$p; done
  line="- $c: goal kiln ≤ 0.5x the best peer: "
  if isnum "$k" && [[ -n "$best" ]]; then r=$(echo "$k / $best" | bc -l); line+="$(printf '%.2fx' "$r") $( [[ $(echo "$r <= 0.5" | bc) == 1 ]] && echo met || echo missed)"; else line+="n/a"; fi
  line+="; goal kiln ≤ 1.5x the download floor: "
  if isnum "$k" && isnum "$f"; then r=$(echo "$k / $f" | bc -l); line+="$(printf '%.2fx' "$r") $( [[ $(echo "$r <= 1.5" | bc) == 1 ]] && echo met || echo missed)"; else line+="n/a"; fi
  echo "$line."
done
echo
echo "Cache checks of the warm builds:"
for c in $CASES; do
  echo "- $c: kiln $(val "check.kiln.$c"); buildah $(val "check.buildah.$c"); BuildKit $(val "check.buildkit.$c")."
done
