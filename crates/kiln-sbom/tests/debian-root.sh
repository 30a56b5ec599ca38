#!/bin/sh
# Builds (once) a real Debian bookworm root file system with packages from apt, pip and npm, for the
# kiln-sbom tests and bench/sbom.sh, and prints its path.
#
# It starts from the minbase tarball of debian-minbase.sh (bootstrapped once, shared with kiln's
# tests/sbom_debian.rs). The root is cached under /var/lib/kiln-test/sbom-debian-KEY, where KEY is a
# hash of both scripts: any change to what they install makes a new root; delete the directory to
# force a rebuild. Exit status 3
# means the Debian mirror (or PyPI / the npm registry) did not answer; the caller skips with the reason.
set -eu
script="$(readlink -f "$0")"
minbase="$(dirname "$script")/debian-minbase.sh"
key="$(cat "$script" "$minbase" | sha256sum | cut -c1-12)"
dest="/var/lib/kiln-test/sbom-debian-$key"
if [ -f "$dest/.complete" ]; then echo "$dest/root"; exit 0; fi

APT_PACKAGES="python3-pip nodejs npm curl fzf"
PIP_PACKAGE="iniconfig==2.0.0"
NPM_PACKAGE="is-number@7.0.0"

# Exit status 3 (no mirror) passes through: `set -e` stops here with it.
tarball="$("$minbase")"

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/root"
tar -C "$dest.tmp/root" -xpf "$tarball"
# A private mount namespace, so the binds vanish with the process whatever happens.
unshare --mount --fork sh -eu -c '
  r="$1"; shift
  mount --make-rprivate /
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"
  mount --bind /etc/resolv.conf "$r/etc/resolv.conf"
  export DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  chroot "$r" apt-get update
  chroot "$r" apt-get install -y --no-install-recommends $1
  # The host CA bundle only after apt: ca-certificates replaces the file in its postinst, which a
  # bind mount would block. pip and npm speak HTTPS through it.
  mount --bind /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
  chroot "$r" pip install --no-cache-dir --break-system-packages "$2"
  chroot "$r" npm install -g "$3"
  chroot "$r" apt-get clean
' sh "$dest.tmp/root" "$APT_PACKAGES" "$PIP_PACKAGE" "$NPM_PACKAGE" >&2 || { echo "installing packages in the Debian root failed (mirror, PyPI or npm registry)" >&2; exit 3; }
touch "$dest.tmp/.complete"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "$dest/root"
