#!/usr/bin/env bash
# Layer compression benchmark: kiln-oci's parallel gzip (bench/compress, the encoder `kiln push` and
# exports use) at 1 and 2 threads against `pigz -p 1`, `pigz -p 2` and `gzip -6`, on one input of
# SIZE_MB MiB: half random bytes (incompressible), half `seq` text (compressible), in that order.
# Also kiln's one-stream form before parallel gzip (flate2, `gzip-single`) for the ratio, and
# kiln's peak RSS (GNU time %M) for the 2-thread run.
#
#   bench/compress.sh                  # 1024 MiB, 3 runs
#   SIZE_MB=256 RUNS=1 bench/compress.sh
#
# Needs: pigz (installed with apt-get when missing), gzip, GNU time. Prints a Markdown table: median
# seconds, ratio against `pigz -p 2`, output size as % of the input.
set -euo pipefail
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
LEVEL=${LEVEL:-6}
here=$(cd "$(dirname "$0")/.." && pwd)
command -v pigz >/dev/null || apt-get install -y pigz >&2
for t in gzip pigz /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done
target=${CARGO_TARGET_DIR:-$here/target}/bench-compress
(cd "$here/bench/compress" && CARGO_TARGET_DIR="$target" cargo build --release >&2)
bin="$target/release/kiln-bench-compress"

work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-compress.XXXXXX")
trap 'rm -rf "$work"' EXIT
half=$(( SIZE_MB * 1024 * 1024 / 2 ))
# seq dies of SIGPIPE when head has enough: not a failure (pipefail would make it one).
{ head -c "$half" /dev/urandom; { seq 1 1000000000 || true; } | head -c "$half"; } > "$work/in"

declare -A cmds=(
  ["kiln gzip, 1 thread"]="$bin gzip 1 $LEVEL"
  ["kiln gzip, 2 threads"]="$bin gzip 2 $LEVEL"
  ["kiln one stream (before)"]="$bin gzip-single 1 $LEVEL"
  ["pigz -p 1"]="pigz -$LEVEL -p 1 -c"
  ["pigz -p 2"]="pigz -$LEVEL -p 2 -c"
  ["gzip -$LEVEL"]="gzip -$LEVEL -c"
)
order=("kiln gzip, 1 thread" "kiln gzip, 2 threads" "kiln one stream (before)" "pigz -p 1" "pigz -p 2" "gzip -$LEVEL")
declare -A secs size rss
for name in "${order[@]}"; do
  ts=()
  for _ in $(seq "$RUNS"); do
    s=$(date +%s.%N)
    /usr/bin/time -f %M -o "$work/rss" ${cmds[$name]} < "$work/in" > "$work/out" 2>/dev/null
    ts+=("$(echo "$(date +%s.%N) - $s" | bc)")
  done
  secs[$name]=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
  size[$name]=$(stat -c %s "$work/out")
  rss[$name]=$(cat "$work/rss")
  gzip -t < "$work/out"
done
insize=$(stat -c %s "$work/in")
echo "| compressor (level $LEVEL, ${SIZE_MB} MiB) | median s | × pigz -p 2 | MB/s | size % of input | peak RSS MB |"
echo "| --- | --- | --- | --- | --- | --- |"
for name in "${order[@]}"; do
  printf '| %s | %.2f | %.2f | %.0f | %.3f | %.0f |\n' "$name" "${secs[$name]}" \
    "$(echo "${secs[$name]} / ${secs["pigz -p 2"]}" | bc -l)" "$(echo "$insize / ${secs[$name]} / 1000000" | bc -l)" \
    "$(echo "${size[$name]} * 100 / $insize" | bc -l)" "$(echo "${rss[$name]} / 1024" | bc -l)"
done
echo
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) on $(nproc) cores"
