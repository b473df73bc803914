"""``python -m bench reliability``: the server under faults, hostile input and time.

Each scenario starts its own ``serve`` (on the front end chosen, default serve's own:
granian; or gunicorn with gevent workers; INFO log, on a free loopback port) on a model
folder, runs, and returns one row of counts. Worker deaths are counted alike on both front
ends, from the line each worker logs as it starts (``serve.<front end>_conf: worker PID
started``: a start beyond the worker count is a worker that died and was replaced):

* ``fuzz``: :mod:`bench.fuzz` cases at full speed; 0 5xx, 0 bad 4xx, 0 worker deaths,
  /ping 200 within 2 s throughout;
* ``slow``: connections that send their headers or body byte by byte, or stay silent,
  beside normal traffic; the server's timeouts must close them (SERVE_KEEPALIVE for
  headers and idle connections, SAGEMAKER_MODEL_SERVER_TIMEOUT per read of a body) while
  normal traffic's p99 and /ping stay within the SLO;
* ``kill``: SIGKILL to a random worker under load, ``kills`` times (more than granian's
  crash-loop window apart): failed requests at most the in-flight ones, the worker back
  (time stated), nothing fails after that;
* ``kill-again``: SIGKILL to a worker, then to its replacement soon after it is back (as a
  request that crashes workers, or the OOM killer, would): the server must go on serving
  (granian's crash-loop guard stops a server whose worker dies again within 5.5 s);
* ``sigterm``: SIGTERM to the master under load: every request sent before it answered,
  exit within the graceful timeout;
* ``soak``: open loop (wrk) at 70 % of the rate the benchmark finds (or ``--soak-rate``) for ``soak_s``, in segments:
  0 errors, worker RSS and open files flat (growth under 5 %), p99 per segment;
* ``memory``: 6 MB bodies of every content type at once: peak heap per decode measured
  in process (tracemalloc sees numpy's buffers) and the workers' peak RSS over HTTP;
* ``memory-limit``: the image under ``docker run --memory``, 6 MB bodies of every content
  type from 24 connections at once: no OOM kill, no worker death, the container's peak
  memory per request in flight (skipped, saying why, without a Docker engine or the image).
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import psutil

from bench.fuzz import CONTENT_TYPES, Case, Connection, PingWatch, encode_rows, run_fuzz
from bench.servers import free_port, stop_process, wait_ready
from serve.granian_conf import HEADER_READ_TIMEOUT_S
from serve.gunicorn_conf import DEFAULT_FRONTEND, GRANIAN
from serve.settings import FRONTENDS, Settings

SLO_MS = 20.0
GROWTH_LIMIT = 0.05
# the soak's rate: this share of the highest rate the benchmark finds with p99 under SLO_MS
SOAK_SHARE = 0.7
# Either front end's line as a worker starts (serve.gunicorn_conf's post_fork, serve.granian_conf's loader).
WORKER_STARTED = re.compile(r"serve\.\w+_conf: worker (\d+) started")
# A request that failed out of the app's reach: serve's own log line for a 500, gunicorn's for an
# exception in a worker, granian's (Rust) for an exception out of the WSGI callable.
INTERNAL_ERROR_MARKS = ("internal error", "Error handling request", "Application callable raised an exception")
# granian stops the whole server when a worker it restarted dies again within 5.5 s of the restart
# (granian/server/common.py, _serve_loop: a literal, not an option); kills are spaced beyond it.
CRASH_LOOP_WINDOW_S = 5.5


@dataclass
class Row:
    scenario: str
    passed: bool
    counts: dict
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    workers: int
    frontend: str
    env: dict = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        """The settings the server read from its environment (its timeouts, as it applies them)."""
        return Settings.from_env(self.env)

    def worker_pids(self) -> list[int]:
        try:
            return sorted(p.pid for p in psutil.Process(self.process.pid).children())
        except psutil.NoSuchProcess:
            return []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_starts(self) -> int:
        return count_worker_starts(self.log_text())

    def worker_deaths(self) -> int:
        return self.worker_starts() - self.workers

    def internal_errors(self) -> int:
        text = self.log_text()
        return sum(text.count(mark) for mark in INTERNAL_ERROR_MARKS)

    def exit_code(self) -> int | None:
        """None while the server runs (it must, until the scenario stops it)."""
        return self.process.poll()


def count_worker_starts(log_text: str) -> int:
    return len(WORKER_STARTED.findall(log_text))


# The front ends the suite can run on: serve's two, and granian on its RSGI interface (opt-in).
GRANIAN_RSGI = f"{GRANIAN}-rsgi"
RELIABILITY_FRONTENDS = (*FRONTENDS, GRANIAN_RSGI)


def frontend_env(frontend: str) -> dict[str, str]:
    """The variables that make ``serve`` run on ``frontend`` (gunicorn: with gevent workers, as
    the stock container; granian-rsgi: granian's RSGI interface)."""
    if frontend == GRANIAN:
        return {"SERVE_FRONTEND": GRANIAN}
    if frontend == GRANIAN_RSGI:
        return {"SERVE_FRONTEND": GRANIAN, "SERVE_GRANIAN_INTERFACE": "rsgi"}
    return {"SERVE_FRONTEND": "gunicorn", "SERVE_WORKER_CLASS": "gevent"}


@contextmanager
def serve(model_dir: Path, log_dir: Path, name: str, *, frontend: str = DEFAULT_FRONTEND, workers: int = 2,
          predictor: str = "auto", **env: str):
    """``serve`` on ``model_dir`` with ``workers`` workers of ``frontend``; yields a Server once
    every worker has started; SIGTERM (then SIGKILL) at the end."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"serve-{frontend}-{name}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "SERVE_", "SM_"))}
    server_env = {"SAGEMAKER_CONTAINER_LOG_LEVEL": "INFO", **frontend_env(frontend), **env}
    full_env.update(server_env)
    argv = [sys.executable, "-m", "serve.cli", "--model", str(model_dir), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--predictor", predictor]
    with open(log, "w") as out:
        process = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log, workers, frontend, server_env)
    try:
        wait_ready(server.url, process, timeout_s=120, log=log)
        deadline = time.monotonic() + 30
        while server.worker_starts() < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server
    finally:
        stop_process(process, 30)


def _csv_case(rng: random.Random, num_feature: int, index: int = 0) -> Case:
    body = ",".join(repr(round(rng.uniform(0, 50), 2)) for _ in range(num_feature)).encode()
    return Case(index, "valid", "POST", "/invocations", (("Content-Type", "text/csv"),), body, expect_ok=True)


ERRORS_KEPT = 5


class Traffic:
    """Normal traffic: ``connections`` threads, each sending valid one-row CSV requests on a
    keep-alive connection; records (sent time, answered time, status) per request, and what
    went wrong with the first failed ones (``errors``), for the report."""

    def __init__(self, url: str, num_feature: int, connections: int = 2, pause_s: float = 0.0,
                 timeout_s: float = 30.0):
        self.url, self.num_feature, self.connections, self.pause_s = url, num_feature, connections, pause_s
        self.timeout_s = timeout_s
        self.records: list[tuple[float, float, int | None]] = []
        self.errors: list[str] = []   # the first ERRORS_KEPT failures: when (s after the start), how long, what
        self._started = time.monotonic()   # made in the `with` that starts it
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self, number: int) -> None:
        rng = random.Random(number)
        connection = Connection(self.url, timeout_s=self.timeout_s)
        while not self._stop.is_set():
            sent = time.monotonic()
            answer = connection.send(_csv_case(rng, self.num_feature))
            with self._lock:
                self.records.append((sent, time.monotonic(), answer.status))
                if answer.status != 200 and len(self.errors) < ERRORS_KEPT:
                    what = answer.error or f"{answer.status} {answer.body[:120]!r}"
                    self.errors.append(f"connection {number} at {sent - self._started:.2f} s, after "
                                       f"{answer.seconds:.2f} s: {what}")
            if answer.status is None:
                time.sleep(0.05)   # a refused connection: do not spin
            elif self.pause_s:
                time.sleep(self.pause_s)
        connection.close()

    def __enter__(self) -> "Traffic":
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.connections)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failed(self, after: float = 0.0, before: float = float("inf")) -> int:
        return sum(1 for sent, _, status in self.records if after <= sent < before and status != 200)

    def p99_ms(self) -> float:
        latencies = [(done - sent) * 1000 for sent, done, status in self.records if status == 200]
        return round(float(np.percentile(latencies, 99)), 2) if latencies else float("nan")


# --- scenarios ---------------------------------------------------------------------------------

def scenario_fuzz(model_dir: Path, log_dir: Path, *, num_feature: int, count: int, seed: int,
                  frontend: str = DEFAULT_FRONTEND, progress: Callable[[str], None] = print) -> Row:
    with serve(model_dir, log_dir, "fuzz", frontend=frontend) as server:
        result = run_fuzz(server.url, seed=seed, count=count, num_feature=num_feature,
                          failures_path=log_dir / f"fuzz-failures-seed{seed}.jsonl", progress=progress)
        deaths, errors, exit_code = server.worker_deaths(), server.internal_errors(), server.exit_code()
    counts = {"frontend": frontend, **result.to_dict(), "worker_deaths": deaths, "logged_internal_errors": errors,
              "server_exit_code": exit_code}
    passed = (result.server_errors == 0 and result.failure_count == 0 and deaths == 0 and errors == 0
              and result.ping["failures"] == 0 and exit_code is None)
    notes = f"{count:,} cases, seed {seed}" + (f"; failing cases saved to fuzz-failures-seed{seed}.jsonl"
                                               if result.failure_count else "")
    return Row("fuzz", passed, counts, notes)


SLOW_KINDS = ("headers_byte_by_byte", "stalled_body", "silent")


def slow_client_timeouts(server: Server) -> dict[str, tuple[str, float]]:
    """For each kind of slow connection, the server setting that must close it and its value
    in seconds, as the server read it. Headers that do not complete and silent connections:
    the keep-alive timeout (gunicorn + gevent applies it to reading a request's line and
    headers; granian's header read timeout is set to it). A body that stalls: the request
    timeout, per read of the body (serve.app.ServeApp.read_body)."""
    settings = server.settings
    header_s = float(settings.keepalive or HEADER_READ_TIMEOUT_S)
    return {"headers_byte_by_byte": ("SERVE_KEEPALIVE", header_s),
            "stalled_body": ("SAGEMAKER_MODEL_SERVER_TIMEOUT", float(settings.timeout)),
            "silent": ("SERVE_KEEPALIVE", header_s)}


def close_bound_s(timeout_s: float) -> float:
    """How late after its timeout a connection may close and still count: the scenario looks
    once a second, and a loaded machine delays the server's timers."""
    return timeout_s + max(3.0, 0.5 * timeout_s)


def scenario_slow(model_dir: Path, log_dir: Path, *, num_feature: int, slow: int, keepalive_s: int,
                  body_timeout_s: int, duration_s: float | None = None, frontend: str = DEFAULT_FRONTEND) -> Row:
    """``slow`` connections (a third each: headers byte by byte, headers and one byte of body
    then silence, silent), beside normal traffic. Each kind must be closed by the server within
    its timeout (``slow_client_timeouts``, read from the server's settings) plus a margin; the
    scenario waits ``duration_s`` (default: the longest bound and 3 s) for them."""
    import socket

    env = {"SERVE_KEEPALIVE": str(keepalive_s), "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(body_timeout_s)}
    with serve(model_dir, log_dir, "slow", frontend=frontend, **env) as server:
        timeouts = slow_client_timeouts(server)
        bounds = {kind: close_bound_s(seconds) for kind, (_, seconds) in timeouts.items()}
        wait_s = duration_s if duration_s is not None else max(bounds.values()) + 3
        host, port = server.url.rsplit("/", 1)[-1].split(":")
        body = b"1," * (num_feature - 1) + b"1"
        head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n"
        sockets = []   # (kind, socket)
        for number in range(slow):
            kind = SLOW_KINDS[number % 3]
            sock = socket.create_connection((host, int(port)))
            if kind == "stalled_body":
                sock.sendall(head.encode() + body[:1])
            sock.setblocking(False)
            sockets.append((kind, sock))
        closed_at: dict[int, float] = {}
        started = time.monotonic()
        # a normal request not answered in 5 s has failed (the SLO is 20 ms): no longer wait on it
        with PingWatch(server.url) as ping, Traffic(server.url, num_feature, pause_s=0.002, timeout_s=5) as traffic:
            position = [0] * slow
            while time.monotonic() - started < wait_s and len(closed_at) < slow:
                for number, (kind, sock) in enumerate(sockets):
                    if number in closed_at:
                        continue
                    try:
                        sock.recv(4096)   # an answer (408) or the end of the stream: the server is done with it
                        closed_at[number] = time.monotonic() - started
                        continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed_at[number] = time.monotonic() - started
                        continue
                    if kind == "headers_byte_by_byte" and position[number] < len(head):
                        try:
                            sock.send(head[position[number]].encode())
                            position[number] += 1
                        except OSError:
                            closed_at[number] = time.monotonic() - started
                time.sleep(1.0)
        for _, sock in sockets:
            sock.close()
        exit_code = server.exit_code()
    by_kind = {}
    for kind in SLOW_KINDS:
        seconds = [closed_at[n] for n, (k, _) in enumerate(sockets) if k == kind and n in closed_at]
        setting, timeout_s = timeouts[kind]
        by_kind[kind] = {"connections": sum(1 for k, _ in sockets if k == kind), "closed": len(seconds),
                         "closed_in_time": sum(1 for s in seconds if s <= bounds[kind]),
                         "max_close_s": round(max(seconds), 1) if seconds else None,
                         "timeout": f"{setting}={timeout_s:g} s", "bound_s": round(bounds[kind], 1)}
    counts = {"frontend": frontend, "slow_connections": slow, "closed_by_server": len(closed_at),
              "closed_by_kind": {kind: v["closed"] for kind, v in by_kind.items()}, "kinds": by_kind,
              "max_close_s": round(max(closed_at.values()), 1) if closed_at else None, "waited_s": round(wait_s, 1),
              "normal_requests": len(traffic.records), "normal_failed": traffic.failed(),
              "normal_errors": traffic.errors,
              "normal_p99_ms": traffic.p99_ms(), "ping": ping.to_dict(),
              "keepalive_s": keepalive_s, "body_read_timeout_s": body_timeout_s, "server_exit_code": exit_code}
    passed = (all(v["closed_in_time"] == v["connections"] for v in by_kind.values()) and traffic.failed() == 0
              and traffic.p99_ms() <= SLO_MS and ping.failures == 0 and exit_code is None)
    notes = "; ".join(f"{kind}: {v['closed_in_time']}/{v['connections']} closed within {v['bound_s']} s "
                      f"({v['timeout']})" for kind, v in by_kind.items())
    return Row("slow", passed, counts, notes)


def _kill_and_wait(server: Server, victim: int, timeout_s: float = 60) -> tuple[float | None, list[int]]:
    """SIGKILL ``victim``; (seconds until a new worker has started in its place, or None if
    none came within ``timeout_s`` or the server stopped; the workers' pids then)."""
    before = server.worker_pids()
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while time.monotonic() < killed_at + timeout_s and server.exit_code() is None:
        pids = server.worker_pids()
        new = set(pids) - set(before)
        if len(pids) == len(before) and victim not in pids and new \
                and all(f"worker {pid} started" in server.log_text() for pid in new):
            return time.monotonic() - killed_at, pids
        time.sleep(0.05)
    return None, server.worker_pids()


def scenario_kill(model_dir: Path, log_dir: Path, *, num_feature: int, kills: int, connections: int = 4,
                  frontend: str = DEFAULT_FRONTEND) -> Row:
    """SIGKILL to a random worker ``kills`` times, each more than granian's crash-loop window
    after the last worker came back (``kill-again`` is the scenario of quick repeats)."""
    rng = random.Random(kills)
    recoveries, failed_during, in_flight_bound = [], 0, 0
    with serve(model_dir, log_dir, "kill", frontend=frontend) as server, PingWatch(server.url) as ping, \
            Traffic(server.url, num_feature, connections=connections) as traffic:
        time.sleep(1.0)
        window_start = time.monotonic()   # failures are counted per kill in windows that do not overlap
        for number in range(kills):
            recovery, _ = _kill_and_wait(server, rng.choice(server.worker_pids()))
            recovered_at = time.monotonic()
            recoveries.append(recovery)
            if recovery is None:
                break
            time.sleep(CRASH_LOOP_WINDOW_S + 1.0 if number < kills - 1 else 2.0)
            failed_during += traffic.failed(window_start, recovered_at + 1.0)
            window_start = recovered_at + 1.0
            in_flight_bound += connections
        settled = time.monotonic()
        time.sleep(2.0)
        exit_code = server.exit_code()
    after = traffic.failed(after=settled)
    back = [r for r in recoveries if r is not None]
    counts = {"frontend": frontend, "kills": kills, "requests": len(traffic.records),
              "failed_around_kills": failed_during, "in_flight_bound": in_flight_bound,
              "failed_after_recovery": after, "workers_back": len(back),
              "max_recovery_s": round(max(back), 2) if back else None, "ping": ping.to_dict(),
              "server_exit_code": exit_code}
    passed = len(back) == kills and failed_during <= in_flight_bound and after == 0 and exit_code is None
    return Row("kill", passed, counts, f"SIGKILL to a random worker {kills} time(s), {connections} connections "
                                       f"of load, {CRASH_LOOP_WINDOW_S + 1:g} s or more apart")


def scenario_kill_again(model_dir: Path, log_dir: Path, *, num_feature: int, again_after_s: float = 1.0,
                        watch_s: float = 6.0, connections: int = 4, frontend: str = DEFAULT_FRONTEND) -> Row:
    """SIGKILL to a worker, then to its replacement ``again_after_s`` after it is back: the server
    must still serve ``watch_s`` later (granian's crash-loop guard would have stopped it at
    once), with the worker back and nothing failing in the last 3 s, then exit 0 on SIGTERM."""
    with serve(model_dir, log_dir, "kill-again", frontend=frontend) as server, PingWatch(server.url) as ping, \
            Traffic(server.url, num_feature, connections=connections) as traffic:
        time.sleep(1.0)
        before = server.worker_pids()
        first, pids = _kill_and_wait(server, before[0])
        second = None
        if first is not None:
            time.sleep(again_after_s)
            (replacement,) = set(pids) - set(before)
            second, _ = _kill_and_wait(server, replacement, timeout_s=watch_s)
        time.sleep(watch_s)
        ended = time.monotonic()
        exit_code = server.exit_code()
        tail_failed = traffic.failed(after=ended - 3.0)
        crash_loop_logged = "crash loop" in server.log_text().lower()
        # and the server that carried on still stops as SageMaker stops it
        server.process.send_signal(signal.SIGTERM)
        try:
            sigterm_exit = server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sigterm_exit = None
    counts = {"frontend": frontend, "requests": len(traffic.records), "first_recovery_s": _round(first),
              "again_after_s": again_after_s, "second_recovery_s": _round(second), "server_exit_code": exit_code,
              "crash_loop_logged": crash_loop_logged, "failed_in_last_3_s": tail_failed,
              "failed": traffic.failed(before=ended), "ping": ping.to_dict(), "sigterm_exit_code": sigterm_exit}
    passed = (first is not None and second is not None and exit_code is None and tail_failed == 0
              and sigterm_exit == 0)
    return Row("kill-again", passed, counts, f"SIGKILL to a worker, then to its replacement {again_after_s:g} s "
                                             f"after it was back; watched {watch_s:g} s more")


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


# A request sent this close before SIGTERM races it: the server may not have read it when it stops
# reading (granian's hyper closes a kept-alive connection whose next request it has not parsed yet;
# seen: one sent 0.04 ms before). Those are counted apart; every request sent earlier must be answered.
SIGNAL_RACE_S = 0.010


def scenario_sigterm(model_dir: Path, log_dir: Path, *, num_feature: int, connections: int = 4,
                     graceful_s: int = 20, frontend: str = DEFAULT_FRONTEND) -> Row:
    with serve(model_dir, log_dir, "sigterm", frontend=frontend, SERVE_GRACEFUL_TIMEOUT=str(graceful_s)) as server:
        with Traffic(server.url, num_feature, connections=connections) as traffic:
            time.sleep(2.0)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=graceful_s + 10)
            exited = time.monotonic() - signalled
        exit_code = server.process.returncode
    accepted = signalled - SIGNAL_RACE_S
    answered_before = sum(1 for sent, _, status in traffic.records if sent < accepted and status == 200)
    lost_before = traffic.failed(before=accepted)
    counts = {"frontend": frontend, "requests_before_signal": answered_before + lost_before,
              "lost_before_signal": lost_before, "lost_racing_signal": traffic.failed(accepted, signalled),
              "race_window_ms": SIGNAL_RACE_S * 1000, "exit_s": round(exited, 2), "graceful_timeout_s": graceful_s,
              "exit_code": exit_code}
    passed = lost_before == 0 and exited < graceful_s and exit_code == 0
    return Row("sigterm", passed, counts, f"SIGTERM to the {frontend} master under load")


def _worker_usage(server: Server) -> tuple[float, int]:
    """(RSS MB, open file descriptors) summed over the workers."""
    rss, fds = 0, 0
    for pid in server.worker_pids():
        try:
            process = psutil.Process(pid)
            rss += process.memory_info().rss
            fds += process.num_fds()
        except psutil.NoSuchProcess:
            pass
    return rss / 2**20, fds


def scenario_soak(model_dir: Path, log_dir: Path, *, sample_csv: Path, soak_s: int, segments: int = 6,
                  rate: float | None = None, frontend: str = DEFAULT_FRONTEND) -> Row:
    """wrk's open loop at ``rate`` in ``segments``; by default 70 % of the rate the benchmark
    finds for this server (``bench.search.find_max_rates``: the highest open-loop rate with p99
    under the SLO, as ``bench compare`` searches it), on as many connections as the benchmark
    uses at that rate (``open_loop_connections``: a connection that must answer faster than it
    can falls behind its schedule, and the p99 from the scheduled send grows without bound).
    Errors are counted by kind (wrk's connect/read/write errors and timeouts, non-2xx answers,
    requests lost with their connection): a timeout is wrk's, counted every 2 s for each
    connection whose request has waited more than ``bench.load``'s 30 s, so a stalled client
    counts too."""
    from collections import Counter

    from bench.load import run_load
    from bench.payloads import make_bodies, read_sample_rows
    from bench.search import DEFAULT_CONNECTIONS, SearchedServer, find_max_rates, open_loop_connections

    bodies = make_bodies(read_sample_rows(sample_csv), 1)
    with serve(model_dir, log_dir, "soak", frontend=frontend) as server:
        found = None
        if rate is None:
            found = find_max_rates([SearchedServer(server.url, bodies)], slo_ms=SLO_MS)[0].max_rate
            rate = SOAK_SHARE * found
        connections = open_loop_connections(rate, DEFAULT_CONNECTIONS)
        segment_s = max(1, soak_s // segments)
        rows, errors, by_kind = [], 0, Counter()
        for number in range(segments):
            result = run_load(server.url, bodies, rate=rate, connections=connections, duration_s=segment_s,
                              warmup_s=0)
            usage = _worker_usage(server)
            errors += result.errors
            kinds = {kind: n for kind, n in result.error_detail.items() if n}
            by_kind.update(kinds)
            rows.append({"segment": number + 1, "p99_ms": round(result.latency_ms["p99"], 2),
                         "service_p99_ms": round(result.service_latency_ms["p99"], 2),
                         "service_max_ms": round(result.service_latency_ms["max"], 2),
                         "achieved_rate": round(result.achieved_rate), "errors": result.errors,
                         "errors_by_kind": kinds, "load_average_1m": round(os.getloadavg()[0], 1),
                         "rss_mb": round(usage[0], 1), "fds": usage[1]})
        deaths, internal, exit_code = server.worker_deaths(), server.internal_errors(), server.exit_code()
    # growth from the end of the first segment (caches warm) to the end of the last
    rss_growth = rows[-1]["rss_mb"] / rows[0]["rss_mb"] - 1
    fd_growth = rows[-1]["fds"] / max(rows[0]["fds"], 1) - 1
    counts = {"frontend": frontend, "duration_s": segment_s * segments, "rate": round(rate),
              "benchmark_max_rate": round(found) if found is not None else None, "connections": connections,
              "errors": errors,
              "errors_by_kind": dict(by_kind), "worker_deaths": deaths, "logged_internal_errors": internal,
              "server_exit_code": exit_code, "rss_growth": round(rss_growth, 4), "fd_growth": round(fd_growth, 4),
              "p99_ms_first_last_max": [rows[0]["p99_ms"], rows[-1]["p99_ms"], max(r["p99_ms"] for r in rows)],
              "segments": rows}
    passed = (errors == 0 and deaths == 0 and internal == 0 and exit_code is None and rss_growth < GROWTH_LIMIT
              and fd_growth < GROWTH_LIMIT)
    source = (f"{SOAK_SHARE * 100:g} % of the {found:,.0f} req/s the benchmark found" if found is not None
              else "the rate given")
    return Row("soak", passed, counts, f"open loop at {rate:,.0f} req/s ({source}) on {connections} connections, "
                                       f"{segments} segments of {segment_s} s")


def six_mb_bodies(num_feature: int, size: int = 6 * 2**20 - 4096) -> dict[str, bytes]:
    """A body just under the 6 MB limit for every content type (rows of the model's width)."""
    rng = random.Random(6)
    one = {t: encode_rows(t, [[float(rng.randrange(100)) for _ in range(num_feature)]], rng) for t in CONTENT_TYPES}
    out = {}
    for content_type in CONTENT_TYPES:
        if content_type == "application/x-npy":
            cols = num_feature
            rows = (size - 128) // (4 * cols)
            import io
            buffer = io.BytesIO()
            np.save(buffer, np.ones((rows, cols), dtype=np.float32))
            out[content_type] = buffer.getvalue()
            continue
        row = one[content_type]
        if content_type == "application/json":
            row = row.strip(b"[]{}")
            row = b"[" + row.split(b"[")[-1].split(b"]")[0] + b"]"
            count = size // (len(row) + 1)
            out[content_type] = b"[" + b",".join([row] * count) + b"]"
        elif content_type == "application/x-recordio-protobuf":
            out[content_type] = row * (size // len(row))
        else:
            out[content_type] = b"\n".join([row.strip()] * (size // (len(row.strip()) + 1)))
    return out


def scenario_memory(model_dir: Path, log_dir: Path, *, num_feature: int, rounds: int = 2,
                    frontend: str = DEFAULT_FRONTEND) -> Row:
    import tracemalloc
    from concurrent.futures import ThreadPoolExecutor

    from serve import codecs

    bodies = six_mb_bodies(num_feature)
    peaks = {}
    for content_type, body in bodies.items():
        tracemalloc.start()
        try:
            codecs.decoder_for(content_type)(body, num_feature)
        except codecs.RequestError as error:
            peaks[content_type] = f"refused {error.status}"
            tracemalloc.stop()
            continue
        peaks[content_type] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    with serve(model_dir, log_dir, "memory", frontend=frontend) as server:
        base_rss, _ = _worker_usage(server)
        peak_rss = [base_rss]
        statuses: dict[str, list[int]] = {t: [] for t in bodies}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                peak_rss.append(_worker_usage(server)[0])

        def send(content_type: str) -> None:
            connection = Connection(server.url, timeout_s=120)
            for _ in range(rounds):
                case = Case(0, content_type, "POST", "/invocations", (("Content-Type", content_type),),
                            bodies[content_type])
                statuses[content_type].append(connection.send(case).status)
            connection.close()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with PingWatch(server.url) as ping, ThreadPoolExecutor(len(bodies)) as pool:
            list(pool.map(send, bodies))
        stop.set()
        sampler.join()
        deaths, exit_code = server.worker_deaths(), server.exit_code()
    counts = {"frontend": frontend, "body_mb": {t: round(len(b) / 2**20, 2) for t, b in bodies.items()},
              "decode_peak_heap_mb": peaks, "statuses": statuses, "workers_rss_base_mb": round(base_rss, 1),
              "workers_rss_peak_mb": round(max(peak_rss), 1), "worker_deaths": deaths, "ping": ping.to_dict(),
              "server_exit_code": exit_code}
    passed = deaths == 0 and exit_code is None and all(s and all(x is not None and x < 500 for x in s) for s in statuses.values())
    return Row("memory", passed, counts, "6 MB bodies of every type at once (one connection each); no docker "
                                         "--memory limit in this run")


def docker_engine() -> str | None:
    """None when a Docker engine answers here (DOCKER_HOST as set), else why not."""
    import shutil

    if shutil.which("docker") is None:
        return "no docker command (install docker.io, or run .ci/docker-host.sh up)"
    proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if proc.returncode != 0:
        return f"no Docker engine answers ({proc.stderr.strip()[-200:]}); eval \"$(.ci/docker-host.sh up)\" first"
    return None


def _cgroup_memory(container: str) -> dict:
    """A container's memory now, read in its cgroup (v2, else v1): ``anon_mb``, what its
    processes hold (the page cache left out: the kernel reclaims it before any OOM kill),
    ``oom_kills`` so far."""
    script = ("cd /sys/fs/cgroup; if [ -f memory.events ]; then grep -E '^anon ' memory.stat; "
              "grep '^oom_kill ' memory.events; else grep -E '^total_rss ' memory/memory.stat; "
              "grep '^oom_kill ' memory/memory.oom_control; fi")
    proc = subprocess.run(["docker", "exec", container, "sh", "-c", script], capture_output=True, text=True,
                          timeout=30)
    words = proc.stdout.split()
    try:
        return {"anon_mb": round(int(words[1]) / 2**20, 1), "oom_kills": int(words[3])}
    except (IndexError, ValueError):
        return {"anon_mb": None, "oom_kills": None, "error": (proc.stdout + proc.stderr).strip()[-200:]}


def scenario_memory_limit(model_dir: Path, log_dir: Path, *, num_feature: int, image: str, memory: str = "1g",
                          per_type: int = 4, rounds: int = 2) -> Row:
    """The image under ``docker run --memory``: ``per_type`` connections for each content type
    send 6 MB bodies at once, ``rounds`` each; no OOM kill, no worker death, no 5xx."""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    why_not = docker_engine()
    if why_not is None and subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        why_not = f"no image {image} (build it as docs/image.md says: DOCKER_BUILDKIT=1 docker build -t {image} .)"
    if why_not:
        return Row("memory-limit", True, {"skipped": why_not}, f"skipped: {why_not}")
    bodies = six_mb_bodies(num_feature)
    port = free_port()
    name = f"reliability-memory-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host", "--memory", memory,
                    "--memory-swap", memory, "-e", f"SAGEMAKER_BIND_TO_PORT={port}",
                    "-e", "SAGEMAKER_CONTAINER_LOG_LEVEL=INFO", "-v", f"{model_dir.resolve()}:/opt/ml/model:ro",
                    image, "serve"], check=True, capture_output=True, timeout=120)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if Connection(url, timeout_s=2).send(Case(0, "", "GET", "/ping", (), b"")).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        base = _cgroup_memory(name)
        statuses: dict[str, list] = {t: [] for t in bodies}

        def send(content_type: str) -> None:
            connection = Connection(url, timeout_s=300)
            for _ in range(rounds):
                case = Case(0, content_type, "POST", "/invocations", (("Content-Type", content_type),),
                            bodies[content_type])
                try:
                    statuses[content_type].append(connection.send(case).status)
                except OSError as exc:
                    statuses[content_type].append(type(exc).__name__)
                    connection.close()
                    connection = Connection(url, timeout_s=300)
            connection.close()

        senders = [t for t in bodies for _ in range(per_type)]
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                anon = _cgroup_memory(name).get("anon_mb")
                if anon is not None:
                    samples.append(anon)
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with PingWatch(url) as ping, ThreadPoolExecutor(len(senders)) as pool:
            list(pool.map(send, senders))
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
        usage = _cgroup_memory(name)
        state = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .State}}", name],
                                          capture_output=True, text=True, check=True).stdout)
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        log_text = logs.stdout + logs.stderr
    finally:
        log_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    (log_dir / "serve-memory-limit.log").write_text(log_text)
    # one start beyond the worker count the server announced is a worker that died (the OOM killer sends SIGKILL)
    workers_started = count_worker_starts(log_text)
    announced = re.search(r"(\d+) worker\(s\)", log_text)
    deaths = max(0, workers_started - int(announced.group(1))) if announced else None
    concurrent = len(senders)
    peak, base_mb = max(samples, default=None), base.get("anon_mb")
    per_request = round((peak - base_mb) / concurrent, 1) if peak is not None and base_mb is not None else None
    counts = {"memory_limit": memory, "concurrent_requests": concurrent, "rounds": rounds,
              "body_mb": round(max(len(b) for b in bodies.values()) / 2**20, 2),
              "statuses": {t: sorted(set(map(str, s))) for t, s in statuses.items()},
              "anon_mb_before": base_mb, "anon_mb_peak": peak, "memory_samples": len(samples), "mb_per_request_in_flight": per_request,
              "oom_kills": usage.get("oom_kills"), "oom_killed": state.get("OOMKilled"),
              "exit_code": state.get("ExitCode"), "running": state.get("Running"),
              "worker_starts": workers_started, "worker_deaths": deaths, "seconds": round(seconds, 1), "ping": ping.to_dict()}
    ok_statuses = all(all(isinstance(x, int) and x < 500 for x in s) and s for s in statuses.values())
    passed = (ok_statuses and usage.get("oom_kills") == 0 and not state.get("OOMKilled") and state.get("Running")
              and deaths == 0 and workers_started > 0)
    return Row("memory-limit", bool(passed), counts,
               f"docker run --memory {memory} {image}: {concurrent} connections (6 content types x {per_type}) "
               f"sending {rounds} bodies of 6 MB each at once")


