"""Stress an endpoint from the client side, as the ad server will call it, to size the fleet.

Many threads call ``InvokeEndpoint`` through one pooled client
(:func:`deploy.client.make_runtime_client`, through :class:`deploy.client.BidFilter`),
in a closed loop (each thread sends its next request when the answer came) or
at a fixed total rate (latency counted from each request's scheduled time, so
a stall is not hidden), for a duration, with rows drawn in turn from a CSV.
Two ways can be measured side by side: one row per request, and micro-batched
(rows of concurrent callers joined into one request).

Reported per way: predictions and invocations per second, p50/p90/p99/max
latency at the client, errors by kind, then CloudWatch's ``ModelLatency`` and
``OverheadLatency`` (p50, p99) for the same minutes, and the cost per million
predictions the measured rate implies at the autoscaling target.

The autoscaling target, as AWS's load-testing guidance for
``SageMakerVariantInvocationsPerInstance`` puts it: the invocations per
instance per minute at the rate that held the p99 budget, times a safety
factor (default 0.5). ``--out`` writes it at
``autoscaling.invocations_per_instance_per_minute``, where ``autoscale --target
FILE`` reads it. A rate that missed the budget (or had errors) writes no target.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from deploy.aws import Aws, DeployError
from deploy.client import BidFilter, make_runtime_client
from deploy.settings import UsageError

NAMESPACE = "AWS/SageMaker"
LATENCY_METRICS = ("ModelLatency", "OverheadLatency")
MAX_ERROR_SHARE = 0.001          # more errors than this and the rate did not "hold"


@dataclass
class LoadPlan:
    concurrency: int
    duration_s: float
    rate: float | None               # total calls per second; None: closed loop
    timeout_ms: float
    batch_rows: int = 1              # 1: one row per request
    batch_wait_ms: float = 1.0


@dataclass
class WayResult:
    """One way of calling, measured."""
    way: str                         # "one row per request" | "micro-batched"
    seconds: float
    calls: int                       # predictions asked for
    answered: int
    invocations: int                 # InvokeEndpoint requests made
    predictions_per_s: float
    invocations_per_s: float
    latency_ms: dict[str, float]     # p50, p90, p99, max at the client, answered calls
    errors: dict[str, int]
    cloudwatch_ms: dict[str, dict[str, float]] = field(default_factory=dict)   # metric -> p50, p99
    held_budget: bool = False
    usd_per_million: float | None = None


def read_rows(path: Path) -> list[list[float | None]]:
    """The CSV's rows (no header), empty fields as missing values."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"--payload {path}: {exc.strerror}") from None
    try:
        rows = [[float(v) if v.strip() else None for v in line.split(",")] for line in lines]
    except ValueError as exc:
        raise UsageError(f"--payload {path}: not a CSV of numbers: {exc}") from None
    if not rows:
        raise UsageError(f"--payload {path}: holds no row")
    return rows


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]
    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": ordered[-1]}


def run_way(aws: Aws, endpoint_name: str, rows: list[list[float | None]], plan: LoadPlan) -> WayResult:
    """Drive the endpoint for ``plan.duration_s`` and measure at the client."""
    client = make_runtime_client(pool=plan.concurrency + 4, timeout_ms=plan.timeout_ms, session=aws.session)
    bid_filter = BidFilter(endpoint_name, client=client, timeout_ms=plan.timeout_ms,
                           batch_max_rows=plan.batch_rows, batch_max_wait_ms=plan.batch_wait_ms,
                           pool=plan.concurrency + 4)
    latencies: list[list[float]] = [[] for _ in range(plan.concurrency)]
    slot = iter(range(10**12))
    slot_lock = threading.Lock()
    start = time.perf_counter() + 0.05
    deadline = start + plan.duration_s

    def worker(index: int) -> None:
        mine = latencies[index]
        n = index
        while True:
            if plan.rate:
                with slot_lock:
                    k = next(slot)
                began = start + k / plan.rate
                if began >= deadline:
                    return
                delay = began - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            else:
                began = time.perf_counter()
                if began >= deadline:
                    return
            score = bid_filter.score(rows[n % len(rows)])
            if score is not None:
                mine.append((time.perf_counter() - began) * 1000)
            n += plan.concurrency

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(plan.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    bid_filter.close()
    answered = [v for mine in latencies for v in mine]
    stats = bid_filter.stats
    way = "micro-batched" if plan.batch_rows > 1 else "one row per request"
    return WayResult(way=way, seconds=seconds, calls=stats.calls, answered=len(answered),
                     invocations=stats.requests, predictions_per_s=len(answered) / seconds,
                     invocations_per_s=stats.requests / seconds, latency_ms=percentiles(answered),
                     errors=dict(stats.errors))


def cloudwatch_latency(aws: Aws, endpoint_name: str, variant_name: str, began: datetime, ended: datetime,
                       expected: int, wait_s: float, poll_s: float) -> dict[str, dict[str, float]]:
    """ModelLatency and OverheadLatency p50/p99 (ms) over the minutes of the run, as one period.

    CloudWatch has a minute or two of delay: look again every ``poll_s`` for up to
    ``wait_s`` until the sample count covers ``expected`` invocations. Empty when none came.
    """
    cw = aws.client("cloudwatch")
    start = began.replace(second=0, microsecond=0)
    end = ended.replace(second=0, microsecond=0) + timedelta(minutes=1)
    period = max(60, int((end - start).total_seconds()))
    dims = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "VariantName", "Value": variant_name}]
    waited_since = time.monotonic()
    while True:
        found: dict[str, dict[str, float]] = {}
        counted = 0
        for metric in LATENCY_METRICS:
            points = cw.get_metric_statistics(Namespace=NAMESPACE, MetricName=metric, Dimensions=dims,
                                              StartTime=start, EndTime=end, Period=period,
                                              Statistics=["SampleCount"], ExtendedStatistics=["p50", "p99"],
                                              ).get("Datapoints", [])
            if points:
                point = max(points, key=lambda p: p.get("SampleCount", 0))
                ext = point.get("ExtendedStatistics", {})
                found[metric] = {k: ext[k] / 1000.0 for k in ("p50", "p99") if k in ext}   # microseconds -> ms
                counted = max(counted, int(point.get("SampleCount", 0)))
        if aws.dry_run or counted >= expected or time.monotonic() - waited_since >= wait_s:
            return found
        aws.say(f"  waiting for CloudWatch ({counted} of {expected} invocations counted so far)")
        time.sleep(poll_s)


