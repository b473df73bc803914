"""The SageMaker model, endpoint configuration and endpoint: create, update, wait, roll back.

Each deploy makes a new model and a new endpoint configuration, both named
``<endpoint>-<UTC yyyymmdd-HHMMSS-mmm>``, then creates the endpoint or moves
the existing one to the new configuration. Older configurations and models are
kept, so :func:`rollback` can move the endpoint back to any of them.

An update respects autoscaling as SageMaker requires ("Update endpoints that
use auto scaling" in the developer guide): when the instance type of a scaled
variant changes, or the variant goes away, its policies and scalable target
are removed before ``UpdateEndpoint`` and put back after; otherwise the update
keeps the instance counts autoscaling has set (``RetainAllVariantProperties``),
so a deploy in the middle of the day does not shrink the fleet to its initial size.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from deploy import autoscaling
from deploy.aws import Aws, DeployError, is_not_found
from deploy.settings import UsageError

TAG_KEY = "xgb-deploy:endpoint"
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
STAMP_FORMAT = "%Y%m%d-%H%M%S"
STAMP_LENGTH = len("20260101-000000-000")
# Endpoint statuses that will not turn into InService without another call.
DEAD_STATUSES = {"Failed", "OutOfService", "Deleting", "UpdateRollbackFailed"}


class WaitTimeout(DeployError):
    """The endpoint did not reach the wanted state in time; it is left as it is."""


@dataclass
class EndpointSpec:
    """What one deploy asks for."""
    endpoint_name: str
    image_uri: str | None            # with model_data; or else a model_package
    model_data: str | None           # s3:// URL of model.tar.gz
    role_arn: str
    instance_type: str
    instance_count: int
    variant_name: str
    environment: dict[str, str] = field(default_factory=dict)
    model_package: str | None = None     # a registered version's ARN, instead of image and data
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    network_isolation: bool = True
    startup_health_timeout: int | None = None
    model_download_timeout: int | None = None
    # "MultiModel": model_data is an S3 prefix; each request's TargetModel names a
    # model.tar.gz under it, which SageMaker loads into the container on demand.
    mode: str = "SingleModel"


@dataclass
class Waiting:
    """How to wait for an endpoint: give up after ``timeout`` seconds, look every ``poll``."""
    timeout: float
    poll: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def check_model_data_prefix(prefix: str) -> str:
    """A multi-model endpoint's ModelDataUrl: an s3:// prefix (a "folder", ending in /)."""
    if not prefix.startswith("s3://") or len(prefix.removeprefix("s3://").strip("/")) == 0:
        raise UsageError(f"--model-data-prefix {prefix}: must be an s3://bucket/prefix/ URL")
    return prefix if prefix.endswith("/") else prefix + "/"


def check_endpoint_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"endpoint name {name!r}: use 1-63 letters, digits and single hyphens, "
                         f"starting and ending with a letter or digit")
    return name


def versioned_name(endpoint_name: str, now: datetime | None = None) -> str:
    """``<endpoint>-<yyyymmdd-HHMMSS-mmm>`` in UTC, cut to SageMaker's 63 characters."""
    now = now or datetime.now(timezone.utc)
    stamp = f"{now.strftime(STAMP_FORMAT)}-{now.microsecond // 1000:03d}"
    prefix = endpoint_name[: 63 - STAMP_LENGTH - 1].rstrip("-")
    return f"{prefix}-{stamp}"


def is_versioned_name_of(endpoint_name: str, name: str) -> bool:
    """True for names :func:`versioned_name` makes for ``endpoint_name``."""
    prefix = endpoint_name[: 63 - STAMP_LENGTH - 1].rstrip("-")
    return re.fullmatch(re.escape(prefix) + r"-\d{8}-\d{6}-\d{3}", name) is not None


