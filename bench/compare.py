"""Over HTTP, side by side in one run: servers (a) to (d) on each model, and the generator's ceiling.

Each server is started on a free loopback port, loaded with single-row (or
``rows``-row) CSV requests drawn from the model's sample rows, and searched for the
highest rate it holds with p99 under the SLO (``bench.search``). The servers of one
comparison are up together and take turns, run by run, so that outside load falls
on all of them alike. The server's CPU time is accounted per run, so that each
result also says how many CPU microseconds a request cost it.
"""
from __future__ import annotations

import os
import statistics
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench.cpu_split import CpuSplit
from bench.host_steal import cpu_ticks, steal_share
from bench.load import Ceiling, LoadResult, flag_near_ceiling, measure_ceiling, run_load, trivial_server
from bench.models import ModelUnderTest
from bench.payloads import make_bodies, read_sample_rows
from bench.contenders import (Contender, granian_plan, hello_command, other_frontend_plan, other_interface,
                              serve_command, stock_command)
from bench.search import DEFAULT_CONNECTIONS, SearchedServer, find_max_rates, open_loop_connections
from bench.servers import RunningServer, free_port, running_server
from serve.gunicorn_conf import WorkerPlan


@dataclass
class ServerResult:
    """One server's answer: the highest rate under the SLO and what it cost."""
    key: str
    label: str
    model: str
    rows: int
    config: str
    max_rate: float
    p50_ms: float | None               # at max_rate
    p99_ms: float | None
    closed_rate: float                 # closed-loop maximum throughput
    closed_p99_ms: float
    cpu_us_per_request: float | None   # server CPU per request at max_rate
    near_ceiling: bool
    loadavg: list[float] = field(default_factory=list)   # machine's 1-minute load before and after
    search: dict = field(default_factory=dict)
    # p99 at HEADROOM_SHARE of max_rate (serve's rows only): the latency with the headroom an
    # autoscaling target leaves. The median of HEADROOM_RUNS open-loop runs, each one's in
    # p99s_at_headroom_ms: one run's p99 on a shared machine swings several-fold between runs
    # at the same rate (a stall of tens of ms lands in it), so one run would be a coin toss.
    p99_at_headroom_ms: float | None = None
    p99s_at_headroom_ms: list[float] | None = None
    # the server's CPU seconds per second of those runs (median; 1.0: one vCPU busy all the time):
    # whether HEADROOM_SHARE of the rate left it any idle CPU (a server whose cost per request
    # grows as the rate falls has none)
    vcpus_busy_at_headroom: float | None = None
    # context switches of the server's threads per request at max_rate: the hand-offs between
    # threads (granian's Rust threads, its blocking thread, the event loop) that a request costs
    switches_per_request: float | None = None
    # the share of the server's vCPUs' time the host gave to other guests (bench.host_steal) in the
    # run at max_rate, and in each run at HEADROOM_SHARE of it: a p99 taken while its vCPU was not
    # run is the host's
    steal_at_max: float | None = None
    steals_at_headroom: list[float | None] | None = None
    # the generator's own p99 at the same rate as those runs, against the trivial endpoint
    # (bench.trivial_server, on the servers' vCPUs): what of the p99 at HEADROOM_SHARE is wrk's
    # many threads on their one vCPU and the loopback's, rather than the server's
    generator_p99_at_headroom_ms: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


HEADROOM_SHARE = 0.8
HEADROOM_RUNS = 3
SERVE_KEYS = ("a", "e", "g")   # serve's own rows, on each front end (and granian's other interface)
HELLO_KEYS = ("d", "f", "h", "i")


def with_server_costs(server: RunningServer) -> Callable[[Callable[[], LoadResult]], LoadResult]:
    """A wrapper of load runs that labels each result with the server's CPU seconds and context
    switches during it (``server_cpu_s``, ``server_switches``), and the share of its vCPUs' time
    the host took for other guests (``server_steal``, see ``bench.host_steal``; None off Linux)."""
    def measure(run: Callable[[], LoadResult]) -> LoadResult:
        before, switches_before = server.cpu_seconds(), server.context_switches()
        ticks_before = cpu_ticks(server.cpus)
        result = run()
        result.labels["server_cpu_s"] = server.cpu_seconds() - before
        result.labels["server_switches"] = server.context_switches() - switches_before
        result.labels["server_steal"] = steal_share(ticks_before, cpu_ticks(server.cpus))
        return result
    return measure


def describe_run(result: LoadResult) -> str:
    """One progress line for a load run (with the host's steal of the server's vCPUs, from 0.5 %)."""
    offered = f"offered {result.offered_rate:8.0f}/s" if result.offered_rate else "closed loop      "
    flags = ("" if result.sustained else " NOT SUSTAINED") + (f" errors={result.errors}" if result.errors else "")
    steal = result.labels.get("server_steal")
    return (f"      {offered} got {result.achieved_rate:8.0f}/s  p50 {result.latency_ms['p50']:7.2f} ms  "
            f"p99 {result.latency_ms['p99']:8.2f} ms{flags}"
            + (f"  steal {steal:.0%}" if steal and steal >= 0.005 else ""))


