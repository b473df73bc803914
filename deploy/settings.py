"""Every setting of ``xgb-deploy``, and where its value comes from.

A value is taken from the first place that has it:

1. the command-line flag (``--role-arn``);
2. the environment (``XGB_DEPLOY_ROLE_ARN``);
3. the config file: ``--config PATH``, else ``$XGB_DEPLOY_CONFIG``, else
   ``xgb-deploy.toml`` in the current folder if there is one. It is TOML with
   the settings' names as keys (``role_arn = "arn:aws:iam::..."``);
4. the default below.

The region, when none of these give it, falls back to ``AWS_REGION``,
then boto3's own lookup (``AWS_DEFAULT_REGION``, the profile). Credentials are never
read here: boto3 finds them as it always does.
"""
from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

ENV_PREFIX = "XGB_DEPLOY_"
CONFIG_ENV = "XGB_DEPLOY_CONFIG"
DEFAULT_CONFIG_FILE = "xgb-deploy.toml"


class UsageError(ValueError):
    """A setting that is missing or malformed; the message says which and how to give it."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text} is not a positive number")
    return value


def seconds_in(low: int, high: int) -> Callable[[str], int]:
    """A parser for a whole number of seconds within [low, high] (SageMaker's ranges)."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{text} is outside {low}-{high} seconds")
        return value
    parse.__name__ = f"seconds in {low}-{high}"
    return parse


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key, value


@dataclass(frozen=True)
class Option:
    """One setting: flag ``--name-with-dashes``, env ``XGB_DEPLOY_NAME``, config key ``name``."""
    name: str
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    many: bool = False          # a repeatable flag; env and file give a list (env: comma-separated)
    # The name users write (flag, env, config key) when it differs from the internal one,
    # kept for compatibility: "target" outside, "invocations_target" inside.
    public: str | None = None

    @property
    def key(self) -> str:
        """The config file key."""
        return self.public or self.name

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


OPTIONS: dict[str, Option] = {o.name: o for o in [
    Option("region", "AWS region (default: boto3's, from AWS_REGION or the profile)"),
    Option("profile", "AWS profile name from ~/.aws/config"),
    Option("endpoint_name", "SageMaker endpoint name; also the prefix of its models and configurations"),
    Option("role_arn", "SageMaker execution role ARN (reads the model from S3, pulls the image from ECR)"),
    Option("image_uri", "ECR image URI printed by build_and_push.sh"),
    Option("model_data", "S3 URL of model.tar.gz, as printed by `upload`"),
    Option("bucket", "S3 bucket (default: sagemaker-<region>-<account>, created if missing, as the SageMaker SDK does)"),
    Option("prefix", "S3 key prefix for uploaded models", default="xgb-neo-serve"),
    Option("instance_type", "instance type of the production variant", default="ml.c6i.xlarge"),
    Option("instance_count", "initial instance count (two or more spreads the variant over Availability Zones)",
           positive_int, default=2),
    Option("variant_name", "production variant name", default="AllTraffic"),
    Option("env", "container environment KEY=VALUE (repeatable)", key_value, many=True),
    Option("workers", "gunicorn worker processes per instance (SAGEMAKER_MODEL_SERVER_WORKERS)", positive_int),
    Option("outputs", "selected outputs, e.g. probability,predicted_label (SAGEMAKER_INFERENCE_OUTPUT)"),
    Option("startup_health_timeout", "ContainerStartupHealthCheckTimeoutInSeconds (60-3600)", seconds_in(60, 3600)),
    Option("model_download_timeout", "ModelDataDownloadTimeoutInSeconds (60-3600)", seconds_in(60, 3600)),
    Option("subnets", "VPC subnet IDs of the model (repeatable; with --security-groups): the "
           "container's network interfaces go there", many=True),
    Option("security_groups", "VPC security group IDs of the model (repeatable; with --subnets)", many=True),
    Option("wait_timeout", "seconds to wait for InService (or for deletion) before giving up",
           positive_float, default=1800.0),
    Option("poll_seconds", "seconds between status checks while waiting", positive_float, default=30.0),
    Option("max_attempts", "attempts per AWS call, retried with backoff on throttling and 5xx",
           positive_int, default=8),
    Option("model_package", "ARN of a registered model package version (what `register` prints); "
           "deployed instead of --image-uri and --model-data"),
    Option("model_package_group", "Model Registry group (default: the endpoint name); created if missing"),
    Option("sample_payload", "CSV of request rows, one per line (e.g. the model's sample.csv): its first "
           "rows become the model package's sample payload and the load test's requests"),
    Option("sample_rows", "rows of --sample-payload in the model package's sample payload",
           positive_int, default=100),
    Option("instance_types", "real-time instance types (repeatable, or comma-separated in env and file): "
           "what a model package supports, what `recommend` tries", many=True),
    Option("latency_budget_ms", "p99 model latency budget in ms (load test, recommendation job, alarm)",
           positive_float, default=20.0),
    Option("safety", "share of the measured per-instance rate used as the autoscaling target (0-1]",
           positive_float, default=0.5),
    Option("alarm_topic", "SNS topic ARN the alarms notify (on ALARM and on OK)"),
    Option("min_instances", "autoscaling: minimum instance count; monitor: fewest healthy instances before "
           "the alarm (default there: the current count)", positive_int),
    Option("max_instances", "autoscaling: maximum instance count", positive_int),
    Option("invocations_target", "autoscaling (and monitor's over-target alarm; default there: the variant's "
           "autoscaling policy): invocations per instance per minute, a number or a capacity-plan "
           "JSON path (what `loadtest --out` or `bench all` wrote)", public="target"),
    Option("capacity_key", "autoscaling and monitor: dotted key of the target in a capacity-plan JSON",
           default="autoscaling.invocations_per_instance_per_minute"),
    Option("scale_in_cooldown", "autoscaling: seconds after a scale-in before the next one",
           positive_int, default=300),
    Option("scale_out_cooldown", "autoscaling: seconds after a scale-out before the next one",
           positive_int, default=60),
]}


def add_options(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add the flags of ``names`` to ``parser``; each defaults to None so that
    :func:`resolve` can tell a flag given from one left out."""
    for name in names:
        option = OPTIONS[name]
        default = f" (default: {option.default})" if option.default is not None else ""
        parser.add_argument(option.flag, dest=name, metavar=option.key.upper(),
                            action="append" if option.many else "store",
                            type=_flag_parser(option), default=None,
                            help=f"{option.help}{default}; env {option.env}")


def _flag_parser(option: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = option.name
    return parse


def load_config_file(path: str | None, environ: Mapping[str, str]) -> tuple[dict[str, Any], str | None]:
    """The config file's settings and its path; ({}, None) when there is none.

    ``path`` (from ``--config``) or ``$XGB_DEPLOY_CONFIG`` must exist when given;
    ``./xgb-deploy.toml`` is read only if present. Unknown keys are refused so
    that a typo does not silently fall back to a default.
    """
    explicit = path or environ.get(CONFIG_ENV)
    chosen = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if not chosen.is_file():
        if explicit:
            raise UsageError(f"config file {chosen} does not exist")
        return {}, None
    try:
        data = tomllib.loads(chosen.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {chosen}: {exc}") from exc
    by_key = {o.key: o.name for o in OPTIONS.values()}
    unknown = sorted(set(data) - set(by_key))
    if unknown:
        raise UsageError(f"config file {chosen}: unknown keys {', '.join(unknown)} "
                         f"(known: {', '.join(by_key)})")
    return {by_key[k]: v for k, v in data.items()}, str(chosen)


def resolve(args: argparse.Namespace, names: list[str], environ: Mapping[str, str],
            file_values: Mapping[str, Any], file_path: str | None = None) -> dict[str, Any]:
    """The value of every setting in ``names``: flag, else env, else file, else default.

    Env and file values go through the same parser as the flag, and a bad one
    raises :class:`UsageError` naming where it came from.
    """
    values: dict[str, Any] = {}
    for name in names:
        option = OPTIONS[name]
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = flag_value
        elif option.env in environ and environ[option.env] != "":
            values[name] = _parse_external(option, environ[option.env], f"${option.env}")
        elif name in file_values:
            values[name] = _parse_external(option, file_values[name], f"{option.key} in {file_path}")
        else:
            values[name] = [] if option.many and option.default is None else option.default
    return values


def _parse_external(option: Option, raw: Any, where: str) -> Any:
    if option.many:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [_parse_one(option, str(item).strip(), where) for item in items if str(item).strip()]
    return _parse_one(option, str(raw), where)


def _parse_one(option: Option, text: str, where: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def require(values: Mapping[str, Any], *names: str) -> None:
    """Raise :class:`UsageError` listing every setting in ``names`` that has no value."""
    missing = [OPTIONS[n] for n in names if values.get(n) in (None, "", [])]
    if missing:
        lines = [f"  {o.flag} (or ${o.env}, or {o.key} in {DEFAULT_CONFIG_FILE}): {o.help}" for o in missing]
        raise UsageError("missing settings:\n" + "\n".join(lines))