def container_environment(workers: int | None, outputs: str | None, extra: list[tuple[str, str]]) -> dict[str, str]:
    """The serving container's environment: worker count and selected outputs by
    their SageMaker names, then any KEY=VALUE given (which win)."""
    env: dict[str, str] = {}
    if workers is not None:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    if outputs:
        env["SAGEMAKER_INFERENCE_OUTPUT"] = outputs
    env.update(dict(extra))
    return env


def describe_endpoint(aws: Aws, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint's answer, or None when there is no such endpoint."""
    try:
        return aws.client("sagemaker").describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def create_model_and_config(aws: Aws, spec: EndpointSpec, name: str) -> None:
    """Create the model and the endpoint configuration ``name`` for ``spec``."""
    sm = aws.client("sagemaker")
    tags = [{"Key": TAG_KEY, "Value": spec.endpoint_name}]
    if spec.model_package:
        # The version holds the image and the model data (CreateModel with ModelPackageName).
        container = {"ModelPackageName": spec.model_package, "Environment": spec.environment}
        what = f"model package {spec.model_package}"
    else:
        container = {"Image": spec.image_uri, "ModelDataUrl": spec.model_data,
                     "Environment": spec.environment, "Mode": spec.mode}
        what = f"image {spec.image_uri}, data {spec.model_data}"
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=spec.role_arn,
        PrimaryContainer=container,
        # The server needs no network at run time: SageMaker still downloads the
        # model, but the container can reach nothing.
        EnableNetworkIsolation=spec.network_isolation,
        Tags=tags,
        **({"VpcConfig": {"Subnets": spec.subnets, "SecurityGroupIds": spec.security_groups}}
           if spec.subnets else {}),
    )
    aws.say(f"created model {name} ({what})")
    variant: dict[str, Any] = {
        "VariantName": spec.variant_name,
        "ModelName": name,
        "InstanceType": spec.instance_type,
        "InitialInstanceCount": spec.instance_count,
        "InitialVariantWeight": 1.0,
    }
    if spec.startup_health_timeout is not None:
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] = spec.startup_health_timeout
    if spec.model_download_timeout is not None:
        variant["ModelDataDownloadTimeoutInSeconds"] = spec.model_download_timeout
    try:
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], Tags=tags)
    except (ClientError, BotoCoreError):
        discard_version(aws, name)
        raise
    aws.say(f"created endpoint configuration {name} ({spec.instance_count} x {spec.instance_type}, "
            f"variant {spec.variant_name})")


def deploy(aws: Aws, spec: EndpointSpec, waiting: Waiting | None, now: datetime | None = None) -> str:
    """Create the endpoint of ``spec``, or update it to a new configuration; wait
    for InService unless ``waiting`` is None. Returns the new configuration's name.

    Raises :class:`DeployError` when the endpoint cannot be updated now, ends
    Failed, rolls back, or does not get there within the timeout.
    """
    check_endpoint_name(spec.endpoint_name)
    current = describe_endpoint(aws, spec.endpoint_name)
    if current is not None:
        _check_updatable(current)
    name = versioned_name(spec.endpoint_name, now)
    create_model_and_config(aws, spec, name)
    if current is None:
        try:
            aws.client("sagemaker").create_endpoint(
                EndpointName=spec.endpoint_name, EndpointConfigName=name,
                Tags=[{"Key": TAG_KEY, "Value": spec.endpoint_name}])
        except (ClientError, BotoCoreError):
            discard_version(aws, name)
            raise
        aws.say(f"creating endpoint {spec.endpoint_name} with {name}")
        if waiting is not None:
            wait_in_service(aws, spec.endpoint_name, name, waiting)
    else:
        switch_config(aws, spec.endpoint_name, name, waiting, discard_on_refusal=True)
    return name


def discard_version(aws: Aws, name: str) -> None:
    """Delete the model and configuration ``name`` after AWS refused to use them,
    so that a failed attempt leaves nothing behind. Best effort: the error that
    caused it is what the user needs to see."""
    sm = aws.client("sagemaker")
    for delete in (lambda: sm.delete_endpoint_config(EndpointConfigName=name),
                   lambda: sm.delete_model(ModelName=name)):
        try:
            delete()
        except (ClientError, BotoCoreError):
            pass
    aws.say(f"removed {name} again (model and configuration), since it was not deployed")


