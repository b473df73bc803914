"""`xgb-deploy monitor`: the dashboard and alarms as CloudWatch stores them, updated
on a second run, the over-target alarm from --target or the autoscaling policy, the old
CPU alarm retired, someone else's of the same name left alone, removed by teardown."""
from __future__ import annotations

import json


def _alarms(aws) -> dict[str, dict]:
    return {a["AlarmName"]: a for a in aws.client("cloudwatch").describe_alarms()["MetricAlarms"]}


def test_monitor_puts_the_dashboard_and_alarms_and_teardown_removes_them(aws, cli, deployed):
    deployed("bid-filter", "--instance-type", "ml.c5.xlarge", "--instance-count", "3")
    topic = aws.client("sns").create_topic(Name="on-call")["TopicArn"]
    status, out, err = cli("monitor", "--endpoint-name", "bid-filter", "--latency-budget-ms", "15",
                           "--alarm-topic", topic)
    assert status == 0, err
    assert out.strip().endswith("#dashboards:name=bid-filter")
    body = json.loads(aws.client("cloudwatch").get_dashboard(DashboardName="bid-filter")["DashboardBody"])
    shown = {m[1] for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]}
    assert shown == {"Invocations", "InvocationsPerInstance", "ModelLatency", "OverheadLatency",
                     "Invocation4XXErrors", "Invocation5XXErrors", "CPUUtilization", "MemoryUtilization",
                     "DiskUtilization"}
    # no autoscaling yet and no --target: no over-target alarm, and it says so
    assert "no over-target alarm for variant AllTraffic" in err
    alarms = _alarms(aws)
    assert set(alarms) == {f"bid-filter-AllTraffic-{k}" for k in
                           ("p99-model-latency", "5xx-errors", "healthy-instances")}
    latency = alarms["bid-filter-AllTraffic-p99-model-latency"]
    assert latency["ExtendedStatistic"] == "p99" and latency["Threshold"] == 15000.0
    healthy = alarms["bid-filter-AllTraffic-healthy-instances"]
    assert healthy["Threshold"] == 3.0 and healthy["ComparisonOperator"] == "LessThanThreshold"
    assert all(a["AlarmActions"] == [topic] for a in alarms.values())

    status, _, err = cli("monitor", "--endpoint-name", "bid-filter")        # again: its own are updated
    assert status == 0 and "dashboard bid-filter (updated)" in err
    assert _alarms(aws)["bid-filter-AllTraffic-p99-model-latency"]["Threshold"] == 20000.0

    # with autoscaling on the variant, its target is the over-target alarm's threshold
    assert cli("autoscale", "--endpoint-name", "bid-filter", "--min-instances", "2", "--max-instances", "8",
               "--target", "90000")[0] == 0
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter")
    assert status == 0 and "alarm bid-filter-AllTraffic-over-target (created)" in err
    over = _alarms(aws)["bid-filter-AllTraffic-over-target"]
    assert (over["Namespace"], over["MetricName"], over["Statistic"]) == ("AWS/SageMaker", "InvocationsPerInstance", "Sum")
    assert over["Threshold"] == 90000.0 and over["ComparisonOperator"] == "GreaterThanThreshold"
    assert over["Period"] == 60 and over["EvaluationPeriods"] == 10
    # --target wins over the policy's
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter", "--target", "120000")
    assert status == 0 and "alarm bid-filter-AllTraffic-over-target (updated)" in err
    assert _alarms(aws)["bid-filter-AllTraffic-over-target"]["Threshold"] == 120000.0
    # autoscaling gone and no --target: its over-target alarm goes too
    aws.client("application-autoscaling").deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId="endpoint/bid-filter/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount")
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter")
    assert status == 0 and "alarm bid-filter-AllTraffic-over-target (deleted: no target)" in err
    assert "bid-filter-AllTraffic-over-target" not in _alarms(aws)
    assert cli("monitor", "--endpoint-name", "bid-filter", "--target", "120000")[0] == 0

    status, _, err = cli("teardown", "--endpoint-name", "bid-filter")
    assert status == 0, err
    assert "alarm bid-filter-AllTraffic-over-target" in err and "dashboard bid-filter" in err
    assert _alarms(aws) == {}
    assert aws.client("cloudwatch").list_dashboards()["DashboardEntries"] == []


def _put_cpu_alarm(aws, description: str) -> None:
    """The CPU alarm as an earlier xgb-deploy made it (or someone else, by its description)."""
    aws.client("cloudwatch").put_metric_alarm(
        AlarmName="bid-filter-AllTraffic-cpu-over-80", AlarmDescription=description,
        Namespace="/aws/sagemaker/Endpoints", MetricName="CPUUtilization", Statistic="Average", Period=60,
        EvaluationPeriods=5, Threshold=320.0, ComparisonOperator="GreaterThanThreshold",
        Dimensions=[{"Name": "EndpointName", "Value": "bid-filter"}, {"Name": "VariantName", "Value": "AllTraffic"}])


