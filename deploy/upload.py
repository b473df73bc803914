"""Put a ``model.tar.gz`` in S3 for SageMaker, with its sha256 in the object metadata.

The archive is checked first the way the server will read it
(:func:`model_core.artifact.safe_extract`; a compiled artifact's library
must match the sha256 in its manifest), so a broken artifact is refused here
rather than by a Failed endpoint twenty minutes later.

The key holds the first 16 hex digits of the sha256, so uploads of the same
archive land on the same object (and are skipped), and a new model never
overwrites one that a running endpoint still reads.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from deploy.aws import Aws, DeployError, is_not_found
from deploy.settings import UsageError
from model_core.artifact import (
    ArtifactError,
    Manifest,
    read_manifest,
    safe_extract,
    sha256_file,
)

SHA256_METADATA_KEY = "sha256"          # stored as x-amz-meta-sha256


@dataclass
class Uploaded:
    url: str                 # s3://bucket/key
    sha256: str
    size: int
    skipped: bool            # True when the same object was already there


def describe_artifact(archive: Path) -> str:
    """Check ``archive`` as the server will and return a one-line summary of it.

    Raises :class:`DeployError` when it is not a safe, readable tar archive, or
    when a compiled artifact's library does not match its manifest.
    """
    if not archive.is_file():
        raise DeployError(f"{archive}: no such file")
    with tempfile.TemporaryDirectory(prefix="xgb-deploy-check-") as tmp:
        try:
            names = safe_extract(archive, Path(tmp))
            manifest = read_manifest(Path(tmp))
        except ArtifactError as exc:
            raise DeployError(f"{archive}: {exc}") from None
        if manifest is None:
            if not names:
                raise DeployError(f"{archive}: the archive holds no file")
            return (f"no manifest.json: not compiled by model-compile (holds {', '.join(sorted(names))}); "
                    f"the server will run it with stock XGBoost")
        for lib in manifest.libraries:
            library = Path(tmp) / lib.file
            if not library.is_file():
                raise DeployError(f"{archive}: manifest names {lib.file}, which is missing")
            if sha256_file(library) != lib.sha256:
                raise DeployError(f"{archive}: {lib.file} does not match the sha256 in manifest.json")
        m = manifest.model
        built_for = ", ".join(f"{lib.file} for {lib.platform}{' tuned for ' + lib.cpu if lib.cpu else ''} "
                              f"({lib.libc})" for lib in manifest.libraries)
        return f"compiled {m.objective} model, {m.num_feature} features, {m.num_tree} trees, {built_for}"


def artifact_manifest(archive: Path) -> Manifest | None:
    """The manifest of a compiled ``archive`` (None for a bare model), read as the server reads it.
    The one place besides :func:`describe_artifact` that deploy reads the artifact contract."""
    with tempfile.TemporaryDirectory(prefix="xgb-deploy-manifest-") as tmp:
        try:
            safe_extract(archive, Path(tmp))
            return read_manifest(Path(tmp))
        except ArtifactError as exc:
            raise DeployError(f"{archive}: {exc}") from None


def default_bucket(aws: Aws) -> str:
    """``sagemaker-<region>-<account>``, the SageMaker Python SDK's default bucket name."""
    return f"sagemaker-{aws.region}-{aws.account_id()}"


def ensure_default_bucket(aws: Aws, bucket: str) -> None:
    """Create the default bucket if it is missing (as the SageMaker SDK does)."""
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if not is_not_found(exc):
            raise
    aws.say(f"creating bucket s3://{bucket}")
    params: dict = {"Bucket": bucket}
    if aws.region != "us-east-1":   # us-east-1 refuses an explicit LocationConstraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
    s3.create_bucket(**params)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True,
        "BlockPublicPolicy": True, "RestrictPublicBuckets": True})


def object_key(prefix: str, archive: Path, sha256: str) -> str:
    """``<prefix>/<name>/<sha256[:16]>/model.tar.gz``, the name being the archive's
    (``rtb-small.tar.gz``), or its folder's for a ``model.tar.gz``."""
    stem = archive.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
    name = stem if stem != "model" else (archive.resolve().parent.name or "model")
    parts = [p for p in (prefix.strip("/"), name, sha256[:16], "model.tar.gz") if p]
    return "/".join(parts)


def _checked(aws: Aws, archive: Path, bucket: str | None) -> tuple[str, int, str]:
    """Check ``archive`` as the server will; its sha256, size and the bucket to put it in (the
    default bucket, made if missing, when ``bucket`` is None)."""
    aws.say(f"checking {archive}: {describe_artifact(archive)}")
    sha256 = sha256_file(archive)
    size = archive.stat().st_size
    if bucket is None:
        bucket = default_bucket(aws)
        ensure_default_bucket(aws, bucket)
    return sha256, size, bucket


