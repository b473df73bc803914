"""boto3 clients for the deploy commands: retries, ``--dry-run``, and AWS errors in plain words.

Every AWS call of the package goes through a client made by :class:`Aws`, so
``--dry-run`` covers all of them: botocore still validates each call's
parameters against the service model, then a ``before-call`` hook prints the
call and answers it locally instead of sending it. Nothing leaves the machine
(the clients are unsigned, so no credentials are even looked up). Reads are
answered "not found" / empty, so a dry run shows the plan for a fresh account.

The endpoint is boto3's: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_<SERVICE>``)
points every client at another implementation of the API, such as moto.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

import boto3
from botocore import UNSIGNED
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)

from deploy.settings import UsageError

USER_AGENT = "xgb-deploy/0.1"
DRY_RUN_NOT_FOUND = "DryRunNotLookedUp"

# Answers to reads in a dry run: nothing exists yet. Writes are answered {}.
_DRY_RUN_READS: dict[str, dict[str, Any]] = {
    # An account ID of zeros, not a placeholder like <account-id>: it goes into the default
    # bucket's name, which botocore validates (and refused the placeholder).
    "GetCallerIdentity": {"Account": "000000000000", "Arn": "<caller-arn>", "UserId": "<user-id>"},
    "ListEndpointConfigs": {"EndpointConfigs": []},
    "ListModels": {"Models": []},
    "DescribeScalableTargets": {"ScalableTargets": []},
    "DescribeScalingPolicies": {"ScalingPolicies": []},
    "DescribeAlarms": {"MetricAlarms": [], "CompositeAlarms": []},
}
_DRY_RUN_WRITES: dict[str, dict[str, Any]] = {
    # s3transfer reads these fields back from the multipart calls of a large upload.
    "CreateMultipartUpload": {"UploadId": "dry-run"},
    "UploadPart": {"ETag": '"dry-run"'},
    "InvokeEndpoint": {"Body": b"", "ContentType": "dry-run", "InvokedProductionVariant": "dry-run"},
}


class DeployError(RuntimeError):
    """An operation that did not succeed (endpoint Failed, wait timed out, bad
    artifact); the message says what happened and what to do."""


class Aws:
    """A boto3 session and its clients, all with the same retry policy and dry-run mode."""

    def __init__(self, region: str | None = None, profile: str | None = None,
                 dry_run: bool = False, max_attempts: int = 8, out: TextIO | None = None):
        self.dry_run = dry_run
        self.out = out or sys.stdout
        # botocore reads AWS_DEFAULT_REGION and the profile, not AWS_REGION (which
        # other SDKs and GitHub's credentials action set), so that one is read here.
        region = region or os.environ.get("AWS_REGION") or None
        try:
            self.session = boto3.session.Session(profile_name=profile, region_name=region)
        except ProfileNotFound as exc:
            raise UsageError(f"{exc}: check --profile / AWS_PROFILE") from None
        if not self.session.region_name:
            raise UsageError("no AWS region: give --region, set AWS_REGION, or set region in "
                             "xgb-deploy.toml or the profile")
        # Standard mode retries throttling and 5xx with exponential backoff and jitter.
        self.config = Config(retries={"mode": "standard", "total_max_attempts": max_attempts},
                             user_agent_extra=USER_AGENT)
        if dry_run:
            self.config = self.config.merge(Config(signature_version=UNSIGNED))
        self._clients: dict[str, Any] = {}

    @property
    def region(self) -> str:
        return self.session.region_name

    def client(self, service: str) -> Any:
        """The (cached) boto3 client of ``service`` ("s3", "sagemaker", ...)."""
        if service not in self._clients:
            client = self.session.client(service, config=self.config)
            if self.dry_run:
                events = client.meta.events
                events.register("before-parameter-build", self._print_call)
                events.register("before-call", self._answer_locally)
            self._clients[service] = client
        return self._clients[service]

    def account_id(self) -> str:
        """The caller's account ID (STS GetCallerIdentity)."""
        return self.client("sts").get_caller_identity()["Account"]

    def say(self, message: str) -> None:
        """Progress for a person, on stderr so that stdout holds only results.
        Silent in a dry run, where nothing it would report happened; the
        printed calls are the plan."""
        if not self.dry_run:
            print(message, file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """A line that a dry run prints too (what it would do next)."""
        print(message, file=self.out if self.dry_run else sys.stderr, flush=True)

    # --- dry run -------------------------------------------------------------
    def _print_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_id.hyphenize()
        shown = {k: _printable(v) for k, v in params.items()}
        print(f"[dry-run] {service} {model.name} {json.dumps(shown, sort_keys=True, default=str)}",
              file=self.out, flush=True)

    def _answer_locally(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        name = model.name
        if name in _DRY_RUN_READS:
            return _response(200), json.loads(json.dumps(_DRY_RUN_READS[name]))
        if name.startswith(("Describe", "Get", "Head", "List")):
            error = {"Code": DRY_RUN_NOT_FOUND, "Message": f"dry run: {name} not sent"}
            return _response(404), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 404}}
        return _response(200), dict(_DRY_RUN_WRITES.get(name, {}))


