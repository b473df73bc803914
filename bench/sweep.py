"""Tuning sweep of ``serve``'s worker plan, at 1 and 100 rows per request: gunicorn's worker
class x workers x threads, and granian's workers x Python threads x runtime threads x backpressure.

For each configuration, server (a) (``serve`` with its router) is searched for the
highest rate it holds with p99 under the SLO (``bench.compare.benchmark_servers``: all
configurations are up together and take turns, so that outside load falls on all alike). The
recommendation is the configuration with the highest single-row rate (the bid-filter
case); configurations within ``TIE_SHARE`` of it are separated by their 100-row rate.
Worker counts are given per vCPU, so that the answer carries over to bigger instances;
run the sweep on a machine with more cores to check that it does.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from bench.compare import ServerResult, benchmark_servers
from bench.cpu_split import CpuSplit
from bench.contenders import Contender, serve_command
from bench.load import Ceiling
from bench.models import ModelUnderTest
from bench.payloads import make_bodies, read_sample_rows
from bench.search import DEFAULT_CONNECTIONS
from bench.servers import free_port
from serve.gunicorn_conf import GRANIAN, WorkerPlan
from serve.scheduling import DEFAULT_SCHED_POLICY, SCHED_POLICIES
from serve.settings import WORKER_CLASSES

TIE_SHARE = 0.05


def default_grid(cpus: int | None = None) -> list[WorkerPlan]:
    """The full grid for a machine of ``cpus`` vCPUs: each gunicorn class at 1x and 2x workers
    per vCPU, gthread with 2 and 4 threads; granian (WSGI) with 2, 4, 8 and 16 Python threads,
    2 runtime threads, a low backpressure, 2x workers and the normal scheduling policy, and granian's
    RSGI interface."""
    c = cpus or os.cpu_count() or 1
    return [WorkerPlan("sync", c, 1), WorkerPlan("sync", 2 * c, 1),
            WorkerPlan("gthread", c, 2), WorkerPlan("gthread", c, 4), WorkerPlan("gthread", 2 * c, 2),
            WorkerPlan("gevent", c, 1), WorkerPlan("gevent", 2 * c, 1),
            WorkerPlan(GRANIAN, c, 2), WorkerPlan(GRANIAN, c, 4), WorkerPlan(GRANIAN, c, 8),
            WorkerPlan(GRANIAN, c, 16), WorkerPlan(GRANIAN, c, 8, runtime_threads=2),
            WorkerPlan(GRANIAN, c, 8, backpressure=64), WorkerPlan(GRANIAN, 2 * c, 8),
            WorkerPlan(GRANIAN, c, 8, sched_policy="normal"),
            WorkerPlan(GRANIAN, c, 2, interface="rsgi")]


def quick_grid(cpus: int | None = None) -> list[WorkerPlan]:
    """One configuration per gunicorn worker class and granian (WSGI) with 2 and 8 Python threads,
    one worker per vCPU (the demo's sweep)."""
    c = cpus or os.cpu_count() or 1
    return [WorkerPlan("sync", c, 1), WorkerPlan("gthread", c, 4), WorkerPlan("gevent", c, 1),
            WorkerPlan(GRANIAN, c, 2), WorkerPlan(GRANIAN, c, 8)]


def parse_config(text: str) -> WorkerPlan:
    """A WorkerPlan from ``CLASS:WORKERS[:THREADS]``, e.g. ``gthread:2:4``, or
    ``granian:WORKERS[:THREADS[:RUNTIME_THREADS[:BACKPRESSURE]]][:POLICY]`` (granian's default
    interface; ``granian-rsgi:...`` for its RSGI one; POLICY ``batch`` or ``normal``, the scheduling
    policy of ``serve.scheduling``, e.g. ``granian:1:8:normal``); ValueError otherwise."""
    parts = text.split(":")
    interface = policy = None
    if parts[0] == f"{GRANIAN}-rsgi":
        parts[0], interface = GRANIAN, "rsgi"
    if parts[0] == GRANIAN and len(parts) > 2 and parts[-1] in SCHED_POLICIES:
        policy = parts.pop()
    most = 5 if parts[0] == GRANIAN else 3
    if not 2 <= len(parts) <= most or parts[0] not in (*WORKER_CLASSES, GRANIAN):
        raise ValueError(f"{text!r}: expected CLASS:WORKERS[:THREADS] with CLASS sync, gthread or gevent, "
                         "or granian[-rsgi]:WORKERS[:THREADS[:RUNTIME_THREADS[:BACKPRESSURE]]][:batch|normal]")
    try:
        numbers = [int(part) for part in parts[1:]]
    except ValueError:
        raise ValueError(f"{text!r}: WORKERS, THREADS, ... must be whole numbers") from None
    if min(numbers) < 1:
        raise ValueError(f"{text!r}: WORKERS, THREADS, ... must be at least 1")
    workers, threads = numbers[0], numbers[1] if len(numbers) > 1 else 1
    if parts[0] == GRANIAN:
        from serve.gunicorn_conf import DEFAULT_GRANIAN_INTERFACE, granian_threads

        interface = interface or DEFAULT_GRANIAN_INTERFACE
        return WorkerPlan(GRANIAN, workers, numbers[1] if len(numbers) > 1 else granian_threads(interface),
                          runtime_threads=numbers[2] if len(numbers) > 2 else 1,
                          backpressure=numbers[3] if len(numbers) > 3 else None, interface=interface,
                          sched_policy=policy or DEFAULT_SCHED_POLICY)
    return WorkerPlan(parts[0], workers, threads)


def run_sweep(model: ModelUnderTest, configs: list[WorkerPlan], *, rows_list=(1, 100), slo_ms: float = 20.0,
              duration_s: int = 3, steps: int = 4, connections: int = DEFAULT_CONNECTIONS,
              ceiling: Ceiling | None = None, log_dir: Path = Path("."), split: CpuSplit | None = None,
              progress: Callable[[str], None] = print) -> list[ServerResult]:
    """Server (a) on ``model`` under every configuration, at every rows-per-request count (on
    ``split``'s server vCPUs when given)."""
    results = []
    sample = read_sample_rows(model.sample_csv)
    for rows in rows_list:
        bodies = make_bodies(sample, rows)
        contenders = []
        for plan in configs:
            port = free_port()
            contenders.append(Contender(serve_command("a", model.deployed, port, plan), port, bodies,
                                        model.name, rows))
        results += benchmark_servers(contenders, slo_ms=slo_ms, ceiling=ceiling, log_dir=log_dir,
                                     duration_s=duration_s, steps=steps, connections=connections, split=split,
                                     progress=progress)
    return results


@dataclass
class Recommendation:
    config: str                        # WorkerPlan.label()
    worker_class: str
    workers_per_vcpu: float
    threads: int
    rates: dict[int, float]            # rows per request -> max rate under the SLO
    reason: str


def recommend(results: list[ServerResult], configs: list[WorkerPlan], cpus: int | None = None) -> Recommendation | None:
    """The configuration the sweep supports (see the module docstring); None without results."""
    cpus = cpus or os.cpu_count() or 1
    by_label = {c.label(): c for c in configs}
    rate = {(r.config, r.rows): r.max_rate for r in results}
    single = {label: rate.get((label, 1), 0.0) for label in by_label}
    if not single or max(single.values()) <= 0:
        return None
    top = max(single.values())
    tied = [label for label, value in single.items() if value >= (1 - TIE_SHARE) * top]
    smallest = min(tied, key=lambda label: (by_label[label].workers * by_label[label].threads, -single[label]))
    at_100 = {label: rate.get((label, 100), 0.0) for label in tied}
    leader = max(tied, key=lambda label: at_100[label])
    if len(tied) == 1:
        best, reason = tied[0], f"{tied[0]} held the highest single-row rate"
    elif at_100[leader] > (1 + TIE_SHARE) * max(v for label, v in at_100.items() if label != leader):
        best = leader
        reason = (f"{', '.join(tied)} held single-row rates within {TIE_SHARE:.0%} of each other; "
                  f"{leader} held a 100-row rate more than {TIE_SHARE:.0%} above the others'")
    else:
        best = smallest
        reason = (f"{', '.join(tied)} held single-row and 100-row rates within {TIE_SHARE:.0%} of each other; "
                  f"{smallest} needs the fewest processes and threads")
    config = by_label[best]
    rows_seen = sorted({r.rows for r in results})
    return Recommendation(config=best, worker_class=config.worker_class, workers_per_vcpu=config.workers / cpus,
                          threads=config.threads, rates={n: rate.get((best, n), 0.0) for n in rows_seen},
                          reason=reason)


@dataclass
class SweepReport:
    """The sweep of one model: every run, and the configuration they support."""
    model: str
    results: list[ServerResult]
    recommendation: Recommendation | None

    def to_dict(self) -> dict:
        return {"model": self.model, "results": [r.to_dict() for r in self.results],
                "recommendation": asdict(self.recommendation) if self.recommendation else None}

    @classmethod
    def from_dict(cls, data: dict) -> "SweepReport":
        rec = data.get("recommendation")
        if rec is not None:     # JSON made the rows-per-request keys strings
            rec = Recommendation(**{**rec, "rates": {int(n): rate for n, rate in rec.get("rates", {}).items()}})
        return cls(model=data["model"], results=[ServerResult(**r) for r in data.get("results", [])],
                   recommendation=rec)
