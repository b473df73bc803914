#!/usr/bin/env bash
# Build the serving image and push it to Amazon ECR; prints the image URI last.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: build_and_push.sh [options] IMAGE_NAME [TAG]

Builds the serving image (Dockerfile, target runtime) for one platform, creates the ECR
repository IMAGE_NAME if it is missing, logs Docker in to ECR, tags and pushes
IMAGE_NAME:TAG (TAG defaults to "latest"), and prints the image URI as its last line.

Options:
  --dry-run           print the commands instead of running them (no AWS or Docker call)
  --platform P        target platform: linux/amd64 or linux/arm64 (Graviton), or both
                      comma-separated: one image each, pushed as TAG-amd64 and TAG-arm64,
                      and a manifest list TAG naming both (default: $PLATFORM or linux/amd64).
                      Another architecture than the machine's runs its two small RUN steps
                      under emulation (binfmt_misc + qemu-user-static: `.ci/docker-host.sh
                      arm64` sets it up); pip runs natively
  --base-image IMG    base image with Python 3.11 (default: $BASE_IMAGE, else the
                      Dockerfile's python:3.11-slim); for several platforms, a multi-arch
                      image, or set BASE_IMAGE_AMD64 / BASE_IMAGE_ARM64 per platform
  --extra-ca FILE     PEM CA certificate trusted by pip during the build only, for builds
                      behind a TLS-intercepting proxy (default: $EXTRA_CA_CERT)
  -h, --help          this help

Environment:
  AWS_REGION / AWS_DEFAULT_REGION   region; else `aws configure get region`
  AWS_ACCOUNT_ID                    account; else `aws sts get-caller-identity`
  AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL_STS
                                    the AWS CLI's own endpoint overrides, e.g. a local
                                    AWS API server (moto) for testing
  ECR_REGISTRY                      registry host[:port] to log in to, tag and push to,
                                    instead of ACCOUNT.dkr.ecr.REGION.amazonaws.com (a
                                    local AWS API server hands out ECR's real host name,
                                    so a test points this at a local registry)
  DOCKER_BUILD_NETWORK              network for the build's RUN steps (default: host)
  DOCKER_BUILDKIT_CLI               docker client that builds, with BuildKit (default: docker;
                                    one without the buildx plugin cannot: Debian's docker.io
                                    client has BuildKit built in)
USAGE
}

die() { echo "build_and_push.sh: $*" >&2; exit 2; }

DRY_RUN=""
PLATFORM=${PLATFORM:-linux/amd64}
BASE=${BASE_IMAGE:-}
EXTRA_CA=${EXTRA_CA_CERT:-}
POSITIONAL=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --platform) [ $# -ge 2 ] || die "--platform needs a value"; PLATFORM=$2; shift ;;
        --base-image) [ $# -ge 2 ] || die "--base-image needs a value"; BASE=$2; shift ;;
        --extra-ca) [ $# -ge 2 ] || die "--extra-ca needs a value"; EXTRA_CA=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) POSITIONAL+=("$1") ;;
    esac
    shift
done
[ ${#POSITIONAL[@]} -ge 1 ] && [ ${#POSITIONAL[@]} -le 2 ] || { usage >&2; die "expected IMAGE_NAME [TAG]"; }
NAME=${POSITIONAL[0]}
TAG=${POSITIONAL[1]:-latest}
# ECR's own rules for repository names and image tags.
[[ $NAME =~ ^([a-z0-9]+([._-][a-z0-9]+)*/)*[a-z0-9]+([._-][a-z0-9]+)*$ ]] && [ ${#NAME} -le 256 ] \
    || die "invalid repository name '$NAME' (lower-case letters, digits, and . _ - / between them)"
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "invalid tag '$TAG'"
[ -z "$EXTRA_CA" ] || [ -f "$EXTRA_CA" ] || die "--extra-ca: no such file $EXTRA_CA"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# run CMD...: print it (quoted, so it can be pasted) and, unless --dry-run, run it.
# A dry run prints to the script's stdout (fd 3) even where a command's output is redirected.
exec 3>&1
run() {
    if [ -n "$DRY_RUN" ]; then
        { printf '%q ' "$@"; echo; } >&3
    else
        { printf '+ '; printf '%q ' "$@"; echo; } >&2
        "$@"
    fi
}

REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
if [ -z "$REGION" ] && command -v aws >/dev/null; then
    REGION=$(aws configure get region || true)
fi
[ -n "$REGION" ] || die "no AWS region: set AWS_REGION or run 'aws configure'"

ACCOUNT=${AWS_ACCOUNT_ID:-}
if [ -z "$ACCOUNT" ]; then
    if [ -n "$DRY_RUN" ]; then
        ACCOUNT=ACCOUNT_ID     # placeholder: a dry run makes no AWS call
    else
        ACCOUNT=$(aws sts get-caller-identity --query Account --output text --region "$REGION") \
            || die "cannot read the account id (aws sts get-caller-identity failed)"
    fi
fi
REGISTRY=${ECR_REGISTRY:-$ACCOUNT.dkr.ecr.$REGION.amazonaws.com}
URI="$REGISTRY/$NAME:$TAG"

# 1. The repository, created once.
if [ -n "$DRY_RUN" ]; then
    echo "# create the repository if 'aws ecr describe-repositories' does not find it:"
    run aws ecr create-repository --region "$REGION" --repository-name "$NAME" \
        --image-scanning-configuration scanOnPush=true
elif ! err=$(aws ecr describe-repositories --region "$REGION" --repository-names "$NAME" \
        2>&1 >/dev/null); then
    case "$err" in
        *RepositoryNotFoundException*)
            run aws ecr create-repository --region "$REGION" --repository-name "$NAME" \
                --image-scanning-configuration scanOnPush=true >/dev/null ;;
        *) echo "$err" >&2; die "cannot look up ECR repository $NAME" ;;
    esac
fi

# 2. Docker login with a 12-hour ECR token, passed on stdin (never on a command line).
if [ -n "$DRY_RUN" ]; then
    echo "aws ecr get-login-password --region $REGION | docker login --username AWS --password-stdin $REGISTRY"
else
    echo "+ aws ecr get-login-password --region $REGION | docker login --username AWS --password-stdin $REGISTRY" >&2
    aws ecr get-login-password --region "$REGION" \
        | docker login --username AWS --password-stdin "$REGISTRY" >&2
fi

# 3. Build for an explicit platform: SageMaker instances are linux/amd64 (ml.m5, ml.c7i)
#    or linux/arm64 (ml.c7g); an image built on an arm laptop would not start on amd64.
if [ -n "$EXTRA_CA" ] && [ -z "$DRY_RUN" ]; then
    # A fixed name, so that repeated builds with the same CA reuse Docker's layer cache.
    ca_copy="$ROOT/container/build-ca/build-and-push-extra-ca.pem"
    cp "$EXTRA_CA" "$ca_copy"
    trap 'rm -f "$ca_copy"' EXIT
fi
# base_for ARCH: the base image for that architecture (BASE_IMAGE_ARCH, else --base-image).
base_for() {
    case "$1" in
        amd64) echo "${BASE_IMAGE_AMD64:-$BASE}" ;;
        arm64) echo "${BASE_IMAGE_ARM64:-$BASE}" ;;
    esac
}
case "$(uname -m)" in
    aarch64|arm64) BUILD_ARCH=arm64 ;;
    *) BUILD_ARCH=amd64 ;;