def _response(status: int) -> AWSResponse:
    return AWSResponse(url="dry-run://", status_code=status, headers={}, raw=None)


def _printable(value: Any) -> Any:
    """A JSON-friendly form of an API argument; file bodies are shown by size, not content."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return f"<{type(value).__name__}>"


# --- errors -----------------------------------------------------------------
_NOT_FOUND_CODES = {"404", "NoSuchBucket", "NoSuchKey", "NotFound", "ObjectNotFoundException",
                    "ResourceNotFound", "ResourceNotFoundException", DRY_RUN_NOT_FOUND}
_THROTTLING_CODES = {"Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
                     "RequestLimitExceeded", "SlowDown", "RequestThrottled", "RequestThrottledException",
                     "ProvisionedThroughputExceededException", "LimitExceededException"}
_ACCESS_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                 "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken",
                 "ExpiredTokenException", "SignatureDoesNotMatch", "InvalidAccessKeyId"}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).strip()


def is_not_found(exc: ClientError) -> bool:
    """True when ``exc`` says the thing asked for does not exist.

    SageMaker says so with a ValidationException "Could not find ..."; S3 with
    404 / NoSuchBucket / NoSuchKey; Application Auto Scaling with ObjectNotFoundException.
    """
    code = error_code(exc)
    if code in _NOT_FOUND_CODES:
        return True
    return code == "ValidationException" and "could not find" in error_message(exc).lower()


def explain(exc: BaseException) -> str:
    """One or two lines saying what went wrong with an AWS call and what to do; never a traceback."""
    if isinstance(exc, ClientError):
        code, message = error_code(exc), error_message(exc)
        operation = getattr(exc, "operation_name", "the call")
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
        where = f"{operation}: {code}: {message}" if message else f"{operation}: {code}"
        if code in _THROTTLING_CODES:
            tried = f" after {attempts + 1} attempts with backoff" if attempts is not None else ""
            return (f"AWS throttled {operation}{tried} ({code}: {message}).\n"
                    f"Wait a minute and run again, raise --max-attempts, or ask for a higher API rate "
                    f"in Service Quotas.")
        if code == "ResourceLimitExceeded":
            return (f"{where}\nAn account quota is reached: request an increase in the Service Quotas "
                    f"console (SageMaker, e.g. '<instance type> for endpoint usage'), or use fewer or "
                    f"other instances.")
        if code in _ACCESS_CODES:
            return f"{where}\nThe credentials in use may not do this: check the IAM policy of the caller."
        lowered = message.lower()
        if "role" in lowered and ("assume" in lowered or "not authorized" in lowered or "exist" in lowered):
            return (f"{where}\nThe execution role must exist and trust sagemaker.amazonaws.com "
                    f"(check --role-arn).")
        if code in ("NoSuchBucket",) or (code == "404" and "bucket" in lowered):
            return f"{where}\nThe S3 bucket does not exist: create it, or leave out --bucket to use the default one."
        return where
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
    if isinstance(exc, PartialCredentialsError):
        return f"incomplete AWS credentials: {exc}"
    if isinstance(exc, NoRegionError):
        return "no AWS region: give --region or set AWS_REGION."
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc} (check the network, the region and AWS_ENDPOINT_URL)."
    if isinstance(exc, ParamValidationError):
        return f"invalid parameters for AWS: {exc}"
    if isinstance(exc, BotoCoreError):
        return f"AWS client error: {exc}"
    return f"{type(exc).__name__}: {exc}"