def _head(aws: Aws, s3, bucket: str, key: str) -> dict | None:
    """The object at ``key`` (HeadObject), or None when there is none; DeployError when the
    bucket itself is missing (a bucket named by the user is never created)."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        if not aws.dry_run and not bucket_exists(s3, bucket):
            raise DeployError(f"bucket s3://{bucket} does not exist: create it, or leave out --bucket "
                              f"to use the default bucket") from None
        return None


def _same(head: dict, sha256: str, size: int) -> bool:
    return head.get("Metadata", {}).get(SHA256_METADATA_KEY) == sha256 and head.get("ContentLength") == size


def upload_model(aws: Aws, archive: Path, bucket: str | None, prefix: str) -> Uploaded:
    """Check ``archive``, then upload it to ``s3://bucket/<key>`` unless that object
    already has the same sha256. ``bucket`` None means the default bucket.

    Returns where it is. An explicitly named bucket must exist: a missing one
    is an error, not created, so that a typo does not make a new bucket.
    """
    sha256, size, bucket = _checked(aws, archive, bucket)
    key = object_key(prefix, archive, sha256)
    url = f"s3://{bucket}/{key}"
    s3 = aws.client("s3")
    head = _head(aws, s3, bucket, key)
    if head is not None and _same(head, sha256, size):
        aws.say(f"already uploaded: {url} (same sha256)")
        return Uploaded(url, sha256, size, skipped=True)
    aws.say(f"uploading {size / 1e6:.2f} MB to {url}")
    s3.upload_file(str(archive), bucket, key, ExtraArgs={
        "Metadata": {SHA256_METADATA_KEY: sha256},
        "ContentType": "application/gzip",
    })
    if not aws.dry_run:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head.get("Metadata", {}).get(SHA256_METADATA_KEY) != sha256 or head.get("ContentLength") != size:
            raise DeployError(f"{url}: the stored object does not match what was sent")
    aws.say(f"uploaded {url} sha256={sha256}")
    return Uploaded(url, sha256, size, skipped=False)


def bucket_exists(s3, bucket: str) -> bool:
    """HeadObject answers a bare 404 both for a missing key and a missing bucket;
    HeadBucket tells them apart."""
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise


# A multi-model endpoint's TargetModel is a key under its prefix: keep it a plain file name.
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}")


def multi_model_key(prefix: str, name: str) -> str:
    """``<prefix>/<name>.tar.gz``: what ``invoke --target-model <name>.tar.gz`` names on an
    endpoint deployed with ``--model-data-prefix s3://<bucket>/<prefix>/``."""
    name = name.removesuffix(".tar.gz")
    if not _TARGET_NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"--multi-model {name!r}: use letters, digits, '_', '-' and '.' (a file name, no '/')")
    return "/".join(part for part in (prefix.strip("/"), f"{name}.tar.gz") if part)


def upload_multi_model(aws: Aws, archive: Path, bucket: str | None, prefix: str, name: str) -> Uploaded:
    """Check ``archive`` and put it at ``s3://bucket/<prefix>/<name>.tar.gz`` for a multi-model
    endpoint. The same archive again is skipped; a different one under a name already used is
    refused: SageMaker keeps serving the copy it has cached for a TargetModel, so a new model
    needs a new name."""
    key = multi_model_key(prefix, name)
    sha256, size, bucket = _checked(aws, archive, bucket)
    url = f"s3://{bucket}/{key}"
    s3 = aws.client("s3")
    head = _head(aws, s3, bucket, key)
    if head is not None:
        if _same(head, sha256, size):
            aws.say(f"already uploaded: {url} (same sha256)")
            return Uploaded(url, sha256, size, skipped=True)
        raise DeployError(f"{url} already holds another model: endpoints may have it cached under this "
                          f"TargetModel; upload the new one under a new name")
    aws.say(f"uploading {size / 1e6:.2f} MB to {url}")
    s3.upload_file(str(archive), bucket, key, ExtraArgs={
        "Metadata": {SHA256_METADATA_KEY: sha256}, "ContentType": "application/gzip"})
    aws.say(f"uploaded {url} sha256={sha256}; invoke it with --target-model {key.rpartition('/')[2]} on an "
            f"endpoint deployed with --multi-model --model-data-prefix {url.rpartition('/')[0]}/")
    return Uploaded(url, sha256, size, skipped=False)