esac
# build_one PLATFORM TAG: the runtime image for one platform. BuildKit (which the Dockerfile
# needs) runs the pip stage on this machine's platform, from this machine's base image
# (BUILD_IMAGE), so another architecture's image costs no emulated pip.
build_one() {
    local arch=${1#linux/} base build_base
    case "$arch" in
        amd64|arm64) ;;
        *) die "unsupported platform '$1' (linux/amd64 or linux/arm64)" ;;
    esac
    base=$(base_for "$arch")
    build_base=$(base_for "$BUILD_ARCH")
    local build=(env DOCKER_BUILDKIT=1 "${DOCKER_BUILDKIT_CLI:-docker}" build
                 --network "${DOCKER_BUILD_NETWORK:-host}" --platform "$1" --target runtime -t "$NAME:$2")
    [ -z "$base" ] || build+=(--build-arg "BASE_IMAGE=$base")
    [ -z "$build_base" ] || [ "$build_base" = "$base" ] || build+=(--build-arg "BUILD_IMAGE=$build_base")
    run "${build[@]}" "$ROOT" >&2
}
[ -z "$EXTRA_CA" ] || [ -z "$DRY_RUN" ] || echo "# with $EXTRA_CA copied into container/build-ca/ for the build"

IFS=, read -r -a PLATFORMS <<<"$PLATFORM"
if [ ${#PLATFORMS[@]} -eq 1 ]; then
    build_one "${PLATFORMS[0]}" "$TAG"
    # 4. Tag and push.
    run docker tag "$NAME:$TAG" "$URI"
    run docker push "$URI" >&2
else
    # 4. One image per platform, pushed under TAG-ARCH, then the manifest list TAG naming them
    #    (docker manifest: the engine's image store keeps one platform per tag, so a
    #    multi-platform build in one go could not be loaded, tested and tagged here).
    images=()
    for p in "${PLATFORMS[@]}"; do
        build_one "$p" "$TAG-${p#linux/}"
        run docker tag "$NAME:$TAG-${p#linux/}" "$URI-${p#linux/}"
        run docker push "$URI-${p#linux/}" >&2
        images+=("$URI-${p#linux/}")
    done
    insecure=()
    case "$REGISTRY" in 127.0.0.1:*|localhost:*) insecure=(--insecure) ;; esac   # a local test registry
    run docker manifest create "${insecure[@]}" --amend "$URI" "${images[@]}" >&2
    run docker manifest push "${insecure[@]}" "$URI" >&2
fi
echo "$URI"