def _check_updatable(current: dict[str, Any]) -> None:
    status = current["EndpointStatus"]
    name = current["EndpointName"]
    if status == "Failed":
        raise DeployError(f"endpoint {name} is Failed ({current.get('FailureReason', 'no reason given')}); "
                          f"SageMaker only allows deleting it: run `teardown`, then deploy again")
    if status != "InService":
        raise DeployError(f"endpoint {name} is {status}; wait until it is InService, then deploy again")


def switch_config(aws: Aws, endpoint_name: str, config_name: str, waiting: Waiting | None,
                  discard_on_refusal: bool = False) -> None:
    """Move the InService endpoint to ``config_name``, handling autoscaling as SageMaker
    requires (see the module docstring), and wait unless ``waiting`` is None.

    When UpdateEndpoint is refused, autoscaling removed for it is put back, and
    with ``discard_on_refusal`` the new model and configuration are deleted."""
    sm = aws.client("sagemaker")
    current = describe_endpoint(aws, endpoint_name)
    if current is None:
        raise DeployError(f"endpoint {endpoint_name} does not exist")
    _check_updatable(current)
    if current["EndpointConfigName"] == config_name:
        raise DeployError(f"endpoint {endpoint_name} already runs {config_name}")
    old = sm.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
    new = sm.describe_endpoint_config(EndpointConfigName=config_name)
    old_types = {v["VariantName"]: v.get("InstanceType") for v in old["ProductionVariants"]}
    new_types = {v["VariantName"]: v.get("InstanceType") for v in new["ProductionVariants"]}

    scaled = [s for s in (autoscaling.current_scaling(aws, endpoint_name, v) for v in old_types) if s]
    must_remove = [s for s in scaled if new_types.get(s.variant_name) != old_types[s.variant_name]]
    for state in must_remove:
        aws.say(f"variant {state.variant_name}: instance type changes or the variant goes away, so its "
                f"autoscaling is removed for the update (SageMaker refuses the update otherwise)")
        autoscaling.remove(aws, endpoint_name, state.variant_name)
    retain = len(scaled) > len(must_remove)
    try:
        sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name,
                           RetainAllVariantProperties=retain)
    except (ClientError, BotoCoreError):
        for state in must_remove:
            autoscaling.restore(aws, endpoint_name, state)
        if discard_on_refusal:
            discard_version(aws, config_name)
        raise
    kept = " (keeping the instance counts autoscaling set)" if retain else ""
    aws.say(f"updating endpoint {endpoint_name}: {current['EndpointConfigName']} -> {config_name}{kept}; "
            f"the old configuration is kept for rollback")
    if waiting is None:
        if must_remove:
            aws.say("not waiting: run `autoscale` again once the endpoint is InService")
        return
    try:
        wait_in_service(aws, endpoint_name, config_name, waiting)
    except WaitTimeout:
        if must_remove:
            aws.say("autoscaling stays removed: run `autoscale` again once the endpoint is InService")
        raise
    except DeployError:
        # A failed update that SageMaker rolled back runs the old variants again: scale them as before.
        after = describe_endpoint(aws, endpoint_name)
        if after is not None and after["EndpointStatus"] == "InService":
            for state in must_remove:
                autoscaling.restore(aws, endpoint_name, state)
        raise
    for state in must_remove:
        if state.variant_name in new_types:
            autoscaling.restore(aws, endpoint_name, state)


