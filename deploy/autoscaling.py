"""Autoscaling of an endpoint variant: a scalable target and a target-tracking policy.

The policy tracks ``SageMakerVariantInvocationsPerInstance``: the invocations
per minute each instance gets, averaged over the variant. Its target is what
one instance sustains within the latency SLO, with headroom; the benchmark's
capacity plan (``bench.capacity``) computes it per instance type, and
:func:`resolve_target` reads it from that JSON: at the dotted key
``autoscaling.invocations_per_instance_per_minute`` (``--capacity-key`` to
change) if there, else from the plan of the endpoint's instance type in a list
of per-type plans; or it takes a number.

Cooldowns are asymmetric by default: scale out after 60 s (bid traffic ramps
fast, and an overloaded instance answers late, which an exchange counts as a
no-bid), scale in after 300 s (so a short dip does not shed instances that the
next peak needs; a new instance takes minutes to come up).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.aws import Aws, DeployError, is_not_found
from deploy.settings import UsageError

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
DEFAULT_CAPACITY_KEY = "autoscaling.invocations_per_instance_per_minute"


@dataclass
class ScalingState:
    """A variant's scalable target and its policies, as read back from AWS."""
    variant_name: str
    min_capacity: int
    max_capacity: int
    policies: list[dict[str, Any]]      # DescribeScalingPolicies entries


def resource_id(endpoint_name: str, variant_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def policy_name(endpoint_name: str, variant_name: str) -> str:
    return f"{endpoint_name}-{variant_name}-invocations-per-instance"


def resolve_target(value: str, key: str = DEFAULT_CAPACITY_KEY,
                   instance_type: str | None = None) -> tuple[float, str]:
    """The target (invocations per instance per minute) and where it came from.

    ``value`` is a number, or the path of a capacity-plan JSON that holds either
    the number at the dotted ``key``, or a list of per-instance-type plans
    (objects with ``instance`` and ``invocations_per_instance_per_minute``, as
    ``bench.capacity.FleetPlan`` writes them), of which the one for
    ``instance_type`` (the endpoint's) is taken. Raises :class:`UsageError`
    saying what is wrong.
    """
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not number > 0:
            raise UsageError(f"--target {value}: must be a positive number")
        return number, "given"
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"--target {value}: neither a number nor an existing capacity-plan file")
    try:
        plan = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--target {value}: not readable JSON: {exc}") from None
    found, missing = _at_key(plan, key)
    where = f"{path} [{key}]"
    if missing:
        per_type = _fleet_plans(plan)
        if not per_type:
            raise UsageError(f"{path}: {missing}; give --capacity-key or a number")
        if instance_type not in per_type:
            raise UsageError(f"{path}: no plan for the endpoint's instance type {instance_type or '(unknown)'} "
                             f"(plans for: {', '.join(sorted(per_type))}); give a number or deploy one of those")
        found, where = per_type[instance_type], f"{path} [plan for {instance_type}]"
    if isinstance(found, bool) or not isinstance(found, (int, float)) or not found > 0:
        raise UsageError(f"{where}: {found!r} is not a positive number")
    return float(found), where


def _at_key(data: Any, key: str) -> tuple[Any, str | None]:
    """(value at the dotted key, None), or (None, what is missing)."""
    node, walked = data, []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else type(node).__name__
            return None, f"no key {'.'.join(walked + [part])!r} (found: {have})"
        node = node[part]
        walked.append(part)
    return node, None


def _fleet_plans(data: Any) -> dict[str, Any]:
    """Instance type -> target, from every list of plan objects anywhere in ``data``."""
    found: dict[str, Any] = {}
    if isinstance(data, dict):
        for value in data.values():
            found.update(_fleet_plans(value))
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict) and "invocations_per_instance_per_minute" in item:
                name = item.get("instance", item.get("instance_type"))
                if isinstance(name, str):
                    found.setdefault(name, item["invocations_per_instance_per_minute"])
            else:
                found.update(_fleet_plans(item))
    return found


def variant_instance_type(aws: Aws, endpoint_name: str, variant_name: str) -> str | None:
    """The instance type the variant runs on now; None when unknown (no such
    endpoint or variant, or a dry run)."""
    if aws.dry_run:
        return None
    sm = aws.client("sagemaker")
    try:
        config_name = sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
        variants = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return next((v.get("InstanceType") for v in variants if v["VariantName"] == variant_name), None)


def current_scaling(aws: Aws, endpoint_name: str, variant_name: str) -> ScalingState | None:
    """The variant's scalable target and policies, or None when it is not registered."""
    client = aws.client("application-autoscaling")
    rid = resource_id(endpoint_name, variant_name)
    targets = client.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION)["ScalableTargets"]
    if not targets:
        return None
    policies = client.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION)["ScalingPolicies"]
    return ScalingState(variant_name, targets[0]["MinCapacity"], targets[0]["MaxCapacity"], policies)