# --- the command -------------------------------------------------------------------------------

SCENARIOS = ("fuzz", "slow", "kill", "kill-again", "sigterm", "soak", "memory", "memory-limit")


def run_reliability(model_dir: Path, sample_csv: Path, num_feature: int, out: Path, *, scenarios=SCENARIOS,
                    fuzz_count: int = 100_000, seed: int = 1, soak_s: int = 1800, soak_rate: float | None = None,
                    slow: int = 300, kills: int = 3, image: str = "xgb-neo-serve:latest", memory_limit: str = "1g",
                    frontend: str = DEFAULT_FRONTEND, progress: Callable[[str], None] = print) -> list[Row]:
    """Every scenario of ``scenarios`` against ``serve`` on ``frontend`` (memory-limit: the image,
    on the image's default front end)."""
    rows = []
    logs = out / "logs"
    on = {"frontend": frontend}
    for name in scenarios:
        started = time.monotonic()
        progress(f"reliability: {name} ({frontend}) ...")
        if name == "fuzz":
            row = scenario_fuzz(model_dir, logs, num_feature=num_feature, count=fuzz_count, seed=seed,
                                progress=progress, **on)
        elif name == "slow":
            row = scenario_slow(model_dir, logs, num_feature=num_feature, slow=slow, keepalive_s=5, body_timeout_s=5,
                                **on)
        elif name == "kill":
            row = scenario_kill(model_dir, logs, num_feature=num_feature, kills=kills, **on)
        elif name == "kill-again":
            row = scenario_kill_again(model_dir, logs, num_feature=num_feature, **on)
        elif name == "sigterm":
            row = scenario_sigterm(model_dir, logs, num_feature=num_feature, **on)
        elif name == "soak":
            row = scenario_soak(model_dir, logs, sample_csv=sample_csv, soak_s=soak_s, rate=soak_rate, **on)
        elif name == "memory":
            row = scenario_memory(model_dir, logs, num_feature=num_feature, **on)
        else:
            row = scenario_memory_limit(model_dir, logs, num_feature=num_feature, image=image, memory=memory_limit)
        row.counts["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        progress(f"  {'pass' if row.passed else 'FAIL'}: {json.dumps(row.counts)[:300]}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps([r.to_dict() for r in rows], indent=1) + "\n")
    return rows


