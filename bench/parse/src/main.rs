//! Dockerfile parse throughput.
//!
//! Generates a deterministic, realistic 5,000-line Dockerfile (every instruction kind, long
//! continued RUN lines with comments inside, `--mount`/`--from`/`--chmod` flags, heredocs, JSON
//! forms, ONBUILD, HEALTHCHECK, the key=value forms) and measures parse throughput in MB/s for
//! kiln-dockerfile and, in the same run on the same bytes, for the `parse-dockerfile` crate (a
//! BuildKit-compatible Rust parser) as the peer.
//!
//! Run: `cargo run --release --manifest-path bench/parse/Cargo.toml [-- --write FILE]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts heap allocations, to report allocations per parse next to the throughput.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs_per_parse(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    f();
    ALLOCS.load(Ordering::Relaxed) - before
}

const TARGET_LINES: usize = 5_000;

fn generate() -> String {
    let mut s = String::with_capacity(300 * 1024);
    s.push_str("# syntax=docker/dockerfile:1.7\n# check=skip=JSONArgsRecommended\n\n");
    s.push_str("ARG GO_VERSION=1.23\nARG ALPINE_VERSION=3.20\nARG BASE_IMAGE=debian:bookworm-slim\n\n");
    let mut stage = 0;
    while s.lines().count() < TARGET_LINES {
        let n = stage;
        stage += 1;
        s.push_str(&format!(
            "# ---- stage {n}: build the component, then package it ----\n\
             FROM --platform=$BUILDPLATFORM golang:${{GO_VERSION}}-alpine${{ALPINE_VERSION}} AS build{n}\n\
             ARG TARGETOS TARGETARCH\n\
             ARG COMPONENT_{n}=component-{n}\n\
             ENV CGO_ENABLED=0 \\\n    GOFLAGS=\"-trimpath -mod=readonly\" \\\n    GOCACHE=/root/.cache/go-build \\\n    PATH=/usr/local/go/bin:$PATH\n\
             ENV LEGACY_FORM value with spaces {n}\n\
             WORKDIR /src/component{n}\n\
             RUN apk add --no-cache \\\n      git \\\n      # build tools\n      make \\\n      gcc \\\n      musl-dev \\\n  && rm -rf /var/cache/apk/* \\\n  && echo \"done {n}\"\n\
             COPY --link go.mod go.sum ./\n\
             RUN --mount=type=cache,target=/go/pkg/mod \\\n    --mount=type=cache,target=/root/.cache/go-build \\\n    go mod download -x\n\
             COPY --link --chmod=755 <<'EOT' /usr/local/bin/build.sh\n#!/bin/sh\nset -eu\n: \"${{TARGETOS:?}}\"\ngo build -ldflags \"-s -w -X main.version=$VERSION\" -o /out/app{n} ./cmd/app\nEOT\n\
             RUN --mount=type=bind,target=. \\\n    --mount=type=cache,target=/root/.cache/go-build,id=build-{n}-$TARGETPLATFORM <<EOT\n  set -ex\n  xx-go --wrap\n  /usr/local/bin/build.sh\n  xx-verify --static /out/app{n}\nEOT\n\
             RUN <<-EOF\n\techo \"tabs are stripped\" > /etc/motd\n\tchmod 0644 /etc/motd\n\tEOF\n\
             \n\
             FROM ${{BASE_IMAGE}} AS runtime{n}\n\
             LABEL org.opencontainers.image.title=\"component {n}\" \\\n      org.opencontainers.image.source=\"https://example.com/repo\" \\\n      maintainer=ops@example.com\n\
             MAINTAINER Ops Team <ops@example.com>\n\
             RUN set -eux; \\\n\tapt-get update; \\\n\tapt-get install -y --no-install-recommends ca-certificates curl tzdata; \\\n\trm -rf /var/lib/apt/lists/*; \\\n\tgroupadd -r app && useradd -r -g app app\n\
             COPY --from=build{n} --chown=app:app /out/app{n} /usr/local/bin/app\n\
             ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/archive-{n}.tar.gz /opt/\n\
             COPY [\"config/app {n}.yaml\", \"/etc/app/\"]\n\
             VOLUME [\"/var/lib/app\", \"/var/log/app\"]\n\
             EXPOSE 8080/tcp 8443/tcp 9090\n\
             USER app:app\n\
             WORKDIR /home/app\n\
             SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n\
             HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \\\n  CMD curl -fsS http://localhost:8080/healthz || exit 1\n\
             ONBUILD COPY . /app/src\n\
             ONBUILD RUN make -C /app/src install\n\
             STOPSIGNAL SIGTERM\n\
             ENTRYPOINT [\"/usr/local/bin/app\", \"--config\", \"/etc/app/app {n}.yaml\"]\n\
             CMD [\"serve\", \"--port=8080\"]\n\n"
        ));
    }
    s
}

/// Runs `f` over the input until at least `min` has passed; returns MB/s (10^6 bytes per second).
fn throughput(bytes: usize, min: Duration, mut f: impl FnMut()) -> (f64, u32) {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < min {
        f();
        iters += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (bytes as f64 * f64::from(iters) / secs / 1e6, iters)
}

fn main() {
    let text = generate();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write") {
        let path = args.get(i + 1).expect("--write needs a file name");
        std::fs::write(path, &text).expect("write the generated Dockerfile");
    }
    let lines = text.lines().count();
    let ast = kiln_dockerfile::parse(text.as_bytes()).expect("kiln parses the generated Dockerfile");
    let heredocs: usize = ast.children.iter().map(|c| c.heredocs.len()).sum();
    println!(
        "input: {lines} lines, {} bytes, {} instructions, {heredocs} heredocs",
        text.len(),
        ast.children.len()
    );
    if let Err(e) = parse_dockerfile::parse(&text) {
        eprintln!("peer parse-dockerfile rejects the input: {e}");
        std::process::exit(1);
    }

    let ka = allocs_per_parse(|| drop(black_box(kiln_dockerfile::parse(text.as_bytes()))));
    let pa = allocs_per_parse(|| drop(black_box(parse_dockerfile::parse(&text))));
    println!("allocations per parse: kiln-dockerfile {ka}, parse-dockerfile {pa}");
    let min = Duration::from_secs(3);
    if std::env::var_os("KILN_BENCH_ONLY_KILN").is_some() {
        // For profiling kiln alone.
        let (kiln, ki) = throughput(text.len(), min, || {
            black_box(kiln_dockerfile::parse(black_box(text.as_bytes())).ok());
        });
        println!("kiln-dockerfile        {kiln:8.1} MB/s  ({ki} parses)");
        return;
    }
    let (kiln, ki) = throughput(text.len(), min, || {
        black_box(kiln_dockerfile::parse(black_box(text.as_bytes())).ok());
    });
    let (peer, pi) = throughput(text.len(), min, || {
        black_box(parse_dockerfile::parse(black_box(&text)).ok());
    });
    println!("kiln-dockerfile        {kiln:8.1} MB/s  ({ki} parses)");
    println!("parse-dockerfile (peer){peer:8.1} MB/s  ({pi} parses)");
    println!("ratio kiln/peer        {:8.2}x", kiln / peer);
}
