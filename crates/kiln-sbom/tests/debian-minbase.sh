#!/bin/sh
# Bootstraps (once) a Debian bookworm minbase root file system as a tarball with mmdebstrap, from the
# Debian mirror this machine's apt uses, and prints the tarball's path. tests/debian-root.sh starts
# from it, and so does kiln's tests/sbom_debian.rs (as a base image made with `kiln import`).
#
# Cached under /var/lib/kiln-test/debian-minbase-KEY/rootfs.tar, KEY a hash of this script; delete
# the directory to force a new bootstrap. Exit status 3: the mirror did not answer (callers skip with
# the reason printed on stderr).
set -eu
script="$(readlink -f "$0")"
key="$(sha256sum "$script" | cut -c1-12)"
dest="/var/lib/kiln-test/debian-minbase-$key"
if [ -f "$dest/.complete" ]; then echo "$dest/rootfs.tar"; exit 0; fi

# The mirror the host's apt uses (deb822 or one-line sources): the one this machine reaches.
mirror="$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
[ -n "$mirror" ] || mirror="$(sed -n 's/^deb  *\(http[^ ]*\/debian\)  *bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)"
[ -n "$mirror" ] || { echo "no Debian mirror in the host's apt sources (/etc/apt/sources.list*)" >&2; exit 3; }

command -v mmdebstrap >/dev/null || apt-get install -y mmdebstrap >&2 || { echo "mmdebstrap cannot be installed" >&2; exit 3; }
curl -fsS -o /dev/null --max-time 20 "$mirror/dists/bookworm/Release" \
  || { echo "the Debian mirror $mirror does not answer" >&2; exit 3; }

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
# SOURCE_DATE_EPOCH makes mmdebstrap's own timestamps fixed; the packages' files keep theirs.
SOURCE_DATE_EPOCH=0 mmdebstrap --variant=minbase bookworm "$dest.tmp/rootfs.tar" "deb $mirror bookworm main" >&2 \
  || { echo "mmdebstrap failed (is the Debian mirror $mirror answering?)" >&2; exit 3; }
touch "$dest.tmp/.complete"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest/rootfs.tar"
