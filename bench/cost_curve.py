"""What a request costs the server at each of several fixed rates: ``python -m bench cost-curve``.

``bench compare`` gives each server's CPU per request at its own max rate. Neither front end
costs the same at every rate: on this project's 2-vCPU machines a one-row request cost granian
about four times more at 500 req/s than near its maximum, and gunicorn + gevent about 1.5 times
(waking an idle worker costs more than taking the next request from a busy one's queue). So
the CPU per request at an autoscaling target's rate, the rate the fleet mostly runs at, is not
the one at the max rate, and a server whose cost falls as its rate rises keeps its vCPU busy
well below its max: its p99 there is a full queue's. This command measures that curve: serve
under each configuration, open loop at each rate in turn (the servers taking turns rate by
rate, as in ``bench.search``), with the server's CPU, context switches and latency per run.

With ``floors``, each configuration's hello world (bench.baselines, under the same front end and
plan) takes its turn too, and ServeApp's own cost is read at each rate as serve's CPU per request
minus its floor's *at the same rate*: ``bench compare`` can only subtract the two at their own
max rates, the hello world's the higher, and the cost per request differs with the rate.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bench.compare import describe_run, with_server_costs
from bench.contenders import ServerCommand, hello_command, serve_command
from bench.cpu_split import CpuSplit
from bench.load import SUSTAINED_SHARE, run_load
from bench.models import ModelUnderTest
from bench.payloads import make_bodies, read_sample_rows
from bench.search import open_loop_connections
from bench.servers import RunningServer, free_port, running_server
from serve.gunicorn_conf import WorkerPlan


@dataclass
class CostPoint:
    """One open-loop run of one configuration at one offered rate."""
    config: str
    offered_rate: float
    achieved_rate: float
    vcpus_busy: float                  # server CPU seconds per second of the run
    cpu_us_per_request: float
    switches_per_request: float
    p50_ms: float
    p99_ms: float
    steal_share: float | None = None   # of the server's vCPUs' time, taken by the host (bench.host_steal)
    floor_of: str | None = None        # a hello world's point: the configuration whose floor it is

    @property
    def held(self) -> bool:
        """Whether the server answered the offered rate (``SUSTAINED_SHARE`` of it); past its maximum it did not."""
        return self.achieved_rate >= SUSTAINED_SHARE * self.offered_rate


FLOOR_PREFIX = "hello "


@dataclass
class CurveServer:
    """One server of the curve: serve under a configuration, or (``floor_of`` set) that
    configuration's hello world."""
    label: str
    floor_of: str | None
    server: RunningServer


@contextmanager
def curve_servers(model: ModelUnderTest, configs: list[WorkerPlan], *, floors: bool = False,
                  log_dir: Path = Path("."), split: CpuSplit | None = None) -> Iterator[list[CurveServer]]:
    """Server (a) on ``model`` under each of ``configs``, each followed by its hello world with
    ``floors`` (bench.baselines, under the same front end and plan), running until the block ends."""
    with ExitStack() as stack:
        def start(name: str, command_for: Callable[[int], ServerCommand]) -> RunningServer:
            port = free_port()
            command = command_for(port)
            return stack.enter_context(running_server(name, command.argv, port, env=command.env,
                                                      log_dir=log_dir, split=split))

        servers = []
        for plan in configs:
            label = plan.label()
            servers.append(CurveServer(label, None, start(
                f"cost-{model.name}-{label}", lambda port: serve_command("a", model.deployed, port, plan))))
            if floors:
                servers.append(CurveServer(FLOOR_PREFIX + label, label, start(
                    f"cost-hello-{label}", lambda port: hello_command(port, plan))))
        yield servers


