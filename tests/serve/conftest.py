"""Fixtures for the server tests: compiled sample artifacts and real servers on loopback.

Servers are the real thing: the ``serve`` console script (gunicorn, its workers, the
model loaded before the fork) started as a subprocess on a free 127.0.0.1 port,
stopped with SIGTERM as SageMaker stops a container.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import REPO_ROOT

FRONTENDS = ("granian", "gunicorn")   # tests that hold for both run on both (SERVE_FRONTEND)
# The bare server's contract tests also run on granian's RSGI interface (SERVE_GRANIAN_INTERFACE=rsgi).
FRONTEND_MODES = {"granian": {"SERVE_FRONTEND": "granian"},
                  "granian-rsgi": {"SERVE_FRONTEND": "granian", "SERVE_GRANIAN_INTERFACE": "rsgi"},
                  "gunicorn": {"SERVE_FRONTEND": "gunicorn"}}
START_TIMEOUT_S = 90     # model loading and gunicorn start, on a busy 2-core machine
STOP_TIMEOUT_S = 30      # SageMaker's SIGKILL comes 30 s after SIGTERM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command() -> list[str]:
    """The installed `serve` console script next to this interpreter, else the module."""
    script = shutil.which("serve", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "serve.cli"]


def server_env(model_dir: Path, port: int, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the server's own variables, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "SERVE_", "SM_"))}
    env.update({"SM_MODEL_DIR": str(model_dir), "SERVE_BIND_HOST": "127.0.0.1",
                "SAGEMAKER_BIND_TO_PORT": str(port), "PYTHONPATH": str(REPO_ROOT)})
    env.update(extra)
    return env


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def invoke(self, body: bytes | str, content_type: str | None = "text/csv", accept: str | None = None,
               session: requests.Session | None = None, **kwargs) -> requests.Response:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return (session or requests).post(self.url + "/invocations", data=body, headers=headers,
                                          timeout=60, **kwargs)

    def stop(self) -> int:
        """SIGTERM, as SageMaker stops a container; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def running_server(model_dir: Path, log_path: Path, *, args: tuple[str, ...] = (), cpus: set[int] | None = None,
                   **env: str):
    """Start `serve` (with command-line ``args``, pinned to the CPU set ``cpus`` if given) on a
    free loopback port, wait until /ping answers 200, yield a Server, stop it with SIGTERM at
    the end (failing the test if it does not exit within SageMaker's 30 s)."""
    port = free_port()
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with open(log_path, "wb") as log:
        process = subprocess.Popen(serve_command() + list(args), env=server_env(model_dir, port, env),
                                   cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, preexec_fn=pin)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"server did not stop within {STOP_TIMEOUT_S} s of SIGTERM:\n{server.log()[-3000:]}")


def wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode} before answering:\n{server.log()[-3000:]}")
        try:
            if requests.get(server.url + "/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not healthy within {START_TIMEOUT_S} s:\n{server.log()[-3000:]}")


@pytest.fixture(scope="session")
def compiled_model_dir(sample_model_dir, tmp_path_factory):
    """Returns name -> the sample model compiled by model_compile, extracted as SageMaker would
    (compiled once per test session; rtb-large takes about a minute on 2 cores)."""
    from model_compile import compile_artifact
    from model_core.artifact import safe_extract

    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            source = sample_model_dir(name)
            out = tmp_path_factory.mktemp(f"compiled-{name}")
            compile_artifact(source / "model.tar.gz", out / "model.tar.gz", sample_data=source / "sample.csv")
            safe_extract(out / "model.tar.gz", out / "model")
            folders[name] = out / "model"
        return folders[name]

    return get


def sample_rows(sample_model_dir, name: str) -> tuple[np.ndarray, list[str]]:
    """The sample's rows as float32 (NaN = missing) and as the CSV lines a client sends."""
    path = sample_model_dir(name) / "sample.csv"
    lines = path.read_text().splitlines()
    rows = np.genfromtxt(path, delimiter=",", dtype=np.float32)
    return rows, lines


def numbers(response: requests.Response) -> np.ndarray:
    """A default CSV response (comma-separated, or one per line in batch) as float32."""
    assert response.status_code == 200, response.text
    return np.array(response.text.replace("\n", ",").strip(",").split(","), dtype=np.float32)


def worker_pids(server: Server) -> list[int]:
    """The front end master's child processes (its workers)."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(child) for child in children)


def settled_worker_pids(server: Server, timeout: float = 30.0) -> list[int]:
    """The workers once every one has booted (the first answers /ping before the last is
    forked): waits until each has written its start line to the log."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(server)
        started = len(re.findall(r"\] serve\.(?:gunicorn|granian)_conf: worker \d+ started", server.log()))
        if (pids and started >= len(pids)) or time.monotonic() > deadline:
            time.sleep(0.5)   # a worker forked right now would show up here
            return worker_pids(server)
        time.sleep(0.1)


def csv_body(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def check_concurrent_clients(server: Server, lines: list[str], expect, *, clients: int = 16,
                             requests_each: int = 15, seed: int = 0) -> int:
    """Many clients at once, each on its own keep-alive connection, each sending its own
    random 1-5 rows: every answer must be ``expect(row indices)``, the in-process prediction
    for that client's rows (no cross-talk between threads, greenlets or workers).
    Returns the number of requests checked."""
    from concurrent.futures import ThreadPoolExecutor

    def client(number: int) -> int:
        rng = np.random.default_rng(seed * 1000 + number)
        with requests.Session() as session:
            for _ in range(requests_each):
                picked = rng.choice(len(lines), size=int(rng.integers(1, 6)), replace=False)
                got = numbers(server.invoke(csv_body([lines[i] for i in picked]), session=session))
                assert np.array_equal(got, expect(picked)), (number, picked, got, expect(picked))
        return requests_each

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients)))