def wait_in_service(aws: Aws, endpoint_name: str, config_name: str, waiting: Waiting) -> dict[str, Any]:
    """Poll DescribeEndpoint until the endpoint is InService on ``config_name``,
    printing each status with the time waited. Returns the last description.

    Raises :class:`DeployError` with SageMaker's FailureReason when it ends
    Failed, or InService on another configuration (a failed update that SageMaker
    rolled back); :class:`WaitTimeout` when ``waiting.timeout`` passes first.
    """
    if aws.dry_run:
        aws.note(f"# would wait for {endpoint_name} to be InService on {config_name}")
        return {}
    start = waiting.clock()
    while True:
        desc = describe_endpoint(aws, endpoint_name)
        elapsed = waiting.clock() - start
        if desc is None:
            raise DeployError(f"endpoint {endpoint_name} disappeared while waiting for it (deleted?)")
        status = desc["EndpointStatus"]
        aws.say(f"  [{elapsed_clock(elapsed)}] {endpoint_name}: {status}{_instances(desc)}")
        reason = desc.get("FailureReason")
        if status == "InService":
            if desc.get("EndpointConfigName") == config_name:
                return desc
            if reason:
                raise DeployError(
                    f"the update of {endpoint_name} to {config_name} failed and SageMaker rolled it back to "
                    f"{desc.get('EndpointConfigName')}: {reason}\n{_logs_hint(aws, endpoint_name)}")
        elif status in DEAD_STATUSES:
            raise DeployError(f"endpoint {endpoint_name} is {status}: {reason or 'no FailureReason given'}\n"
                              f"{_logs_hint(aws, endpoint_name)}")
        if elapsed >= waiting.timeout:
            raise WaitTimeout(f"endpoint {endpoint_name} is still {status} after {elapsed:.0f} s; it is left "
                              f"as it is: look again with `aws sagemaker describe-endpoint --endpoint-name "
                              f"{endpoint_name}`, or take it down with `teardown`")
        waiting.sleep(min(waiting.poll, waiting.timeout - elapsed))


def elapsed_clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:3d}:{secs:02d}"


def _instances(desc: dict[str, Any]) -> str:
    counts = [f"{v['VariantName']} {v.get('CurrentInstanceCount', 0)}/{v.get('DesiredInstanceCount', '?')}"
              for v in desc.get("ProductionVariants", []) if "DesiredInstanceCount" in v]
    return f" (instances {', '.join(counts)})" if counts else ""


def _logs_hint(aws: Aws, endpoint_name: str) -> str:
    return (f"The container's logs are in CloudWatch Logs, group /aws/sagemaker/Endpoints/{endpoint_name} "
            f"(region {aws.region}).")


def list_versions(aws: Aws, endpoint_name: str) -> list[dict[str, Any]]:
    """This endpoint's configurations made by :func:`deploy`, oldest first
    (ListEndpointConfigs summaries: EndpointConfigName, CreationTime)."""
    sm = aws.client("sagemaker")
    found: list[dict[str, Any]] = []
    for page in sm.get_paginator("list_endpoint_configs").paginate(NameContains=endpoint_name[:40]):
        found += [c for c in page.get("EndpointConfigs", [])
                  if is_versioned_name_of(endpoint_name, c["EndpointConfigName"])]
    return sorted(found, key=lambda c: (c["CreationTime"], c["EndpointConfigName"]))


def rollback(aws: Aws, endpoint_name: str, to: str | None, waiting: Waiting | None) -> str:
    """Move the endpoint back to configuration ``to``, or else to the newest one
    older than the one it runs. Returns the configuration's name."""
    current = describe_endpoint(aws, endpoint_name)
    if current is None:
        raise DeployError(f"endpoint {endpoint_name} does not exist")
    running = current["EndpointConfigName"]
    if to is None:
        names = [c["EndpointConfigName"] for c in list_versions(aws, endpoint_name)]
        older = names[: names.index(running)] if running in names else []
        if not older:
            raise DeployError(f"no configuration older than {running} is left to roll back to "
                              f"(kept: {', '.join(names) or 'none'})")
        to = older[-1]
    aws.say(f"rolling {endpoint_name} back from {running} to {to}")
    switch_config(aws, endpoint_name, to, waiting)
    return to
