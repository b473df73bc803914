"""The SageMaker Model Registry: a model package group and versions of a compiled model.

:func:`register` uploads the model as ``upload`` does, and beside it a sample
payload (a ``.tar.gz`` of CSV rows, what Inference Recommender sends), then
creates a version in the group (the group first, if missing) that says what
the model is and where it may run: the image, the model data, the XGBoost
version of the manifest, classification or regression from its objective,
the content types the server reads and writes, and the real-time instance
types. It starts ``PendingManualApproval`` unless approved.

:func:`check_deployable` is the gate of ``endpoint --model-package``: only an
``Approved`` version is deployed (a ``Rejected`` one never, a pending one
after someone approves it).
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy import upload
from deploy.aws import Aws, DeployError, is_not_found
from deploy.settings import UsageError

# What serve reads (serve.codecs.DECODERS) and writes (serve.codecs.ENCODERS);
# a test holds them equal, deploy does not import serve.
SUPPORTED_CONTENT_TYPES = ["text/csv", "application/json", "application/jsonlines", "application/x-npy",
                           "text/libsvm", "text/x-libsvm", "application/x-recordio-protobuf"]
SUPPORTED_RESPONSE_TYPES = ["text/csv", "application/json", "application/jsonlines"]
# x86_64 CPU types: the compiled library is native x86_64 code (a Graviton type needs
# an artifact compiled there). Compute-optimized first; a Default recommendation job tries the first ones.
DEFAULT_INSTANCE_TYPES = ["ml.c6i.large", "ml.c6i.xlarge", "ml.c6i.2xlarge", "ml.c5.large", "ml.c5.xlarge",
                          "ml.m5.large", "ml.m5.xlarge", "ml.c7i.large", "ml.c7i.xlarge", "ml.c7i.2xlarge"]
SAMPLE_PAYLOAD_NAME = "sample-payload.tar.gz"
APPROVED, PENDING, REJECTED = "Approved", "PendingManualApproval", "Rejected"


@dataclass
class Registered:
    arn: str                  # the model package version
    group: str
    version: int | None
    model_data: str
    sample_payload: str
    approval: str


def task_of(objective: str) -> str:
    """The Model Registry's Task for an XGBoost objective."""
    if objective.startswith(("binary:", "multi:")):
        return "CLASSIFICATION"
    if objective.startswith(("reg:", "count:", "survival:")):
        return "REGRESSION"
    return "OTHER"


def sample_payload_archive(rows_file: Path, rows: int) -> bytes:
    """A ``.tar.gz`` holding ``sample.csv``: the first ``rows`` non-empty lines of ``rows_file``."""
    try:
        with open(rows_file, "rb") as f:
            lines = [line.rstrip(b"\r\n") + b"\n" for line in f if line.strip()][:rows]
    except OSError as exc:
        raise UsageError(f"--sample-payload {rows_file}: {exc.strerror}") from None
    if not lines:
        raise UsageError(f"--sample-payload {rows_file}: holds no row")
    data = b"".join(lines)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("sample.csv")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure_group(aws: Aws, group: str) -> bool:
    """Create the model package group if missing; True when it was created."""
    sm = aws.client("sagemaker")
    try:
        sm.describe_model_package_group(ModelPackageGroupName=group)
        return False
    except ClientError as exc:
        if not is_not_found(exc) and "does not exist" not in str(exc).lower():
            raise
    sm.create_model_package_group(ModelPackageGroupName=group,
                                  ModelPackageGroupDescription="XGBoost bid filter compiled by xgb-neo-serve")
    aws.say(f"created model package group {group}")
    return True


def register(aws: Aws, archive: Path, image_uri: str, group: str, bucket: str | None, prefix: str,
             sample_rows_file: Path, sample_rows: int, instance_types: list[str], approve: bool) -> Registered:
    """Upload ``archive`` and its sample payload, and register a new version in ``group``."""
    if not archive.is_file():
        raise DeployError(f"{archive}: no such file")
    manifest = upload.artifact_manifest(archive)
    payload = sample_payload_archive(sample_rows_file, sample_rows)
    if manifest is None:
        raise DeployError(f"{archive}: not compiled by model-compile (no manifest.json): the registry records "
                          f"the XGBoost version and objective from the manifest, so compile it first")
    done = upload.upload_model(aws, archive, bucket, prefix)
    bucket_name, _, key = done.url.removeprefix("s3://").partition("/")
    payload_key = key.rpartition("/")[0] + "/" + SAMPLE_PAYLOAD_NAME
    aws.client("s3").put_object(Bucket=bucket_name, Key=payload_key, Body=payload, ContentType="application/gzip")
    payload_url = f"s3://{bucket_name}/{payload_key}"
    aws.say(f"uploaded the sample payload ({sample_rows} rows at most) to {payload_url}")
    ensure_group(aws, group)
    approval = APPROVED if approve else PENDING
    answer = aws.client("sagemaker").create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=(f"{manifest.model.objective}, {manifest.model.num_feature} features, "
                                 f"{manifest.model.num_tree} trees, compiled for {manifest.library.platform}; "
                                 f"sha256 {done.sha256}"),
        InferenceSpecification={
            "Containers": [{"Image": image_uri, "ModelDataUrl": done.url, "Framework": "XGBOOST",
                            "FrameworkVersion": manifest.versions.get("xgboost", "unknown")}],
            "SupportedContentTypes": SUPPORTED_CONTENT_TYPES,
            "SupportedResponseMIMETypes": SUPPORTED_RESPONSE_TYPES,
            "SupportedRealtimeInferenceInstanceTypes": instance_types or DEFAULT_INSTANCE_TYPES,
        },
        ModelApprovalStatus=approval,
        Domain="MACHINE_LEARNING",
        Task=task_of(manifest.model.objective),
        SamplePayloadUrl=payload_url,
        CustomerMetadataProperties={"sha256": done.sha256, "objective": manifest.model.objective},
    )
    arn = answer.get("ModelPackageArn", "")
    version = _version_of(aws, arn)
    aws.say(f"registered {group} version {version} ({approval}): {arn}")
    return Registered(arn, group, version, done.url, payload_url, approval)


def _version_of(aws: Aws, arn: str) -> int | None:
    if aws.dry_run or not arn:
        return None
    return describe(aws, arn).get("ModelPackageVersion")


def describe(aws: Aws, arn: str) -> dict[str, Any]:
    """DescribeModelPackage; :class:`DeployError` when there is no such version."""
    try:
        return aws.client("sagemaker").describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        if is_not_found(exc) or "not found" in str(exc).lower():
            raise DeployError(f"model package {arn} does not exist (check --model-package)") from None
        raise


def check_deployable(aws: Aws, arn: str) -> dict[str, Any]:
    """The version's description when it is Approved; :class:`DeployError` saying why not otherwise."""
    if aws.dry_run:
        return {}
    desc = describe(aws, arn)
    status = desc.get("ModelApprovalStatus", PENDING)
    if status == REJECTED:
        note = f" ({desc['ApprovalDescription']})" if desc.get("ApprovalDescription") else ""
        raise DeployError(f"model package {arn} was Rejected{note}: it is not deployed; register a new version")
    if status != APPROVED:
        raise DeployError(f"model package {arn} is {status}: approve it first (aws sagemaker update-model-package "
                          f"--model-package-arn {arn} --model-approval-status Approved), or register with --approve")
    return desc
