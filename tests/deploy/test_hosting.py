"""The whole way, with the real server: a compiled model uploaded to S3, deployed,
run by the local SageMaker hosting (the `serve` console script as the container,
the model extracted from S3, the model's environment passed on) and invoked
through sagemaker-runtime."""
from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model_core.artifact import safe_extract
from model_compile.pipeline import read_rows_csv
from model_core.runtime import CompiledModel

# The `serve` console script, in its own process: importing serve.cli here would
# set OMP_NUM_THREADS=1 in the test process for every later test.
SERVE = str(Path(sys.executable).parent / "serve")


@pytest.fixture
def hosting(aws):
    """The local API running real containers: `serve serve`, as SageMaker runs the image."""
    aws.control("/_local/settings", {"container_command": [SERVE, "serve"], "health_timeout": 60})
    yield aws
    aws.control("/moto-api/reset", {})        # stops the containers


def _deploy(cli, model_data, role_arn, *extra):
    return cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", "img", "--model-data", model_data,
               "--role-arn", role_arn, "--instance-type", "ml.c5.large", "--workers", "1", *extra)


def test_the_deployed_model_answers_as_the_compiled_library_does(hosting, cli, compiled_archive, role_arn,
                                                                  sample_model_dir, tmp_path):
    status, out, err = cli("upload", compiled_archive)
    assert status == 0, err
    status, _, err = _deploy(cli, out.strip(), role_arn)
    assert status == 0, err
    sample = sample_model_dir("rtb-small") / "sample.csv"
    status, out, err = cli("invoke", "--endpoint-name", "bid-filter", "--payload", sample, "--rows", "5")
    assert status == 0, err
    answer = np.array([float(v) for v in out.replace("\n", ",").split(",") if v.strip()])
    safe_extract(compiled_archive, tmp_path / "artifact")
    expected = CompiledModel(tmp_path / "artifact" / "model.so").predict(read_rows_csv(sample, 7)[:5]).ravel()
    np.testing.assert_allclose(answer, expected, atol=1e-6)


def test_a_request_the_container_refuses_is_reported_with_its_status(hosting, cli, compiled_archive, role_arn):
    status, out, err = cli("upload", compiled_archive)
    assert _deploy(cli, out.strip(), role_arn)[0] == 0
    status, out, err = cli("invoke", "--endpoint-name", "bid-filter", "--body", "1,2,3")
    assert status == 1 and out == ""
    assert "the container answered 400" in err


def test_an_update_whose_container_fails_rolls_back_and_the_old_model_keeps_serving(
        hosting, cli, compiled_archive, role_arn, tmp_path):
    good = cli("upload", compiled_archive)[1].strip()
    first = _deploy(cli, good, role_arn)[1].strip()
    broken = tmp_path / "broken" / "model.tar.gz"
    broken.parent.mkdir()
    (tmp_path / "xgboost-model").write_bytes(b"not a model at all")
    with tarfile.open(broken, "w:gz") as tar:
        tar.add(tmp_path / "xgboost-model", arcname="xgboost-model")
    bad = cli("upload", broken)[1].strip()
    status, _, err = _deploy(cli, bad, role_arn)
    assert status == 1
    assert "did not pass the ping health check" in err and f"rolled it back to {first}" in err
    status, out, err = cli("invoke", "--endpoint-name", "bid-filter", "--body", "2,0,0.0,7.0,3.0,20.0,2")
    assert status == 0, err
    assert 0.0 < float(out) < 1.0
