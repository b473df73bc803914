"""`xgb-deploy endpoint` and `rollback` against the local SageMaker API."""
from __future__ import annotations

import io

import pytest
from botocore.exceptions import ParamValidationError

from deploy.aws import Aws
from tests.deploy.conftest import IMAGE_URI


def test_create_makes_model_config_and_endpoint_and_waits_for_in_service(aws, cli, model_data, role_arn):
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", model_data, "--role-arn", role_arn,
                           "--instance-type", "ml.c6i.xlarge", "--instance-count", "3",
                           "--workers", "4", "--outputs", "probability", "--env", "SAGEMAKER_CONTAINER_LOG_LEVEL=30",
                           "--startup-health-timeout", "120", "--model-download-timeout", "300")
    assert status == 0, err
    name = out.strip()
    assert name.startswith("bid-filter-2")
    # Progress: each status seen while waiting, with the time waited.
    assert "bid-filter: Creating" in err and "bid-filter: InService" in err
    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="bid-filter")
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == name
    variant = sm.describe_endpoint_config(EndpointConfigName=name)["ProductionVariants"][0]
    assert variant["ModelName"] == name
    assert (variant["InstanceType"], variant["InitialInstanceCount"], variant["VariantName"]) == \
        ("ml.c6i.xlarge", 3, "AllTraffic")
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 120
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 300
    model = sm.describe_model(ModelName=name)
    assert model["ExecutionRoleArn"] == role_arn
    container = model["PrimaryContainer"]
    assert (container["Image"], container["ModelDataUrl"]) == (IMAGE_URI, model_data)
    assert container["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "4",
                                        "SAGEMAKER_INFERENCE_OUTPUT": "probability",
                                        "SAGEMAKER_CONTAINER_LOG_LEVEL": "30"}


def test_update_uses_a_new_configuration_and_keeps_the_old_one(aws, deployed):
    first = deployed()
    second = deployed("bid-filter", "--workers", "2")
    assert second != first
    sm = aws.client("sagemaker")
    assert sm.describe_endpoint(EndpointName="bid-filter")["EndpointConfigName"] == second
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    models = {m["ModelName"] for m in sm.list_models()["Models"]}
    assert {first, second} <= configs and {first, second} <= models


def test_update_keeps_the_instance_count_autoscaling_set(aws, cli, deployed):
    deployed()
    assert cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2",
               "--max-instances", "10", "--target", "1000")[0] == 0
    sm = aws.client("sagemaker")
    # As autoscaling would: the fleet grew to 5 instances.
    sm.update_endpoint_weights_and_capacities(
        EndpointName="bid-filter", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 5}])
    deployed("bid-filter", "--instance-count", "2")      # new model, same instance type
    variant = sm.describe_endpoint(EndpointName="bid-filter")["ProductionVariants"][0]
    assert variant["DesiredInstanceCount"] == 5          # not back to the initial 2
    targets = aws.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")
    assert len(targets["ScalableTargets"]) == 1


def test_instance_type_change_deregisters_autoscaling_for_the_update_then_restores_it(aws, cli, deployed):
    deployed()
    assert cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2", "--max-instances", "8",
               "--target", "3000", "--scale-in-cooldown", "600")[0] == 0
    # The local API refuses the update while the variant is registered, as SageMaker does.
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", aws.client("sagemaker").describe_model(
                               ModelName=aws.client("sagemaker").list_models()["Models"][0]["ModelName"])
                           ["PrimaryContainer"]["ModelDataUrl"],
                           "--role-arn", "arn:aws:iam::123456789012:role/SageMakerExecution",
                           "--instance-type", "ml.c7i.2xlarge")
    assert status == 0, err
    assert "autoscaling is removed for the update" in err and "autoscaling put back" in err
    client = aws.client("application-autoscaling")
    target = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 8)
    policy = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert (config["TargetValue"], config["ScaleInCooldown"]) == (3000.0, 600)
    sm = aws.client("sagemaker")
    running = sm.describe_endpoint(EndpointName="bid-filter")["EndpointConfigName"]
    assert sm.describe_endpoint_config(EndpointConfigName=running)["ProductionVariants"][0]["InstanceType"] \
        == "ml.c7i.2xlarge"