def tracked_target(aws: Aws, endpoint_name: str, variant_name: str) -> float | None:
    """The target of the variant's target-tracking policy on invocations per instance (what
    :func:`apply` put), or None when it has none (or in a dry run)."""
    if aws.dry_run:
        return None
    state = current_scaling(aws, endpoint_name, variant_name)
    for policy in state.policies if state else []:
        config = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
        if (config.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType") == METRIC:
            return float(config["TargetValue"])
    return None


def apply(aws: Aws, endpoint_name: str, variant_name: str, min_instances: int, max_instances: int,
          target: float, scale_in_cooldown: int, scale_out_cooldown: int) -> str:
    """Register the variant as a scalable target and put the target-tracking
    policy on it (both are idempotent: running again updates them). Returns the policy ARN."""
    if min_instances > max_instances:
        raise UsageError(f"--min-instances {min_instances} is above --max-instances {max_instances}")
    _check_variant(aws, endpoint_name, variant_name)
    client = aws.client("application-autoscaling")
    rid = resource_id(endpoint_name, variant_name)
    client.register_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION,
                                    MinCapacity=min_instances, MaxCapacity=max_instances)
    answer = client.put_scaling_policy(
        PolicyName=policy_name(endpoint_name, variant_name),
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": scale_in_cooldown,
            "ScaleOutCooldown": scale_out_cooldown,
        })
    return answer.get("PolicyARN", "")


def _check_variant(aws: Aws, endpoint_name: str, variant_name: str) -> None:
    """Refuse early, in words, what RegisterScalableTarget would refuse obscurely."""
    if aws.dry_run:
        return
    try:
        desc = aws.client("sagemaker").describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        if is_not_found(exc):
            raise DeployError(f"endpoint {endpoint_name} does not exist: deploy it first") from None
        raise
    variants = [v["VariantName"] for v in desc.get("ProductionVariants", [])]
    if variant_name not in variants:
        raise DeployError(f"endpoint {endpoint_name} has no variant {variant_name} (it has: {', '.join(variants)})")
    if desc["EndpointStatus"] != "InService":
        raise DeployError(f"endpoint {endpoint_name} is {desc['EndpointStatus']}: autoscaling can be set "
                          f"once it is InService")


def restore(aws: Aws, endpoint_name: str, state: ScalingState) -> None:
    """Put back a target and policies read earlier with :func:`current_scaling`."""
    client = aws.client("application-autoscaling")
    rid = resource_id(endpoint_name, state.variant_name)
    client.register_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION,
                                    MinCapacity=state.min_capacity, MaxCapacity=state.max_capacity)
    for policy in state.policies:
        params = {k: policy[k] for k in ("PolicyName", "PolicyType") if k in policy}
        for key in ("TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration"):
            if key in policy:
                params[key] = policy[key]
        client.put_scaling_policy(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION,
                                  **params)
    aws.say(f"variant {state.variant_name}: autoscaling put back ({state.min_capacity}-{state.max_capacity} "
            f"instances, {len(state.policies)} polic{'y' if len(state.policies) == 1 else 'ies'})")


def remove(aws: Aws, endpoint_name: str, variant_name: str) -> list[str]:
    """Delete the variant's policies and deregister its scalable target.
    Returns what was deleted, in words; empty when nothing was registered."""
    state = current_scaling(aws, endpoint_name, variant_name)
    if state is None:
        return []
    client = aws.client("application-autoscaling")
    rid = resource_id(endpoint_name, variant_name)
    removed = []
    for policy in state.policies:
        client.delete_scaling_policy(PolicyName=policy["PolicyName"], ServiceNamespace=NAMESPACE,
                                     ResourceId=rid, ScalableDimension=DIMENSION)
        removed.append(f"scaling policy {policy['PolicyName']}")
    client.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION)
    removed.append(f"scalable target {rid}")
    return removed


def registered_variants(aws: Aws, endpoint_name: str) -> list[str]:
    """Variants of the endpoint that have a scalable target, found by resource ID
    (so a variant no longer in the endpoint's configuration is found too)."""
    client = aws.client("application-autoscaling")
    prefix = f"endpoint/{endpoint_name}/variant/"
    found = []
    for page in client.get_paginator("describe_scalable_targets").paginate(ServiceNamespace=NAMESPACE):
        found += [t["ResourceId"][len(prefix):] for t in page.get("ScalableTargets", [])
                  if t["ResourceId"].startswith(prefix)]
    return found
