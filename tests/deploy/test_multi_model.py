"""Multi-model endpoints the whole way: `upload --multi-model NAME` under a prefix,
`endpoint --multi-model --model-data-prefix` (Mode=MultiModel), and `invoke --target-model`
answered by the real server, which the local SageMaker hosting loads models into on demand."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from model_compile.pipeline import read_rows_csv
from model_core.artifact import safe_extract
from model_core.runtime import CompiledModel

SERVE = str(Path(sys.executable).parent / "serve")
PREFIX_ARGS = ("--prefix", "bid-filters")


@pytest.fixture
def hosting(aws):
    aws.control("/_local/settings", {"container_command": [SERVE, "serve"], "health_timeout": 60})
    yield aws
    aws.control("/moto-api/reset", {})


def test_upload_endpoint_invoke_with_target_models(hosting, cli, compiled_archive, sample_archive, role_arn,
                                                   sample_model_dir, tmp_path):
    status, out, err = cli("upload", compiled_archive, "--multi-model", "exchange-a", *PREFIX_ARGS)
    assert status == 0, err
    url = out.strip()
    assert url.endswith("/bid-filters/exchange-a.tar.gz") and "--target-model exchange-a.tar.gz" in err
    prefix = url.rpartition("/")[0] + "/"
    assert cli("upload", sample_archive, "--multi-model", "exchange-b.tar.gz", *PREFIX_ARGS)[0] == 0
    again = cli("upload", compiled_archive, "--multi-model", "exchange-a", *PREFIX_ARGS)
    assert again[0] == 0 and "already uploaded" in again[2]
    clash = cli("upload", sample_archive, "--multi-model", "exchange-a", *PREFIX_ARGS)
    assert clash[0] == 1 and "already holds another model" in clash[2]

    status, out, err = cli("endpoint", "--endpoint-name", "bid-filters", "--image-uri", "img",
                           "--multi-model", "--model-data-prefix", prefix, "--role-arn", role_arn,
                           "--instance-type", "ml.c5.large", "--workers", "2")
    assert status == 0, err
    model = hosting.client("sagemaker").describe_model(ModelName=out.strip())
    assert model["PrimaryContainer"]["Mode"] == "MultiModel"
    assert model["PrimaryContainer"]["ModelDataUrl"] == prefix

    sample = sample_model_dir("rtb-small") / "sample.csv"
    safe_extract(compiled_archive, tmp_path / "artifact")
    expected = CompiledModel(tmp_path / "artifact" / "model.so").predict(read_rows_csv(sample, 7)[:3]).ravel()
    for target in ("exchange-a.tar.gz", "exchange-b.tar.gz", "exchange-a.tar.gz"):
        status, out, err = cli("invoke", "--endpoint-name", "bid-filters", "--payload", sample, "--rows", "3",
                               "--target-model", target)
        assert status == 0, err
        answer = np.array([float(v) for v in out.replace("\n", ",").split(",") if v.strip()])
        np.testing.assert_allclose(answer, expected, atol=1e-6)

    status, _, err = cli("invoke", "--endpoint-name", "bid-filters", "--body", "1,2,3,4,5,6,7",
                         "--target-model", "nobody.tar.gz")
    assert status == 1 and "Failed to download model data" in err
    status, _, err = cli("invoke", "--endpoint-name", "bid-filters", "--body", "1,2,3,4,5,6,7")
    assert status == 1 and "TargetModel is required" in err


def test_multi_model_usage_errors(aws, cli, compiled_archive, role_arn):
    status, _, err = cli("endpoint", "--endpoint-name", "e", "--image-uri", "img", "--multi-model",
                         "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    assert status == 2 and "--model-data-prefix" in err
    status, _, err = cli("endpoint", "--endpoint-name", "e", "--image-uri", "img", "--multi-model",
                         "--model-data-prefix", "bucket/x/", "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    assert status == 2 and "must be an s3://" in err
    status, _, err = cli("upload", compiled_archive, "--multi-model", "../up")
    assert status == 2 and "a file name" in err
    assert "CreateModel" not in aws.calls() and "PutObject" not in aws.calls()
