"""`xgb-deploy register` and `endpoint --model-package` against the local API: the
version's fields as SageMaker stores them, the sample payload in S3, the
approval gate, and a registered version deployed and answering for real."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from deploy import registry
from deploy.upload import artifact_manifest
from tests.deploy.conftest import IMAGE_URI
from tests.deploy.test_hosting import SERVE


def _register(cli, archive, sample, *extra):
    return cli("register", archive, "--model-package-group", "bid-filter", "--image-uri", IMAGE_URI,
               "--sample-payload", sample, "--sample-rows", "5", *extra)


@pytest.fixture
def sample_csv(sample_model_dir):
    return sample_model_dir("rtb-small") / "sample.csv"


def test_register_creates_the_group_and_a_version_that_says_what_the_model_is(aws, cli, compiled_archive,
                                                                               sample_csv):
    status, out, err = _register(cli, compiled_archive, sample_csv)
    assert status == 0, err
    arn = out.strip()
    assert "created model package group bid-filter" in err
    sm = aws.client("sagemaker")
    desc = sm.describe_model_package(ModelPackageName=arn)
    assert desc["ModelPackageGroupName"] == "bid-filter" and desc["ModelPackageVersion"] == 1
    assert desc["ModelApprovalStatus"] == "PendingManualApproval"
    assert desc["Domain"] == "MACHINE_LEARNING" and desc["Task"] == "CLASSIFICATION"
    spec = desc["InferenceSpecification"]
    container = spec["Containers"][0]
    manifest = artifact_manifest(compiled_archive)
    assert container["Image"] == IMAGE_URI and container["Framework"] == "XGBOOST"
    assert container["FrameworkVersion"] == manifest.versions["xgboost"]
    assert "text/csv" in spec["SupportedContentTypes"] and "ml.c6i.xlarge" in spec["SupportedRealtimeInferenceInstanceTypes"]
    # The model data went up as `upload` puts it; the sample payload beside it holds the first rows.
    bucket, _, key = container["ModelDataUrl"].removeprefix("s3://").partition("/")
    head = aws.client("s3").head_object(Bucket=bucket, Key=key)
    assert head["Metadata"]["sha256"] == desc["CustomerMetadataProperties"]["sha256"]
    pbucket, _, pkey = desc["SamplePayloadUrl"].removeprefix("s3://").partition("/")
    assert pkey.rpartition("/")[0] == key.rpartition("/")[0]
    with tarfile.open(fileobj=io.BytesIO(aws.client("s3").get_object(Bucket=pbucket, Key=pkey)["Body"].read())) as tar:
        rows = tar.extractfile("sample.csv").read().splitlines()
    assert rows == [line for line in sample_csv.read_bytes().splitlines() if line.strip()][:5]

    # A second registration is version 2 in the same group, and can be approved at once.
    status, out, err = _register(cli, compiled_archive, sample_csv, "--approve")
    assert status == 0, err
    assert "created model package group" not in err
    desc = sm.describe_model_package(ModelPackageName=out.strip())
    assert desc["ModelPackageVersion"] == 2 and desc["ModelApprovalStatus"] == "Approved"


def test_task_follows_the_objective():
    assert registry.task_of("binary:logistic") == "CLASSIFICATION"
    assert registry.task_of("multi:softprob") == "CLASSIFICATION"
    assert registry.task_of("reg:squarederror") == "REGRESSION"
    assert registry.task_of("rank:pairwise") == "OTHER"


def test_the_registry_lists_exactly_what_the_server_accepts():
    from serve import codecs

    assert set(registry.SUPPORTED_CONTENT_TYPES) == set(codecs.DECODERS)
    assert set(registry.SUPPORTED_RESPONSE_TYPES) == set(codecs.ENCODERS)


def test_a_bare_model_is_refused_before_anything_is_uploaded(aws, cli, sample_archive, sample_csv):
    status, out, err = _register(cli, sample_archive, sample_csv)
    assert status == 1 and out == ""
    assert "not compiled by model-compile" in err
    assert "PutObject" not in " ".join(aws.calls()) and "CreateModelPackage" not in aws.calls()


def test_register_dry_run_is_validated_and_sends_nothing(aws, cli, compiled_archive, sample_csv):
    status, out, err = _register(cli, compiled_archive, sample_csv, "--dry-run")
    assert status == 0, err
    assert "[dry-run] sagemaker CreateModelPackageGroup" in out
    line = next(l for l in out.splitlines() if "CreateModelPackage {" in l)
    sent = json.loads(line.split(" ", 3)[3])
    assert sent["Task"] == "CLASSIFICATION" and sent["ModelApprovalStatus"] == "PendingManualApproval"
    assert aws.calls() == []


def test_missing_permissions_to_register_end_in_one_clear_message(aws, cli, compiled_archive, sample_csv):
    aws.control("/_local/faults", {"operation": "CreateModelPackage", "code": "AccessDeniedException",
                                   "message": "User is not authorized to perform: sagemaker:CreateModelPackage"})
    status, out, err = _register(cli, compiled_archive, sample_csv)
    assert status == 1 and out == ""
    assert "not authorized to perform: sagemaker:CreateModelPackage" in err
    assert "check the IAM policy" in err


def test_a_rejected_or_pending_version_is_not_deployed(aws, cli, compiled_archive, sample_csv, role_arn):
    arn = _register(cli, compiled_archive, sample_csv)[1].strip()
    deploy = ("endpoint", "--endpoint-name", "bid-filter", "--model-package", arn, "--role-arn", role_arn)
    status, out, err = cli(*deploy)
    assert status == 1 and "is PendingManualApproval: approve it first" in err
    aws.client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected",
                                                 ApprovalDescription="AUC below the bar")
    status, out, err = cli(*deploy)
    assert status == 1 and "was Rejected (AUC below the bar)" in err
    assert "CreateModel" not in aws.calls()
    status, _, err = cli("endpoint", "--endpoint-name", "bid-filter", "--model-package", arn, "--role-arn",
                         role_arn, "--image-uri", IMAGE_URI)
    assert status == 2 and "not both" in err


def test_an_approved_version_deploys_and_answers(aws, cli, compiled_archive, sample_csv, role_arn):
    aws.control("/_local/settings", {"container_command": [SERVE, "serve"], "health_timeout": 60})
    try:
        arn = _register(cli, compiled_archive, sample_csv, "--approve")[1].strip()
        status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--model-package", arn,
                               "--role-arn", role_arn, "--instance-type", "ml.c5.large", "--workers", "1")
        assert status == 0, err
        model = aws.client("sagemaker").describe_model(ModelName=out.strip())
        assert model["PrimaryContainer"]["ModelPackageName"] == arn
        status, out, err = cli("invoke", "--endpoint-name", "bid-filter", "--body", "2,0,0.0,7.0,3.0,20.0,2")
        assert status == 0, err
        assert 0.0 < float(out) < 1.0
    finally:
        aws.control("/moto-api/reset", {})
