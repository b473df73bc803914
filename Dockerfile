# The serving image that SageMaker runs as `docker run IMAGE serve`, and a `compile`
# image that compiles models in the same OS, libc and Python as the server.
#
#   docker build --network host -t IMAGE .                            # serving image (last stage)
#   docker build --network host --target compile -t IMAGE-compile .   # + gcc, for model-compile
#   docker build --network host --platform linux/arm64 -t IMAGE .     # Graviton, built on x86-64
#
# Needs BuildKit (docker buildx, Docker's default builder since 23.0; DOCKER_BUILDKIT=1 with
# older clients): it builds only the stages the target needs, and the build stage natively.
# BASE_IMAGE must provide python3.11 with venv; the tests here use a Debian bookworm base made
# with debootstrap (.ci/docker-host.sh) as no registry is reachable.
ARG BASE_IMAGE=python:3.11-slim
# The image whose Python runs pip, on the build machine's platform (BuildKit's BUILDPLATFORM):
# for another platform's image, no pip runs under emulation. Same Python version as BASE_IMAGE;
# by default BASE_IMAGE itself (a multi-platform image has the build machine's variant).
ARG BUILD_IMAGE=${BASE_IMAGE}

# ---------------------------------------------------------------------------------------
# build: the runtime set of pyproject.toml, for the target platform, as two trees (lib/ and bin/)
# that the next stage lays over its own venv: /opt/deps, then /opt/project. The only stage that
# reaches PyPI, and it runs natively: BuildKit builds it for the build machine's platform.
FROM --platform=$BUILDPLATFORM ${BUILD_IMAGE} AS build
ARG TARGETARCH
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /tmp/build
# Extra CA certificates (PEM, *.pem or *.crt) for pip behind a TLS-intercepting proxy,
# trusted through this stage's /etc/pip.conf. No later stage copies them or that file
# (container/build-ca/README.md).
COPY container/build-ca/ /tmp/build-ca/
COPY pyproject.toml constraints.txt ./
COPY container/target_requirements.py /tmp/
# Dependencies first, in their own layer, so that a code change does not reinstall them.
# pip in a tool venv at /opt/venv (the path of the serving venv: console scripts' #! lines name
# it) installs wheels for TARGETARCH with --target: it unpacks, it runs nothing of theirs.
# `pip wheel` first turns sdist-only pure-Python packages (sagemaker-inference, retrying) into
# wheels, which --only-binary then accepts; pip evaluates markers for the machine it runs on,
# so container/target_requirements.py evaluates pyproject's markers for the target.
RUN for cert in /tmp/build-ca/*.pem /tmp/build-ca/*.crt; do \
        if [ -f "$cert" ]; then cat "$cert" >>/tmp/extra-ca.pem; fi; \
    done; \
    if [ -s /tmp/extra-ca.pem ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /tmp/extra-ca.pem >/tmp/ca-bundle.pem; \
        printf '[global]\ncert = /tmp/ca-bundle.pem\n' >/etc/pip.conf; \
    fi; \
    case "${TARGETARCH:?build with BuildKit (docker buildx build, or DOCKER_BUILDKIT=1)}" in \
        amd64) machine=x86_64 ;; \
        arm64) machine=aarch64 ;; \
        *) echo "unsupported TARGETARCH $TARGETARCH (amd64 or arm64)" >&2; exit 1 ;; \
    esac; \
    python3 -m venv /opt/venv; \
    run_pip() { /opt/venv/bin/pip --no-cache-dir --disable-pip-version-check --quiet "$@"; }; \
    run_pip install -c constraints.txt packaging; \
    /opt/venv/bin/python /tmp/target_requirements.py pyproject.toml "$machine" >requirements.txt; \
    run_pip wheel --use-pep517 -w /tmp/wheels -c constraints.txt -r requirements.txt; \
    # pip 23 takes exact platform tags: glibc 2.36 (bookworm) down to manylinux2014 (2.17).
    set -- --platform "manylinux2014_$machine"; \
    for minor in $(seq 17 36); do set -- --platform "manylinux_2_${minor}_$machine" "$@"; done; \
    site=/opt/deps/lib/$(/opt/venv/bin/python -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages; \
    run_pip install --only-binary=:all: "$@" --implementation cp --find-links /tmp/wheels \
        --target "$site" -c constraints.txt -r requirements.txt; \
    mv "$site/bin" /opt/deps/bin; \
    # The installed packages' own test suites (numpy's, gevent's: ~20 MB) never run here.
    find /opt/deps -type d -name tests -prune -exec rm -rf {} +
COPY README.md ./
COPY model_core/ model_core/
COPY model_compile/ model_compile/
COPY serve/ serve/
# The project itself (model_core, serve, model_compile and their console scripts): pure Python.
RUN site=/opt/project/lib/$(/opt/venv/bin/python -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages; \
    /opt/venv/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --no-deps --target "$site" .; \
    mv "$site/bin" /opt/project/bin

# ---------------------------------------------------------------------------------------
# server-base: what the two images below share; the base image plus the venv, no compiler,
# no pip. The venv is made by the target's own Python (its links point at it), then filled.
FROM ${BASE_IMAGE} AS server-base
RUN python3 -m venv --without-pip /opt/venv \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin model
COPY --from=build /opt/deps/ /opt/venv/
COPY --from=build /opt/project/ /opt/venv/
COPY container/entrypoint.sh /usr/local/bin/entrypoint
# One OpenMP thread per worker: many single-threaded workers beat a few multi-threaded
# ones on small requests (the server sizes its workers from the CPUs it gets).
ENV PATH=/opt/venv/bin:$PATH \
    OMP_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/entrypoint"]

# ---------------------------------------------------------------------------------------
# compile: the runtime plus a C compiler. `docker run ... IMAGE-compile model-compile ...`
# produces libraries whose platform and libc match the serving image by construction.
FROM server-base AS compile
# Versions come from the base image's release; pinning them would tie the file to one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# Numeric, so that a runtime that checks "runAsNonRoot" can verify it.
USER 10001:10001
CMD ["model-compile", "--help"]

# ---------------------------------------------------------------------------------------
# runtime (the default target): the serving image. No compiler, no pip, no build caches.
FROM server-base AS runtime
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
# Multi-model endpoints: SageMaker then sets SAGEMAKER_MULTI_MODEL=true (docs/serve.md).
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true
USER 10001:10001
EXPOSE 8080
CMD ["serve"]
