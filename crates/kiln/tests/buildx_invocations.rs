//! Issue 12's acceptance table: real `docker buildx build` command lines and `docker/build-push-action`
//! steps copied from public repositories (each row names its source as `owner/repo path`), each run
//! as `kiln build …` and checked for its effect with the tools that read it: skopeo for what reached
//! the registry (tags, digests, labels in the config, annotations in manifests), the files of
//! `-o type=local` and of tar outputs, the raw blobs of the store and the registry for secrets, a
//! private `dockerd` for `--load` (`docker run` of the loaded image), and a second build on a wiped
//! machine for `--cache-to`/`--cache-from`.
//!
//! `args` is the row's `original` with only these substitutions:
//!
//! - registry and image names that are pushed or used as cache refs: the host (and for `ttl.sh`,
//!   `ghcr.io`, Docker Hub and the like, the host part) becomes `{REG}`, a loopback
//!   `kiln_testkit::Registry::start_plain()`; names that stay local (`--load`, the store) are kept;
//! - the context: kiln runs in the row's context directory, so `.` is kept as written; other context
//!   words (`$CTX`, `"${BUILD_CONTEXT}"`, `..`) become `.`; Dockerfile paths (`-f`/`--file`) are kept
//!   and the test writes its Dockerfile there; absolute or `$HOME` paths (cache dirs, secret files,
//!   `dest=`) move under `{DIR}`, the row's own temp dir;
//! - shell variables and command substitutions become a representative value (`$TAG` → `v1.0.0`,
//!   `` `id -u` `` → `0`); build-arg names and literal values are kept;
//! - platforms: this machine is linux/amd64 and builds linux/arm64 under qemu-user-static (see
//!   `multiplatform.rs`); other platforms (`linux/arm/v7`) are dropped, `linux/arm64/v8` is kept;
//! - `docker/build-push-action` steps (`original` is the `with:` block) are the argv that
//!   `scripts/action-args` gives for those inputs, with the directory it writes into as `{DIR}`.
//!   `${{ … }}` expressions are replaced by representative values.
//!
//! Each row gets a Dockerfile made for its flags: a `base` stage that records its build args and,
//! for every `--secret id=ID`, the SHA-256 of the secret file (`RUN --mount=type=secret`), an
//! `export` stage of files (for `--target export` and `-o type=local`), and a final stage. Bases are
//! busybox for amd64 and arm64, imported offline and reproducibly (`FROM kiln.test/busybox:${TARGETARCH}`).
//!
//! Rows run one after another within a group (registry; dockerd; neither). A failing row does not
//! stop its group: every failure is collected and the test fails with the list, each naming the row's
//! source and argv. Needs root, busybox-static, skopeo, qemu-aarch64 with the arm64 busybox
//! (`scripts/deps`), and dockerd for the `--load` rows.

mod support_build;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln_testkit::{Dockerd, Registry};
use serde_json::Value;
use support_build::{path_str, read_json, stderr, stdout, KILN};

const ARM_BUSYBOX: &str = kiln_testkit::ARM64_BUSYBOX;
const HELLO: &str = "hello from the context";

struct Row {
    source: &'static str,
    original: &'static str,
    args: &'static [&'static str],
    check: Check,
}

