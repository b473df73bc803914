"""``xgb-deploy`` (or ``python -m deploy``): upload, endpoint, autoscale, invoke, rollback, teardown.

Results go to stdout (the S3 URL, the configuration name, the policy ARN, the
answer), progress to stderr, so ``MODEL_DATA=$(xgb-deploy upload ...)`` works.
Exit status: 0 done; 1 the operation failed (an AWS error, an endpoint that
ended Failed or rolled back, a wait that timed out); 2 bad usage or settings;
130 interrupted. Errors are one clear message, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from deploy import autoscaling, endpoint, invoke, settings, teardown, upload
from deploy.aws import Aws, DeployError, explain
from deploy.settings import UsageError, require

PROG = "xgb-deploy"
COMMON = ["region", "profile", "max_attempts"]
WAITING = ["wait_timeout", "poll_seconds"]
ENDPOINT = ["endpoint_name", "image_uri", "model_data", "role_arn", "instance_type", "instance_count",
            "variant_name", "env", "workers", "outputs", "startup_health_timeout", "model_download_timeout"]
AUTOSCALE = ["endpoint_name", "variant_name", "min_instances", "max_instances", "target", "capacity_key",
             "scale_in_cooldown", "scale_out_cooldown"]


def cmd_upload(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    if args.multi_model:
        done = upload.upload_multi_model(aws, Path(args.archive), s["bucket"], s["prefix"], args.multi_model)
    else:
        done = upload.upload_model(aws, Path(args.archive), s["bucket"], s["prefix"])
    print(done.url)


def cmd_endpoint(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    if args.multi_model:
        if not args.model_data_prefix:
            raise UsageError("--multi-model needs --model-data-prefix s3://bucket/prefix/ (where `upload "
                             "--multi-model NAME` puts models)")
        s = {**s, "model_data": endpoint.check_model_data_prefix(args.model_data_prefix)}
    require(s, "endpoint_name", "image_uri", "model_data", "role_arn")
    if not s["model_data"].startswith("s3://"):
        raise UsageError(f"--model-data {s['model_data']}: must be an s3:// URL (what `upload` prints)")
    spec = endpoint.EndpointSpec(
        endpoint_name=endpoint.check_endpoint_name(s["endpoint_name"]), image_uri=s["image_uri"],
        model_data=s["model_data"], role_arn=s["role_arn"], instance_type=s["instance_type"],
        instance_count=s["instance_count"], variant_name=s["variant_name"],
        environment=endpoint.container_environment(s["workers"], s["outputs"], s["env"]),
        startup_health_timeout=s["startup_health_timeout"], model_download_timeout=s["model_download_timeout"],
        mode="MultiModel" if args.multi_model else "SingleModel")
    name = endpoint.deploy(aws, spec, _waiting(s, args))
    aws.say(f"endpoint {spec.endpoint_name} runs {name}" if not args.no_wait
            else f"endpoint {spec.endpoint_name}: {name} requested")
    print(name)


def cmd_autoscale(aws: Aws, s: dict[str, Any], args: argparse.Namespace) -> None:
    require(s, "endpoint_name", "min_instances", "max_instances", "target")
    # A capacity plan may hold one target per instance type: the endpoint's is needed then.
    instance_type = None if _is_number(s["target"]) else \
        autoscaling.variant_instance_type(aws, s["endpoint_name"], s["variant_name"])
    target, source = autoscaling.resolve_target(s["target"], s["capacity_key"], instance_type)
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
    "endpoint": (cmd_endpoint, "create the endpoint, or update it to a new configuration; wait for InService",
                 ENDPOINT + WAITING),
    "autoscale": (cmd_autoscale, "target-tracking autoscaling on invocations per instance", AUTOSCALE),
    "invoke": (cmd_invoke, "smoke test: send a payload, print the answer and the round-trip time",
               ["endpoint_name"]),
    "rollback": (cmd_rollback, "move the endpoint back to an older configuration",
                 ["endpoint_name"] + WAITING),
    "teardown": (cmd_teardown, "delete the endpoint, its configurations, models and scaling policy",
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
