"""SageMaker Inference Recommender on a registered version, beside the local benchmark's plan.

A ``Default`` job lets SageMaker pick instance types and load; an ``Advanced``
job tries the instance types given, with a traffic pattern of phases (users,
spawn rate, seconds) and stopping conditions: the p99 model latency budget
(default 20 ms) and the most invocations. :func:`wait` prints the status at
every poll with the time waited; the recommendations come back as rows
(instance type and count, environment, cost per hour and per inference, max
invocations per minute, model latency).

:func:`bench_plans` computes the benchmark's capacity plan
(:func:`bench.capacity.plan_fleet`, what ``bench capacity`` prints) for the
same instance types, so both can be read side by side: the benchmark's
req/s per instance flat out against the job's max invocations per minute.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import Aws, DeployError, is_not_found
from deploy.endpoint import Waiting, elapsed_clock, versioned_name
from deploy.settings import UsageError

DONE, FAILED = "COMPLETED", "FAILED"
STOPPED = {"STOPPED", "STOPPING", "DELETING", "DELETED"}


@dataclass
class Phase:
    users: int
    spawn_rate: int
    seconds: int


def parse_phases(text: str) -> list[Phase]:
    """``USERS:SPAWN:SECONDS[,...]`` -> phases; UsageError when malformed."""
    phases = []
    for part in text.split(","):
        try:
            users, spawn, seconds = (int(v) for v in part.split(":"))
        except ValueError:
            raise UsageError(f"--phases {text!r}: each phase is USERS:SPAWN_RATE:SECONDS, e.g. 1:1:120,10:2:300") from None
        if min(users, spawn, seconds) < 1:
            raise UsageError(f"--phases {text!r}: every number must be positive")
        phases.append(Phase(users, spawn, seconds))
    return phases


def start(aws: Aws, base_name: str, package_arn: str, role_arn: str, advanced: bool, instance_types: list[str],
          phases: list[Phase], budget_ms: float, max_invocations: int | None) -> str:
    """Create the job; returns its name (``<base>-<UTC stamp>``)."""
    name = versioned_name(base_name)
    params: dict[str, Any] = {"JobName": name, "JobType": "Advanced" if advanced else "Default",
                              "RoleArn": role_arn, "InputConfig": {"ModelPackageVersionArn": package_arn}}
    if advanced:
        if not instance_types:
            raise UsageError("an Advanced job needs --instance-types")
        params["InputConfig"].update(
            EndpointConfigurations=[{"InstanceType": t} for t in instance_types],
            TrafficPattern={"TrafficType": "PHASES", "Phases": [
                {"InitialNumberOfUsers": p.users, "SpawnRate": p.spawn_rate, "DurationInSeconds": p.seconds}
                for p in phases]})
        stopping: dict[str, Any] = {"ModelLatencyThresholds": [
            {"Percentile": "P99", "ValueInMilliseconds": int(round(budget_ms))}]}
        if max_invocations:
            stopping["MaxInvocations"] = max_invocations
        params["StoppingConditions"] = stopping
    aws.client("sagemaker").create_inference_recommendations_job(**params)
    aws.say(f"started {params['JobType']} Inference Recommender job {name} on {package_arn}")
    return name


def wait(aws: Aws, name: str, waiting: Waiting) -> dict[str, Any]:
    """Poll the job until it completes; :class:`DeployError` with its FailureReason when it fails."""
    if aws.dry_run:
        aws.note(f"# would wait for job {name} to complete")
        return {}
    sm = aws.client("sagemaker")
    began = waiting.clock()
    while True:
        desc = sm.describe_inference_recommendations_job(JobName=name)
        elapsed = waiting.clock() - began
        status = desc["Status"]
        aws.say(f"  [{elapsed_clock(elapsed)}] {name}: {status}")
        if status == DONE:
            return desc
        if status == FAILED:
            raise DeployError(f"Inference Recommender job {name} failed: {desc.get('FailureReason', 'no reason given')}")
        if status in STOPPED:
            raise DeployError(f"Inference Recommender job {name} is {status}")
        if elapsed >= waiting.timeout:
            raise DeployError(f"job {name} is still {status} after {elapsed:.0f} s; it goes on: look again with "
                              f"`aws sagemaker describe-inference-recommendations-job --job-name {name}`")
        waiting.sleep(min(waiting.poll, waiting.timeout - elapsed))


def rows(desc: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per recommendation."""
    found = []
    for rec in desc.get("InferenceRecommendations", []):
        m, e = rec.get("Metrics", {}), rec.get("EndpointConfiguration", {})
        env = {p["Key"]: p["Value"] for p in rec.get("ModelConfiguration", {}).get("EnvironmentParameters", [])}
        found.append({"instance_type": e.get("InstanceType"), "instance_count": e.get("InitialInstanceCount"),
                      "environment": env, "cost_per_hour": m.get("CostPerHour"),
                      "cost_per_inference": m.get("CostPerInference"), "max_invocations_per_minute": m.get("MaxInvocations"),
                      "model_latency_ms": m.get("ModelLatency")})
    return found


