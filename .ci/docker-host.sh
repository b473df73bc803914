#!/usr/bin/env bash
# Provision a Docker engine for the image tests and CI on a bare Debian machine.
#
#   eval "$(.ci/docker-host.sh up)"   # ensure an engine + base image; exports DOCKER_HOST, BASE_IMAGE,
#                                     # DOCKER_BUILDKIT_CLI (a client that builds with BuildKit)
#   eval "$(.ci/docker-host.sh arm64)"  # the same, plus arm64 emulation; exports BASE_IMAGE_ARM64
#   .ci/docker-host.sh down           # stop the engine this script started
#
# `up` is idempotent: an engine that already answers (the caller's DOCKER_HOST, a
# laptop's default socket, or one this script started earlier) is reused. Otherwise,
# as root, it installs Debian's docker.io, debootstrap and docker-registry, starts
# dockerd with the bridge OFF (these machines may send traffic to loopback only:
# every build and run uses --network host), and builds a Python 3.11 base image from
# Debian's packages because no container registry can be reached here.
# `arm64` also registers qemu-aarch64 with the kernel's binfmt_misc (flag F: the
# emulator is opened once, so it works inside containers too) and builds an arm64 base
# image with debootstrap under that emulation, for `docker build --platform linux/arm64`.
# stdout carries only the `export` lines; progress goes to stderr.
# Exit codes: 0 ready, 3 no engine and no way to start one (not root), 1 failure.
set -euo pipefail

WORK=${DOCKER_WORK_DIR:-/tmp/xgb-neo-serve-docker}
LOCAL_BASE=${LOCAL_BASE_IMAGE:-local/bookworm-py311:latest}
LOCAL_BASE_ARM64=${LOCAL_BASE_IMAGE_ARM64:-local/bookworm-py311-arm64:latest}
BINFMT=/proc/sys/fs/binfmt_misc
OUR_SOCKET="unix://$WORK/docker.sock"
DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

log() { echo "docker-host: $*" >&2; }
die() { log "ERROR: $1"; exit "${2:-1}"; }

answers() {  # answers DOCKER_HOST_VALUE: true when an engine replies there
    DOCKER_HOST="$1" timeout 20 docker info >/dev/null 2>&1
}

have_image() { DOCKER_HOST="$1" docker image inspect "$2" >/dev/null 2>&1; }

buildkit_cli() {  # the docker client that builds with BuildKit, which the Dockerfile needs
    # A client with the buildx plugin does; Debian's docker.io client (20.10) has BuildKit
    # built in, where a newer client without buildx (as on these machines) has only the
    # legacy builder, which builds every stage and cannot cross-build the pip stage.
    if docker buildx version >/dev/null 2>&1 || [ ! -x /usr/bin/docker ]; then
        echo docker
    else
        echo /usr/bin/docker
    fi
}

