#!/usr/bin/env bash
# Warm rebuild on a wiped machine from the GitHub Actions cache (type=gha, against kiln-testkit's
# emulator of the cache service v2 and its blob store) against the same rebuild from a registry cache
# (type=registry, a local docker-registry), same kiln, same Dockerfiles (bench/build/multistage and
# bench/build/big-run, a 100 MB RUN layer), in one run. Markdown report on stdout.
#
#   sudo bench/gha.sh
#   RUNS=3 CASES="big-run" KILN=target/release/kiln EMU=target/release/kiln-gha-emulator sudo bench/gha.sh
#
# Per case: a cold build exports to each cache (mode=max); timed (hyperfine, median of RUNS, default
# 5): a fresh --root holding only the base (untimed --prepare) + `kiln build --cache-from …`. The last
# timed run's --metadata-file must show every layer step as `hit-registry` (kiln's name for a hit in a
# remote cache), or the report says so instead of a number. Both services run on loopback with no
# throttle: the figure compares the two protocols' costs (gha: a signed URL asked for before each
# read, one entry per layer plus an index per scope; registry: manifest + blobs), not GitHub's
# bandwidth.
#
# Needs root, hyperfine, docker-registry, busybox-static, python3. Every temp dir and both services
# are removed/stopped (by PID) on exit.
set -euo pipefail

RUNS=${RUNS:-5}
CASES=${CASES:-"multistage big-run"}
BASE_REF=bench.local/busybox:latest
here=$(cd "$(dirname "$0")/.." && pwd)
start_s=$(date +%s)

