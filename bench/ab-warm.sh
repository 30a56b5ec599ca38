#!/usr/bin/env bash
# A/B of two kiln binaries on the warm rebuild from a registry cache (bench/build/multistage): the
# same loopback docker-registry and the same busybox base for both; each binary fills its own cache
# ref with a cold build (cache keys may differ between versions), then hyperfine times a warm build
# on a root holding only the base (--prepare resets it), both orders, RUNS each (default 20).
#
#   bench/ab-warm.sh OLD_KILN NEW_KILN          e.g. a release build of an older commit in a worktree
#
# Needs root, docker-registry, hyperfine, python3, busybox-static. The temp dir and the registry are
# removed/stopped on exit.
set -euo pipefail
OLD=$1 NEW=$2 RUNS=${RUNS:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
w=$(mktemp -d /var/tmp/kiln-ab.XXXXXX)
trap 'kill $regpid 2>/dev/null; rm -rf "$w"' EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$w/reg.yml" <<Y
version: 0.1
storage: {filesystem: {rootdirectory: $w/reg}}
http: {addr: 127.0.0.1:$port}
Y
docker-registry serve "$w/reg.yml" >"$w/reg.log" 2>&1 & regpid=$!
sleep 1
REG=127.0.0.1:$port
BASE=bench.local/busybox:latest
"$here/scripts/busybox-rootfs" "$w/rootfs.tar" >/dev/null
ctx=$here/bench/build/multistage
for v in old new; do
  b=$OLD; [[ $v == new ]] && b=$NEW
  SOURCE_DATE_EPOCH=0 $b --root "$w/base-$v" import "$w/rootfs.tar" -t $BASE >/dev/null
  cp -a "$w/base-$v" "$w/root-$v"
  "$b" --root "$w/root-$v" build --progress quiet --build-arg "BASE=$BASE" -t "$REG/ms/$v:img" --cache-to "type=registry,ref=$REG/ms/$v:cache,mode=max" "$ctx" >/dev/null 2>&1
done
cmd() { echo "$1 --root $w/root-$2 build --progress quiet --build-arg BASE=$BASE -t $REG/ms/$2:img --cache-from type=registry,ref=$REG/ms/$2:cache $ctx"; }
prep() { echo "rm -rf $w/root-$1 && cp -a $w/base-$1 $w/root-$1"; }
for order in "old new" "new old"; do
  read -r first second <<<"$order"
  set -- "$first" "$second"
  b1=$OLD; [[ $1 == new ]] && b1=$NEW
  b2=$OLD; [[ $2 == new ]] && b2=$NEW
  hyperfine -w 2 -r "$RUNS" --prepare "$(prep "$1")" -n "$1" "$(cmd "$b1" "$1")" --prepare "$(prep "$2")" -n "$2" "$(cmd "$b2" "$2")" 2>&1 \
    | grep -E "Benchmark|Time|Error|error" | head -12
done
