"""Start and stop the servers under test on free loopback ports, and account their CPU time
and context switches.

A server is any command that serves HTTP on 127.0.0.1:PORT and answers ``GET /ping``
with 200 once ready: this project's ``serve``, a gunicorn app of ``bench.baselines``, or
``bench.trivial_server``. Its output goes to a log file, so that a full pipe never
stalls it and a failed start can be explained.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psutil

from bench.cpu_split import CpuSplit


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60, log: Path | None = None,
               any_status: bool = False) -> None:
    """Poll ``url``/ping until it answers 200 (any HTTP answer when ``any_status``).

    RuntimeError if the process dies or ``timeout_s`` runs out.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready"
                               + _log_tail(log))
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"status {response.status}"
        except urllib.error.HTTPError as exc:
            if any_status:
                return
            last_error = f"status {exc.code}"
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {timeout_s} s ({last_error})" + _log_tail(log))


def _log_tail(log: Path | None, chars: int = 1500) -> str:
    if log is None or not Path(log).exists():
        return ""
    return "\n--- server log (tail) ---\n" + Path(log).read_text(errors="replace")[-chars:]


class RunningServer:
    """A started server: its base URL, the vCPUs it runs on (None: any), and the CPU time its
    process tree has used."""

    def __init__(self, name: str, url: str, proc: subprocess.Popen, log: Path,
                 cpus: tuple[int, ...] | None = None):
        self.name = name
        self.url = url
        self.proc = proc
        self.log = log
        self.cpus = cpus

    def _processes(self) -> list[psutil.Process]:
        """The server process and its live children ([] once it has gone)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process and its live children."""
        total = 0.0
        for process in self._processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def context_switches(self) -> int:
        """Voluntary + involuntary context switches of every thread of the server process and its
        live children (/proc/PID/task/TID/status; the process's own line counts its main thread
        only; a thread that ends takes its count with it). A front end that hands each request
        between threads pays per switch: this is how the benchmark shows it."""
        total = 0
        for process in self._processes():
            try:
                tids = os.listdir(f"/proc/{process.pid}/task")
            except OSError:
                continue
            for tid in tids:
                total += _thread_switches(f"/proc/{process.pid}/task/{tid}/status")
        return total

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM (the front end stops its workers gracefully), SIGKILL after ``timeout_s``."""
        stop_process(self.proc, timeout_s, kill_children=True)


def _thread_switches(status_path: str) -> int:
    """The two context-switch counts in one thread's status file (0 once the thread has gone)."""
    try:
        with open(status_path) as status:
            return sum(int(line.split()[1]) for line in status
                       if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
    except OSError:
        return 0


def stop_process(proc: subprocess.Popen, timeout_s: float, *, kill_children: bool = False) -> None:
    """SIGTERM ``proc`` if it still runs; SIGKILL it (and, with ``kill_children``, its children)
    when it has not exited after ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if kill_children:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        proc.kill()
        proc.wait()


@contextmanager
def running_server(name: str, argv: list[str], port: int, *, env: dict[str, str] | None = None,
                   log_dir: Path | None = None, ready_timeout_s: float = 120, split: CpuSplit | None = None):
    """Start ``argv`` (which must serve on 127.0.0.1:``port``; on ``split``'s server vCPUs when
    given), wait for /ping, yield a RunningServer."""
    log_dir = Path(log_dir or Path.cwd())
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"server-{name.replace(' ', '_').replace('/', '_')}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log, "w") as log_file:
        proc = subprocess.Popen(split.server_argv(argv) if split else argv, env=full_env, stdout=log_file, stderr=subprocess.STDOUT)
    server = RunningServer(name, f"http://127.0.0.1:{port}", proc, log, cpus=split.server if split else None)
    try:
        wait_ready(server.url, proc, timeout_s=ready_timeout_s, log=log)
        yield server
    finally:
        server.stop()