def test_the_cpu_alarm_of_earlier_versions_is_deleted_and_someone_elses_kept(aws, cli, deployed):
    deployed()
    _put_cpu_alarm(aws, "xgb-deploy monitor: CPUUtilization over 80 % of 4 vCPUs (320) for 5 minutes")
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter", "--target", "60000")
    assert status == 0, err
    assert "alarm bid-filter-AllTraffic-cpu-over-80 (deleted" in err
    assert set(_alarms(aws)) == {f"bid-filter-AllTraffic-{k}" for k in
                                 ("p99-model-latency", "5xx-errors", "over-target", "healthy-instances")}
    # one of the same name that is not xgb-deploy's is neither a conflict nor deleted
    _put_cpu_alarm(aws, "the SRE team's own")
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter", "--target", "60000")
    assert status == 0 and "cpu-over-80" not in err
    assert "bid-filter-AllTraffic-cpu-over-80" in _alarms(aws)
    # teardown removes an old one of its own too
    _put_cpu_alarm(aws, "xgb-deploy monitor: CPUUtilization over 80 % of 4 vCPUs (320) for 5 minutes")
    status, _, err = cli("teardown", "--endpoint-name", "bid-filter")
    assert status == 0 and "alarm bid-filter-AllTraffic-cpu-over-80" in err
    assert _alarms(aws) == {}


def test_the_target_from_a_capacity_plan_of_the_variants_instance_type(aws, cli, deployed, tmp_path):
    deployed()                                                                    # ml.c5.xlarge
    plans = tmp_path / "plan.json"
    plans.write_text(json.dumps({"plans": [{"instance": "ml.c5.large", "invocations_per_instance_per_minute": 40000},
                                           {"instance": "ml.c5.xlarge", "invocations_per_instance_per_minute": 80000}]}))
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter", "--target", plans)
    assert status == 0, err
    assert _alarms(aws)["bid-filter-AllTraffic-over-target"]["Threshold"] == 80000.0
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter", "--target", "-5")
    assert status == 2 and "--target -5: must be a positive number" in err


def test_an_alarm_or_dashboard_made_by_someone_else_is_not_overwritten(aws, cli, deployed):
    deployed()
    cw = aws.client("cloudwatch")
    cw.put_metric_alarm(AlarmName="bid-filter-AllTraffic-5xx-errors", AlarmDescription="the SRE team's own",
                        Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Statistic="Sum", Period=300,
                        EvaluationPeriods=1, Threshold=10, ComparisonOperator="GreaterThanThreshold")
    cw.put_dashboard(DashboardName="bid-filter", DashboardBody=json.dumps({"widgets": []}))
    status, out, err = cli("monitor", "--endpoint-name", "bid-filter")
    assert status == 1 and out == ""
    assert "dashboard bid-filter, alarm bid-filter-AllTraffic-5xx-errors already exist" in err
    assert "--replace" in err
    assert set(_alarms(aws)) == {"bid-filter-AllTraffic-5xx-errors"}            # nothing changed
    assert aws.calls().count("PutDashboard") == 1                                 # the test's own
    # teardown leaves what is not its own.
    assert cli("teardown", "--endpoint-name", "bid-filter")[0] == 0
    assert set(_alarms(aws)) == {"bid-filter-AllTraffic-5xx-errors"}
    assert [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]] == ["bid-filter"]


def test_replace_overwrites_them(aws, cli, deployed):
    deployed()
    aws.client("cloudwatch").put_dashboard(DashboardName="bid-filter", DashboardBody=json.dumps({"widgets": []}))
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter", "--replace")
    assert status == 0, err
    assert "xgb-deploy monitor" in aws.client("cloudwatch").get_dashboard(DashboardName="bid-filter")["DashboardBody"]


def test_missing_permissions_and_throttling(aws, cli, deployed):
    deployed()
    aws.control("/_local/faults", {"operation": "PutMetricAlarm", "code": "Throttling", "message": "Rate exceeded",
                                   "times": 1})
    status, _, err = cli("monitor", "--endpoint-name", "bid-filter")
    assert status == 0, err                                                    # retried
    aws.control("/_local/faults", {"operation": "PutDashboard", "code": "AccessDenied", "status": 403,
                                   "message": "not authorized to perform: cloudwatch:PutDashboard"})
    status, out, err = cli("monitor", "--endpoint-name", "bid-filter")
    assert status == 1 and "cloudwatch:PutDashboard" in err and "check the IAM policy" in err


def test_monitor_dry_run_and_a_missing_endpoint(aws, cli):
    status, out, err = cli("monitor", "--endpoint-name", "bid-filter", "--dry-run")
    assert status == 0, err
    assert "[dry-run] cloudwatch PutDashboard" in out and out.count("[dry-run] cloudwatch PutMetricAlarm") == 3
    status, out, err = cli("monitor", "--endpoint-name", "bid-filter", "--dry-run", "--target", "90000")
    assert status == 0 and out.count("[dry-run] cloudwatch PutMetricAlarm") == 4
    assert aws.calls() == []
    status, _, err = cli("monitor", "--endpoint-name", "nowhere")
    assert status == 1 and "endpoint nowhere does not exist" in err