def benchmark_servers(contenders: list[Contender], *, slo_ms: float, ceiling: Ceiling | None, log_dir: Path,
                      duration_s: int = 3, steps: int = 4, connections: int = DEFAULT_CONNECTIONS,
                      split: CpuSplit | None = None, generator_floor: bool = False,
                      progress: Callable[[str], None] = print) -> list[ServerResult]:
    """Start every contender (on ``split``'s server vCPUs when given), search their max rates under
    ``slo_ms`` taking turns (see ``bench.search``), run serve's rows at HEADROOM_SHARE of theirs
    (and, with ``generator_floor``, the generator alone at those rates), stop them; one
    ServerResult each, in order."""
    for c in contenders:
        progress(f"  {c.command.label} [{c.command.plan.label()}] on {c.model}, {c.rows} row(s) per request")
    models = {c.model for c in contenders if c.command.key not in HELLO_KEYS}
    load_before = os.getloadavg()[0]
    tags = [f"{c.command.key} {c.command.plan.label()}" + (f" {c.model}" if len(models) > 1 else "")
            for c in contenders]
    width = max(map(len, tags), default=0) + 1
    with ExitStack() as stack:
        searched = []
        for c, tag in zip(contenders, tags):
            name = f"{c.command.key}-{c.model}-{c.rows}-{c.command.plan.label()}"
            server = stack.enter_context(running_server(name, c.command.argv, c.port, env=c.command.env,
                                                        log_dir=log_dir, split=split))
            searched.append(SearchedServer(server.url, c.bodies, with_server_costs(server),
                                        lambda r, tag=tag: progress(f"    {tag:<{width}}" + describe_run(r).strip())))
        searches = find_max_rates(searched, slo_ms=slo_ms, connections=connections, duration_s=duration_s,
                                  steps=steps)
        headroom = _runs_at_headroom([(c, tag, srv, search.max_rate)
                                      for c, tag, srv, search in zip(contenders, tags, searched, searches)
                                      if c.command.key in SERVE_KEYS and search.max_rate > 0],
                                     connections=connections, duration_s=duration_s, progress=progress)
    floors = _generator_floors([(c, tag, HEADROOM_SHARE * search.max_rate)
                                for c, tag, search in zip(contenders, tags, searches) if headroom.get(id(c))],
                               connections=connections, duration_s=duration_s, split=split,
                               progress=progress) if generator_floor else {}
    load_after = os.getloadavg()[0]
    results = []
    for c, search in zip(contenders, searches):
        best = search.best
        for result in [search.closed, *search.trials]:
            if ceiling is not None:
                flag_near_ceiling(result, ceiling)
        cpu_us = best.labels["server_cpu_s"] / best.requests * 1e6 if best is not None and best.requests else None
        switches = best.labels["server_switches"] / best.requests if best is not None and best.requests else None
        at_headroom = headroom.get(id(c), [])
        busy_at_headroom = [busy for busy in map(_vcpus_busy, at_headroom) if busy is not None]
        progress(f"    -> {c.command.label} [{c.command.plan.label()}] {c.model}, {c.rows} row(s): "
                 f"max {search.max_rate:,.0f} req/s with p99 under {slo_ms:g} ms"
                 + (f" (p99 {best.latency_ms['p99']:.2f} ms, {cpu_us:.0f} CPU us/request)" if best else ""))
        results.append(ServerResult(
            key=c.command.key, label=c.command.label, model=c.model, rows=c.rows, config=c.command.plan.label(),
            max_rate=search.max_rate, p50_ms=best.latency_ms["p50"] if best else None,
            p99_ms=best.latency_ms["p99"] if best else None, closed_rate=search.closed.achieved_rate,
            closed_p99_ms=search.closed.latency_ms["p99"], cpu_us_per_request=cpu_us,
            near_ceiling=bool(best and best.near_ceiling) or bool(search.closed.near_ceiling),
            loadavg=[load_before, load_after], search=search.to_dict(),
            p99_at_headroom_ms=statistics.median(r.latency_ms["p99"] for r in at_headroom) if at_headroom else None,
            p99s_at_headroom_ms=[r.latency_ms["p99"] for r in at_headroom] or None,
            vcpus_busy_at_headroom=statistics.median(busy_at_headroom) if busy_at_headroom else None,
            switches_per_request=switches, steal_at_max=best.labels.get("server_steal") if best else None,
            steals_at_headroom=[r.labels.get("server_steal") for r in at_headroom] or None,
            generator_p99_at_headroom_ms=floors[id(c)].latency_ms["p99"] if id(c) in floors else None))
    return results


def _generator_floors(rates: list[tuple[Contender, str, float]], *, connections: int, duration_s: int,
                      split: CpuSplit | None, progress: Callable[[str], None]) -> dict[int, LoadResult]:
    """One open-loop run against the trivial endpoint (on ``split``'s server vCPUs, the servers
    stopped) at each (contender, its progress tag, rate), as its runs at HEADROOM_SHARE were made:
    id(contender) -> that run. The load generator's own share of a p99 there, measured rather than guessed."""
    if not rates:
        return {}
    floors = {}
    with trivial_server(split=split) as url:
        for c, tag, rate in rates:
            floors[id(c)] = run_load(url, c.bodies, rate=rate, connections=open_loop_connections(rate, connections),
                                     duration_s=duration_s, warmup_s=0)
            progress(f"    the generator alone (trivial endpoint) at {tag}'s rate: "
                     + describe_run(floors[id(c)]).strip())
    return floors


