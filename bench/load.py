"""HTTP load generator and its statistics: closed loop (maximum throughput) and open loop (fixed rate).

The generator is Debian's ``wrk`` (4.1, ``apt-get install wrk``; ``make tools`` installs it)
driven by ``bench/wrk_bench.lua``. Why wrk:

* It is C on an epoll loop: one thread drives tens of thousands of keep-alive requests
  per second on one core. On a 2-core machine that shares its CPUs with the server under
  test, a Python generator (asyncio, aiohttp, locust) would spend about as much CPU per
  request as the server does, and would measure itself.
* Its LuaJIT hooks give request bodies drawn from sample data (``request()``), per
  response status (``response()``), and pacing (``delay()``).
* ``wrk2`` (the constant-rate fork) is not packaged by Debian, and ``ab`` is closed-loop
  only. The open loop is therefore done in the Lua script, the way wrk2 does it: each
  thread owns one connection and a fixed schedule, and latency is counted from the
  INTENDED send time, so that a server which falls behind shows its queueing instead of
  slowing the generator down (coordinated omission).

Closed loop: ``connections`` keep-alive connections, each sending its next request as
soon as the previous answer arrives; latency comes from wrk's own histogram (exact at
1 us, from the actual send). Open loop: ``rate`` requests/s spread over ``connections``
threads; latency = receive time - min(intended, actual send), from every response; a run
whose achieved rate falls below 95 % of the offered rate is marked not sustained.

The generator's own ceiling is measured against ``bench.trivial_server`` (see
:func:`measure_ceiling`); results near it are flagged, since the generator then takes
CPU that the server under test would otherwise have.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench.cpu_split import CpuSplit
from bench.payloads import write_bodies

WRK_SCRIPT = Path(__file__).with_name("wrk_bench.lua")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
# Open loop: below this share of the offered rate, the server did not keep up.
SUSTAINED_SHARE = 0.95
# A result at or above this share of the generator's ceiling is flagged.
NEAR_CEILING_SHARE = 0.5


class LoadError(RuntimeError):
    """The load generator could not run or gave no result; the message says why."""


def wrk_binary() -> str:
    """Path of the ``wrk`` executable; LoadError with the install command when missing."""
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk is not installed: run `make tools` (apt-get install wrk)")
    return path


@dataclass
class LoadResult:
    """What one load run measured. Latencies in milliseconds."""
    mode: str                        # "closed" or "open"
    url: str
    connections: int
    threads: int
    duration_s: float
    offered_rate: float | None       # open loop only
    requests: int                    # responses received (any status)
    achieved_rate: float             # requests / duration_s
    errors: int                      # non-2xx + socket errors + timeouts + lost requests
    error_detail: dict[str, int]
    latency_ms: dict[str, float]     # p50 p90 p99 p99.9 mean max
    service_latency_ms: dict[str, float]  # from the actual send (open loop: without queueing)
    generator_cpu_s: float           # CPU time wrk used (user + system)
    sustained: bool                  # open loop: achieved >= 95 % of offered; closed: True
    near_ceiling: bool | None = None  # set by flag_near_ceiling
    labels: dict[str, object] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / max(self.requests, 1)

    def meets(self, slo_ms: float) -> bool:
        """True when the run kept p99 under ``slo_ms``, sustained its rate and had no errors."""
        return self.sustained and self.errors == 0 and self.requests > 0 and self.latency_ms["p99"] <= slo_ms

    def to_dict(self) -> dict:
        return asdict(self)


def latency_summary(samples_us) -> dict[str, float]:
    """p50/p90/p99/p99.9, mean and max, in ms, of latency samples in us.

    Percentiles are nearest-rank (the ceil(q * n)-th smallest sample): always a latency
    that was observed, never an interpolation between two.
    """
    values = np.sort(np.asarray(samples_us, dtype=np.float64))
    if values.size == 0:
        return {name: float("nan") for name in [*PERCENTILES, "mean", "max"]}
    summary = {}
    for name, q in PERCENTILES.items():
        rank = max(1, math.ceil(q * values.size / 100 - 1e-9))   # 1e-9: 99.9 * 1000 / 100 is 999.0000000000001
        summary[name] = float(values[rank - 1]) / 1000
    summary["mean"] = float(values.mean()) / 1000
    summary["max"] = float(values[-1]) / 1000
    return summary


def _wrk_latency_ms(wrk_latency_us: dict) -> dict[str, float]:
    summary = {name: wrk_latency_us[name] / 1000 for name in PERCENTILES}
    summary["mean"] = wrk_latency_us["mean"] / 1000
    summary["max"] = wrk_latency_us["max"] / 1000
    return summary


def open_loop_rates(per_thread: list[dict]) -> tuple[float, float]:
    """(achieved rate, share of the schedule sent) of an open-loop run, from per-thread records.

    Thread i was due to send at t0 + k * interval; by the time of its last response,
    floor((last - t0) / interval) + 1 requests were due. A server that keeps up lets
    every thread send about all of them; one that falls behind leaves a backlog that no
    latency sample shows, so the share sent is what decides whether the rate was held.
    The achieved rate sums each thread's received / (last - t0 + interval): wrk's start
    and stop (connecting, noticing the end) do not dilute it.
    """
    achieved, due, sent = 0.0, 0, 0
    for t in per_thread:
        if t["received"] == 0 or t["interval_us"] <= 0:
            continue
        window_us = t["last_done_us"] - t["t0_us"]
        due += int(window_us // t["interval_us"]) + 1
        sent += t["sent"]
        achieved += t["received"] / (window_us + t["interval_us"]) * 1e6
    return achieved, (sent / due if due else 0.0)


def parse_wrk_output(raw: dict, *, url: str, connections: int, threads: int,
                     rate: float | None, generator_cpu_s: float) -> LoadResult:
    """A LoadResult from the JSON that wrk_bench.lua's done() wrote."""
    duration_s = raw["duration_us"] / 1e6
    errors = dict(raw["errors"])
    per_thread = raw["threads"]
    if raw["open_loop"]:
        samples = np.concatenate([np.asarray(t["samples_us"], dtype=np.float64) for t in per_thread]) \
            if per_thread else np.empty(0)
        requests = int(samples.size)
        errors["non2xx"] = sum(t["non2xx"] for t in per_thread)
        errors["lost"] = sum(t["lost"] for t in per_thread)
        errors.pop("status")              # wrk's >399 count is inside non2xx
        latency = latency_summary(samples)
        achieved, share_sent = open_loop_rates(per_thread)
        sustained = share_sent >= SUSTAINED_SHARE and achieved >= SUSTAINED_SHARE * rate
    else:
        requests = int(raw["requests"])
        latency = _wrk_latency_ms(raw["wrk_latency_us"])
        achieved = requests / duration_s if duration_s > 0 else 0.0
        sustained = True
    return LoadResult(
        mode="open" if raw["open_loop"] else "closed", url=url, connections=connections,
        threads=threads, duration_s=duration_s, offered_rate=rate, requests=requests,
        achieved_rate=achieved, errors=int(sum(errors.values())), error_detail=errors,
        latency_ms=latency, service_latency_ms=_wrk_latency_ms(raw["wrk_latency_us"]),
        generator_cpu_s=generator_cpu_s, sustained=sustained)