log() { echo "[gha-bench $(( $(date +%s) - start_s ))s] $*" >&2; }
die() { echo "bench/gha.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (sudo bench/gha.sh): the builds need namespaces and overlay mounts"
for t in hyperfine docker-registry python3 tar; do
  command -v "$t" >/dev/null || die "missing tool: $t (apt-get install hyperfine docker-registry python3)"
done
[[ -x /bin/busybox ]] || die "missing /bin/busybox (apt-get install busybox-static)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ -z "${KILN:-}" || -z "${EMU:-}" ]]; then
  command -v cargo >/dev/null || die "cargo not found; build kiln yourself and pass KILN=… EMU=…"
  log "cargo build --release -p kiln -p kiln-testkit --bins"
  (cd "$here" && cargo build --release -p kiln -p kiln-testkit --bins >&2)
  KILN=${KILN:-${CARGO_TARGET_DIR:-$here/target}/release/kiln}
  EMU=${EMU:-${CARGO_TARGET_DIR:-$here/target}/release/kiln-gha-emulator}
fi
[[ -x "$KILN" ]] || die "kiln binary not found at $KILN"
[[ -x "$EMU" ]] || die "kiln-gha-emulator not found at $EMU"

# Not /tmp (see bench/cache.sh: ext4's inode allocator churn there from the test suite).
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-gha.XXXXXX")
reg_pid=""
emu_pid=""
cleanup() {
  set +e +o pipefail
  [[ -n "$reg_pid" ]] && { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; }
  [[ -n "$emu_pid" ]] && { kill "$emu_pid" 2>/dev/null; wait "$emu_pid" 2>/dev/null; }
  if [[ -n "${KEEP_LOGS:-}" ]]; then mkdir -p "$KEEP_LOGS" && cp -a "$work/res/." "$KEEP_LOGS/"; fi
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work" || echo "bench/gha.sh: could not remove $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/res" "$work/trash" "$work/ctx"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/reg/data"
port=$(free_port)
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
  python3 -c "import urllib.request; urllib.request.urlopen('http://$REG/v2/')" 2>/dev/null && break
  sleep 0.05
done
"$EMU" > "$work/emu.env" 2> "$work/emu.log" &
emu_pid=$!
for _ in $(seq 100); do grep -q '^ACTIONS_RUNTIME_TOKEN=' "$work/emu.env" 2>/dev/null && break; sleep 0.05; done
grep -q '^ACTIONS_RUNTIME_TOKEN=' "$work/emu.env" || die "the emulator did not start: $(cat "$work/emu.log")"
# The runner's environment, as crazy-max/ghaction-github-runtime exposes it.
GHA_ENV="env $(grep -E '^ACTIONS_(RESULTS_URL|RUNTIME_TOKEN)=' "$work/emu.env" | tr '\n' ' ')"

"$here/scripts/busybox-rootfs" "$work/rootfs.tar"
SOURCE_DATE_EPOCH=0 "$KILN" --root "$work/kiln-base" import "$work/rootfs.tar" -t "$BASE_REF" >/dev/null \
  || die "kiln import of the base failed"

note() { echo "$2" > "$work/res/$1"; log "$1: $2"; }
hf() { # NAME PREP CMD
  local name=$1 prep=$2 cmd=$3
  if hyperfine --runs "$RUNS" --style none --export-json "$work/res/$name.json" --prepare "$prep" "$cmd" > "$work/res/$name.log" 2>&1; then
    python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["results"][0]["median"])' "$work/res/$name.json" > "$work/res/$name"
    log "$name: $(cat "$work/res/$name") s"
  else
    note "$name" "failed: $(tail -3 "$work/res/$name.log" | tr '\n' ' ')"
  fi
}
# check NAME MD: every layer step of the warm build's metadata is a cache hit.
check() {
  python3 - "$2" > "$work/res/check.$1" <<'PY' || true
import json, sys
md = json.load(open(sys.argv[1]))
steps = [s for s in md.get("kiln.steps", []) if s.get("cache") != "none"]
bad = [s.get("instruction", "?") for s in steps if s.get("cache") != "hit-registry"]
print("every step hit (%d)" % len(steps) if steps and not bad else "NOT ALL HIT: %s" % bad)
PY
  log "$1: $(cat "$work/res/check.$1")"
}
trash() { echo "{ [ ! -e '$1' ] || mv '$1' \"$work/trash/\$(date +%s%N)\"; }"; }
K() { echo "'$KILN' --root '$work/root'"; }
prep="$(trash "$work/root") && cp -a '$work/kiln-base' '$work/root'"

for c in $CASES; do
  [[ -f "$here/bench/build/$c/Dockerfile" ]] || die "unknown case $c (no bench/build/$c/Dockerfile)"
  cp -a "$here/bench/build/$c" "$work/ctx/$c"
  ctx=$work/ctx/$c
  b="build --progress plain --build-arg BASE=$BASE_REF -t bench/$c -f '$ctx/Dockerfile'"
  log "$c: cold builds exporting to both caches"
  bash -c "$prep && $(K) $b --cache-to type=registry,ref=$REG/bench/$c:cache,mode=max '$ctx'" > "$work/res/cold-reg.$c.log" 2>&1 \
    || die "cold registry build of $c failed: $(tail -5 "$work/res/cold-reg.$c.log")"
  bash -c "$prep && $GHA_ENV $(K) $b --cache-to type=gha,scope=$c,mode=max '$ctx'" > "$work/res/cold-gha.$c.log" 2>&1 \
    || die "cold gha build of $c failed: $(tail -5 "$work/res/cold-gha.$c.log")"
  hf "reg.$c" "$prep" "$(K) $b --cache-from type=registry,ref=$REG/bench/$c:cache --metadata-file '$work/res/md-reg.$c.json' '$ctx'"
  hf "gha.$c" "$prep" "$GHA_ENV $(K) $b --cache-from type=gha,scope=$c --metadata-file '$work/res/md-gha.$c.json' '$ctx'"
  check "reg.$c" "$work/res/md-reg.$c.json"
  check "gha.$c" "$work/res/md-gha.$c.json"
done

val() { cat "$work/res/$1" 2>/dev/null || echo "?"; }
ratio() { python3 -c 'import sys
try: print("%.2fx" % (float(sys.argv[1]) / float(sys.argv[2])))
except Exception: print("?")' "$1" "$2"; }
echo "Versions: kiln $(cd "$here" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$here" && git diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted'), docker-registry $(docker-registry --version 2>/dev/null | awk '{print $3}'), runs=$RUNS, load average at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| Dockerfile | warm from registry cache (s) | warm from gha cache (s) | gha / registry | checks |"
echo "| --- | ---: | ---: | ---: | --- |"
for c in $CASES; do
  r=$(val "reg.$c"); g=$(val "gha.$c")
  echo "| $c | $r | $g | $(ratio "$g" "$r") | registry: $(val "check.reg.$c"); gha: $(val "check.gha.$c") |"
done