def _runs_at_headroom(servers: list[tuple[Contender, str, SearchedServer, float]], *, connections: int,
                      duration_s: int, progress: Callable[[str], None]) -> dict[int, list[LoadResult]]:
    """HEADROOM_RUNS open-loop runs of each (contender, its progress tag, server, max rate) at
    HEADROOM_SHARE of its max rate, the servers taking turns as in the search (a burst of outside
    load falls on all alike), each server warmed up (1 s, not counted) before its first run.
    id(contender) -> its runs (a key such as (a) recurs once per model), labelled with the
    server's costs."""
    runs: dict[int, list[LoadResult]] = {id(c): [] for c, _, _, _ in servers}
    for turn in range(HEADROOM_RUNS):
        for c, tag, srv, max_rate in servers:
            rate = HEADROOM_SHARE * max_rate
            used = open_loop_connections(rate, connections)
            if turn == 0:
                run_load(srv.url, c.bodies, connections=used, duration_s=1, warmup_s=0)
            run = srv.measure(lambda: run_load(srv.url, c.bodies, rate=rate, connections=used,
                                               duration_s=duration_s, warmup_s=0))
            runs[id(c)].append(run)
            busy = _vcpus_busy(run)
            progress(f"    {tag} at {HEADROOM_SHARE:.0%} of its max "
                     f"({turn + 1}/{HEADROOM_RUNS}): " + describe_run(run).strip()
                     + (f"  server {busy:.2f} vCPU busy" if busy is not None else ""))
    return runs


def _vcpus_busy(run: LoadResult) -> float | None:
    """The server's CPU seconds per second of a run labelled by ``with_server_costs``."""
    return run.labels["server_cpu_s"] / run.duration_s if run.duration_s else None


def run_ceiling(bodies: list[bytes], connections: int = DEFAULT_CONNECTIONS, duration_s: int = 3,
                split: CpuSplit | None = None, progress: Callable[[str], None] = print) -> Ceiling:
    """The generator's ceiling against the trivial endpoint, with a progress line."""
    ceiling = measure_ceiling(bodies, connections=connections, open_connections=connections,
                              duration_s=duration_s, split=split)
    progress(f"  load generator ceiling (wrk vs trivial endpoint, {connections} connections): "
             f"closed loop {ceiling.closed_rate:,.0f} req/s, open loop {ceiling.open_rate:,.0f} req/s")
    return ceiling


def run_compare(models: list[ModelUnderTest], *, plan: WorkerPlan, rows: int = 1, slo_ms: float = 20.0,
                keys: tuple[str, ...] = tuple("abcdefghi"), duration_s: int = 3, steps: int = 4,
                connections: int = DEFAULT_CONNECTIONS, log_dir: Path = Path("."),
                ceiling: Ceiling | None = None, split: CpuSplit | None = None,
                progress: Callable[[str], None] = print) -> list[ServerResult]:
    """Servers ``keys`` on every model at ``rows`` rows per request (on ``split``'s server vCPUs
    when given: (c) then has a worker per server vCPU), the hello worlds (which need no model)
    once. All of them are searched together, taking turns: the figures that set one model's
    ratio against another's (rtb-large's CPU ratio against rtb-small's) then see the same
    machine, not two stretches of it minutes apart, in which its speed can move by a third.
    (e) and (f) run on the other front end (``bench.contenders.other_frontend_plan``), (g) and
    (h) on granian's other interface (``bench.contenders.other_interface``), (i) on its RSGI one."""
    other, other_granian = other_frontend_plan(plan), granian_plan(plan, other_interface(plan))
    contenders = []
    for index, model in enumerate(models):
        bodies = make_bodies(read_sample_rows(model.sample_csv), rows)
        for key in keys:
            if key in HELLO_KEYS and index > 0:
                continue
            port = free_port()
            if key in ("a", "b"):
                command = serve_command(key, model.deployed, port, plan)
            elif key in ("e", "g"):
                command = serve_command(key, model.deployed, port, other if key == "e" else other_granian)
            elif key == "c":
                command = stock_command(model.stock_dir, port, cpus=len(split.server) if split else os.cpu_count())
            elif key == "h":
                command = hello_command(port, other_granian, key=key)
            elif key == "i":
                command = hello_command(port, granian_plan(plan, "rsgi"), app="bench.baselines:hello_unread_app", key=key)
            else:
                command = hello_command(port, plan if key == "d" else other, key=key)
            contenders.append(Contender(command, port, bodies, model.name if key not in HELLO_KEYS else "-", rows))
    return benchmark_servers(contenders, slo_ms=slo_ms, ceiling=ceiling, log_dir=log_dir, duration_s=duration_s,
                             steps=steps, connections=connections, split=split, generator_floor=True,
                             progress=progress)
