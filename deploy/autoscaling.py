"""Autoscaling of an endpoint variant: a scalable target and a target-tracking policy.

The policy tracks ``SageMakerVariantInvocationsPerInstance``: the invocations
per minute each instance gets, averaged over the variant. Its target is what
one instance sustains within the latency SLO, with headroom; the benchmark's
capacity plan (``python -m bench capacity``) computes it, and
:func:`resolve_target` reads it from that JSON at the dotted key
``autoscaling.invocations_per_instance_per_minute`` (``--capacity-key`` to
change), or takes a number.

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


def resolve_target(value: str, key: str = DEFAULT_CAPACITY_KEY) -> tuple[float, str]:
    """The target (invocations per instance per minute) and where it came from.

    ``value`` is a number, or the path of a capacity-plan JSON holding the
    number at the dotted ``key``. Raises :class:`UsageError` saying what is wrong.
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
    node: Any = plan
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else type(node).__name__
            raise UsageError(f"{path}: no key {'.'.join(walked + [part])!r} (found: {have}); "
                             f"give --capacity-key or a number")
        node = node[part]
        walked.append(part)
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not node > 0:
        raise UsageError(f"{path}: {key} is {node!r}, not a positive number")
    return float(node), f"{path} [{key}]"


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