def _run_wrk(url: str, bodies_file: Path, *, path: str, content_type: str, rate: float | None,
             connections: int, threads: int, duration_s: int, timeout_s: int) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "BENCH_BODIES": str(bodies_file), "BENCH_PATH": path,
               "BENCH_CONTENT_TYPE": content_type, "BENCH_RATE": str(rate or 0),
               "BENCH_THREADS": str(threads), "BENCH_OUT": str(out)}
        argv = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration_s}s",
                f"--timeout", f"{timeout_s}s", "-s", str(WRK_SCRIPT), url]
        with open(Path(tmp) / "wrk.log", "w+") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + duration_s + timeout_s + 30
            while True:                     # wait4 gives the child's CPU time
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
            proc.returncode = os.waitstatus_to_exitcode(status)
            log.seek(0)
            output = log.read()
        if proc.returncode != 0 or not out.exists():
            raise LoadError(f"wrk failed (exit {proc.returncode}) against {url}: {output.strip()[-800:]}")
        raw = json.loads(out.read_text())
    return parse_wrk_output(raw, url=url, connections=connections, threads=threads, rate=rate,
                            generator_cpu_s=usage.ru_utime + usage.ru_stime)


def run_load(url: str, bodies: list[bytes], *, rate: float | None = None, connections: int = 8,
             threads: int | None = None, duration_s: int = 5, warmup_s: int = 1,
             path: str = "/invocations", content_type: str = "text/csv",
             timeout_s: int = 30) -> LoadResult:
    """Load ``url`` + ``path`` with POSTs of ``bodies`` (round robin) and measure it.

    ``rate`` None: closed loop over ``connections`` connections on ``threads`` wrk threads
    (default 1: one core of a small machine is enough for wrk). ``rate`` set: open loop at
    that many requests/s, one connection per thread (``connections`` of them). A closed
    warm-up of ``warmup_s`` seconds runs first (0: none). Durations are whole seconds.
    """
    if duration_s < 1:
        raise ValueError("duration_s must be at least 1 (wrk counts whole seconds)")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    url = url.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
        bodies_file = write_bodies(bodies, Path(tmp) / "bodies.bin")
        common = dict(path=path, content_type=content_type, timeout_s=timeout_s)
        if warmup_s > 0:
            _run_wrk(url, bodies_file, rate=None, connections=connections, threads=1,
                     duration_s=warmup_s, **common)
        if rate is None:
            threads = min(threads or 1, connections)
        else:
            threads = connections
        return _run_wrk(url, bodies_file, rate=rate, connections=connections, threads=threads,
                        duration_s=duration_s, **common)