enum Check {
    /// Every `-t`/`--tag` (or `name=` of an image output) is in the registry.
    Pushed,
    /// The digest in the row's `--metadata-file` is in the registry under the output's `name=`.
    PushedByDigest,
    /// The pushed image's config (host platform) has this label.
    Label(&'static str, &'static str),
    /// The pushed image has this annotation at `index` or `manifest` level (every manifest).
    Annotation(&'static str, &'static str, &'static str),
    /// A `type=local` destination holds these files (the Dockerfile's `export` stage).
    LocalFiles(&'static str, &'static [&'static str]),
    /// A tar output holds these entries.
    TarHas(&'static str, &'static [&'static str]),
    /// The secret's SHA-256 (written by RUN) is in a layer; the raw value is in no blob of the
    /// store or the registry. The test writes the value to every `src=` of the row's `--secret`s.
    SecretSeenNotStored(&'static str),
    /// `docker run --rm --network none TAG` in the private dockerd prints the context's file.
    Loaded(&'static str),
    /// Like `Loaded`, for the image ID that `--iidfile PATH` names.
    LoadedIid(&'static str),
    /// `kiln inspect TAG` finds it in the store.
    StoreTagged(&'static str),
    /// The cache ref is in the registry.
    CacheWritten(&'static str),
    /// The same command on a wiped machine hits the cache for every layer step; `Some((from, to))`
    /// first renames a cache dir as the row's script does (`mv /tmp/docker-cache-new /tmp/docker-cache`).
    CacheHits(Option<(&'static str, &'static str)>),
    /// kiln refuses the command, naming this (a flag or option), with exit code 1.
    Refused(&'static str),
    All(&'static [Check]),
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

const REGISTRY_ROWS: &[Row] = &[
    Row {
        // type=gha: the Actions cache service is the testkit emulator (ACTIONS_RESULTS_URL and
        // ACTIONS_RUNTIME_TOKEN set as the runner sets them); the rebuild on a wiped machine hits it.
        source: "cloudticon/action dist/build-and-push-docker-image.sh",
        original: "docker buildx build $CTX -t $IMAGE --build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=1 --cache-from type=gha --cache-to type=gha,mode=max --push",
        // README "Coming from buildx": the type=gha cache is not there yet and refused by name.
        args: &[".", "-t", "{REG}/cloudticon/app", "--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1", "--cache-from", "type=gha", "--cache-to", "type=gha,mode=max", "--push"],
        check: Check::All(&[Check::Pushed, Check::CacheHits(None)]),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/secrets.md",
        original: "uses: docker/build-push-action@v6 with: { ssh: default, push: true, tags: user/app:latest }",
        // SSH_AUTH_SOCK is set to a real ssh-agent the harness starts; a RUN --mount=type=ssh uses it.
        args: &["build", "--iidfile", "{DIR}/iid", "--ssh", "default", "--tag", "{REG}/user/app:latest", "--metadata-file", "{DIR}/metadata.json", "--push", "."],
        check: Check::Pushed,
    },
    Row {
        source: "warp-contracts/warp-node docker-deploy.sh",
        original: "docker buildx build -t warpredstone/den:amd64_1.0.2 . --platform=linux/amd64 --push",
        args: &["-t", "{REG}/warpredstone/den:amd64_1.0.2", ".", "--platform=linux/amd64", "--push"],
        check: Check::Pushed,
    },
    Row {
        source: "warp-contracts/warp-node docker-deploy.sh",
        original: "docker buildx build -t warpredstone/den:arm64_1.0.2 . --platform=linux/arm64 --push",
        args: &["-t", "{REG}/warpredstone/den:arm64_1.0.2", ".", "--platform=linux/arm64", "--push"],
        check: Check::Pushed,
    },
    Row {
        source: "ayomeer/f1tenth_kf .devcontainer/scripts/build_galactic-base.sh",
        original: "docker buildx build --cache-from=type=registry,ref=ayomeer/ros-devcontainer:buildcache-arm64 --cache-from=type=registry,ref=ayomeer/ros-devcontainer:buildcache-amd64 --platform linux/amd64,linux/arm64/v8 --target base --push -t ayomeer/ros-devcontainer:galactic-base .",
        args: &[
            "--cache-from=type=registry,ref={REG}/ayomeer/ros-devcontainer:buildcache-arm64",
            "--cache-from=type=registry,ref={REG}/ayomeer/ros-devcontainer:buildcache-amd64",
            "--platform",
            "linux/amd64,linux/arm64/v8",
            "--target",
            "base",
            "--push",
            "-t",
            "{REG}/ayomeer/ros-devcontainer:galactic-base",
            ".",
        ],
        check: Check::Pushed,
    },
    Row {
        source: "jd-opensource/JoySafety safety/safety-skills/safety-keywords/build/buildx.sh",
        original: "DOCKER_BUILDKIT=1 docker buildx build --platform linux/amd64,linux/arm64 --secret id=mvnsettings,src=\"${MAVEN_SETTING_FILE:-~/maven/settings.xml}\" --progress=plain -t ccr.ccs.tencentyun.com/joysafety/joysafety:safety-keywords-0.0.1 --push ..",
        args: &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--secret",
            "id=mvnsettings,src={DIR}/maven/settings.xml",
            "--progress=plain",
            "-t",
            "{REG}/joysafety/joysafety:safety-keywords-0.0.1",
            "--push",
            ".",
        ],
        check: Check::All(&[Check::Pushed, Check::SecretSeenNotStored("<settings><password>mvn-Zq7kiln</password></settings>")]),
    },
    Row {
        source: "zouloux/docker-debian-ci build-n-push.sh",
        original: "docker buildx build --platform linux/amd64,linux/arm64 -f Dockerfile -t zouloux/docker-debian-ci:php8.3-composer2.7-node22.2-npm10.7-docker26.1-bun1.1 -t zouloux/docker-debian-ci:latest --push .",
        args: &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-f",
            "Dockerfile",
            "-t",
            "{REG}/zouloux/docker-debian-ci:php8.3-composer2.7-node22.2-npm10.7-docker26.1-bun1.1",
            "-t",
            "{REG}/zouloux/docker-debian-ci:latest",
            "--push",
            ".",
        ],
        check: Check::Pushed,
    },
    Row {
        source: "go-sphere/sphere layout/make/docker.mk",
        original: "docker buildx build --platform=linux/amd64,linux/arm64 -t $(DOCKER_IMAGE) . -f $(DOCKER_FILE) --push --provenance=false",
        args: &["--platform=linux/amd64,linux/arm64", "-t", "{REG}/sphere/app:latest", ".", "-f", "Dockerfile", "--push", "--provenance=false"],
        check: Check::Pushed,
    },
    Row {
        source: "bartoszj/debian Makefile",
        original: "docker buildx build --platform linux/arm64 -t bartoszj/debian . --push --progress plain",
        args: &["--platform", "linux/arm64", "-t", "{REG}/bartoszj/debian", ".", "--push", "--progress", "plain"],
        check: Check::Pushed,
    },
    Row {
        source: "whysosaket/Banking-Spring-Boot cnbank/build-amd64.sh",
        original: "docker buildx build --platform linux/amd64 -t whysosaket/cnbank-server --push .",
        args: &["--platform", "linux/amd64", "-t", "{REG}/whysosaket/cnbank-server", "--push", "."],
        check: Check::Pushed,
    },
    Row {
        source: "distroless-docker/distroless-nginx build.sh",
        original: "DOCKER_CLI_EXPERIMENTAL=enabled docker buildx build --push --platform linux/arm/v7,linux/arm64/v8,linux/amd64 --tag distroless/distroless-nginx:$VERSION .",
        // linux/arm/v7 dropped (no arm busybox here).
        args: &["--push", "--platform", "linux/arm64/v8,linux/amd64", "--tag", "{REG}/distroless/distroless-nginx:1.18.0", "."],
        check: Check::Pushed,
    },
    Row {
        source: "apiv1/apiv1.github.io Docker/docker-buildx/README.md",
        original: "docker buildx build . --platform linux/amd64,linux/arm64 --build-arg DOCKER_BUILDX_VERSION=$DOCKER_BUILDX_VERSION --push -t apiv1/buildx -t apiv1/buildx:$DOCKER_BUILDX_VERSION",
        args: &[
            ".",
            "--platform",
            "linux/amd64,linux/arm64",
            "--build-arg",
            "DOCKER_BUILDX_VERSION=v0.12.0",
            "--push",
            "-t",
            "{REG}/apiv1/buildx",
            "-t",
            "{REG}/apiv1/buildx:v0.12.0",
        ],
        check: Check::Pushed,
    },
    Row {
        source: "robusta-dev/krr build_release.sh",
        original: "docker buildx build --build-arg BUILDKIT_INLINE_CACHE=1 --platform linux/arm64,linux/amd64 --tag us-central1-docker.pkg.dev/genuine-flight-317411/devel/krr:${TAG} --push .",
        args: &[
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "--platform",
            "linux/arm64,linux/amd64",
            "--tag",
            "{REG}/genuine-flight-317411/devel/krr:v1.0.0",
            "--push",
            ".",
        ],
        check: Check::Pushed,
    },
    Row {
        source: "superorbital/ruby-docker-example .buildkite/steps/image.sh",
        original: "docker buildx build --tag=ttl.sh/buildkite-ruby-sample:5m --platform=linux/arm64 --push --metadata-file=\"$(pwd)/metadata.json\" .",
        args: &["--tag={REG}/buildkite-ruby-sample:5m", "--platform=linux/arm64", "--push", "--metadata-file={DIR}/metadata.json", "."],
        // The script then pulls `image.name@containerimage.digest` out of the metadata file.
        check: Check::All(&[Check::Pushed, Check::PushedByDigest]),
    },
    Row {
        source: "itpplasma/code scripts/docker_build_push.sh",
        original: "docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/itpplasma/$1 -f $CODE/images/$1/Dockerfile . --push",
        args: &["--platform", "linux/amd64,linux/arm64", "-t", "{REG}/itpplasma/app", "-f", "images/app/Dockerfile", ".", "--push"],
        check: Check::Pushed,
    },
    Row {
        source: "RunAppHackaton/ShoesService .github/workflows/docker_build_and_push.sh",
        original: "docker buildx build --file ./.github/workflows/Dockerfile --tag $DOCKER_USERNAME/$DOCKER_NAME_CONTAINER:$DOCKER_CONTAINER_TAG --push .",
        args: &["--file", "./.github/workflows/Dockerfile", "--tag", "{REG}/runapp/shoes-service:1.0", "--push", "."],
        check: Check::Pushed,
    },
    Row {
        source: "PAIA-Playful-AI-Arena/arkanoid scripts/buildx_and_push.bash",
        original: "docker buildx build --platform linux/amd64,linux/arm64 -t paiatech/${game}:${tag} -f ./Dockerfile . --push",
        args: &["--platform", "linux/amd64,linux/arm64", "-t", "{REG}/paiatech/arkanoid:latest", "-f", "./Dockerfile", ".", "--push"],
        check: Check::Pushed,
    },
    Row {
        source: "daniel-bvm/agent-sentinel build.sh",
        original: "docker buildx build --push --platform linux/arm64,linux/amd64 -t rein1605/agent-sentinel:v3 .",
        args: &["--push", "--platform", "linux/arm64,linux/amd64", "-t", "{REG}/rein1605/agent-sentinel:v3", "."],
        check: Check::Pushed,
    },
    Row {
        source: "jacobtread/local-aws-secret-manager containers/COMMANDS.md",
        original: "docker buildx build --platform linux/amd64,linux/arm64 -t jacobtread/loker:0.1.0-alpine-prebuilt -t jacobtread/loker:latest-alpine-prebuilt -f ./containers/prebuilt.alpine.Dockerfile --push . --build-arg GITHUB_RELEASE_VERSION=0.1.0",
        args: &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "{REG}/jacobtread/loker:0.1.0-alpine-prebuilt",
            "-t",
            "{REG}/jacobtread/loker:latest-alpine-prebuilt",
            "-f",
            "./containers/prebuilt.alpine.Dockerfile",
            "--push",
            ".",
            "--build-arg",
            "GITHUB_RELEASE_VERSION=0.1.0",
        ],
        check: Check::Pushed,
    },
    Row {
        source: "prokopiff/ytwl-bot update-images.sh",
        original: "docker buildx build . -t vprokopiv/ytbot:arm64 --build-arg ARCH=arm64v8 --platform linux/arm64 --push",
        args: &[".", "-t", "{REG}/vprokopiv/ytbot:arm64", "--build-arg", "ARCH=arm64v8", "--platform", "linux/arm64", "--push"],
        check: Check::Pushed,
    },
    Row {
        source: "lanl0rd/d0cker ruby/build.sh",
        original: "docker buildx build --platform linux/arm64,linux/amd64 --rm --push --compress -t lanl0rd/ruby:latest -f ./Dockerfile .",
        // buildx accepts --rm and --compress (hidden, ignored: they mean nothing to BuildKit).
        args: &["--platform", "linux/arm64,linux/amd64", "--rm", "--push", "--compress", "-t", "{REG}/lanl0rd/ruby:latest", "-f", "./Dockerfile", "."],
        check: Check::Pushed,
    },
    Row {
        source: "Fredkiss3/gh-next dc-build-local.sh",
        original: "docker buildx build --push -t dcr.fredkiss.dev/gh-next:dev -f docker/Dockerfile.dev $build_args .",
        // $build_args: one `--build-arg LINE` per line of .env.docker.local.
        args: &[
            "--push",
            "-t",
            "{REG}/gh-next:dev",
            "-f",
            "docker/Dockerfile.dev",
            "--build-arg",
            "NEXT_PUBLIC_URL=http://localhost:3000",
            "--build-arg",
            "DATABASE_URL=postgres://db/gh",
            ".",
        ],
        check: Check::Pushed,
    },
    Row {
        source: "DOOduneye/productivity docker-build.sh",
        original: "docker buildx build --no-cache --platform linux/amd64 --push --pull -t davidoduneye/productivity:latest .",
        // With --pull the base comes from the registry (the harness pushed it there), never the store.
        args: &["--no-cache", "--platform", "linux/amd64", "--push", "--pull", "-t", "{REG}/davidoduneye/productivity:latest", "."],
        check: Check::Pushed,
    },
    Row {
        source: "christiansicari/OpenWolf wf-agent/ms/build.sh",
        original: "docker buildx build --push -t christiansicari/ow-agent --platform=linux/amd64,linux/arm64 . --builder affectionate_bose",
        // README "Coming from buildx": --builder is refused by name (kiln has no builder instances).
        args: &["--push", "-t", "{REG}/christiansicari/ow-agent", "--platform=linux/amd64,linux/arm64", ".", "--builder", "affectionate_bose"],
        check: Check::Refused("--builder"),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/multi-platform.md",
        original: "uses: docker/build-push-action@v6 with: { platforms: linux/amd64,linux/arm64, push: true, tags: user/app:latest }",
        args: &["build", "--iidfile", "{DIR}/iid", "--platform", "linux/amd64,linux/arm64", "--tag", "{REG}/user/app:latest", "--metadata-file", "{DIR}/metadata.json", "--push", "."],
        check: Check::Pushed,
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/multi-platform.md",
        original: "uses: docker/build-push-action@v6 with: { platforms: ${{ matrix.platform }}, labels: ${{ steps.meta.outputs.labels }}, outputs: type=image,name=${{ env.REGISTRY_IMAGE }},push-by-digest=true,name-canonical=true,push=true }",
        args: &[
            "build",
            "--iidfile",
            "{DIR}/iid",
            "--label",
            "org.opencontainers.image.title=app",
            "--label",
            "org.opencontainers.image.source=https://github.com/user/app",
            "--output",
            "type=image,name={REG}/user/app,push-by-digest=true,name-canonical=true,push=true",
            "--platform",
            "linux/arm64",
            "--metadata-file",
            "{DIR}/metadata.json",
            ".",
        ],
        check: Check::All(&[
            Check::PushedByDigest,
            Check::Label("org.opencontainers.image.title", "app"),
            Check::Label("org.opencontainers.image.source", "https://github.com/user/app"),
        ]),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/annotations.md",
        original: "uses: docker/build-push-action@v6 with: { tags: ${{ steps.meta.outputs.tags }}, annotations: ${{ steps.meta.outputs.annotations }}, push: true }",
        // metadata-action's annotations output is `manifest:`-level by default.
        args: &[
            "build",
            "--annotation",
            "manifest:org.opencontainers.image.title=app",
            "--annotation",
            "manifest:org.opencontainers.image.version=main",
            "--iidfile",
            "{DIR}/iid",
            "--tag",
            "{REG}/user/app:main",
            "--metadata-file",
            "{DIR}/metadata.json",
            "--push",
            ".",
        ],
        check: Check::All(&[
            Check::Pushed,
            Check::Annotation("manifest", "org.opencontainers.image.title", "app"),
            Check::Annotation("manifest", "org.opencontainers.image.version", "main"),
        ]),
    },
];

const DOCKERD_ROWS: &[Row] = &[
    Row {
        source: "chrmarti/cache-from-test docker-only/build.sh",
        original: "docker buildx build --load -t ghcr.io/chrmarti/cache-from-test/images/test-cache:latest --build-arg BUILDKIT_INLINE_CACHE=1 --build-arg _DEV_CONTAINERS_BASE_IMAGE=dev_container_auto_added_stage_label --cache-from ghcr.io/chrmarti/cache-from-test/images/test-cache:latest --build-context context2=./context2 -f Dockerfile context1",
        // ./context2 is a directory the harness makes; the Dockerfile copies from it.
        args: &[
            "--load",
            "-t",
            "kiln.test/chrmarti/test-cache:latest",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "--build-arg",
            "_DEV_CONTAINERS_BASE_IMAGE=dev_container_auto_added_stage_label",
            "--cache-from",
            "kiln.test/chrmarti/test-cache:latest",
            "--build-context",
            "context2=./context2",
            "-f",
            "Dockerfile",
            ".",
        ],
        check: Check::Loaded("kiln.test/chrmarti/test-cache:latest"),
    },
    Row {
        source: "chrmarti/cache-from-test docker-only/build.sh",
        original: "docker buildx build --load -t ghcr.io/chrmarti/cache-from-test/images/test-cache:latest --build-arg BUILDKIT_INLINE_CACHE=1 --cache-from ghcr.io/chrmarti/cache-from-test/images/test-cache:latest -f Dockerfile context1",
        // context1 (the context directory) becomes `.`.
        args: &[
            "--load",
            "-t",
            "{REG}/chrmarti/cache-from-test/images/test-cache:latest",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "--cache-from",
            "{REG}/chrmarti/cache-from-test/images/test-cache:latest",
            "-f",
            "Dockerfile",
            ".",
        ],
        check: Check::Loaded("{REG}/chrmarti/cache-from-test/images/test-cache:latest"),
    },
    Row {
        source: "ayomeer/f1tenth_kf .devcontainer/scripts/build_galactic-base.sh",
        original: "docker buildx build --cache-from=type=registry,ref=ayomeer/ros-devcontainer:buildcache-amd64 --cache-to=type=registry,ref=ayomeer/ros-devcontainer:buildcache-amd64 --platform linux/amd64 --target base --load .",
        args: &[
            "--cache-from=type=registry,ref={REG}/ayomeer/ros-devcontainer:buildcache-amd64",
            "--cache-to=type=registry,ref={REG}/ayomeer/ros-devcontainer:buildcache-amd64",
            "--platform",
            "linux/amd64",
            "--target",
            "base",
            "--load",
            ".",
        ],
        check: Check::All(&[Check::CacheWritten("{REG}/ayomeer/ros-devcontainer:buildcache-amd64"), Check::CacheHits(None)]),
    },
    Row {
        source: "cloudticon/action dist/build-and-push-docker-image.sh",
        original: "docker buildx build $CTX -t $IMAGE --cache-from type=local,src=/tmp/docker-cache --cache-to type=local,dest=/tmp/docker-cache-new --load",
        args: &[".", "-t", "cloudticon/app:ci", "--cache-from", "type=local,src={DIR}/docker-cache", "--cache-to", "type=local,dest={DIR}/docker-cache-new", "--load"],
        check: Check::All(&[Check::Loaded("cloudticon/app:ci"), Check::CacheHits(Some(("{DIR}/docker-cache-new", "{DIR}/docker-cache")))]),
    },
    Row {
        source: "cloudticon/action dist/build-and-push-docker-image.sh",
        original: "docker buildx build $CTX -t $IMAGE --cache-from type=local,src=.docker --cache-to type=local,dest=.docker-new --load",
        args: &[".", "-t", "cloudticon/app:dot", "--cache-from", "type=local,src=.docker", "--cache-to", "type=local,dest=.docker-new", "--load"],
        check: Check::All(&[Check::Loaded("cloudticon/app:dot"), Check::CacheHits(Some((".docker-new", ".docker")))]),
    },
    Row {
        source: "lanl0rd/d0cker ruby/amd.sh",
        original: "docker buildx build --platform linux/amd64 --rm --load --compress -t lanl0rd/ruby:latest -f ./Dockerfile .",
        args: &["--platform", "linux/amd64", "--rm", "--load", "--compress", "-t", "lanl0rd/ruby:latest", "-f", "./Dockerfile", "."],
        check: Check::Loaded("lanl0rd/ruby:latest"),
    },
    Row {
        source: "awnion/custom-iosevka-nerd-font build.sh",
        original: "docker buildx build --load --iidfile \"$OUTPUT_DIR\"/iddfile .",
        args: &["--load", "--iidfile", "{DIR}/iddfile", "."],
        // The script runs `docker run --rm -t -v … "$IMAGE_ID"` with the ID from the iidfile.
        check: Check::LoadedIid("{DIR}/iddfile"),
    },
    Row {
        source: "fscomfs/cvmart-log-pilot ImageBuild.sh",
        original: "docker buildx build -t 192.168.1.186:8099/evtrain/cvmart-log-arm64:v1 --platform linux/arm64 -f Dockerfile.filebeat . --load",
        args: &["-t", "192.168.1.186:8099/evtrain/cvmart-log-arm64:v1", "--platform", "linux/arm64", "-f", "Dockerfile.filebeat", ".", "--load"],
        check: Check::Loaded("192.168.1.186:8099/evtrain/cvmart-log-arm64:v1"),
    },
    Row {
        source: "AWROBERTS/awroberts-website scripts/functions/image/build-image.sh",
        original: "docker buildx build --platform \"${PLATFORM}\" -t \"${FULL_IMAGE}\" -t \"${LATEST_IMAGE}\" --load \"${BUILD_CONTEXT}\"",
        args: &["--platform", "linux/amd64", "-t", "awroberts/website:1.2.3", "-t", "awroberts/website:latest", "--load", "."],
        check: Check::All(&[Check::Loaded("awroberts/website:1.2.3"), Check::Loaded("awroberts/website:latest")]),
    },
    Row {
        source: "daniel-bvm/agent-sentinel build.sh",
        original: "docker buildx build --platform linux/arm64 -f Dockerfile -t agent-sentinel:v3-arm . --load",
        args: &["--platform", "linux/arm64", "-f", "Dockerfile", "-t", "agent-sentinel:v3-arm", ".", "--load"],
        check: Check::Loaded("agent-sentinel:v3-arm"),
    },
    Row {
        source: "daniel-bvm/agent-sentinel build.sh",
        original: "docker buildx build --platform linux/amd64 -f Dockerfile -t agent-sentinel:v3-amd . --load",
        args: &["--platform", "linux/amd64", "-f", "Dockerfile", "-t", "agent-sentinel:v3-amd", ".", "--load"],
        check: Check::Loaded("agent-sentinel:v3-amd"),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/test-before-push.md",
        original: "uses: docker/build-push-action@v6 with: { load: true, tags: ${{ env.TEST_TAG }} }  # TEST_TAG: user/app:test",
        args: &["build", "--iidfile", "{DIR}/iid", "--tag", "user/app:test", "--load", "--metadata-file", "{DIR}/metadata.json", "."],
        check: Check::Loaded("user/app:test"),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/multi-platform.md",
        original: "uses: docker/build-push-action@v6 with: { platforms: linux/amd64,linux/arm64, load: true, tags: user/app:latest }",
        args: &[
            "build",
            "--iidfile",
            "{DIR}/iid",
            "--platform",
            "linux/amd64,linux/arm64",
            "--tag",
            "user/app:latest",
            "--load",
            "--metadata-file",
            "{DIR}/metadata.json",
            ".",
        ],
        // A documented divergence (README, "Coming from buildx"): buildx loads several platforms only
        // into an engine with the containerd image store; kiln loads a docker archive, one platform,
        // and says so before building.
        check: Check::Refused("a docker archive holds one platform's image and this build makes 2"),
    },
];

const LOCAL_ROWS: &[Row] = &[
    Row {
        source: "localnerve/jam-build docker-build.sh",
        original: "docker buildx build --tag \"jam-build\" --secret id=jam-build,src=./private/host-env.json . --build-arg UID=`id -u` --build-arg GID=`id -g` --build-arg AUTHZ_URL --build-arg AUTHZ_CLIENT_ID",
        args: &[
            "--tag",
            "jam-build",
            "--secret",
            "id=jam-build,src=./private/host-env.json",
            ".",
            "--build-arg",
            "UID=0",
            "--build-arg",
            "GID=0",
            "--build-arg",
            "AUTHZ_URL",
            "--build-arg",
            "AUTHZ_CLIENT_ID",
        ],
        check: Check::All(&[Check::StoreTagged("jam-build"), Check::SecretSeenNotStored("{\"AUTHZ_SECRET\":\"jam-Xw3kiln\"}")]),
    },
    Row {
        source: "whysosaket/Banking-Spring-Boot cnbank/build-amd64.sh",
        original: "docker buildx build --platform linux/amd64 -t cnbank-server .",
        args: &["--platform", "linux/amd64", "-t", "cnbank-server", "."],
        check: Check::StoreTagged("cnbank-server"),
    },
    Row {
        source: "MatchbookLab/local-persist scripts/build.sh",
        original: "docker buildx build --platform=$1 -t rootfsimage .",
        args: &["--platform=linux/amd64", "-t", "rootfsimage", "."],
        check: Check::StoreTagged("rootfsimage"),
    },
    Row {
        source: "IGEL-Community/IGEL-OS-APP-RECIPES utils/scripts/docker/run-docker.sh",
        original: "docker buildx build --network host --target export --output type=local,dest=./artifacts .",
        args: &["--network", "host", "--target", "export", "--output", "type=local,dest=./artifacts", "."],
        check: Check::LocalFiles("./artifacts", &["hello.txt", "built.txt", "build-args.txt"]),
    },
    Row {
        source: "tecris/dockerfiles ssh-ca/build_host_image.sh",
        original: "docker buildx build --no-cache --progress=plain -t org.tecris/ssh-host:23.05.15 -f Dockerfile.host ./",
        args: &["--no-cache", "--progress=plain", "-t", "org.tecris/ssh-host:23.05.15", "-f", "Dockerfile.host", "./"],
        check: Check::StoreTagged("org.tecris/ssh-host:23.05.15"),
    },
    Row {
        source: "tecris/dockerfiles ssh-ca/build_user_image.sh",
        original: "docker buildx build --build-arg TAG=${TAG} --no-cache --progress=plain -t org.tecris/ssh-user:${TAG} -f Dockerfile.user ./",
        args: &["--build-arg", "TAG=23.05.16", "--no-cache", "--progress=plain", "-t", "org.tecris/ssh-user:23.05.16", "-f", "Dockerfile.user", "./"],
        check: Check::StoreTagged("org.tecris/ssh-user:23.05.16"),
    },
    Row {
        source: "OttoHung/docker.tutorials scripts/pack_whole_project.sh",
        original: "docker buildx build --secret id=npm,src=$HOME/.npmrc -t ${IMG_NAME} .",
        args: &["--secret", "id=npm,src={DIR}/.npmrc", "-t", "docker.tutorials:whole_project", "."],
        check: Check::All(&[
            Check::StoreTagged("docker.tutorials:whole_project"),
            Check::SecretSeenNotStored("//registry.npmjs.org/:_authToken=npm_Qk8kilnSecret"),
        ]),
    },
    Row {
        source: "CIAO-systems/rite build-image.sh",
        original: "docker buildx build --cache-from rite:builder --ssh default=$SSH_AUTH_SOCK -t rite:latest .",
        // $SSH_AUTH_SOCK: a real ssh-agent the harness starts ({SSH}); a RUN --mount=type=ssh uses it.
        args: &["--cache-from", "rite:builder", "--ssh", "default={SSH}", "-t", "rite:latest", "."],
        check: Check::StoreTagged("rite:latest"),
    },
    Row {
        source: "jacobtread/local-aws-secret-manager containers/COMMANDS.md",
        original: "docker buildx build --platform linux/amd64,linux/arm64 -t jacobtread/loker:0.1.0-alpine-prebuilt -t jacobtread/loker:latest-alpine-prebuilt -f ./containers/prebuilt.alpine.Dockerfile . --build-arg GITHUB_RELEASE_VERSION=0.1.0",
        args: &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "jacobtread/loker:0.1.0-alpine-prebuilt",
            "-t",
            "jacobtread/loker:latest-alpine-prebuilt",
            "-f",
            "./containers/prebuilt.alpine.Dockerfile",
            ".",
            "--build-arg",
            "GITHUB_RELEASE_VERSION=0.1.0",
        ],
        check: Check::All(&[Check::StoreTagged("jacobtread/loker:0.1.0-alpine-prebuilt"), Check::StoreTagged("jacobtread/loker:latest-alpine-prebuilt")]),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/secrets.md",
        original: "uses: docker/build-push-action@v6 with: { platforms: linux/amd64,linux/arm64, tags: user/app:latest, secrets: '\"github_token=${{ secrets.GITHUB_TOKEN }}\"' }",
        args: &[
            "build",
            "--iidfile",
            "{DIR}/iid",
            "--platform",
            "linux/amd64,linux/arm64",
            "--secret",
            "id=github_token,src={DIR}/secrets/1",
            "--tag",
            "user/app:latest",
            "--metadata-file",
            "{DIR}/metadata.json",
            ".",
        ],
        check: Check::SecretSeenNotStored("ghs_kilnGithubTokenR4nd0m"),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/share-image-jobs.md",
        original: "uses: docker/build-push-action@v6 with: { tags: myimage:latest, outputs: type=docker,dest=/tmp/myimage.tar }",
        args: &[
            "build",
            "--iidfile",
            "{DIR}/iid",
            "--output",
            "type=docker,dest={DIR}/myimage.tar",
            "--tag",
            "myimage:latest",
            "--metadata-file",
            "{DIR}/metadata.json",
            ".",
        ],
        // `docker load --input /tmp/myimage.tar` in the next job reads manifest.json.
        check: Check::TarHas("{DIR}/myimage.tar", &["manifest.json", "index.json", "oci-layout"]),
    },
    Row {
        source: "docker/docs content/manuals/build/ci/github-actions/named-contexts.md",
        original: "uses: docker/build-push-action@v6 with: { build-contexts: alpine=docker-image://alpine:3.21, tags: myimage:latest }",
        // alpine:3.21 → the offline base under its store name (an image name substitution); the
        // Dockerfile's `FROM alpine` only builds offline because the context replaces it.
        args: &[
            "build",
            "--build-context",
            "alpine=docker-image://kiln.test/busybox:amd64",
            "--iidfile",
            "{DIR}/iid",
            "--tag",
            "myimage:latest",
            "--metadata-file",
            "{DIR}/metadata.json",
            ".",
        ],
        check: Check::StoreTagged("myimage:latest"),
    },
];

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// A wiped machine: a kiln root with the amd64 and arm64 busybox bases imported reproducibly
/// (`SOURCE_DATE_EPOCH=0`), so that two machines compute the same cache keys.
struct Machine {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Machine {
    fn new() -> Machine {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("root");
        for (arch, bb) in [("amd64", "/bin/busybox"), ("arm64", ARM_BUSYBOX)] {
            let tar = tmp.path().join(format!("busybox-{arch}.tar"));
            let st =
                Command::new(repo_root().join("scripts/busybox-rootfs")).arg(&tar).env("BUSYBOX", bb).status().expect("run busybox-rootfs");
            assert!(st.success(), "scripts/busybox-rootfs for {arch}");
            let o = Command::new(KILN)
                .arg("--root")
                .arg(&root)
                .args(["import", "--platform", &format!("linux/{arch}"), path_str(&tar), "-t", &format!("kiln.test/busybox:{arch}")])
                .env("SOURCE_DATE_EPOCH", "0")
                .output()
                .expect("run kiln import");
            assert!(o.status.success(), "kiln import {arch}: {}", stderr(&o));
        }
        Machine { _tmp: tmp, root }
    }
}

struct Env<'a> {
    reg: Option<&'a Registry>,
    dockerd: Option<&'a Dockerd>,
    /// The Actions cache service (the testkit emulator) and a runtime token for `type=gha` rows.
    gha: Option<(String, String)>,
}

/// One row's directories: `{DIR}` and the context kiln runs in.
struct Place {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctx: PathBuf,
    /// A real `ssh-agent` for rows with `--ssh` (`{SSH}`, and `SSH_AUTH_SOCK`), killed on drop.
    agent: Option<std::process::Child>,
}

impl Place {
    fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(a) = self.agent.as_mut() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ready() -> bool {
    if !support_build::can_build() || !kiln_testkit::require_tool("skopeo") || !kiln_testkit::require_tool("qemu-aarch64-static") {
        return false;
    }
    kiln_testkit::require_arm64()
}

fn subst(s: &str, env: &Env, place: &Place) -> String {
    let mut out =
        s.replace("{DIR}", path_str(&place.dir)).replace("{CTX}", path_str(&place.ctx)).replace("{SSH}", path_str(&place.agent_socket()));
    if out.contains("{REG}") {
        let reg = env.reg.expect("a row with {REG} runs in a group with a registry");
        out = out.replace("{REG}", &reg.host());
    }
    out
}

fn row_args(row: &Row, env: &Env, place: &Place) -> Vec<String> {
    let mut args: Vec<String> = row.args.iter().map(|a| subst(a, env, place)).collect();
    // build-push-action rows are action-args' argv, which starts with the subcommand.
    if args.first().map(String::as_str) == Some("build") {
        args.remove(0);
    }
    args
}

/// The values of a flag in an argv (`-f X`, `--file X`, `--file=X`).
fn flag_values(args: &[String], names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for n in names {
            if a == n {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.clone());
                }
            } else if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                out.push(v.to_string());
            }
        }
        i += 1;
    }
    out
}

/// `key=value` options of a buildx-style `type=…,k=v` value.
fn option<'a>(spec: &'a str, key: &str) -> Option<&'a str> {
    spec.split(',').find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// `pull_base`: the registry the bases were pushed to, for rows with `--pull` (which must not
/// take them from the store).
fn dockerfile_for(args: &[String], pull_base: Option<&str>) -> String {
    let mut build_args: Vec<String> = flag_values(args, &["--build-arg"])
        .iter()
        .map(|v| v.split('=').next().unwrap_or_default().to_string())
        .filter(|n| !n.starts_with("BUILDKIT_"))
        .collect();
    build_args.dedup();
    let secrets: Vec<String> = flag_values(args, &["--secret"]).iter().filter_map(|s| option(s, "id").map(str::to_string)).collect();
    let contexts: Vec<(String, String)> = flag_values(args, &["--build-context"])
        .iter()
        .filter_map(|c| c.split_once('=').map(|(n, v)| (n.to_string(), v.to_string())))
        .collect();
    let mut d = String::new();
    // A context that replaces an image: only a build where it does can resolve this FROM offline.
    for (i, (name, value)) in contexts.iter().enumerate() {
        if value.starts_with("docker-image://") {
            let _ = writeln!(d, "FROM {name} AS named{i}");
        }
    }
    match (args.iter().any(|a| a == "--pull"), pull_base) {
        (true, Some(reg)) => {
            let _ = writeln!(d, "FROM {reg}/base/busybox:${{TARGETARCH}} AS base");
        }
        _ => d.push_str("FROM kiln.test/busybox:${TARGETARCH} AS base\n"),
    }
    for (i, (name, value)) in contexts.iter().enumerate() {
        if value.starts_with("docker-image://") {
            let _ = writeln!(d, "COPY --from=named{i} /bin/busybox /out/named{i}-busybox");
        } else {
            let _ = writeln!(d, "COPY --from={name} / /out/ctx-{name}/");
        }
    }
    for a in &build_args {
        let _ = writeln!(d, "ARG {a}");
    }
    d.push_str("RUN mkdir -p /out && echo built > /out/built.txt\n");
    if args.iter().any(|a| a == "--ssh") {
        d.push_str("RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo agent > /out/ssh.txt\n");
    }
    let record: Vec<String> = build_args.iter().map(|a| format!("{a}=${a}")).collect();
    let _ = writeln!(
        d,
        "RUN printf '%s\\n' {} > /out/build-args.txt",
        if record.is_empty() { "none".to_string() } else { record.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(" ") }
    );
    for id in &secrets {
        let _ = writeln!(d, "RUN --mount=type=secret,id={id} sha256sum /run/secrets/{id} | cut -c1-64 > /out/secret-{id}.sha256");
    }
    d.push_str("COPY hello.txt /out/hello.txt\nCMD [\"cat\", \"/out/hello.txt\"]\n\nFROM scratch AS export\nCOPY --from=base /out/ /\n\nFROM base\n");
    d
}

fn secret_value(check: &Check) -> Option<&'static str> {
    match check {
        Check::SecretSeenNotStored(v) => Some(v),
        Check::All(cs) => cs.iter().find_map(secret_value),
        _ => None,
    }
}

fn prepare(row: &Row, env: &Env) -> (Place, Vec<String>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("dir");
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&ctx).unwrap();
    let mut place = Place { _tmp: tmp, dir, ctx, agent: None };
    let args = row_args(row, env, &place);
    if args.iter().any(|a| a == "--ssh") {
        let sock = place.agent_socket();
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .expect("start ssh-agent (openssh-client)");
        place.agent = Some(child);
        for _ in 0..200 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert!(sock.exists(), "ssh-agent made no socket at {}", sock.display());
    }
    let reg = env.reg.map(Registry::host);
    let dockerfile = dockerfile_for(&args, reg.as_deref());
    for c in flag_values(&args, &["--build-context"]) {
        if let Some((_, v)) = c.split_once('=') {
            if !v.contains("://") {
                let d = place.ctx.join(v);
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("from-named-context.txt"), "named\n").unwrap();
            }
        }
    }
    let mut files: Vec<String> = flag_values(&args, &["-f", "--file"]);
    files.push("Dockerfile".into());
    for f in files {
        let p = place.ctx.join(&f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &dockerfile).unwrap();
    }
    fs::write(place.ctx.join("hello.txt"), format!("{HELLO}\n")).unwrap();
    if let Some(value) = secret_value(&row.check) {
        for s in flag_values(&args, &["--secret"]) {
            if let Some(src) = option(&s, "src") {
                let p = place.ctx.join(src);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, value).unwrap();
            }
        }
    }
    (place, args)
}

fn kiln_build(m: &Machine, env: &Env, place: &Place, args: &[String]) -> Output {
    let mut c = Command::new(KILN);
    c.arg("--root").arg(&m.root).arg("build").args(args).current_dir(&place.ctx);
    c.env_remove("SOURCE_DATE_EPOCH").env_remove("CI").stdin(Stdio::null());
    // buildx's default provenance makes every pushed image an index (tests/attestations.rs).
    c.env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1");
    match env.dockerd {
        Some(d) => c.env("DOCKER_HOST", d.host()),
        None => c.env_remove("DOCKER_HOST"),
    };
    if let Some((url, token)) = &env.gha {
        c.env("ACTIONS_RESULTS_URL", url).env("ACTIONS_RUNTIME_TOKEN", token);
    }
    match &place.agent {
        Some(_) => c.env("SSH_AUTH_SOCK", place.agent_socket()),
        None => c.env_remove("SSH_AUTH_SOCK"),
    };
    c.output().expect("run kiln")
}

fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn skopeo_raw(reference: &str, config: bool) -> Result<Value, String> {
    let mut a = vec!["inspect", "--tls-verify=false", "--raw"];
    if config {
        a.push("--config");
    }
    let r = format!("docker://{reference}");
    a.push(&r);
    let o = tool("skopeo", &a);
    if !o.status.success() {
        return Err(format!("skopeo {} failed: {}", a.join(" "), stderr(&o).trim()));
    }
    serde_json::from_slice(&o.stdout).map_err(|e| format!("skopeo {}: not JSON: {e}", a.join(" ")))
}

/// The names a row pushes: its tags, and `name=` of image outputs that push.
fn pushed_names(args: &[String]) -> Vec<String> {
    let mut names = flag_values(args, &["-t", "--tag"]);
    for o in flag_values(args, &["-o", "--output"]) {
        if option(&o, "push") == Some("true") || o.starts_with("type=registry") {
            if let Some(n) = option(&o, "name") {
                if option(&o, "push-by-digest") != Some("true") {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

/// The repository (no tag, no digest) of a reference whose host may have a port.
fn repository(name: &str) -> String {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => name[..i].to_string(),
        _ => name.to_string(),
    }
}

/// Where to read a pushed image: the first tag, or for push-by-digest `name@digest` from the
/// metadata file.
fn pushed_ref(args: &[String]) -> Result<String, String> {
    if let Some(t) = pushed_names(args).first() {
        return Ok(t.clone());
    }
    by_digest_ref(args)
}

fn by_digest_ref(args: &[String]) -> Result<String, String> {
    let md = flag_values(args, &["--metadata-file"]).pop().ok_or("the row has no --metadata-file")?;
    let v = read_json(Path::new(&md));
    let digest = v["containerimage.digest"].as_str().ok_or_else(|| format!("no containerimage.digest in {v}"))?.to_string();
    let name = flag_values(args, &["-o", "--output"])
        .iter()
        .find_map(|o| option(o, "name").map(str::to_string))
        .or_else(|| v["image.name"].as_str().map(str::to_string))
        .ok_or("no image name")?;
    Ok(format!("{}@{digest}", repository(name.split(',').next().unwrap_or(&name))))
}

/// Every manifest under a reference (the index's entries, or the manifest itself).
fn manifests(reference: &str) -> Result<Vec<Value>, String> {
    let top = skopeo_raw(reference, false)?;
    match top["manifests"].as_array() {
        Some(list) => list
            .iter()
            .filter(|d| d["annotations"]["vnd.docker.reference.type"].is_null())
            .map(|d| skopeo_raw(&format!("{}@{}", repository(reference), d["digest"].as_str().unwrap_or_default()), false))
            .collect(),
        None => Ok(vec![top]),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, gzip blobs decompressed.
fn blob_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for rel in support_build::list_files(dir) {
        let p = dir.join(&rel);
        let Ok(bytes) = fs::read(&p) else { continue };
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let o = tool("gzip", &["-dc", path_str(&p)]);
            out.push((p.clone(), o.stdout));
        }
        out.push((p, bytes));
    }
    out
}

fn sha256_hex(value: &str) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run sha256sum");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), value.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    stdout(&o)[..64].to_string()
}

fn docker_runs(d: &Dockerd, image: &str) -> Result<(), String> {
    let inspect = d.docker(&["image", "inspect", image]);
    if !inspect.status.success() {
        return Err(format!("docker image inspect {image}: {}", stderr(&inspect).trim()));
    }
    let run = d.docker(&["run", "--rm", "--network", "none", image]);
    if !run.status.success() || !stdout(&run).contains(HELLO) {
        return Err(format!("docker run {image}: {} stdout={:?} stderr={:?}", run.status, stdout(&run), stderr(&run)));
    }
    Ok(())
}

fn step_cache(md: &Value) -> Vec<(String, String)> {
    md["kiln.steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| (s["instruction"].as_str().unwrap_or_default().to_string(), s["cache"].as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn check(c: &Check, m: &Machine, env: &Env, place: &Place, args: &[String]) -> Result<(), String> {
    match c {
        Check::All(cs) => cs.iter().try_for_each(|c| check(c, m, env, place, args)),
        Check::Refused(_) => unreachable!("handled before the build's success is asserted"),
        Check::Pushed => {
            let names = pushed_names(args);
            if names.is_empty() {
                return Err("the row pushes no name".into());
            }
            names.iter().try_for_each(|n| skopeo_raw(n, false).map(|_| ()))
        }
        Check::PushedByDigest => skopeo_raw(&by_digest_ref(args)?, false).map(|_| ()),
        Check::Label(k, v) => {
            let config = skopeo_raw(&pushed_ref(args)?, true)?;
            let got = &config["config"]["Labels"][*k];
            if got.as_str() == Some(*v) {
                Ok(())
            } else {
                Err(format!("label {k}: want {v:?}, the pushed config has {got} (labels: {})", config["config"]["Labels"]))
            }
        }
        Check::Annotation(level, k, v) => {
            let reference = pushed_ref(args)?;
            let docs = match *level {
                "index" => vec![skopeo_raw(&reference, false)?],
                _ => manifests(&reference)?,
            };
            for doc in &docs {
                if doc["annotations"][*k].as_str() != Some(*v) {
                    return Err(format!("{level} annotation {k}={v} missing: {}", doc["annotations"]));
                }
            }
            Ok(())
        }
        Check::LocalFiles(dest, files) => {
            let dest = place.ctx.join(subst(dest, env, place));
            let missing: Vec<&&str> = files.iter().filter(|f| !dest.join(f).is_file()).collect();
            if !missing.is_empty() {
                return Err(format!("{} lacks {missing:?}; it holds {:?}", dest.display(), support_build::list_files(&dest)));
            }
            let hello = fs::read_to_string(dest.join("hello.txt")).unwrap_or_default();
            if hello.trim() != HELLO {
                return Err(format!("hello.txt holds {hello:?}"));
            }
            Ok(())
        }
        Check::TarHas(tar, entries) => {
            let tar = subst(tar, env, place);
            let o = tool("tar", &["-tf", &tar]);
            if !o.status.success() {
                return Err(format!("tar -tf {tar}: {}", stderr(&o).trim()));
            }
            let list: Vec<String> = stdout(&o).lines().map(|l| l.trim_start_matches("./").to_string()).collect();
            let missing: Vec<&&str> = entries.iter().filter(|e| !list.iter().any(|l| l == *e)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("{tar} lacks {missing:?}; it holds {list:?}"))
            }
        }
        Check::SecretSeenNotStored(value) => {
            let hash = sha256_hex(value);
            let mut places = vec![m.root.clone()];
            if let Some(r) = env.reg {
                places.push(r.storage_dir());
            }
            let mut seen = false;
            for dir in &places {
                for (p, bytes) in blob_contents(dir) {
                    if contains(&bytes, value.as_bytes()) {
                        return Err(format!("the secret's raw value is stored in {}", p.display()));
                    }
                    seen |= contains(&bytes, hash.as_bytes());
                }
            }
            if seen {
                Ok(())
            } else {
                Err(format!("no layer holds the secret's SHA-256 {hash}: RUN did not see the secret"))
            }
        }
        Check::Loaded(tag) => docker_runs(env.dockerd.expect("dockerd group"), &subst(tag, env, place)),
        Check::LoadedIid(iidfile) => {
            let iid = fs::read_to_string(subst(iidfile, env, place)).map_err(|e| format!("read the iidfile: {e}"))?;
            docker_runs(env.dockerd.expect("dockerd group"), iid.trim())
        }
        Check::StoreTagged(tag) => {
            let o = Command::new(KILN).arg("--root").arg(&m.root).args(["inspect", tag]).output().expect("run kiln inspect");
            if o.status.success() {
                Ok(())
            } else {
                Err(format!("kiln inspect {tag}: {}", stderr(&o).trim()))
            }
        }
        Check::CacheWritten(reference) => skopeo_raw(&subst(reference, env, place), false).map(|_| ()),
        Check::CacheHits(mv) => {
            if let Some((from, to)) = mv {
                let (from, to) = (place.ctx.join(subst(from, env, place)), place.ctx.join(subst(to, env, place)));
                let _ = fs::remove_dir_all(&to);
                fs::rename(&from, &to).map_err(|e| format!("mv {} {}: {e}", from.display(), to.display()))?;
            }
            let fresh = Machine::new();
            let md = place.dir.join("hits.json");
            let mut again = args.to_vec();
            again.extend(["--metadata-file".to_string(), path_str(&md).to_string()]);
            let o = kiln_build(&fresh, env, place, &again);
            if !o.status.success() {
                return Err(format!("the rebuild on a wiped machine failed: {}", stderr(&o)));
            }
            let steps = step_cache(&read_json(&md));
            let layer: Vec<&(String, String)> = steps.iter().filter(|(_, c)| c != "none").collect();
            if !layer.is_empty() && layer.iter().all(|(_, c)| c.starts_with("hit")) {
                Ok(())
            } else {
                Err(format!("the rebuild on a wiped machine missed the cache: {steps:?}\n{}", stderr(&o)))
            }
        }
    }
}

fn run_row(row: &Row, m: &Machine, env: &Env) -> Result<(), String> {
    let (place, args) = prepare(row, env);
    let o = kiln_build(m, env, &place, &args);
    if let Check::Refused(what) = &row.check {
        let err = stderr(&o);
        if o.status.success() {
            return Err(format!("kiln accepted what it should refuse naming {what}"));
        }
        if o.status.code() != Some(1) || !err.contains(what) || err.contains("unexpected argument") {
            return Err(format!("want a refusal naming {what} with exit code 1, got {}: {}", o.status, err.trim()));
        }
        return Ok(());
    }
    if !o.status.success() {
        let err = stderr(&o);
        let tail: Vec<&str> = err.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(format!("kiln build failed ({}):\n      {}", o.status, tail.join("\n      ")));
    }
    check(&row.check, m, env, &place, &args)
}

fn run_rows(rows: &[Row], env: &Env) {
    let m = Machine::new();
    // The bases in the registry too, for rows with --pull.
    if let Some(reg) = env.reg {
        for arch in ["amd64", "arm64"] {
            let o = Command::new(KILN)
                .arg("--root")
                .arg(&m.root)
                .args(["copy", &format!("store:kiln.test/busybox:{arch}"), &format!("{}/base/busybox:{arch}", reg.host())])
                .output()
                .expect("run kiln copy");
            assert!(o.status.success(), "push the {arch} base: {}", stderr(&o));
        }
    }
    let mut failures = String::new();
    for (i, row) in rows.iter().enumerate() {
        if let Err(e) = run_row(row, &m, env) {
            let argv: Vec<&str> = row.args.iter().copied().skip_while(|a| *a == "build").collect();
            let _ = writeln!(
                failures,
                "\n- row {i}: {}\n    original: {}\n    kiln build {}\n    {e}",
                row.source,
                row.original,
                argv.join(" ")
            );
        }
    }
    assert!(failures.is_empty(), "rows that do not do what buildx does:{failures}");
}

#[test]
fn rows_that_push_to_a_registry() {
    if !ready() {
        return;
    }
    let reg = Registry::start_plain().expect("start registry");
    let gha = kiln_testkit::GhaService::start(kiln_testkit::GhaOptions::default()).expect("start the Actions cache emulator");
    let token = gha.mint_token(&[], Some("refs/heads/main"), std::time::Duration::from_secs(3600));
    run_rows(REGISTRY_ROWS, &Env { reg: Some(&reg), dockerd: None, gha: Some((gha.url(), token)) });
}

#[test]
fn rows_that_load_into_docker() {
    if !ready() {
        return;
    }
    let Some(d) = Dockerd::start_or_skip() else { return };
    let reg = Registry::start_plain().expect("start registry");
    run_rows(DOCKERD_ROWS, &Env { reg: Some(&reg), dockerd: Some(&d), gha: None });
}

#[test]
fn rows_that_stay_on_the_machine() {
    if !ready() {
        return;
    }
    run_rows(LOCAL_ROWS, &Env { reg: None, dockerd: None, gha: None });
}

#[test]
fn the_table_has_forty_rows_with_sources() {
    let all: Vec<&Row> = REGISTRY_ROWS.iter().chain(DOCKERD_ROWS).chain(LOCAL_ROWS).collect();
    assert!(all.len() >= 40, "issue 12 asks for at least 40 rows, the table has {}", all.len());
    for r in &all {
        assert!(r.source.contains('/') && r.source.contains(' '), "source names owner/repo and a path: {}", r.source);
        assert!(r.original.contains("docker buildx build") || r.original.contains("docker/build-push-action"), "{}", r.original);
    }
}
