"""`xgb-deploy teardown` against the local API."""
from __future__ import annotations

from tests.deploy.conftest import ACCOUNT, REGION


def test_teardown_deletes_everything_of_the_endpoint_and_says_so(aws, cli, deployed):
    first = deployed()
    second = deployed()
    assert cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2", "--max-instances", "6",
               "--target", "500")[0] == 0
    status, out, err = cli("teardown", "--endpoint-name", "bid-filter")
    assert status == 0, err
    for thing in ("scaling policy bid-filter-AllTraffic-invocations-per-instance",
                  "scalable target endpoint/bid-filter/variant/AllTraffic", "endpoint bid-filter",
                  f"endpoint configuration {first}", f"endpoint configuration {second}",
                  f"model {first}", f"model {second}"):
        assert thing in err
    assert "bid-filter: Deleting" in err and "bid-filter: deleted" in err
    sm = aws.client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    scaling = aws.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
    # The model data stays in S3, and where it is is said.
    bucket = f"sagemaker-{REGION}-{ACCOUNT}"
    assert aws.client("s3").list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    assert f"kept the model data s3://{bucket}/" in err


def test_teardown_leaves_other_endpoints_alone(aws, cli, deployed):
    deployed("bid")
    other = deployed("bid-filter")
    assert cli("teardown", "--endpoint-name", "bid")[0] == 0
    sm = aws.client("sagemaker")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["bid-filter"]
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == [other]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [other]


def test_teardown_of_a_failed_endpoint(aws, cli, model_data, role_arn):
    aws.control("/_local/endpoint-failure", {"endpoint": "broken", "reason": "image not found"})
    assert cli("endpoint", "--endpoint-name", "broken", "--image-uri", "img", "--model-data", model_data,
               "--role-arn", role_arn, "--instance-type", "ml.c5.large")[0] == 1
    status, _, err = cli("teardown", "--endpoint-name", "broken")
    assert status == 0, err
    assert "endpoint broken" in err
    assert aws.client("sagemaker").list_models()["Models"] == []


def test_teardown_with_nothing_there(aws, cli):
    status, out, err = cli("teardown", "--endpoint-name", "bid-filter")
    assert status == 0
    assert "nothing found for endpoint bid-filter" in err