def test_failed_create_prints_the_failure_reason_and_exits_non_zero(aws, cli, model_data, role_arn):
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    aws.control("/_local/endpoint-failure", {"endpoint": "bid-filter", "reason": reason})
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", model_data, "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    assert status == 1
    assert out == ""
    assert "bid-filter is Failed" in err and reason in err
    assert "/aws/sagemaker/Endpoints/bid-filter" in err      # where to look next
    # SageMaker allows only deleting a Failed endpoint: a new deploy says so.
    status, _, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                         "--model-data", model_data, "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    assert status == 1 and "run `teardown`" in err


def test_failed_update_is_reported_as_rolled_back(aws, cli, deployed):
    first = deployed()
    reason = "Model data download failed: access denied"
    aws.control("/_local/endpoint-failure", {"endpoint": "bid-filter", "reason": reason})
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", "s3://elsewhere/model.tar.gz",
                           "--role-arn", "arn:aws:iam::123456789012:role/SageMakerExecution",
                           "--instance-type", "ml.c5.xlarge")
    assert status == 1
    assert f"rolled it back to {first}" in err and reason in err
    assert aws.client("sagemaker").describe_endpoint(EndpointName="bid-filter")["EndpointConfigName"] == first


def test_failed_update_that_changed_the_instance_type_gets_its_autoscaling_back(aws, cli, deployed, model_data,
                                                                                 role_arn):
    deployed()
    assert cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2", "--max-instances", "8",
               "--target", "700")[0] == 0
    aws.control("/_local/endpoint-failure", {"endpoint": "bid-filter", "reason": "capacity not available"})
    status, _, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                         "--model-data", model_data, "--role-arn", role_arn, "--instance-type", "ml.c7i.xlarge")
    assert status == 1 and "rolled it back" in err
    client = aws.client("application-autoscaling")
    target = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in target] == [(2, 8)]
    policy = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 700.0


def test_wait_gives_up_after_the_timeout_and_says_what_to_do(aws, cli, model_data, role_arn):
    aws.control("/_local/settings", {"polls": 10_000})
    status, _, err = cli("endpoint", "--endpoint-name", "slow", "--image-uri", IMAGE_URI, "--model-data", model_data,
                         "--role-arn", role_arn, "--instance-type", "ml.c5.large", "--wait-timeout", "0.3")
    assert status == 1
    assert "still Creating after" in err and "teardown" in err


def test_no_wait_returns_once_requested(aws, cli, model_data, role_arn):
    aws.control("/_local/settings", {"polls": 10_000})
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", model_data, "--role-arn", role_arn, "--instance-type", "ml.c5.large",
                           "--no-wait")
    assert status == 0 and out.strip().startswith("bid-filter-")
    assert aws.client("sagemaker").describe_endpoint(EndpointName="bid-filter")["EndpointStatus"] == "Creating"


def test_missing_role_is_a_clear_error_and_leaves_nothing(aws, cli, model_data):
    status, out, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", model_data, "--role-arn", "arn:aws:iam::123456789012:role/Nope",
                           "--instance-type", "ml.c5.large")
    assert status == 1
    assert "Could not assume role" in err and "trust sagemaker.amazonaws.com" in err
    sm = aws.client("sagemaker")
    assert sm.list_models()["Models"] == [] and sm.list_endpoints()["Endpoints"] == []


