"""`xgb-deploy autoscale` against the local Application Auto Scaling API."""
from __future__ import annotations

import json

import pytest

from deploy.autoscaling import DEFAULT_CAPACITY_KEY, resolve_target
from deploy.settings import UsageError


def _scaling(aws):
    client = aws.client("application-autoscaling")
    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return targets, policies


def test_registers_the_variant_and_a_target_tracking_policy(aws, cli, deployed):
    deployed()
    status, out, err = cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2",
                           "--max-instances", "40", "--target", "45000",
                           "--scale-in-cooldown", "600", "--scale-out-cooldown", "30")
    assert status == 0, err
    targets, policies = _scaling(aws)
    assert [(t["ResourceId"], t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == \
        [("endpoint/bid-filter/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", 2, 40)]
    assert len(policies) == 1 and policies[0]["PolicyType"] == "TargetTrackingScaling"
    assert out.strip() == policies[0]["PolicyARN"]
    config = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 45000.0
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert (config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (600, 30)
    # What was set is printed.
    assert "2 to 40" in err and "45000" in err and "scale out 30 s, scale in 600 s" in err


def test_running_again_updates_instead_of_duplicating(aws, cli, deployed):
    deployed()
    for target in ("1000", "2500"):
        assert cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "1",
                   "--max-instances", "4", "--target", target)[0] == 0
    targets, policies = _scaling(aws)
    assert len(targets) == 1 and len(policies) == 1
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 2500.0


def test_target_is_read_from_the_capacity_plan(aws, cli, deployed, tmp_path):
    deployed()
    plan = tmp_path / "capacity.json"
    plan.write_text(json.dumps({"instance_type": "ml.c6i.xlarge",
                                "autoscaling": {"invocations_per_instance_per_minute": 61234.5}}))
    status, _, err = cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2",
                         "--max-instances", "10", "--target", plan)
    assert status == 0, err
    assert f"({plan} [{DEFAULT_CAPACITY_KEY}])" in err
    _, policies = _scaling(aws)
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 61234.5


def test_capacity_plan_errors_are_usage_errors(aws, cli, deployed, tmp_path):
    deployed()
    plan = tmp_path / "capacity.json"
    plan.write_text(json.dumps({"autoscaling": {"target": 5}, "instances": 3}))
    base = ("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "1", "--max-instances", "2")
    status, _, err = cli(*base, "--target", plan)
    assert status == 2
    assert "no key 'autoscaling.invocations_per_instance_per_minute' (found: target)" in err
    status, _, err = cli(*base, "--target", plan, "--capacity-key", "autoscaling.target")
    assert status == 0, err
    status, _, err = cli(*base, "--target", tmp_path / "missing.json")
    assert status == 2 and "neither a number nor an existing capacity-plan file" in err
    assert _scaling(aws)[1][0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 5.0


@pytest.mark.parametrize("plan, message", [
    ({"autoscaling": {"invocations_per_instance_per_minute": "fast"}}, "not a positive number"),
    ({"autoscaling": {"invocations_per_instance_per_minute": 0}}, "not a positive number"),
    ({"autoscaling": 7}, "no key"),
])
def test_resolve_target_refuses_what_is_not_a_positive_number(tmp_path, plan, message):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(UsageError, match=message):
        resolve_target(str(path))
    with pytest.raises(UsageError, match="positive"):
        resolve_target("-3")
    assert resolve_target("120") == (120.0, "given")


def test_refuses_a_missing_endpoint_a_missing_variant_and_min_above_max(aws, cli, deployed):
    status, _, err = cli("autoscale", "--endpoint-name", "nowhere", "--min-instances", "1", "--max-instances", "2",
                         "--target", "10")
    assert status == 1 and "endpoint nowhere does not exist" in err
    deployed()
    status, _, err = cli("autoscale", "--endpoint-name", "bid-filter", "--variant-name", "Blue",
                         "--min-instances", "1", "--max-instances", "2", "--target", "10")
    assert status == 1 and "has no variant Blue (it has: AllTraffic)" in err
    status, _, err = cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "5",
                         "--max-instances", "2", "--target", "10")
    assert status == 2 and "above --max-instances" in err
    assert _scaling(aws) == ([], [])


def test_target_is_taken_from_the_plan_of_the_endpoints_instance_type(aws, cli, deployed, tmp_path):
    """bench's capacity plan lists one plan per instance type: the endpoint's own is used."""
    deployed()                                            # runs on ml.c5.xlarge
    plan = tmp_path / "capacity.json"
    plans = [{"instance": "ml.c6i.xlarge", "vcpus": 4, "invocations_per_instance_per_minute": 120000},
             {"instance": "ml.c5.xlarge", "vcpus": 4, "invocations_per_instance_per_minute": 90000}]
    plan.write_text(json.dumps({"target_rps": 1000000, "plans": plans}))
    base = ("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2", "--max-instances", "40")
    status, _, err = cli(*base, "--target", plan)
    assert status == 0, err
    assert "plan for ml.c5.xlarge" in err
    assert _scaling(aws)[1][0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 90000.0
    plan.write_text(json.dumps({"plans": plans[:1]}))
    status, _, err = cli(*base, "--target", plan)
    assert status == 2
    assert "no plan for the endpoint's instance type ml.c5.xlarge (plans for: ml.c6i.xlarge)" in err
