"""Health in CloudWatch: a dashboard of the endpoint and the alarms an on-call needs.

The dashboard ``<endpoint>`` shows, per variant: Invocations and
InvocationsPerInstance, ModelLatency and OverheadLatency (p50, p99),
Invocation4XXErrors and Invocation5XXErrors (namespace ``AWS/SageMaker``), and
CPUUtilization, MemoryUtilization, DiskUtilization (``/aws/sagemaker/Endpoints``).

Alarms, per variant, named ``<endpoint>-<variant>-<what>``:

* ``p99-model-latency``: p99 ModelLatency over the budget in 2 of 3 minutes;
* ``5xx-errors``: any Invocation5XXErrors in a minute;
* ``over-target``: InvocationsPerInstance over the autoscaling target for 10 minutes
  in a row: autoscaling is at its maximum or is not keeping up (target tracking
  scales out after 3 minutes over, and a new instance takes minutes to serve). The
  target is ``--target`` (a number or a capacity plan, read as ``autoscale`` reads
  it), else the variant's own target-tracking policy; with neither, no such alarm
  (and one made before is deleted);
* ``healthy-instances``: fewer instances reporting than the minimum. SageMaker
  publishes no instance count; each InService instance sends CPUUtilization
  once a minute, so its SampleCount is the number of healthy instances, and a
  minute with none counts as breaching.

There is no CPU alarm: CPUUtilization does not follow the load on serve's default
front end. granian's idle threads spin and yield before they sleep, so its vCPU read
0.79 busy at 12,000 req/s, a third of the 36,000 it held under 20 ms p99, and 0.94 at
20,000 (``python -m bench cost-curve``, docs/deploy.md#why-there-is-no-cpu-alarm); at the
autoscaling target (half the measured rate by default) a CPU alarm would never clear.
The dashboard still shows CPU. An alarm named ``cpu-over-80`` that an earlier version
made is deleted when this runs.

With ``--alarm-topic`` each alarm notifies that SNS topic on ALARM and OK.
What this module made carries a marker (the alarm description, a text widget);
one of the same name without it belongs to someone else and is not
overwritten unless asked (``--replace``). Running again updates its own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deploy.autoscaling import DEFAULT_CAPACITY_KEY, resolve_target, tracked_target
from deploy.aws import Aws, DeployError, is_not_found

MARKER = "xgb-deploy monitor"
SAGEMAKER = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
ALARM_KINDS = ("p99-model-latency", "5xx-errors", "over-target", "healthy-instances")
RETIRED_KINDS = ("cpu-over-80",)        # made by earlier versions; deleted by apply and remove
OVER_TARGET_MINUTES = 10


@dataclass
class Variant:
    name: str
    instance_type: str | None


def dashboard_name(endpoint_name: str) -> str:
    return endpoint_name


def alarm_name(endpoint_name: str, variant: str, kind: str) -> str:
    return f"{endpoint_name}-{variant}-{kind}"


def variants(aws: Aws, endpoint_name: str, variant_name: str) -> list[Variant]:
    """The endpoint's variants with their instance types; in a dry run, the one named."""
    if aws.dry_run:
        return [Variant(variant_name, None)]
    sm = aws.client("sagemaker")
    try:
        desc = sm.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        if is_not_found(exc):
            raise DeployError(f"endpoint {endpoint_name} does not exist: deploy it first") from None
        raise
    config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
    return [Variant(v["VariantName"], v.get("InstanceType"))
            for v in config["ProductionVariants"]]