apt_failed() { tail -n 20 "$WORK/apt.log" >&2; die "apt-get $1 failed (log: $WORK/apt.log)"; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    # The Dockerfile needs BuildKit: buildx, or Debian's client (a docker on PATH may have neither).
    docker buildx version >/dev/null 2>&1 || [ -x /usr/bin/docker ] || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    if [ ${#missing[@]} -eq 0 ]; then return 0; fi
    log "installing ${missing[*]} (apt, ~45 s)"
    # Another apt may be running (a parallel job): wait for its lock rather than fail.
    local wait_lock=(-o DPkg::Lock::Timeout=600)
    apt-get "${wait_lock[@]}" update -qq >"$WORK/apt.log" 2>&1 || apt_failed update
    # Keep apt from starting the packages' services: docker.io's init script would start
    # a default dockerd, which creates a bridge network (forbidden here).
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends \
        "${missing[@]}" >>"$WORK/apt.log" 2>&1 || { if [ -n "$ours" ]; then rm -f "$policy"; fi; apt_failed install; }
    if [ -n "$ours" ]; then rm -f "$policy"; fi
}

alive() {  # alive PID: a running dockerd (not a zombie, nor a process that reused the pid)
    [ -r "/proc/$1/status" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ] \
        && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"
}

clear_stale_state() {
    # A daemon killed without its shutdown leaves a pid file and a netns mount behind;
    # dockerd refuses to start while the pid file names an existing process.
    if [ -f "$WORK/dockerd.pid" ] && ! alive "$(cat "$WORK/dockerd.pid")"; then
        rm -f "$WORK/dockerd.pid"
    fi
    if mountpoint -q "$WORK/exec/netns/default" 2>/dev/null; then
        umount "$WORK/exec/netns/default" || true
    fi
}

start_daemon() {
    mkdir -p "$WORK"
    clear_stale_state
    log "starting dockerd (bridge off) under $WORK"
    # setsid: the daemon outlives this script and is not killed with its process group;
    # 9>&-: it must not inherit the lock, or the next caller would wait forever.
    setsid dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false \
        --ip-masq=false --data-root "$WORK/data" --exec-root "$WORK/exec" \
        --pidfile "$WORK/dockerd.pid" -H "$OUR_SOCKET" \
        >>"$WORK/dockerd.log" 2>&1 </dev/null 9>&- &
    local deadline=$((SECONDS + 60))
    until answers "$OUR_SOCKET"; do
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$WORK/dockerd.log" >&2 || true
            die "dockerd did not answer within 60 s (log: $WORK/dockerd.log)"
        fi
        sleep 1
    done
}

debian_mirror() {
    # The first URIs: value of the machine's own apt sources: no host is written in the repo.
    local uri=""
    [ -f "$DEBIAN_SOURCES" ] && uri=$(awk '/^URIs:/ {print $2; exit}' "$DEBIAN_SOURCES")
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || die "no Debian mirror found in $DEBIAN_SOURCES or /etc/apt/sources.list"
    echo "$uri"
}

build_local_base() {  # build_local_base TAG [ARCH]: Debian bookworm + Python 3.11, imported as TAG
    local tag=$1 arch=${2:-} mirror rootfs="$WORK/rootfs${2:+-$2}"
    mirror=$(debian_mirror)
    # The native base also runs the image's pip stage (venv, pip); another architecture's base
    # only serves: pip runs on this machine, and each package less is one less to configure
    # (python3-pip and its dependencies byte-compile themselves) under emulation.
    local packages=python3,python3-venv,python3-pip,ca-certificates
    [ -z "$arch" ] || packages=python3,ca-certificates
    local takes="~80 s"
    [ -z "$arch" ] || takes="under emulation, ~6 min"
    log "building $tag with debootstrap${arch:+ --arch=$arch} from $mirror ($takes)"
    rm -rf "$rootfs"
    debootstrap ${arch:+--arch="$arch"} --variant=minbase --include="$packages" \
        bookworm "$rootfs" "$mirror" >&2 || { rm -rf "$rootfs"; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    if [ -z "$arch" ]; then
        tar -C "$rootfs" -c . | DOCKER_HOST="${ENGINE:-$OUR_SOCKET}" docker import \
            -c 'ENV LANG=C.UTF-8' - "$tag" >&2
    else
        # `docker import --platform` is ignored by this engine (the image says amd64): a
        # FROM-scratch build for the platform records the architecture.
        local context="$WORK/base-$arch"
        mkdir -p "$context"
        tar -C "$rootfs" -cf "$context/rootfs.tar" .
        printf 'FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\n' >"$context/Dockerfile"
        DOCKER_HOST="${ENGINE:-$OUR_SOCKET}" docker build --network host --platform "linux/$arch" \
            -t "$tag" "$context" >&2
        rm -rf "$context"
    fi
    rm -rf "$rootfs"
}

register_arm64_emulation() {
    # Debian's qemu-user-static ships the binfmt rule; without systemd nobody loads it.
    if ! command -v qemu-aarch64-static >/dev/null; then
        log "installing qemu-user-static (apt)"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends qemu-user-static >>"$WORK/apt.log" 2>&1 || apt_failed install
    fi
    [ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT" \
        || die "cannot mount binfmt_misc at $BINFMT: arm64 images cannot run here"
    [ -e "$BINFMT/qemu-aarch64" ] && return 0
    local rule=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$rule" ] || die "no $rule: qemu-user-static did not install its binfmt rule"
    log "registering qemu-aarch64 with binfmt_misc"
    cat "$rule" >"$BINFMT/register" || die "the kernel refused the qemu-aarch64 binfmt rule"
}

up() {
    # 1. An engine the caller already has (a laptop, or DOCKER_HOST set by a caller).
    local ambient=${DOCKER_HOST:-}
    if command -v docker >/dev/null && [ "$ambient" != "$OUR_SOCKET" ] && answers "$ambient"; then
        log "reusing the engine at ${ambient:-the default socket}"
        local base=python:3.11-slim
        have_image "$ambient" "$LOCAL_BASE" && base=$LOCAL_BASE
        echo "export DOCKER_HOST=${ambient}"
        echo "export BASE_IMAGE=$base"
        echo "export DOCKER_BUILDKIT_CLI=$(buildkit_cli)"
        return 0
    fi
    # 2. Ours, started now or earlier; serialised so that parallel callers start one daemon.
    if [ "$(id -u)" -ne 0 ]; then
        if command -v docker >/dev/null && answers "$OUR_SOCKET" && have_image "$OUR_SOCKET" "$LOCAL_BASE"; then
            log "reusing the engine at $OUR_SOCKET"
            echo "export DOCKER_HOST=$OUR_SOCKET"
            echo "export BASE_IMAGE=$LOCAL_BASE"
            echo "export DOCKER_BUILDKIT_CLI=$(buildkit_cli)"
            return 0
        fi
        die "no Docker engine answers and starting one needs root" 3
    fi
    mkdir -p "$WORK"
    exec 9>"$WORK/lock"
    flock 9
    install_packages    # a no-op when docker.io, debootstrap and docker-registry are there
    if answers "$OUR_SOCKET"; then
        log "reusing the engine at $OUR_SOCKET"
    else
        start_daemon
    fi
    have_image "$OUR_SOCKET" "$LOCAL_BASE" || build_local_base "$LOCAL_BASE"
    echo "export DOCKER_HOST=$OUR_SOCKET"
    echo "export BASE_IMAGE=$LOCAL_BASE"
    echo "export DOCKER_BUILDKIT_CLI=$(buildkit_cli)"
}

arm64() {
    local exports
    exports=$(up)
    echo "$exports"
    ENGINE=$(sed -n 's/^export DOCKER_HOST=//p' <<<"$exports")   # the engine up found or started
    mkdir -p "$WORK"
    if [ -e "$BINFMT/qemu-aarch64" ] && have_image "$ENGINE" "$LOCAL_BASE_ARM64"; then
        echo "export BASE_IMAGE_ARM64=$LOCAL_BASE_ARM64"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "registering arm64 emulation needs root" 3
    exec 9>"$WORK/lock-arm64"
    flock 9
    register_arm64_emulation
    have_image "$ENGINE" "$LOCAL_BASE_ARM64" || build_local_base "$LOCAL_BASE_ARM64" arm64
    echo "export BASE_IMAGE_ARM64=$LOCAL_BASE_ARM64"
}

down() {
    [ -f "$WORK/dockerd.pid" ] || { log "no daemon of ours is running"; return 0; }
    local pid
    pid=$(cat "$WORK/dockerd.pid")
    if alive "$pid"; then
        kill -TERM "$pid"
        for _ in $(seq 30); do alive "$pid" || break; sleep 1; done
    fi
    clear_stale_state
    log "stopped"
}

case "${1:-up}" in
    up) up ;;
    arm64) arm64 ;;
    down) down ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command ${1} (use up, down or --help)" 2 ;;
esac