def test_quota_error_is_explained_and_the_attempt_cleaned_up(aws, cli, model_data, role_arn):
    aws.control("/_local/faults", {"operation": "CreateEndpoint", "code": "ResourceLimitExceeded",
                                   "message": "The account-level service limit 'ml.c5.large for endpoint usage' "
                                              "is 0 Instances, with current utilization of 0 Instances"})
    status, _, err = cli("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                         "--model-data", model_data, "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    assert status == 1
    assert "ResourceLimitExceeded" in err and "Service Quotas" in err
    sm = aws.client("sagemaker")
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []


def test_throttling_is_retried_then_reported(aws, cli, model_data, role_arn, monkeypatch):
    args = ("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI, "--model-data", model_data,
            "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    # One throttled call: retried with backoff, and the deploy goes through.
    aws.control("/_local/faults", {"operation": "CreateModel", "code": "ThrottlingException",
                                   "message": "Rate exceeded", "times": 1})
    status, _, err = cli(*args, "--max-attempts", "3")
    assert status == 0, err
    assert aws.calls().count("CreateModel") == 2
    # Throttled on every attempt: a clear message, no traceback.
    aws.control("/_local/faults", {"operation": "DescribeEndpoint", "code": "ThrottlingException",
                                   "message": "Rate exceeded", "times": 2})
    status, _, err = cli(*args, "--max-attempts", "2")
    assert status == 1
    assert "AWS throttled DescribeEndpoint after 2 attempts" in err


def test_rollback_moves_back_to_the_previous_configuration(aws, cli, deployed):
    first = deployed()
    second = deployed()
    status, out, err = cli("rollback", "--endpoint-name", "bid-filter")
    assert status == 0, err
    assert out.strip() == first
    sm = aws.client("sagemaker")
    assert sm.describe_endpoint(EndpointName="bid-filter")["EndpointConfigName"] == first
    # Forward again by name.
    assert cli("rollback", "--endpoint-name", "bid-filter", "--to", second)[0] == 0
    assert sm.describe_endpoint(EndpointName="bid-filter")["EndpointConfigName"] == second


def test_rollback_with_nothing_older_says_so(aws, cli, deployed):
    only = deployed()
    status, _, err = cli("rollback", "--endpoint-name", "bid-filter")
    assert status == 1 and f"no configuration older than {only}" in err
    status, _, err = cli("rollback", "--endpoint-name", "nothing-here")
    assert status == 1 and "does not exist" in err


def test_dry_run_prints_every_call_and_sends_none(aws, cli, model_data, role_arn):
    status, out, err = cli("endpoint", "--dry-run", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI,
                           "--model-data", model_data, "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    assert status == 0, err
    lines = [line for line in out.splitlines() if line.startswith("[dry-run]")]
    operations = [line.split()[2] for line in lines]
    assert operations == ["DescribeEndpoint", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    create_model = next(line for line in lines if " CreateModel " in line)
    assert f'"ExecutionRoleArn": "{role_arn}"' in create_model and IMAGE_URI in create_model
    assert "# would wait for bid-filter to be InService" in out
    assert "created" not in err                           # nothing claims to have happened
    assert aws.calls() == []
    assert aws.client("sagemaker").list_models()["Models"] == []


def test_dry_run_needs_no_server_and_no_credentials(aws, cli, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")       # nothing listens there
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    status, out, err = cli("teardown", "--dry-run", "--endpoint-name", "bid-filter")
    assert status == 0, err
    assert "[dry-run] sagemaker DeleteEndpoint {\"EndpointName\": \"bid-filter\"}" in out


def test_dry_run_still_validates_parameters(aws):
    """The dry-run client answers locally, but only after botocore checked the call."""
    dry = Aws(region="us-east-1", dry_run=True, out=io.StringIO())
    with pytest.raises(ParamValidationError):
        dry.client("sagemaker").create_model(ModelName="m", ExecutionRoleArn="r", PrimaryContainer="not a dict")
    assert aws.calls() == []


def test_vpc_flags_put_a_vpc_config_on_the_model(aws, cli, model_data, role_arn):
    base = ("endpoint", "--endpoint-name", "bid-filter", "--image-uri", IMAGE_URI, "--model-data", model_data,
            "--role-arn", role_arn, "--instance-type", "ml.c5.large")
    status, out, err = cli(*base, "--subnets", "subnet-0a", "--subnets", "subnet-0b", "--security-groups", "sg-01",
                           "--no-network-isolation")
    assert status == 0, err
    model = aws.client("sagemaker").describe_model(ModelName=out.strip())
    assert model["VpcConfig"] == {"Subnets": ["subnet-0a", "subnet-0b"], "SecurityGroupIds": ["sg-01"]}
    assert model["EnableNetworkIsolation"] is False
    status, _, err = cli(*base, "--subnets", "subnet-0a")
    assert status == 2 and "both --subnets and --security-groups" in err