def dashboard_body(endpoint_name: str, found: list[Variant], region: str) -> dict[str, Any]:
    widgets: list[dict[str, Any]] = [{
        "type": "text", "x": 0, "y": 0, "width": 24, "height": 1,
        "properties": {"markdown": f"Endpoint **{endpoint_name}**, made by {MARKER}; alarms "
                                   f"{endpoint_name}-&lt;variant&gt;-*"}}]
    y = 1
    for v in found:
        dims = ["EndpointName", endpoint_name, "VariantName", v.name]

        def graph(title: str, metrics: list[list[Any]], x: int) -> dict[str, Any]:
            return {"type": "metric", "x": x, "y": y, "width": 8, "height": 6,
                    "properties": {"title": f"{v.name}: {title}", "region": region, "view": "timeSeries",
                                   "period": 60, "metrics": metrics}}
        widgets += [
            graph("invocations", [[SAGEMAKER, "Invocations", *dims, {"stat": "Sum"}],
                                  [SAGEMAKER, "InvocationsPerInstance", *dims, {"stat": "Sum"}]], 0),
            graph("latency (microseconds)", [[SAGEMAKER, m, *dims, {"stat": p, "label": f"{m} {p}"}]
                                             for m in ("ModelLatency", "OverheadLatency") for p in ("p50", "p99")], 8),
            graph("errors", [[SAGEMAKER, "Invocation4XXErrors", *dims, {"stat": "Sum"}],
                             [SAGEMAKER, "Invocation5XXErrors", *dims, {"stat": "Sum"}]], 16),
        ]
        y += 6
        widgets += [graph(f"{m} (%)", [[INSTANCE_NAMESPACE, m, *dims, {"stat": "Average"}]], x)
                    for m, x in (("CPUUtilization", 0), ("MemoryUtilization", 8), ("DiskUtilization", 16))]
        y += 6
    return {"widgets": widgets}


def alarm_specs(endpoint_name: str, v: Variant, budget_ms: float, min_instances: int,
                topic: str | None, target: float | None = None) -> list[dict[str, Any]]:
    """PutMetricAlarm arguments of the variant's alarms (``over-target`` only with a ``target``,
    in invocations per instance per minute)."""
    dims = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "VariantName", "Value": v.name}]
    actions = {"AlarmActions": [topic], "OKActions": [topic]} if topic else {}

    def spec(kind: str, why: str, **params: Any) -> dict[str, Any]:
        return {"AlarmName": alarm_name(endpoint_name, v.name, kind), "AlarmDescription": f"{MARKER}: {why}",
                "Dimensions": dims, "Period": 60, "ActionsEnabled": bool(topic), **actions, **params}
    specs = [
        spec("p99-model-latency", f"p99 ModelLatency over {budget_ms:g} ms in 2 of 3 minutes",
             Namespace=SAGEMAKER, MetricName="ModelLatency", ExtendedStatistic="p99",
             Threshold=budget_ms * 1000.0, ComparisonOperator="GreaterThanThreshold",
             EvaluationPeriods=3, DatapointsToAlarm=2, TreatMissingData="notBreaching", Unit="Microseconds"),
        spec("5xx-errors", "any Invocation5XXErrors in a minute",
             Namespace=SAGEMAKER, MetricName="Invocation5XXErrors", Statistic="Sum", Threshold=0.0,
             ComparisonOperator="GreaterThanThreshold", EvaluationPeriods=1, TreatMissingData="notBreaching"),
    ]
    if target is not None:
        specs.append(spec(
            "over-target", f"InvocationsPerInstance over the autoscaling target ({target:g} a minute) for "
                           f"{OVER_TARGET_MINUTES} minutes: autoscaling at its maximum or not keeping up",
            Namespace=SAGEMAKER, MetricName="InvocationsPerInstance", Statistic="Sum", Threshold=float(target),
            ComparisonOperator="GreaterThanThreshold", EvaluationPeriods=OVER_TARGET_MINUTES,
            TreatMissingData="notBreaching"))
    specs.append(spec(
        "healthy-instances", f"fewer than {min_instances} instances reporting CPUUtilization in a minute",
        Namespace=INSTANCE_NAMESPACE, MetricName="CPUUtilization", Statistic="SampleCount",
        Threshold=float(min_instances), ComparisonOperator="LessThanThreshold", EvaluationPeriods=1,
        TreatMissingData="breaching"))
    return specs


def _existing_alarms(aws: Aws, names: list[str]) -> dict[str, dict[str, Any]]:
    found = aws.client("cloudwatch").describe_alarms(AlarmNames=names).get("MetricAlarms", [])
    return {a["AlarmName"]: a for a in found}