def run_cost_curve(model: ModelUnderTest, configs: list[WorkerPlan], rates: list[float], *, rows: int = 1,
                   duration_s: int = 3, connections: int = 32, log_dir: Path = Path("."),
                   split: CpuSplit | None = None, floors: bool = False,
                   progress: Callable[[str], None] = print) -> list[CostPoint]:
    """The servers of ``curve_servers`` open loop at each of ``rates`` (in that order, the servers
    taking turns at each rate); one CostPoint per (rate, server)."""
    bodies = make_bodies(read_sample_rows(model.sample_csv), rows)
    points = []
    with curve_servers(model, configs, floors=floors, log_dir=log_dir, split=split) as servers:
        for each in servers:   # warm-up, not counted
            run_load(each.server.url, bodies, connections=min(connections, 8), duration_s=1, warmup_s=0)
        for rate in rates:
            used = open_loop_connections(rate, connections)
            for each in servers:
                server = each.server
                run = with_server_costs(server)(lambda: run_load(server.url, bodies, rate=rate, connections=used,
                                                                 duration_s=duration_s, warmup_s=0))
                cpu, switches = run.labels["server_cpu_s"], run.labels["server_switches"]
                answered = max(run.requests, 1)
                point = CostPoint(config=each.label, offered_rate=rate, achieved_rate=run.achieved_rate,
                                  vcpus_busy=cpu / run.duration_s if run.duration_s else 0.0,
                                  cpu_us_per_request=cpu / answered * 1e6, switches_per_request=switches / answered,
                                  p50_ms=run.latency_ms["p50"], p99_ms=run.latency_ms["p99"],
                                  steal_share=run.labels["server_steal"], floor_of=each.floor_of)
                points.append(point)
                progress(f"    {each.label:<22} {describe_run(run).strip()}  server {point.vcpus_busy:4.2f} vCPU  "
                         f"{point.cpu_us_per_request:6.1f} CPU us/request  "
                         f"{point.switches_per_request:5.2f} switches/request")
    return points


def cost_curve_table(points: list[CostPoint]) -> str:
    """CPU per request by rate (rows) and configuration (columns), with the vCPUs kept busy."""
    configs = list(dict.fromkeys(p.config for p in points))
    rates = list(dict.fromkeys(p.offered_rate for p in points))
    by_key = {(p.offered_rate, p.config): p for p in points}
    lines = ["Server CPU per request (us) by offered rate, open loop (vCPUs busy in brackets)",
             f"{'req/s':>10}" + "".join(f"{c:>24}" for c in configs)]
    for rate in rates:
        cells = []
        for config in configs:
            p = by_key.get((rate, config))
            cell = "-" if p is None else f"{p.cpu_us_per_request:.1f} ({p.vcpus_busy:.2f})" + ("" if p.held else " !")
            cells.append(f"{cell:>24}")
        lines.append(f"{rate:>10,.0f}" + "".join(cells))
    lines.append("! : under 95 % of the offered rate was answered (the server was past its maximum)")
    own = own_costs(points)
    if own:
        served = list(dict.fromkeys(config for _, config in own))
        lines += ["", "ServeApp's own CPU per request (us): serve minus its front end's hello world at the same rate",
                  f"{'req/s':>10}" + "".join(f"{c:>24}" for c in served)]
        for rate in rates:
            cells = []
            for config in served:
                value = own.get((rate, config))
                cells.append(f"{'-' if value is None else f'{value:.1f}':>24}")
            lines.append(f"{rate:>10,.0f}" + "".join(cells))
    return "\n".join(lines)


def own_costs(points: list[CostPoint]) -> dict[tuple[float, str], float | None]:
    """(rate, configuration) -> serve's CPU per request minus its hello world's at that rate, for
    each configuration run with its floor; None where either server did not hold the rate (past
    its maximum, a run's cost is a saturated server's, not the rate's)."""
    by_key = {(p.offered_rate, p.config): p for p in points}
    own = {}
    for floor in points:
        serve = by_key.get((floor.offered_rate, floor.floor_of)) if floor.floor_of else None
        if serve is None:
            continue
        own[(serve.offered_rate, serve.config)] = (serve.cpu_us_per_request - floor.cpu_us_per_request
                                                   if serve.held and floor.held else None)
    return own