@contextmanager
def trivial_server(delay_ms: float = 0.0, serial: bool = False, status: int = 200, split: CpuSplit | None = None):
    """Run bench.trivial_server on a free loopback port (on ``split``'s server vCPUs when given);
    yields its base URL."""
    from bench.servers import free_port, stop_process, wait_ready

    port = free_port()
    argv = [sys.executable, "-m", "bench.trivial_server", "--port", str(port), "--delay-ms", str(delay_ms)]
    if serial:
        argv.append("--serial")
    if status != 200:
        argv += ["--status", str(status)]
    proc = subprocess.Popen(split.server_argv(argv) if split else argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout_s=20, any_status=True)
        yield url
    finally:
        stop_process(proc, 5)


@dataclass
class Ceiling:
    """The generator's measured ceiling on this machine (requests/s) in both modes."""
    closed_rate: float
    open_rate: float
    closed: LoadResult
    open: LoadResult


def measure_ceiling(bodies: list[bytes], *, connections: int, open_connections: int,
                    duration_s: int = 3, split: CpuSplit | None = None) -> Ceiling:
    """Load the trivial endpoint as hard as the generator can, closed and open loop.

    The open-loop figure uses the open-loop machinery (one thread per connection, the
    response hook) at a rate no server here reaches, so it is that mode's own limit.
    Both are lower bounds of wrk's ceiling: the trivial server takes CPU too (the servers'
    vCPUs, with ``split``).
    """
    with trivial_server(split=split) as url:
        closed = run_load(url, bodies, connections=connections, duration_s=duration_s, warmup_s=1)
        opened = run_load(url, bodies, rate=1_000_000, connections=open_connections,
                          duration_s=duration_s, warmup_s=0)
    return Ceiling(closed.achieved_rate, opened.achieved_rate, closed, opened)


def flag_near_ceiling(result: LoadResult, ceiling: Ceiling) -> LoadResult:
    """Set ``result.near_ceiling``: True when it reached NEAR_CEILING_SHARE of the generator's ceiling."""
    limit = ceiling.open_rate if result.mode == "open" else ceiling.closed_rate
    result.near_ceiling = result.achieved_rate >= NEAR_CEILING_SHARE * limit
    return result
