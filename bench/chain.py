"""``bench all``: the whole chain in one run, from the sample models to a typed Report.

Sample models -> compile variants -> in-process timings -> the generator's ceiling ->
servers (a)-(d) side by side -> tuning sweep -> capacity plan -> figures. The
``quick`` profile is the demo's shorter version (``make demo``).
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.capacity import DEFAULT_SAFETY, DEFAULT_TARGET_RPS
from bench.results import Report
from bench.search import DEFAULT_CONNECTIONS, DEFAULT_SLO_MS
from serve.gunicorn_conf import WorkerPlan

DEFAULT_MODELS = ("rtb-small", "rtb-large")
PROFILES = {
    # kernel seconds per measurement, load seconds per run, bisection steps
    "quick": {"min_time_s": 0.1, "duration_s": 2, "steps": 3},
    "full": {"min_time_s": 0.25, "duration_s": 3, "steps": 4},
}


@dataclass
class ChainOptions:
    """What ``bench all`` was asked for; 0 for ``duration_s``/``steps``: the profile's."""
    models: tuple[str, ...] = DEFAULT_MODELS
    quick: bool = False
    plan: WorkerPlan | None = None             # for (a), (b), (d); None: serve's default
    sweep_model: str = "rtb-large"
    sweep_rows: tuple[int, ...] = (1, 100)
    sweep_plans: tuple[WorkerPlan, ...] | None = None   # None: the full grid, or the quick one
    skip_kernel: bool = False
    skip_sweep: bool = False
    slo_ms: float = DEFAULT_SLO_MS
    connections: int = DEFAULT_CONNECTIONS
    duration_s: int = 0
    steps: int = 0
    target_rps: float = DEFAULT_TARGET_RPS
    safety: float = DEFAULT_SAFETY
    prices: Path | None = None                 # None: bench/sagemaker_prices.toml
    graviton_rps_per_vcpu: float | None = None  # measured on Graviton; None: labelled not measured
    shared_cpus: bool = False                  # servers and wrk on the same vCPUs (bench.cpu_split)


def run_chain(options: ChainOptions, *, command: str = "", logs: Path = Path("logs"),
              progress: Callable[[str], None] = print) -> Report:
    """Run every part of the chain that ``options`` ask for; the Report (``elapsed_s`` set)."""
    from bench.capacity import PRICES_FILE, load_prices, plan_from_results
    from bench.compare import run_ceiling, run_compare
    from bench.contenders import serve_default_plan
    from bench.cpu_split import split_cpus
    from bench.kernel import run_kernel
    from bench.models import prepare_model
    from bench.payloads import make_bodies, read_sample_rows
    from bench.report import compute_figures
    from bench.results import CeilingSummary, MachineInfo, RunSettings
    from bench.sweep import SweepReport, default_grid, quick_grid, recommend, run_sweep

    profile_name = "quick" if options.quick else "full"
    profile = PROFILES[profile_name]
    duration = options.duration_s or profile["duration_s"]
    steps = options.steps or profile["steps"]
    started = time.monotonic()
    split = split_cpus(shared=options.shared_cpus)
    report = Report(created_at=dt.datetime.now().isoformat(timespec="seconds"), command=command,
                    machine=MachineInfo.of_this_machine(),
                    settings=RunSettings(slo_ms=options.slo_ms, duration_s=duration, steps=steps,
                                         connections=options.connections, profile=profile_name,
                                         server_cpus=list(split.server), load_cpus=list(split.load)))

    def step(text: str) -> None:
        progress(f"[{time.monotonic() - started:6.0f} s] {text}")

    step(f"models {', '.join(options.models)}: build the samples, compile plain / annotated / quantized")
    models = [prepare_model(name, progress=progress) for name in options.models]
    if not options.skip_kernel:
        step("in-process timings (median ms per call at 1, 10, 100, 1,000, 10,000 rows)")
        report.kernel = [t for m in models for t in run_kernel(m, min_time_s=profile["min_time_s"], progress=progress)]
    server_vcpus = len(split.server)
    plan = options.plan or serve_default_plan(server_vcpus)
    split.pin_load_generator()
    step(f"over HTTP, 1 row per request, p99 SLO {options.slo_ms:g} ms; {split.describe()}; "
         f"serve's configuration: {plan.label()}")
    bodies = make_bodies(read_sample_rows(models[0].sample_csv), 1)
    ceiling = run_ceiling(bodies, connections=options.connections, duration_s=duration, split=split,
                          progress=progress)
    report.ceiling = CeilingSummary.of(ceiling)
    report.http = run_compare(models, plan=plan, rows=1, slo_ms=options.slo_ms, duration_s=duration, steps=steps,
                              connections=options.connections, log_dir=logs, ceiling=ceiling, split=split,
                              progress=progress)
    if not options.skip_sweep:
        sweep_model = next((m for m in models if m.name == options.sweep_model), models[-1])
        grid = list(options.sweep_plans or (quick_grid(server_vcpus) if options.quick else default_grid(server_vcpus)))
        step(f"tuning sweep on {sweep_model.name}: {', '.join(c.label() for c in grid)} x rows "
             f"{list(options.sweep_rows)}")
        results = run_sweep(sweep_model, grid, rows_list=options.sweep_rows, slo_ms=options.slo_ms,
                            duration_s=duration, steps=steps, connections=options.connections, ceiling=ceiling,
                            log_dir=logs, split=split, progress=progress)
        report.sweep = SweepReport(model=sweep_model.name, results=results,
                                   recommendation=recommend(results, grid, server_vcpus))
    report.capacity, report.capacity_text = plan_from_results(
        report.http, report.sweep, server_vcpus, load_prices(options.prices or PRICES_FILE),
        target_rps=options.target_rps, safety=options.safety, machine_platform=report.machine.platform,
        graviton_rps_per_vcpu=options.graviton_rps_per_vcpu)
    report.figures = compute_figures(report.kernel or [], report.http)
    report.elapsed_s = round(time.monotonic() - started, 1)
    return report