def _existing_dashboard(aws: Aws, name: str) -> str | None:
    try:
        return aws.client("cloudwatch").get_dashboard(DashboardName=name).get("DashboardBody", "")
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def apply(aws: Aws, endpoint_name: str, variant_name: str, budget_ms: float, min_instances: int | None,
          topic: str | None, replace: bool, target: str | None = None,
          capacity_key: str = DEFAULT_CAPACITY_KEY) -> list[str]:
    """Put the dashboard and the alarms; returns what was created, updated or deleted, in words.

    ``target`` is what ``autoscale --target`` takes (a number, or a capacity plan read with
    ``capacity_key`` for each variant's instance type); without it each variant's own
    target-tracking policy gives the over-target alarm's threshold, and a variant with neither
    gets no such alarm (a line says so). Raises :class:`DeployError`, before changing
    anything, when a dashboard or an alarm of the same name exists that this module did not
    make (unless ``replace``), and UsageError for a target that cannot be read."""
    found = variants(aws, endpoint_name, variant_name)
    if min_instances is None:
        min_instances = 1 if aws.dry_run else _current_instances(aws, endpoint_name)
    targets = {v.name: resolve_target(target, capacity_key, v.instance_type)[0] if target
               else tracked_target(aws, endpoint_name, v.name) for v in found}
    specs = [s for v in found for s in alarm_specs(endpoint_name, v, budget_ms, min_instances, topic, targets[v.name])]
    board = dashboard_name(endpoint_name)
    body = _existing_dashboard(aws, board)
    # its own alarms that this run does not put: retired kinds, and over-target without a target
    stale: dict[str, str] = {}   # alarm name -> why it goes
    for v in found:
        stale.update({alarm_name(endpoint_name, v.name, k): "CPU does not follow the load on granian"
                      for k in RETIRED_KINDS})
        if targets[v.name] is None:
            stale[alarm_name(endpoint_name, v.name, "over-target")] = "no target"
    alarms = _existing_alarms(aws, [s["AlarmName"] for s in specs] + list(stale)) if not aws.dry_run else {}
    foreign = [f"alarm {n}" for n, a in alarms.items()
               if n not in stale and not a.get("AlarmDescription", "").startswith(MARKER)]
    if body is not None and MARKER not in body:
        foreign.insert(0, f"dashboard {board}")
    if foreign and not replace:
        raise DeployError(f"{', '.join(foreign)} already exist{'s' if len(foreign) == 1 else ''} and "
                          f"{'was' if len(foreign) == 1 else 'were'} not made by xgb-deploy: nothing changed. "
                          f"Delete or rename {'it' if len(foreign) == 1 else 'them'}, or run again with --replace "
                          f"to overwrite")
    cw = aws.client("cloudwatch")
    done = []
    cw.put_dashboard(DashboardName=board, DashboardBody=json.dumps(dashboard_body(endpoint_name, found, aws.region)))
    done.append(f"dashboard {board} ({'updated' if body is not None else 'created'})")
    for spec in specs:
        cw.put_metric_alarm(**spec)
        done.append(f"alarm {spec['AlarmName']} ({'updated' if spec['AlarmName'] in alarms else 'created'})")
    old = [n for n in stale if n in alarms and alarms[n].get("AlarmDescription", "").startswith(MARKER)]
    if old:
        cw.delete_alarms(AlarmNames=old)
        done += [f"alarm {n} (deleted: {stale[n]})" for n in old]
    done += [f"no over-target alarm for variant {v.name}: no --target and no autoscaling policy on it"
             for v in found if targets[v.name] is None]
    return done


def _current_instances(aws: Aws, endpoint_name: str) -> int:
    desc = aws.client("sagemaker").describe_endpoint(EndpointName=endpoint_name)
    counts = [int(v.get("CurrentInstanceCount") or 1) for v in desc.get("ProductionVariants", [])]
    return min(counts) if counts else 1


def remove(aws: Aws, endpoint_name: str) -> list[str]:
    """Delete the dashboard and alarms this module made for the endpoint; what was deleted, in words."""
    cw = aws.client("cloudwatch")
    deleted = []
    names = []
    for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{endpoint_name}-"):
        names += [a["AlarmName"] for a in page.get("MetricAlarms", [])
                  if a.get("AlarmDescription", "").startswith(MARKER)
                  and any(a["AlarmName"].endswith(f"-{k}") for k in ALARM_KINDS + RETIRED_KINDS)]
    if names:
        cw.delete_alarms(AlarmNames=names)
        deleted += [f"alarm {n}" for n in names]
    board = dashboard_name(endpoint_name)
    body = _existing_dashboard(aws, board)
    if aws.dry_run or (body is not None and MARKER in body):
        cw.delete_dashboards(DashboardNames=[board])
        deleted.append(f"dashboard {board}")
    return deleted
