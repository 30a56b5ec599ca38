#!/usr/bin/env bash
# Registry transfer benchmark: push and pull of fresh-random images to a loopback docker-registry,
# kiln against `skopeo copy` (OCI layout <-> registry), with kiln's peak RSS.
#
#   bench/registry.sh                 # 200 MB and 1 GB images, 3 runs each
#   SIZES_MB="200" RUNS=1 bench/registry.sh
#   KILN=/path/to/kiln bench/registry.sh
#   PLAIN=1 LAYERS=1 SIZES_MB=2147 bench/registry.sh   # one uncompressed 2 GiB layer: both compress
#
# Needs: docker-registry, skopeo, python3, gzip, GNU time (/usr/bin/time; Debian package `time`).
# Each image is 4 gzip layers of random data (already compressed, so neither tool recompresses).
# PLAIN=1: the layers are uncompressed tar in the layout, so each push compresses them (skopeo to
# gzip, as containers/image does for a registry; kiln with its parallel gzip): compress + push.
# Every push goes to a freshly started, empty registry, so neither tool finds blobs already there.
# Prints a Markdown table (median seconds, ratio kiln/skopeo, kiln's max RSS). For a push, also the
# registry's own floor: `curl -T` of each layer blob in one monolithic PUT, one after another, to a
# fresh registry (what any client pays at least: the registry receives, hashes and writes every byte).
set -euo pipefail

SIZES_MB=${SIZES_MB:-"200 1000"}
RUNS=${RUNS:-3}
LAYERS=${LAYERS:-4}
PLAIN=${PLAIN:-}
here=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${KILN:-}" ]]; then
  (cd "$here" && cargo build --release -p kiln >&2)
  KILN="${CARGO_TARGET_DIR:-$here/target}/release/kiln"
fi
for t in docker-registry skopeo python3 gzip /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

# Not /tmp: every test on this machine creates and deletes files there, and ext4's inode allocator
# then spends up to a second per 2,000 creates skipping recently freed inodes (`recently_deleted` in
# perf) in that directory's block groups: a COPY of 2,000 files took 1.0 s under /tmp and 0.2 s
# under /var/tmp on the same disk. Every tool's state lives under this one dir. BENCH_TMP overrides.
work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-registry.XXXXXX")
# And each directory made directly in $work starts in a fresh block group (Orlov's TOPDIR, chattr +T),
# so a tool's cold run does not pay for inodes another tool's clean-up freed seconds before.
chattr +T "$work" 2>/dev/null || true
reg_pid=""
stop_registry() { if [[ -n "$reg_pid" ]]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; reg_pid=""; fi; }
cleanup() { stop_registry; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts an empty registry; sets $host.
start_registry() {
  stop_registry
  rm -rf "$work/reg"; mkdir -p "$work/reg/data"
  local port; port=$(free_port)
  cat > "$work/reg/config.yml" <<YML
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/reg/data } }
http: { addr: 127.0.0.1:$port }
YML
  docker-registry serve "$work/reg/config.yml" > "$work/reg/log" 2>&1 &
  reg_pid=$!
  host="127.0.0.1:$port"
  for _ in $(seq 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://$host/v2/')" 2>/dev/null; then return; fi
    sleep 0.05
  done
  echo "registry did not start: $(cat "$work/reg/log")" >&2; exit 1
}

# make_layout DIR TOTAL_MB: an OCI layout (tag "t") with $LAYERS gzip layers of fresh random data.
make_layout() {
  local dir=$1 per=$(( $2 * 1000000 / LAYERS ))
  mkdir -p "$dir/blobs/sha256" "$work/gen"
  for i in $(seq "$LAYERS"); do
    rm -rf "$work/gen/data"; mkdir -p "$work/gen/data"
    head -c "$per" /dev/urandom > "$work/gen/data/random.bin"
    if [[ -n "$PLAIN" ]]; then tar -C "$work/gen" -cf "$work/gen/layer$i.tar" data
    else tar -C "$work/gen" -cf - data | gzip -1 > "$work/gen/layer$i.tar.gz"; fi
  done
  python3 - "$dir" "$work/gen" "$LAYERS" "$PLAIN" <<'PY'
import hashlib, json, os, shutil, sys, gzip
d, gen, n, plain = sys.argv[1], sys.argv[2], int(sys.argv[3]), bool(sys.argv[4])
def put(path=None, data=None):
    h = hashlib.sha256()
    if data is None:
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
        size = os.path.getsize(path)
        shutil.move(path, f"{d}/blobs/sha256/{h.hexdigest()}")
    else:
        h.update(data); size = len(data)
        open(f"{d}/blobs/sha256/{h.hexdigest()}", "wb").write(data)
    return "sha256:" + h.hexdigest(), size
layers, diff_ids = [], []
for i in range(1, n + 1):
    p = f"{gen}/layer{i}.tar" if plain else f"{gen}/layer{i}.tar.gz"
    u = hashlib.sha256()
    with (open if plain else gzip.open)(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""): u.update(b)
    diff_ids.append("sha256:" + u.hexdigest())
    dg, sz = put(path=p)
    media = "application/vnd.oci.image.layer.v1.tar" + ("" if plain else "+gzip")
    layers.append({"mediaType": media, "digest": dg, "size": sz})
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}}).encode()
cd, cs = put(data=cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers}).encode()
md, ms = put(data=man)
open(f"{d}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
    "annotations": {"org.opencontainers.image.ref.name": "t"}}]}, open(f"{d}/index.json", "w"))
