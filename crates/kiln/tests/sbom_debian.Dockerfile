# The Debian image of tests/sbom_debian.rs and bench/sbom-image.sh (same text, so the bench reuses the
# test's cached steps). kiln.test/debian:bookworm is the minbase root of
# crates/kiln-sbom/tests/debian-minbase.sh, imported with `kiln import`. pip and npm speak HTTPS
# through the host's CA bundle, bound from the context (ca.crt); apt gets ca-certificates itself.
FROM kiln.test/debian:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip nodejs npm fzf && apt-get clean && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,source=ca.crt,target=/etc/ssl/certs/ca-certificates.crt pip install --no-cache-dir --break-system-packages iniconfig==2.0.0
RUN --mount=type=bind,source=ca.crt,target=/etc/ssl/certs/ca-certificates.crt npm install -g --no-audit --no-fund is-number@7.0.0
