"""`xgb-deploy invoke` through the local sagemaker-runtime API."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.invoke import MAX_BODY_BYTES, read_payload
from deploy.settings import UsageError


def test_invoke_prints_the_answer_and_the_round_trip(aws, cli, deployed):
    deployed()
    # moto answers InvokeEndpoint from a queue of results set through its API.
    aws.control("/moto-api/static/sagemaker/endpoint-results", {"results": [
        {"Body": "0.8125\n", "ContentType": "text/csv", "InvokedProductionVariant": "AllTraffic"}]})
    status, out, err = cli("invoke", "--endpoint-name", "bid-filter", "--body", "2,0,0.0,7.0,3.0,20.0,2",
                           "--repeat", "3")
    assert status == 0, err
    assert out == "0.8125\n"
    assert "answer from variant AllTraffic (text/csv)" in err
    assert "round trip over 3 calls: first" in err and "median" in err
    assert aws.calls().count("InvokeEndpoint") == 3


def test_invoke_of_a_missing_endpoint_is_a_clear_error(aws, cli):
    status, out, err = cli("invoke", "--endpoint-name", "nowhere", "--body", "1,2,3")
    assert status == 1 and out == ""
    assert "Endpoint nowhere of account 123456789012 not found" in err


def test_invoke_before_in_service_is_refused(aws, cli, model_data, role_arn):
    aws.control("/_local/settings", {"polls": 10_000})
    assert cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", "img", "--model-data", model_data,
               "--role-arn", role_arn, "--instance-type", "ml.c5.large", "--no-wait")[0] == 0
    status, _, err = cli("invoke", "--endpoint-name", "bid-filter", "--body", "1,2,3")
    assert status == 1 and "not in service (status Creating)" in err


def test_payload_rows_come_from_the_sample_file(sample_model_dir):
    sample = sample_model_dir("rtb-small") / "sample.csv"
    lines = sample.read_bytes().splitlines(keepends=True)
    assert read_payload(None, sample, 1) == lines[0]
    assert read_payload(None, sample, 3) == b"".join(lines[:3])


def test_payload_errors_are_usage_errors(tmp_path: Path, cli, aws):
    with pytest.raises(UsageError, match="exactly one"):
        read_payload(None, None, 1)
    with pytest.raises(UsageError, match="exactly one"):
        read_payload("1,2", tmp_path / "x.csv", 1)
    big = tmp_path / "big.csv"
    big.write_bytes(b"1,2,3,4,5,6,7\n" * (MAX_BODY_BYTES // 14 + 10))
    with pytest.raises(UsageError, match="at most 6291456"):
        read_payload(None, big, 10**7)
    status, _, err = cli("invoke", "--endpoint-name", "e", "--payload", tmp_path / "none.csv")
    assert status == 2 and "No such file" in err
    assert aws.calls() == []