PY
}

# timed FILE CMD...: runs CMD under GNU time; appends "seconds maxrss_kb" to FILE.
timed() {
  local out=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null 2> "$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  cat "$work/time" >> "$out"
}

# floor_push FILE LAYOUT: one curl PUT per layer blob to the running registry; appends "seconds 0".
floor_push() {
  local out=$1 layout=$2 t0 loc code
  t0=$(date +%s.%N)
  for blob in $(python3 -c '
import json, sys
d = sys.argv[1]
idx = json.load(open(d + "/index.json"))
m = json.load(open(d + "/blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
print(" ".join(l["digest"] for l in m["layers"]))' "$layout"); do
    loc=$(curl -s -i -X POST "http://$host/v2/bench/floor/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
    [[ $loc == http* ]] || loc="http://$host$loc"
    code=$(curl -s -X PUT -H "Content-Type: application/octet-stream" -T "$layout/blobs/sha256/${blob#sha256:}" "$loc&digest=$blob" -o /dev/null -w "%{http_code}")
    [[ $code == 201 ]] || { echo "floor: PUT of $blob answered $code" >&2; exit 1; }
  done
  echo "$(echo "$(date +%s.%N) - $t0" | bc -l) 0" >> "$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
col() { awk -v c="$2" '{print $c}' "$1"; }

[[ -n "$PLAIN" ]] && echo "Uncompressed layers (PLAIN=1): each push compresses them; $LAYERS layer(s)." && echo
echo "| image | op | kiln (s) | skopeo (s) | kiln / skopeo | kiln max RSS (MB) | registry floor (s) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for mb in $SIZES_MB; do
  for op in push pull; do : > "$work/$op.kiln"; : > "$work/$op.skopeo"; : > "$work/$op.floor"; done
  for run in $(seq "$RUNS"); do
    rm -rf "$work/layout" "$work/root" "$work/skopeo-out"
    make_layout "$work/layout" "$mb"
    export KILN_ROOT="$work/root" CI=true DOCKER_CONFIG="$work/docker"
    "$KILN" copy "oci:$work/layout:t" "store:bench/img:$run" > /dev/null 2>&1
    # push: each tool to its own empty registry.
    start_registry
    timed "$work/push.skopeo" skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:t" "docker://$host/bench/img:$run"
    # The floor means nothing with PLAIN (the tools send gzip, not the plain blobs).
    if [[ -z "$PLAIN" ]] && command -v curl >/dev/null; then start_registry; floor_push "$work/push.floor" "$work/layout"; fi
    start_registry
    "$KILN" copy "store:bench/img:$run" "store:$host/bench/img:$run" > /dev/null 2>&1
    timed "$work/push.kiln" "$KILN" push "$host/bench/img:$run"
    # pull: both from the registry kiln just pushed to, each into an empty destination.
    rm -rf "$work/root"
    timed "$work/pull.kiln" "$KILN" pull "$host/bench/img:$run"
    timed "$work/pull.skopeo" skopeo copy --quiet --src-tls-verify=false "docker://$host/bench/img:$run" "oci:$work/skopeo-out:t"
    rm -rf "$work/skopeo-out" "$work/root"
  done
  for op in push pull; do
    k=$(col "$work/$op.kiln" 1 | median); s=$(col "$work/$op.skopeo" 1 | median)
    rss=$(col "$work/$op.kiln" 2 | sort -n | tail -1)
    floor="-"; [[ -s "$work/$op.floor" ]] && floor=$(printf "%.2f" "$(col "$work/$op.floor" 1 | median)")
    printf "| %s MB | %s | %.2f | %.2f | %.2f | %.0f | %s |\n" "$mb" "$op" "$k" "$s" "$(echo "$k / $s" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$floor"
  done
done
