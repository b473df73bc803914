# The serving image that SageMaker runs as `docker run IMAGE serve`, and a `compile`
# image that compiles models in the same OS, libc and Python as the server.
#
#   docker build --network host -t IMAGE .                            # serving image (last stage)
#   docker build --network host --target compile -t IMAGE-compile .   # + gcc, for model-compile
#
# BASE_IMAGE must provide python3.11 with venv and CA certificates; the tests here use a
# Debian bookworm base made with debootstrap (.ci/docker-host.sh) as no registry is reachable.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
# build: the runtime set of pyproject.toml into /opt/venv. The only stage that reaches PyPI.
FROM ${BASE_IMAGE} AS build
SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /tmp/build
# Extra CA certificates (PEM, *.pem or *.crt) for pip behind a TLS-intercepting proxy,
# trusted through this stage's /etc/pip.conf. No later stage copies them or that file
# (container/build-ca/README.md).
COPY container/build-ca/ /tmp/build-ca/
COPY pyproject.toml constraints.txt ./
# Dependencies first, in their own layer, so that a code change does not reinstall them.
RUN for cert in /tmp/build-ca/*.pem /tmp/build-ca/*.crt; do \
        if [ -f "$cert" ]; then cat "$cert" >>/tmp/extra-ca.pem; fi; \
    done; \
    if [ -s /tmp/extra-ca.pem ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /tmp/extra-ca.pem >/tmp/ca-bundle.pem; \
        printf '[global]\ncert = /tmp/ca-bundle.pem\n' >/etc/pip.conf; \
    fi; \
    python3 -m venv /opt/venv; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >requirements.txt; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        -c constraints.txt -r requirements.txt; \
    # The installed packages' own test suites (numpy's, gevent's: ~20 MB) never run here.
    find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +
COPY README.md ./
COPY model_core/ model_core/
COPY model_compile/ model_compile/
COPY serve/ serve/
# The project itself (model_core, serve, model_compile and their console scripts), then the installer
# goes: nothing in the serving image installs packages.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . ; \
    /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

# ---------------------------------------------------------------------------------------
# server-base: what the two images below share; the base image plus the venv, no compiler.
FROM ${BASE_IMAGE} AS server-base
COPY --from=build /opt/venv /opt/venv
COPY container/entrypoint.sh /usr/local/bin/entrypoint
# One OpenMP thread per worker: many single-threaded workers beat a few multi-threaded
# ones on small requests (the server sizes its workers from the CPUs it gets).
ENV PATH=/opt/venv/bin:$PATH \
    OMP_NUM_THREADS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin model
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
