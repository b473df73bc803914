"""`xgb-deploy loadtest` against the locally hosted endpoint (real `serve` behind the
local API): its counts are the requests the local API really forwarded, its
CloudWatch figures the metrics the local endpoint published for them, and its
autoscaling target is what `autoscale --target FILE` sets."""
from __future__ import annotations

import json

import pytest

from tests.deploy.test_hosting import SERVE


@pytest.fixture
def endpoint(aws, cli, compiled_archive, role_arn):
    """bid-filter running the compiled sample model in a real container."""
    aws.control("/_local/settings", {"container_command": [SERVE, "serve"], "health_timeout": 60})
    model_data = cli("upload", compiled_archive)[1].strip()
    status, _, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", "img", "--model-data",
                         model_data, "--role-arn", role_arn, "--instance-type", "ml.c5.large",
                         "--instance-count", "2", "--workers", "1")
    assert status == 0, err
    yield "bid-filter"
    aws.control("/moto-api/reset", {})


def _loadtest(cli, payload, *extra):
    return cli("loadtest", "--endpoint-name", "bid-filter", "--payload", payload, "--duration", "1",
               "--concurrency", "4", "--metrics-wait", "0", "--latency-budget-ms", "5000", *extra)


def test_both_ways_measured_from_real_requests_feed_autoscale(aws, cli, endpoint, sample_model_dir, tmp_path):
    sample = sample_model_dir("rtb-small") / "sample.csv"
    out_file = tmp_path / "loadtest.json"
    status, out, err = _loadtest(cli, sample, "--ways", "both", "--batch-rows", "8", "--out", out_file)
    assert status == 0, err
    data = json.loads(out_file.read_text())
    single, batched = data["results"]
    assert single["way"] == "one row per request" and batched["way"] == "micro-batched"
    # Every invocation counted is one the local API forwarded to the container.
    assert aws.calls().count("InvokeEndpoint") == single["invocations"] + batched["invocations"]
    assert single["answered"] == single["invocations"] > 0 and single["errors"] == {}
    assert batched["answered"] > batched["invocations"] > 0          # several rows per request
    for result in (single, batched):
        assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
        assert 0 < result["cloudwatch_ms"]["ModelLatency"]["p50"] <= result["cloudwatch_ms"]["ModelLatency"]["p99"]
        assert "OverheadLatency" in result["cloudwatch_ms"]
        assert result["usd_per_million"] > 0
    # CloudWatch counted exactly those invocations.
    dims = [{"Name": "EndpointName", "Value": "bid-filter"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    points = aws.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="Invocations", Dimensions=dims, Statistics=["Sum"],
        StartTime=now - dt.timedelta(minutes=10), EndTime=now + dt.timedelta(minutes=1), Period=3600)["Datapoints"]
    assert sum(p["Sum"] for p in points) == single["invocations"] + batched["invocations"]
    # The target: invocations per instance per minute at the measured rate, times the safety factor.
    expected = int(single["invocations_per_s"] * 60 / 2 * 0.5)
    assert data["autoscaling"] == {"invocations_per_instance_per_minute": expected, "from": "one row per request"}
    assert f"autoscaling target: {expected} invocations per instance per minute" in out
    status, _, err = cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2", "--max-instances", "4",
                         "--target", out_file)
    assert status == 0, err
    policy = aws.client("application-autoscaling").describe_scaling_policies(ServiceNamespace="sagemaker")
    assert policy["ScalingPolicies"][0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == expected


def test_a_missed_budget_writes_no_target(cli, endpoint, sample_model_dir, tmp_path):
    out_file = tmp_path / "loadtest.json"
    status, out, err = _loadtest(cli, sample_model_dir("rtb-small") / "sample.csv", "--latency-budget-ms", "0.001",
                                 "--rate", "50", "--out", out_file)
    assert status == 1
    assert "MISSED" in out and "no way of calling held the p99 budget" in err
    assert "autoscaling" not in json.loads(out_file.read_text())


def test_throttling_and_model_errors_are_counted_by_kind(aws, cli, endpoint, tmp_path):
    aws.control("/_local/faults", {"operation": "InvokeEndpoint", "code": "ThrottlingException",
                                   "message": "Rate exceeded", "times": 3})
    good = tmp_path / "rows.csv"
    good.write_text("2,0,0.0,7.0,3.0,20.0,2\n")
    status, out, err = _loadtest(cli, good, "--rate", "40")
    assert "ThrottlingException 3" in out and status == 1          # 3 errors in ~40 calls: over 0.1 %
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("1,2,3\n")
    status, out, err = _loadtest(cli, wrong, "--rate", "20")
    assert status == 1 and "ModelError" in out


def test_loadtest_dry_run_validates_the_call_and_sends_nothing(aws, cli, sample_model_dir):
    status, out, err = _loadtest(cli, sample_model_dir("rtb-small") / "sample.csv", "--dry-run")
    assert status == 0, err
    assert "[dry-run] sagemaker-runtime InvokeEndpoint" in out
    assert aws.calls() == []


def test_loadtest_of_an_endpoint_that_is_not_there(aws, cli, sample_model_dir):
    status, out, err = _loadtest(cli, sample_model_dir("rtb-small") / "sample.csv")
    assert status == 1 and "Could not find endpoint" in err
