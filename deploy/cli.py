"""``xgb-deploy`` (or ``python -m deploy``): upload, endpoint, autoscale, invoke, rollback, teardown.

Results go to stdout (the S3 URL, the configuration name, the policy ARN, the
answer), progress to stderr, so ``MODEL_DATA=$(xgb-deploy upload ...)`` works.
Exit status: 0 done; 1 the operation failed (an AWS error, an endpoint that
ended Failed or rolled back, a wait that timed out); 2 bad usage or settings;
130 interrupted. Errors are one clear message, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from deploy import autoscaling, endpoint, invoke, loadtest, monitor, recommend, registry, settings, teardown, upload
from deploy.aws import Aws, DeployError, explain
from deploy.client import encode_row
from deploy.settings import UsageError, require

PROG = "xgb-deploy"
COMMON = ["region", "profile", "max_attempts"]
WAITING = ["wait_timeout", "poll_seconds"]
ENDPOINT = ["endpoint_name", "image_uri", "model_data", "model_package", "role_arn", "instance_type",
            "instance_count", "subnets", "security_groups", "variant_name", "env", "workers", "outputs", "startup_health_timeout", "model_download_timeout"]
AUTOSCALE = ["endpoint_name", "variant_name", "min_instances", "max_instances", "invocations_target", "capacity_key",
             "scale_in_cooldown", "scale_out_cooldown"]


def cmd_upload(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    if args.multi_model:
        done = upload.upload_multi_model(aws, Path(args.archive), s["bucket"], s["prefix"], args.multi_model)
    else:
        done = upload.upload_model(aws, Path(args.archive), s["bucket"], s["prefix"])
    print(done.url)


def cmd_register(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "image_uri", "sample_payload")
    group = s["model_package_group"] or s["endpoint_name"]
    if not group:
        require(s, "model_package_group")
    done = registry.register(aws, Path(args.archive), s["image_uri"], endpoint.check_endpoint_name(group),
                             s["bucket"], s["prefix"], Path(s["sample_payload"]), s["sample_rows"],
                             s["instance_types"], args.approve)
    print(done.arn)


def cmd_endpoint(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name", "role_arn")
    if args.multi_model:
        if not args.model_data_prefix:
            raise UsageError("--multi-model needs --model-data-prefix s3://bucket/prefix/ (where `upload "
                             "--multi-model NAME` puts models)")
        if s["model_package"]:
            raise UsageError("--multi-model serves the models under --model-data-prefix; not with --model-package")
        s = {**s, "model_data": endpoint.check_model_data_prefix(args.model_data_prefix)}
    if s["model_package"]:
        if args.model_data or args.image_uri:
            raise UsageError("give --model-package, or --image-uri with --model-data, not both")
        s["image_uri"] = s["model_data"] = None     # the version holds them
        registry.check_deployable(aws, s["model_package"])
    else:
        require(s, "image_uri", "model_data")
        if not s["model_data"].startswith("s3://"):
            raise UsageError(f"--model-data {s['model_data']}: must be an s3:// URL (what `upload` prints)")
    if bool(s["subnets"]) != bool(s["security_groups"]):
        raise UsageError("a VPC needs both --subnets and --security-groups")
    spec = endpoint.EndpointSpec(
        endpoint_name=endpoint.check_endpoint_name(s["endpoint_name"]), image_uri=s["image_uri"],
        model_data=s["model_data"], model_package=s["model_package"], role_arn=s["role_arn"],
        subnets=s["subnets"], security_groups=s["security_groups"], network_isolation=not args.no_network_isolation,
        instance_type=s["instance_type"],
        instance_count=s["instance_count"], variant_name=s["variant_name"],
        environment=endpoint.container_environment(s["workers"], s["outputs"], s["env"]),
        startup_health_timeout=s["startup_health_timeout"], model_download_timeout=s["model_download_timeout"],
        mode="MultiModel" if args.multi_model else "SingleModel")
    name = endpoint.deploy(aws, spec, _waiting(s, args))
    aws.say(f"endpoint {spec.endpoint_name} runs {name}" if not args.no_wait
            else f"endpoint {spec.endpoint_name}: {name} requested")
    print(name)


def cmd_autoscale(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name", "min_instances", "max_instances", "invocations_target")
    # A capacity plan may hold one target per instance type: the endpoint's is needed then.
    instance_type = None if _is_number(s["invocations_target"]) else \
        autoscaling.variant_instance_type(aws, s["endpoint_name"], s["variant_name"])
    target, source = autoscaling.resolve_target(s["invocations_target"], s["capacity_key"], instance_type)
    arn = autoscaling.apply(aws, s["endpoint_name"], s["variant_name"], s["min_instances"], s["max_instances"],
                            target, s["scale_in_cooldown"], s["scale_out_cooldown"])
    aws.say(f"autoscaling set on {autoscaling.resource_id(s['endpoint_name'], s['variant_name'])}:\n"
            f"  instances        {s['min_instances']} to {s['max_instances']}\n"
            f"  target           {target:g} {autoscaling.METRIC} per minute ({source})\n"
            f"  cooldowns        scale out {s['scale_out_cooldown']} s, scale in {s['scale_in_cooldown']} s\n"
            f"  policy           {autoscaling.policy_name(s['endpoint_name'], s['variant_name'])}")
    print(arn)


def cmd_invoke(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name")
    body = invoke.read_payload(args.body, Path(args.payload) if args.payload else None, args.rows)
    answer = invoke.invoke(aws, s["endpoint_name"], body, args.content_type, args.accept, args.repeat,
                           target_model=args.target_model)
    aws.say(f"{len(body)} bytes sent; answer from variant {answer.variant} ({answer.content_type}); "
            f"{invoke.summarize_round_trips(answer.round_trips_ms)}")
    sys.stdout.write(answer.body.decode(errors="replace"))
    if not answer.body.endswith(b"\n"):
        sys.stdout.write("\n")


def cmd_loadtest(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name")
    if not 0 < s["safety"] <= 1:
        raise UsageError(f"--safety {s['safety']}: must be in (0, 1]")
    rows = loadtest.read_rows(Path(args.payload))
    name, variant = s["endpoint_name"], s["variant_name"]
    if aws.dry_run:         # the call it would repeat, validated; nothing is sent
        aws.client("sagemaker-runtime").invoke_endpoint(EndpointName=name, ContentType="text/csv", Accept="text/csv",
                                                        Body=encode_row(rows[0]) + b"\n")
        return
    instances, instance_type = loadtest.fleet(aws, name, variant)
    price = loadtest.usd_per_hour(instance_type)
    ways = {"single": [1], "batched": [args.batch_rows], "both": [1, args.batch_rows]}[args.ways]
    results = []
    for batch_rows in ways:
        plan = loadtest.LoadPlan(concurrency=args.concurrency, duration_s=args.duration, rate=args.rate,
                                 timeout_ms=args.timeout_ms, batch_rows=batch_rows, batch_wait_ms=args.batch_wait_ms)
        kind = f"micro-batched (up to {batch_rows} rows, {args.batch_wait_ms:g} ms)" if batch_rows > 1 \
            else "one row per request"
        pace = f"{args.rate:g} calls/s" if args.rate else "closed loop"
        aws.say(f"load test of {name} ({instances} x {instance_type}): {kind}, {args.concurrency} callers, "
                f"{pace}, {args.duration:g} s")
        began = datetime.now(timezone.utc)
        result = loadtest.run_way(aws, name, rows, plan)
        ended = datetime.now(timezone.utc)
        result.cloudwatch_ms = loadtest.cloudwatch_latency(aws, name, variant, began, ended, result.invocations,
                                                           args.metrics_wait, s["poll_seconds"])
        loadtest.judge(result, s["latency_budget_ms"], s["safety"], instances, price)
        results.append(result)
    held = next((r for r in results if r.held_budget), None)
    target = loadtest.autoscaling_target(held, instances, s["safety"]) if held else None
    print(loadtest.table(results, s["latency_budget_ms"]))
    if price is None:
        print(f"($/1M pred: {instance_type} is not in the price table bench/sagemaker_prices.toml)")
    if held:
        print(f"autoscaling target: {target} invocations per instance per minute "
              f"({held.invocations_per_s:,.0f} invocations/s on {instances} instance(s), {held.way}, "
              f"x safety {s['safety']:g})")
    if args.out:
        data = loadtest.to_json(name, instance_type, instances, s["latency_budget_ms"], s["safety"], plan, results,
                                target, held.way if held else None)
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
        aws.say(f"wrote {args.out}" + (f"; use it with `autoscale --target {args.out}`" if held else ""))
    if not held:
        raise DeployError(f"no way of calling held the p99 budget of {s['latency_budget_ms']:g} ms without errors at "
                          f"this load: no autoscaling target (lower --concurrency or --rate, or raise the budget)")


def cmd_monitor(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name")
    done = monitor.apply(aws, endpoint.check_endpoint_name(s["endpoint_name"]), s["variant_name"],
                         s["latency_budget_ms"], s["min_instances"], s["alarm_topic"], args.replace,
                         s["invocations_target"], s["capacity_key"])
    aws.say("\n".join(done))
    print(f"https://{aws.region}.console.aws.amazon.com/cloudwatch/home?region={aws.region}"
          f"#dashboards:name={monitor.dashboard_name(s['endpoint_name'])}")


def cmd_recommend(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "model_package", "role_arn")
    phases = recommend.parse_phases(args.phases)
    # Jobs are named for the group: ...:model-package/<group>/<version>.
    from_arn = s["model_package"].split(":model-package/")[-1].split("/")[0]
    base = s["model_package_group"] or from_arn or s["endpoint_name"]
    name = recommend.start(aws, endpoint.check_endpoint_name(base), s["model_package"], s["role_arn"],
                           args.advanced, s["instance_types"], phases, s["latency_budget_ms"], args.max_invocations)
    if args.no_wait:
        print(name)
        return
    desc = recommend.wait(aws, name, endpoint.Waiting(timeout=s["wait_timeout"], poll=s["poll_seconds"]))
    if aws.dry_run:
        return
    found = recommend.rows(desc)
    rps = args.rps_per_vcpu or (recommend.rps_per_vcpu_of(Path(args.bench_report), args.bench_model)
                                if args.bench_report else None)
    plans = recommend.bench_plans(rps, [r["instance_type"] for r in found]) if rps else None
    print(f"Inference Recommender job {name} ({desc.get('JobType')}):")
    print(recommend.table(found, plans))
    if plans is not None:
        print(f"bench: the local benchmark's capacity plan at {rps:,.0f} req/s per vCPU (bench capacity), flat out "
              f"with p99 under its SLO; ratio = job / bench")
    instant = recommend.instant_recommendations(aws, args.model_name) if args.model_name else []
    if instant:
        print(f"instant recommendations of model {args.model_name}: "
              + ", ".join(r["InstanceType"] for r in instant))
    if args.out:
        Path(args.out).write_text(json.dumps({"job": name, "recommendations": found, "bench": plans,
                                              "instant": instant}, indent=2, default=str) + "\n")
        aws.say(f"wrote {args.out}")


def cmd_rollback(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name")
    name = endpoint.rollback(aws, s["endpoint_name"], args.to, _waiting(s, args))
    print(name)


def cmd_teardown(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name")
    deleted = teardown.teardown(aws, s["endpoint_name"], _waiting(s, args))
    if deleted:
        aws.say("deleted:\n" + "\n".join(f"  {d}" for d in deleted))
    else:
        aws.say(f"nothing found for endpoint {s['endpoint_name']}")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _waiting(s: dict[str, Any], args: argparse.Namespace) -> endpoint.Waiting | None:
    return None if args.no_wait else endpoint.Waiting(timeout=s["wait_timeout"], poll=s["poll_seconds"])


# name: (function, help, the settings it reads besides COMMON)
COMMANDS: dict[str, tuple[Callable[..., None], str, list[str]]] = {
    "upload": (cmd_upload, "put model.tar.gz in S3 with its sha256 in the metadata; prints the s3:// URL",
               ["bucket", "prefix"]),
    "register": (cmd_register, "a new version of the model in the Model Registry (the group created if "
                               "missing); prints its ARN",
                 ["endpoint_name", "model_package_group", "image_uri", "bucket", "prefix", "sample_payload",
                  "sample_rows", "instance_types"]),
    "endpoint": (cmd_endpoint, "create the endpoint, or update it to a new configuration; wait for InService",
                 ENDPOINT + WAITING),
    "autoscale": (cmd_autoscale, "target-tracking autoscaling on invocations per instance", AUTOSCALE),
    "invoke": (cmd_invoke, "smoke test: send a payload, print the answer and the round-trip time",
               ["endpoint_name"]),
    "loadtest": (cmd_loadtest, "many concurrent InvokeEndpoint calls: client latency, errors, CloudWatch latency, "
                               "the autoscaling target", ["endpoint_name", "variant_name", "latency_budget_ms",
                                                          "safety", "poll_seconds"]),
    "monitor": (cmd_monitor, "CloudWatch dashboard and alarms (p99 latency, 5XX, invocations over the "
                             "autoscaling target, healthy instances); prints the dashboard's URL",
                ["endpoint_name", "variant_name", "latency_budget_ms", "min_instances", "alarm_topic",
                 "invocations_target", "capacity_key"]),
    "recommend": (cmd_recommend, "an Inference Recommender job on a registered version; its recommendations "
                                 "beside the local benchmark's capacity plan",
                  ["model_package", "model_package_group", "endpoint_name", "role_arn", "instance_types",
                   "latency_budget_ms"] + WAITING),
    "rollback": (cmd_rollback, "move the endpoint back to an older configuration",
                 ["endpoint_name"] + WAITING),
    "teardown": (cmd_teardown, "delete the endpoint, its configurations, models, scaling policy, dashboard "
                               "and alarms",
                 ["endpoint_name"] + WAITING),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=settings.__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, names) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help=f"TOML file of settings (default: ./{settings.DEFAULT_CONFIG_FILE} "
                                         f"if present; env {settings.CONFIG_ENV})")
        p.add_argument("--dry-run", action="store_true",
                       help="print every AWS call with its arguments instead of sending it")
        if "wait_timeout" in names:
            p.add_argument("--no-wait", action="store_true", help="return once the change is requested")
        settings.add_options(p, COMMON + names)
        if name == "upload":
            p.add_argument("archive", help="model.tar.gz (from model-compile, or a SageMaker XGBoost model)")
            p.add_argument("--multi-model", metavar="NAME",
                           help="for a multi-model endpoint: put it at s3://<bucket>/<prefix>/NAME.tar.gz")
        if name == "register":
            p.add_argument("archive", help="model.tar.gz from model-compile")
            p.add_argument("--approve", action="store_true",
                           help="register the version Approved (default: PendingManualApproval)")
        if name == "endpoint":
            p.add_argument("--multi-model", action="store_true",
                           help="a multi-model endpoint (Mode=MultiModel): models loaded on demand from "
                                "--model-data-prefix, chosen per request by invoke --target-model")
            p.add_argument("--model-data-prefix", metavar="S3_URL",
                           help="with --multi-model: the s3://bucket/prefix/ that holds the models")
        if name == "invoke":
            p.add_argument("--body", help="request body, e.g. '2,0,0.0,7.0,3.0,20.0,2'")
            p.add_argument("--payload", help="file of request rows, e.g. artifacts/sample-models/rtb-small/sample.csv")
            p.add_argument("--rows", type=settings.positive_int, default=1,
                           help="rows of --payload per request (default 1)")
            p.add_argument("--content-type", default="text/csv", help="default text/csv")
            p.add_argument("--accept", help="Accept header (default: the server's)")
            p.add_argument("--repeat", type=settings.positive_int, default=1,
                           help="send it this many times and summarize the round trips (default 1)")
            p.add_argument("--target-model", metavar="NAME.tar.gz",
                           help="on a multi-model endpoint: the model under its prefix that answers")
        if name == "loadtest":
            p.add_argument("--payload", required=True,
                           help="CSV of request rows, e.g. artifacts/sample-models/rtb-small/sample.csv")
            p.add_argument("--concurrency", type=settings.positive_int, default=16,
                           help="concurrent callers (threads) sharing one pooled client (default 16)")
            p.add_argument("--duration", type=settings.positive_float, default=10.0,
                           help="seconds per way of calling (default 10)")
            p.add_argument("--rate", type=settings.positive_float,
                           help="fixed total calls per second (default: closed loop)")
            p.add_argument("--ways", choices=["single", "batched", "both"], default="single",
                           help="one row per request, micro-batched, or both side by side (default single)")
            p.add_argument("--batch-rows", type=settings.positive_int, default=32,
                           help="micro-batching: most rows in one request (default 32)")
            p.add_argument("--batch-wait-ms", type=settings.positive_float, default=1.0,
                           help="micro-batching: longest wait for more rows (default 1 ms)")
            p.add_argument("--timeout-ms", type=settings.positive_float, default=1000.0,
                           help="client timeout per call (default 1000; the ad server's own is lower)")
            p.add_argument("--metrics-wait", type=float, default=240.0,
                           help="seconds to wait for CloudWatch to count the run (default 240; it lags 1-2 min)")
            p.add_argument("--out", help="write the results and the autoscaling target as JSON (for autoscale --target)")
        if name == "endpoint":
            p.add_argument("--no-network-isolation", action="store_true",
                           help="let the container reach the network (default: isolated; it needs none)")
        if name == "monitor":
            p.add_argument("--replace", action="store_true",
                           help="overwrite a dashboard or alarm of the same name that xgb-deploy did not make")
        if name == "recommend":
            p.add_argument("--advanced", action="store_true",
                           help="an Advanced job on --instance-types with --phases (default: a Default job)")
            p.add_argument("--phases", default="1:1:120,10:2:300",
                           help="Advanced traffic: USERS:SPAWN_RATE:SECONDS,... (default 1:1:120,10:2:300)")
            p.add_argument("--max-invocations", type=settings.positive_int,
                           help="Advanced stopping condition: most invocations per minute to try")
            p.add_argument("--rps-per-vcpu", type=settings.positive_float,
                           help="show the benchmark's capacity plan at this req/s per vCPU beside it")
            p.add_argument("--bench-report", help="...or at the rate in a `bench all` report.json")
            p.add_argument("--bench-model", help="model of --bench-report (default: its first)")
            p.add_argument("--model-name", help="also show DescribeModel's instant recommendations of this model")
            p.add_argument("--out", help="write the recommendations (and the plan beside them) as JSON")
        if name == "rollback":
            p.add_argument("--to", help="configuration name (default: the one before the running one)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    run, _, names = COMMANDS[args.command]
    try:
        file_values, file_path = settings.load_config_file(args.config, os.environ)
        values = settings.resolve(args, COMMON + names, os.environ, file_values, file_path)
        aws = Aws(region=values["region"], profile=values["profile"], dry_run=args.dry_run,
                  max_attempts=values["max_attempts"])
        run(aws, values, args)
        return 0
    except UsageError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 2
    except DeployError as exc:
        print(f"{PROG} {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"{PROG} {args.command}: AWS error: {explain(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; anything already requested goes on in AWS", file=sys.stderr)
        return 130