def bench_plans(rps_per_vcpu: float, instance_types: list[str]) -> dict[str, dict[str, Any]]:
    """The benchmark's capacity plan (bench capacity) for these instance types, by type."""
    from bench.capacity import load_prices, plan_fleet     # bench's own arithmetic, not a copy

    return {p.instance: p.to_dict() for p in plan_fleet(rps_per_vcpu, load_prices())
            if p.instance in instance_types}


def rps_per_vcpu_of(report: Path, model: str | None) -> float:
    """req/s per vCPU from a `bench all` report.json's capacity plan (its first model, or ``model``)."""
    try:
        capacity = json.loads(report.read_text())["capacity"]
        key = model or next(iter(capacity))
        return float(capacity[key]["rps_per_vcpu"])
    except (OSError, ValueError, KeyError, StopIteration, TypeError) as exc:
        raise UsageError(f"--bench-report {report}: no capacity plan{f' for {model}' if model else ''} in it "
                         f"({type(exc).__name__}: {exc})") from None


def table(found: list[dict[str, Any]], plans: dict[str, dict[str, Any]] | None) -> str:
    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"
    head = (f"{'instance':<15} {'count':>5} {'$/hour':>7} {'$/inference':>12} {'max inv/min':>11} "
            f"{'latency ms':>10}  environment")
    if plans is not None:
        head += f"  | bench: {'req/s/inst x60':>14} {'ratio':>6}"
    lines = [head]
    for r in found:
        line = (f"{r['instance_type']:<15} {num(r['instance_count'], 'd'):>5} {num(r['cost_per_hour'], '.3f'):>7} "
                f"{num(r['cost_per_inference'], '.3g'):>12} {num(r['max_invocations_per_minute'], ',d'):>11} "
                f"{num(r['model_latency_ms'], 'd'):>10}  "
                f"{','.join(f'{k}={v}' for k, v in r['environment'].items()) or '-'}")
        if plans is not None:
            plan = plans.get(r["instance_type"])
            per_minute = plan["rps_per_instance"] * 60 if plan else None
            ratio = (r["max_invocations_per_minute"] / per_minute
                     if per_minute and r["max_invocations_per_minute"] else None)
            line += f"  | bench: {num(per_minute, ',.0f'):>14} {num(ratio, '.2f'):>6}"
        lines.append(line)
    return "\n".join(lines)


def instant_recommendations(aws: Aws, model_name: str) -> list[dict[str, Any]]:
    """DescribeModel's instant deployment recommendations (empty when there are none)."""
    try:
        desc = aws.client("sagemaker").describe_model(ModelName=model_name)
    except ClientError as exc:
        if is_not_found(exc):
            raise DeployError(f"model {model_name} does not exist") from None
        raise
    return (desc.get("DeploymentRecommendation") or {}).get("RealTimeInferenceRecommendations", [])