def fleet(aws: Aws, endpoint_name: str, variant_name: str) -> tuple[int, str | None]:
    """The variant's current instance count and instance type."""
    sm = aws.client("sagemaker")
    desc = sm.describe_endpoint(EndpointName=endpoint_name)
    if desc.get("EndpointStatus") != "InService":
        raise DeployError(f"endpoint {endpoint_name} is {desc.get('EndpointStatus')}: load test it once InService")
    variants = {v["VariantName"]: v for v in desc.get("ProductionVariants", [])}
    if variant_name not in variants:
        raise DeployError(f"endpoint {endpoint_name} has no variant {variant_name} (it has: {', '.join(variants)})")
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    instance_type = next((v.get("InstanceType") for v in config["ProductionVariants"]
                          if v["VariantName"] == variant_name), None)
    return int(variants[variant_name].get("CurrentInstanceCount") or 1), instance_type


def usd_per_hour(instance_type: str | None) -> float | None:
    """The on-demand price of ``instance_type`` from the benchmark's price table, if listed."""
    from bench.capacity import load_prices     # the one price table of the project

    table = load_prices()
    return next((i.usd_per_hour for i in table.instances if i.name == instance_type), None)


def judge(result: WayResult, budget_ms: float, safety: float, instances: int, price: float | None) -> None:
    """Set whether the way held the budget, and the cost per million predictions at the target."""
    errors = sum(result.errors.values())
    result.held_budget = bool(result.answered) and result.latency_ms.get("p99", math.inf) <= budget_ms \
        and errors <= MAX_ERROR_SHARE * max(1, result.calls)
    if price is not None and result.predictions_per_s > 0:
        result.usd_per_million = instances * price / (result.predictions_per_s * safety * 3600) * 1e6


def autoscaling_target(result: WayResult, instances: int, safety: float) -> int:
    """Invocations per instance per minute at the measured rate, times the safety factor."""
    return int(result.invocations_per_s * 60 / instances * safety)


def table(results: list[WayResult], budget_ms: float) -> str:
    def ms(d: dict[str, float], k: str) -> str:
        return f"{d[k]:.1f}" if k in d else "-"
    head = (f"{'way':<20} {'pred/s':>8} {'invoc/s':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}  "
            f"{'CW model p50/p99':>17} {'CW overhead p50/p99':>20} {'$/1M pred':>9}  budget  errors")
    lines = [head]
    for r in results:
        model, over = r.cloudwatch_ms.get("ModelLatency", {}), r.cloudwatch_ms.get("OverheadLatency", {})
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())) or "none"
        cost = f"{r.usd_per_million:.4f}" if r.usd_per_million is not None else "-"
        lines.append(f"{r.way:<20} {r.predictions_per_s:>8,.0f} {r.invocations_per_s:>8,.0f} "
                     f"{ms(r.latency_ms, 'p50'):>6} {ms(r.latency_ms, 'p90'):>6} {ms(r.latency_ms, 'p99'):>6} "
                     f"{ms(r.latency_ms, 'max'):>6}  {ms(model, 'p50') + '/' + ms(model, 'p99'):>17} "
                     f"{ms(over, 'p50') + '/' + ms(over, 'p99'):>20} {cost:>9}  "
                     f"{'held' if r.held_budget else 'MISSED':<6}  {errors}")
    return "\n".join(lines) + f"\n(latencies in ms at the client; p99 budget {budget_ms:g} ms)"


def to_json(endpoint_name: str, instance_type: str | None, instances: int, budget_ms: float, safety: float,
            plan: LoadPlan, results: list[WayResult], target: int | None, target_from: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "endpoint": endpoint_name, "instance_type": instance_type, "instances": instances,
        "budget_ms": budget_ms, "safety": safety, "plan": asdict(plan), "results": [asdict(r) for r in results]}
    if target is not None:
        data["autoscaling"] = {"invocations_per_instance_per_minute": target, "from": target_from}
    return data
