"""Take an endpoint down: its dashboard and alarms, its scaling policies and targets, the endpoint, its
configurations and models, and say what was deleted.

What belongs to the endpoint: the configuration it runs and that
configuration's models, plus every configuration and model named as
:func:`deploy.endpoint.versioned_name` names them for this endpoint (the kept
rollback versions). Nothing else is touched. The model data in S3 is kept
(the next deploy may use it); its URL is printed.
"""
from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from deploy import autoscaling, monitor
from deploy.aws import Aws, DeployError, is_not_found
from deploy.endpoint import (
    Waiting,
    check_endpoint_name,
    describe_endpoint,
    elapsed_clock,
    is_versioned_name_of,
    list_versions,
)


def teardown(aws: Aws, endpoint_name: str, waiting: Waiting | None) -> list[str]:
    """Delete everything that belongs to ``endpoint_name``; wait for the endpoint
    to be gone unless ``waiting`` is None. Returns what was deleted, in words."""
    check_endpoint_name(endpoint_name)
    sm = aws.client("sagemaker")
    deleted: list[str] = []
    desc = describe_endpoint(aws, endpoint_name)
    deleted += monitor.remove(aws, endpoint_name)    # first, so that no alarm fires as the endpoint goes

    variants = set(autoscaling.registered_variants(aws, endpoint_name))
    variants |= {v["VariantName"] for v in (desc or {}).get("ProductionVariants", [])}
    for variant in sorted(variants):
        deleted += autoscaling.remove(aws, endpoint_name, variant)

    configs = [c["EndpointConfigName"] for c in list_versions(aws, endpoint_name)]
    # A dry run reads nothing, so it shows the one delete known by name alone.
    if desc is not None or aws.dry_run:
        if desc and desc["EndpointConfigName"] not in configs:
            configs.append(desc["EndpointConfigName"])
        if not desc or desc["EndpointStatus"] != "Deleting":
            sm.delete_endpoint(EndpointName=endpoint_name)
        deleted.append(f"endpoint {endpoint_name}")
        if waiting is not None:
            _wait_gone(aws, endpoint_name, waiting)

    models: list[str] = []
    for config in configs:
        models += [m for m in _config_models(aws, config) if m not in models]
        if _delete(lambda: sm.delete_endpoint_config(EndpointConfigName=config)):
            deleted.append(f"endpoint configuration {config}")
    models += [m for m in _versioned_models(aws, endpoint_name) if m not in models]

    kept_data = []
    for model in models:
        kept_data += _model_data(aws, model)
        if _delete(lambda: sm.delete_model(ModelName=model)):
            deleted.append(f"model {model}")
    for url in sorted(set(kept_data)):
        aws.say(f"kept the model data {url} (delete it with `aws s3 rm {url}` if no longer needed)")
    return deleted


def _delete(call) -> bool:
    """Run a delete call; False when the thing was already gone."""
    try:
        call()
        return True
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise


def _config_models(aws: Aws, config: str) -> list[str]:
    try:
        desc = aws.client("sagemaker").describe_endpoint_config(EndpointConfigName=config)
    except ClientError as exc:
        if is_not_found(exc):
            return []
        raise
    return [v["ModelName"] for v in desc.get("ProductionVariants", []) if "ModelName" in v]


def _versioned_models(aws: Aws, endpoint_name: str) -> list[str]:
    found = []
    paginator = aws.client("sagemaker").get_paginator("list_models")
    for page in paginator.paginate(NameContains=endpoint_name[:40]):
        found += [m["ModelName"] for m in page.get("Models", []) if is_versioned_name_of(endpoint_name, m["ModelName"])]
    return sorted(found)


def _model_data(aws: Aws, model: str) -> list[str]:
    try:
        desc: dict[str, Any] = aws.client("sagemaker").describe_model(ModelName=model)
    except ClientError as exc:
        if is_not_found(exc):
            return []
        raise
    containers = [desc.get("PrimaryContainer", {})] + desc.get("Containers", [])
    return [c["ModelDataUrl"] for c in containers if c.get("ModelDataUrl")]


def _wait_gone(aws: Aws, endpoint_name: str, waiting: Waiting) -> None:
    if aws.dry_run:
        aws.note(f"# would wait for {endpoint_name} to be deleted")
        return
    start = waiting.clock()
    while True:
        desc = describe_endpoint(aws, endpoint_name)
        elapsed = waiting.clock() - start
        if desc is None:
            aws.say(f"  [{elapsed_clock(elapsed)}] {endpoint_name}: deleted")
            return
        aws.say(f"  [{elapsed_clock(elapsed)}] {endpoint_name}: {desc['EndpointStatus']}")
        if elapsed >= waiting.timeout:
            raise DeployError(f"endpoint {endpoint_name} is still {desc['EndpointStatus']} after {elapsed:.0f} s; "
                              f"run teardown again later to delete the rest")
        waiting.sleep(min(waiting.poll, waiting.timeout - elapsed))
