#!/usr/bin/env bash
# `--isolation none` (kiln inside an unprivileged container, the root file system reset and diffed
# per step) against kiln's root mode (sandbox over overlay snapshots), on bench/build's Dockerfiles
# over the offline busybox base. One cold run each (fresh kiln root holding only the imported base).
#
#   sudo bench/isolation-none.sh                  # prints a Markdown table on stdout
#   KILN=target/debug/kiln CASES="many-runs" sudo bench/isolation-none.sh
#
# The container: a private dockerd (no iptables, no bridge, vfs storage), Docker's default seccomp
# profile, no added capabilities, --network none; its image is the busybox root plus kiln in /kiln
# (binary and the glibc libraries ldd names). The none-mode time is that of `docker exec … kiln
# build`, less the median of three `docker exec … true` (the exec's own cost, printed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
KILN=${KILN:-$here/target/release/kiln}
CASES=${CASES:-"multistage copy-heavy many-runs big-run"}
BASE_REF=bench.local/busybox:latest
die() { echo "bench/isolation-none.sh: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root"
[[ -x $KILN ]] || die "no kiln at $KILN (cargo build --release -p kiln, or KILN=…)"
for t in dockerd docker tar python3 ldd; do command -v $t >/dev/null || die "missing $t"; done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d /tmp/kiln-bench-none.XXXXXX)
chmod 755 "$work"
dpid=
cleanup() { [[ -n $dpid ]] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs --data-root "$work/d/data" \
  --exec-root "$work/d/exec" --pidfile "$work/d/pid" -H "unix://$work/d/sock" >"$work/dockerd.log" 2>&1 &
dpid=$!
D=(docker -H "unix://$work/d/sock")
for _ in $(seq 120); do "${D[@]}" version >/dev/null 2>&1 && break; sleep 0.5; done
"${D[@]}" version >/dev/null 2>&1 || die "dockerd did not start: $(tail -3 "$work/dockerd.log")"

"$here/scripts/busybox-rootfs" "$work/rootfs.tar" >/dev/null
mkdir -p "$work/img/kiln/lib"
tar -C "$work/img" -xf "$work/rootfs.tar"
cp "$KILN" "$work/img/kiln/kiln"
for l in $(ldd "$KILN" | grep -o '/[^ ]*'); do cp "$l" "$work/img/kiln/lib/"; done
tar --numeric-owner -C "$work/img" -cf "$work/img.tar" .
"${D[@]}" import "$work/img.tar" kiln-bench-none:1 >/dev/null

mkdir -p "$work/ctx"
for c in $CASES; do cp -a "$here/bench/build/$c" "$work/ctx/$c"; done
if [[ -d $work/ctx/copy-heavy ]]; then
  # The same seeded tree as bench/build.sh: 2000 files of 256 B..4 KiB in 40 dirs, and 1 MiB.
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
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
KIN=(/kiln/lib/ld-linux-x86-64.so.2 --library-path /kiln/lib /kiln/kiln --root /kiln/root)

echo "| case | root mode (s) | --isolation none (s) | ratio none/root |"
echo "| --- | --- | --- | --- |"
for c in $CASES; do
  root="$work/root-$c"
  "$KILN" --root "$root" import "$work/rootfs.tar" -t "$BASE_REF" >/dev/null
  t0=$(now); "$KILN" --root "$root" build "$work/ctx/$c" --build-arg BASE=$BASE_REF -q >/dev/null; t1=$(now)
  r=$(secs "$t0" "$t1")
  ctr=$("${D[@]}" run -d --network none -v "$work:$work" kiln-bench-none:1 /bin/sleep 100000)
  "${D[@]}" exec "$ctr" "${KIN[@]}" import "$work/rootfs.tar" -t "$BASE_REF" >/dev/null
  ex=()
  for _ in 1 2 3; do a=$(now); "${D[@]}" exec "$ctr" /bin/true; b=$(now); ex+=("$(secs "$a" "$b")"); done
  exec_cost=$(printf '%s\n' "${ex[@]}" | sort -n | sed -n 2p)
  t0=$(now)
  "${D[@]}" exec "$ctr" "${KIN[@]}" build "$work/ctx/$c" --build-arg BASE=$BASE_REF -q --isolation none --ignore-path /kiln >/dev/null 2>"$work/err" \
    || die "$c failed in the container: $(tail -5 "$work/err")"
  t1=$(now)
  n=$(python3 -c "print(f'{$t1 - $t0 - $exec_cost:.2f}')")
  "${D[@]}" rm -f "$ctr" >/dev/null
  echo "| $c | $r | $n | $(python3 -c "print(f'{$n / $r:.2f}')") |"
done
echo
echo "One run each; docker exec's own cost (median of 3, subtracted): ${exec_cost}s. Load average at start: $load_start; at end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores, shared)."