def table(rows: list[Row]) -> str:
    """One line per scenario: result, its headline counts."""
    lines = [f"{'scenario':<12} {'result':<6} figures"]
    if rows and "frontend" in rows[0].counts:
        lines[0] += f" (front end: {rows[0].counts['frontend']})"
    for row in rows:
        c = row.counts
        if row.scenario == "fuzz":
            lost = sum(n for problem, n in c["by_problem"].items() if "kept-alive connection" in problem)
            text = (f"{c['requests']:,} requests in {c['seconds']:.0f} s, 5xx {c['server_errors']}, failing "
                    f"{c['failure_count']} ({lost} lost on kept-alive connections closed unannounced), HTTP-layer "
                    f"refusals {c['http_layer_refusals']}, worker deaths {c['worker_deaths']}, /ping max "
                    f"{c['ping']['max_ms']} ms ({c['ping']['failures']} failed)")
        elif row.scenario == "slow":
            kinds = ", ".join(f"{kind} {v['closed_in_time']}/{v['connections']} within {v['bound_s']} s"
                              for kind, v in c["kinds"].items())
            text = (f"closed by the server in time: {kinds} (last after {c['max_close_s']} s); normal p99 "
                    f"{c['normal_p99_ms']} ms, {c['normal_failed']} of {c['normal_requests']} failed, /ping max "
                    f"{c['ping']['max_ms']} ms ({c['ping']['failures']} failed)"
                    + (f"; first failed: {c['normal_errors'][0]}" if c.get("normal_errors") else ""))
        elif row.scenario == "kill":
            text = (f"{c['kills']} kill(s): {c['failed_around_kills']} failed (bound {c['in_flight_bound']}), "
                    f"{c['failed_after_recovery']} after recovery, {c['workers_back']} worker(s) back, the slowest "
                    f"within {c['max_recovery_s']} s")
        elif row.scenario == "kill-again":
            text = (f"worker back {c['first_recovery_s']} s after the first kill, its replacement killed "
                    f"{c['again_after_s']} s later: back after {c['second_recovery_s']} s; server "
                    f"{'still serving' if c['server_exit_code'] is None else 'exited with ' + str(c['server_exit_code'])}"
                    f"{' (crash loop logged)' if c['crash_loop_logged'] else ''}, {c['failed']} of {c['requests']} "
                    f"requests failed, {c['failed_in_last_3_s']} in the last 3 s")
        elif row.scenario == "sigterm":
            text = (f"{c['requests_before_signal']} requests sent {c['race_window_ms']:g} ms or more before SIGTERM, "
                    f"{c['lost_before_signal']} lost ({c['lost_racing_signal']} lost of those sent in the last "
                    f"{c['race_window_ms']:g} ms), "
                    f"exit after {c['exit_s']} s (graceful timeout {c['graceful_timeout_s']} s)")
        elif row.scenario == "soak":
            kinds = ", ".join(f"{kind} {n}" for kind, n in c["errors_by_kind"].items())
            found = c.get("benchmark_max_rate")
            text = (f"{c['duration_s']} s at {c['rate']:,} req/s"
                    f"{f' ({SOAK_SHARE * 100:g} % of {found:,})' if found else ''} on {c['connections']} connections: "
                    f"errors {c['errors']}"
                    f"{' (' + kinds + ')' if kinds else ''}, worker deaths {c['worker_deaths']}, RSS growth "
                    f"{c['rss_growth']:.1%}, fd growth {c['fd_growth']:.1%}, p99 first/last/max "
                    f"{'/'.join(str(p) for p in c['p99_ms_first_last_max'])} ms, service p99 max "
                    f"{max(r['service_p99_ms'] for r in c['segments'])} ms")
        elif row.scenario == "memory-limit" and "skipped" in c:
            text = f"skipped: {c['skipped']}"
        elif row.scenario == "memory-limit":
            text = (f"docker --memory {c['memory_limit']}: {c['concurrent_requests']} x 6 MB at once, {c['rounds']} "
                    f"rounds; processes' memory {c['anon_mb_before']} -> {c['anon_mb_peak']} MB at peak "
                    f"({c['mb_per_request_in_flight']} MB per request in flight), OOM kills {c['oom_kills']}, "
                    f"OOMKilled {c['oom_killed']}, worker deaths {c['worker_deaths']}, statuses "
                    f"{sorted({x for v in c['statuses'].values() for x in v})}")
        else:
            text = (f"decode peak heap per 6 MB body (MB): {c['decode_peak_heap_mb']}; workers' RSS "
                    f"{c['workers_rss_base_mb']} -> {c['workers_rss_peak_mb']} MB, deaths {c['worker_deaths']}")
        result = "skip" if "skipped" in c else "pass" if row.passed else "FAIL"
        lines.append(f"{row.scenario:<12} {result:<6} {text}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.add_argument("--model", default="rtb-small", help="sample model (default rtb-small)")
    p.add_argument("--predictor", default="both", choices=["both", "compiled", "stock"],
                   help="serve the compiled artifact, the stock model, or both (default)")
    p.add_argument("--frontend", default=DEFAULT_FRONTEND, choices=[*RELIABILITY_FRONTENDS, "both"],
                   help=f"serve's front end to run the scenarios on (default serve's own, {DEFAULT_FRONTEND}; "
                        "gunicorn: with gevent workers; granian-rsgi: granian's RSGI interface; both: granian "
                        "and gunicorn one after the other)")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    p.add_argument("--fuzz-count", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--soak-s", type=int, default=1800, help="soak duration (default 30 minutes)")
    p.add_argument("--soak-rate", type=float,
                   help="the soak's rate in req/s (default 70 %% of the highest rate with p99 under 20 ms that "
                        "the benchmark's search finds for the server first)")
    p.add_argument("--slow", type=int, default=300, help="slow connections (default 300)")
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--image", default="xgb-neo-serve:latest",
                   help="image for the memory-limit scenario (skipped without Docker or the image)")
    p.add_argument("--memory-limit", default="1g", help="docker --memory for the memory-limit scenario (default 1g)")
    p.add_argument("--out", type=Path, help="folder for reliability.json and logs (default reports/reliability-<time>)")


def main_reliability(args, say: Callable[[str], None] = print) -> int:
    import datetime as dt

    from bench.models import prepare_model

    model = prepare_model(args.model, variants=("quantized",), progress=say)
    num_feature = json.loads((model.source.parent / "metadata.json").read_text())["n_features"]
    out = Path(args.out or f"reports/reliability-{dt.datetime.now():%Y%m%d-%H%M%S}")
    targets = {"compiled": model.deployed, "stock": model.stock_dir}
    chosen = list(targets) if args.predictor == "both" else [args.predictor]
    frontends = list(FRONTENDS) if args.frontend == "both" else [args.frontend]
    all_rows = []
    for frontend in frontends:
        for name in chosen:
            say(f"== {args.model}, {name}, on {frontend}: {targets[name]}")
            rows = run_reliability(targets[name], model.sample_csv, num_feature, out / frontend / name,
                                   scenarios=args.scenarios, fuzz_count=args.fuzz_count, seed=args.seed,
                                   soak_s=args.soak_s, soak_rate=args.soak_rate, slow=args.slow, kills=args.kills,
                                   image=args.image, memory_limit=args.memory_limit, frontend=frontend, progress=say)
            say(table(rows))
            all_rows += [{"target": name, "frontend": frontend, **r.to_dict()} for r in rows]
    (out / "reliability.json").write_text(json.dumps({"command": " ".join(sys.argv), "model": args.model,
                                                       "rows": all_rows}, indent=1) + "\n")
    say(f"wrote {out / 'reliability.json'}")
    return 0 if all(r["passed"] for r in all_rows) else 1
