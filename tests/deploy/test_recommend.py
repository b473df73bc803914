"""`xgb-deploy recommend` against the local Inference Recommender, whose figures
come from really hosting the registered version and sending it its sample
payload; beside it the benchmark's capacity plan for the same instance types."""
from __future__ import annotations

import json

import pytest

from bench.capacity import load_prices, plan_fleet
from tests.deploy.conftest import IMAGE_URI
from tests.deploy.test_hosting import SERVE


@pytest.fixture
def package(aws, cli, compiled_archive, sample_model_dir):
    aws.control("/_local/settings", {"container_command": [SERVE, "serve"], "health_timeout": 60})
    status, out, err = cli("register", compiled_archive, "--model-package-group", "bid-filter", "--image-uri",
                           IMAGE_URI, "--sample-payload", sample_model_dir("rtb-small") / "sample.csv", "--approve")
    assert status == 0, err
    yield out.strip()
    aws.control("/moto-api/reset", {})


def test_an_advanced_job_recommends_from_real_requests_beside_the_bench_plan(aws, cli, package, role_arn, tmp_path):
    out_file = tmp_path / "recommend.json"
    status, out, err = cli("recommend", "--model-package", package, "--role-arn", role_arn, "--advanced",
                           "--instance-types", "ml.c6i.large", "--instance-types", "ml.c5.xlarge",
                           "--phases", "2:1:60", "--max-invocations", "120", "--rps-per-vcpu", "1000",
                           "--out", out_file)
    assert status == 0, err
    assert "IN_PROGRESS" in err and "COMPLETED" in err and "] bid-filter-" in err      # status every poll
    data = json.loads(out_file.read_text())
    found = {r["instance_type"]: r for r in data["recommendations"]}
    assert set(found) == {"ml.c6i.large", "ml.c5.xlarge"}
    prices = {i.name: i.usd_per_hour for i in load_prices().instances}
    for name, rec in found.items():
        assert rec["max_invocations_per_minute"] > 0 and rec["model_latency_ms"] >= 0
        assert rec["cost_per_hour"] == prices[name]
        assert rec["cost_per_inference"] == pytest.approx(prices[name] / (rec["max_invocations_per_minute"] * 60),
                                                          rel=0.01)
    # The job's 120 invocations per type were really sent to a container, not through InvokeEndpoint.
    assert "InvokeEndpoint" not in aws.calls()
    expected = {p.instance: p.rps_per_instance for p in plan_fleet(1000, load_prices())}
    assert {k: v["rps_per_instance"] for k, v in data["bench"].items()} == \
        {k: expected[k] for k in ("ml.c6i.large", "ml.c5.xlarge")}
    assert "| bench:" in out and "ml.c5.xlarge" in out
    sent = aws.client("sagemaker").describe_inference_recommendations_job(JobName=data["job"])
    assert sent["StoppingConditions"]["ModelLatencyThresholds"] == [{"Percentile": "P99", "ValueInMilliseconds": 20}]
    assert sent["InputConfig"]["TrafficPattern"]["Phases"] == [
        {"InitialNumberOfUsers": 2, "SpawnRate": 1, "DurationInSeconds": 60}]


def test_a_default_job_and_instant_recommendations(aws, cli, package, role_arn):
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--model-package", package,
                           "--role-arn", role_arn, "--instance-type", "ml.c5.large", "--workers", "1")
    assert status == 0, err
    model = out.strip()
    status, out, err = cli("recommend", "--model-package", package, "--role-arn", role_arn, "--model-name", model)
    assert status == 0, err
    lines = [l for l in out.splitlines() if l.startswith("ml.")]
    assert [l.split()[0] for l in lines] == ["ml.c6i.large", "ml.c6i.xlarge"]    # the package's first two
    assert f"instant recommendations of model {model}: ml.c6i.large, ml.c6i.xlarge, ml.c6i.2xlarge" in out


def test_a_job_that_fails_reports_its_reason(aws, cli, package, role_arn):
    aws.control("/_local/settings", {"container_command": [SERVE, "no-such-command"], "health_timeout": 5})
    status, out, err = cli("recommend", "--model-package", package, "--role-arn", role_arn, "--advanced",
                           "--instance-types", "ml.c6i.large")
    assert status == 1 and out == ""
    assert "FAILED" in err and "did not pass the ping health check" in err


def test_recommend_usage_errors_and_dry_run(aws, cli, package, role_arn):
    status, _, err = cli("recommend", "--model-package", package, "--role-arn", role_arn, "--advanced")
    assert status == 2 and "needs --instance-types" in err
    status, _, err = cli("recommend", "--model-package", package, "--role-arn", role_arn, "--phases", "1:x:3")
    assert status == 2 and "USERS:SPAWN_RATE:SECONDS" in err
    before = len(aws.calls())
    status, out, err = cli("recommend", "--model-package", package, "--role-arn", role_arn, "--dry-run")
    assert status == 0, err
    assert "[dry-run] sagemaker CreateInferenceRecommendationsJob" in out and len(aws.calls()) == before
    aws.control("/_local/faults", {"operation": "CreateInferenceRecommendationsJob", "code": "ThrottlingException",
                                   "message": "Rate exceeded", "times": 5})
    status, _, err = cli("recommend", "--model-package", package, "--role-arn", role_arn)
    assert status == 1 and "AWS throttled CreateInferenceRecommendationsJob after 2 attempts" in err
