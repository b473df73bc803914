"""The Docker engine, images and containers that the image tests use (helpers, no fixtures).

Every build and run uses ``--network host``: the engine runs with its bridge off,
and containers serve on the host's loopback.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.conftest import REPO_ROOT

DOCKER_HOST_SCRIPT = REPO_ROOT / ".ci" / "docker-host.sh"
BUILD_CA_DIR = REPO_ROOT / "container" / "build-ca"
# The name build_and_push.sh gives its --extra-ca copy: the same name keeps the
# build context identical, so the two builds share Docker's layer cache.
BUILD_CA_NAME = "build-and-push-extra-ca.pem"
# IMAGE_TEST_TAG names the images otherwise: checkouts testing at once on one shared engine
# must not overwrite each other's image between its build and its containers.
RUNTIME_TAG = os.environ.get("IMAGE_TEST_TAG") or "xgb-neo-serve:test"
COMPILE_TAG = RUNTIME_TAG + "-compile"


class EngineUnavailable(RuntimeError):
    """No Docker engine could be found or started; the message says why."""


@dataclass
class Engine:
    env: dict[str, str]   # os.environ plus DOCKER_HOST, DOCKER_BUILDKIT_CLI and a private DOCKER_CONFIG
    base_image: str       # the BASE_IMAGE build argument to use

    def docker(self, *args: str, check: bool = True, timeout: float = 900,
               input: str | None = None) -> subprocess.CompletedProcess:
        """Runs `docker ARGS...`; returns the finished process (text output captured)."""
        return self._run(["docker", *args], check, timeout, input, self.env)

    def buildkit(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """`docker build ARGS...` with BuildKit, which the Dockerfile needs, through the client
        .ci/docker-host.sh names (DOCKER_BUILDKIT_CLI)."""
        return self._run([self.env.get("DOCKER_BUILDKIT_CLI", "docker"), "build", *args], True, timeout,
                         None, {**self.env, "DOCKER_BUILDKIT": "1"})

    def _run(self, cmd: list[str], check: bool, timeout: float, input: str | None,
             env: dict[str, str]) -> subprocess.CompletedProcess:
        args = cmd[1:]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} ... exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def inspect(self, fmt: str, obj: str) -> str:
        """`docker inspect --format FMT OBJ`, stripped."""
        return self.docker("inspect", "--format", fmt, obj).stdout.strip()


def provision(config_dir: Path) -> Engine:
    """Ensures an engine with .ci/docker-host.sh; returns it, or raises EngineUnavailable."""
    proc = subprocess.run([str(DOCKER_HOST_SCRIPT), "up"], capture_output=True, text=True,
                          timeout=1200)
    if proc.returncode != 0:
        raise EngineUnavailable(f".ci/docker-host.sh exited {proc.returncode}: "
                                f"{proc.stderr.strip()[-1500:]}")
    exported = dict(line.removeprefix("export ").split("=", 1)
                    for line in proc.stdout.splitlines() if line.startswith("export "))
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir)}
    for name in ("DOCKER_HOST", "DOCKER_BUILDKIT_CLI"):
        if exported.get(name):
            env[name] = exported[name]
    return Engine(env=env, base_image=exported["BASE_IMAGE"])


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine trusts, for pip in the image's build stage (TLS-intercepting
    proxies): IMAGE_BUILD_EXTRA_CA, PIP_CERT, SSL_CERT_FILE or Debian's bundle, if any exists."""
    for candidate in (os.environ.get("IMAGE_BUILD_EXTRA_CA"), os.environ.get("PIP_CERT"),
                      os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@contextmanager
def extra_ca_in_context(ca: Path | None) -> Iterator[None]:
    """Places `ca` in container/build-ca/ for the duration of a build, as build_and_push.sh does."""
    if ca is None:
        yield
        return
    copy = BUILD_CA_DIR / BUILD_CA_NAME
    shutil.copyfile(ca, copy)
    try:
        yield
    finally:
        copy.unlink(missing_ok=True)


def build(engine: Engine, target: str, tag: str) -> float:
    """Builds the Dockerfile's `target` as `tag` from the checkout; returns the seconds it took."""
    started = time.perf_counter()
    with extra_ca_in_context(host_ca_bundle()):
        engine.buildkit("--network", "host", "--platform", "linux/amd64",
                        "--build-arg", f"BASE_IMAGE={engine.base_image}", "--target", target,
                        "-t", tag, str(REPO_ROOT))
    return time.perf_counter() - started


def image_size_bytes(engine: Engine, tag: str) -> int:
    return int(engine.inspect("{{.Size}}", tag))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline_s: float) -> float | None:
    """Polls 127.0.0.1:port until it accepts a connection; returns the seconds that took,
    or None at the deadline."""
    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    return None


@dataclass
class ServerContainer:
    """A serving container started by start_server; its port is on the host's loopback."""
    name: str
    port: int
    accept_s: float | None   # seconds from `docker start` returning to the first accepted connection

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(engine: Engine, image: str, model_dir: Path, env: dict[str, str] | None = None,
                 command: tuple[str, ...] = ("serve",)) -> ServerContainer:
    """Runs `image` as SageMaker does (`docker run IMAGE serve`, the model read-only at
    /opt/ml/model), on a free port given by SAGEMAKER_BIND_TO_PORT; returns once the port
    accepts connections (accept_s None: it never did within 60 s)."""
    port = free_port()
    name = f"xgb-neo-serve-test-{uuid.uuid4().hex[:10]}"
    env_args = [arg for key, value in {"SAGEMAKER_BIND_TO_PORT": str(port), **(env or {})}.items()
                for arg in ("-e", f"{key}={value}")]
    engine.docker("create", "--name", name, "--network", "host", *env_args,
                  "-v", f"{model_dir}:/opt/ml/model:ro", image, *command)
    engine.docker("start", name)
    return ServerContainer(name=name, port=port, accept_s=wait_for_port(port, 60))


def remove_container(engine: Engine, name: str) -> str:
    """Removes a container whatever its state; returns its logs, for a failing test's message."""
    logs = engine.docker("logs", name, check=False)
    engine.docker("rm", "-f", name, check=False)
    return logs.stdout + logs.stderr
