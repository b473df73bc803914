"""A smoke test of a live endpoint: ``InvokeEndpoint`` through ``sagemaker-runtime``.

Round-trip time is measured around the whole call (signing, network, SageMaker's
front end, the container, reading the answer), so it is what a client in the
same region sees, not the container's own latency. The first call also opens
the TLS connection: with ``--repeat`` the later calls show the warm figure.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from deploy.aws import Aws, DeployError, error_code, error_message
from deploy.settings import UsageError

# InvokeEndpoint's Body limit (botocore's service model: 6,291,456 bytes).
MAX_BODY_BYTES = 6 * 1024 * 1024


@dataclass
class Answer:
    body: bytes
    content_type: str
    variant: str
    round_trips_ms: list[float]


def read_payload(body: str | None, payload: Path | None, rows: int) -> bytes:
    """The request body: ``body`` as given, or the first ``rows`` lines of the
    file ``payload`` (a sample CSV, one request row per line)."""
    if (body is None) == (payload is None):
        raise UsageError("give exactly one of --body TEXT or --payload FILE")
    if body is not None:
        data = body.encode()
    else:
        try:
            with open(payload, "rb") as f:
                lines = []
                for line in f:
                    if line.strip():
                        lines.append(line if line.endswith(b"\n") else line + b"\n")
                    if len(lines) == rows:
                        break
        except OSError as exc:
            raise UsageError(f"--payload {payload}: {exc.strerror}") from None
        data = b"".join(lines)
    if not data.strip():
        raise UsageError("the request body is empty")
    if len(data) > MAX_BODY_BYTES:
        raise UsageError(f"the request body is {len(data)} bytes; InvokeEndpoint takes at most {MAX_BODY_BYTES}")
    return data


def invoke(aws: Aws, endpoint_name: str, body: bytes, content_type: str, accept: str | None,
           repeat: int = 1, target_model: str | None = None) -> Answer:
    """Send ``body`` ``repeat`` times; returns the last answer and every round trip in ms.
    ``target_model``: on a multi-model endpoint, the archive under its prefix (``NAME.tar.gz``).

    Raises :class:`DeployError` when the container answered with an error
    (``ModelError``: its status and message are in the text).
    """
    runtime = aws.client("sagemaker-runtime")
    params = {"EndpointName": endpoint_name, "Body": body, "ContentType": content_type}
    if accept:
        params["Accept"] = accept
    if target_model:
        params["TargetModel"] = target_model
    times: list[float] = []
    answer: dict = {}
    payload = b""
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            answer = runtime.invoke_endpoint(**params)
        except ClientError as exc:
            if error_code(exc) == "ModelError":
                status = exc.response.get("OriginalStatusCode", "?")
                raise DeployError(f"the container answered {status}: {exc.response.get('OriginalMessage') or error_message(exc)}\n"
                                  f"logs: {exc.response.get('LogStreamArn', '/aws/sagemaker/Endpoints/' + endpoint_name)}") from None
            raise
        body_stream = answer.get("Body", b"")
        payload = body_stream.read() if hasattr(body_stream, "read") else bytes(body_stream)
        times.append((time.perf_counter() - start) * 1000)
    return Answer(payload, answer.get("ContentType", ""), answer.get("InvokedProductionVariant", ""), times)


def summarize_round_trips(times_ms: list[float]) -> str:
    if len(times_ms) == 1:
        return f"round trip: {times_ms[0]:.1f} ms"
    warm = times_ms[1:]
    return (f"round trip over {len(times_ms)} calls: first {times_ms[0]:.1f} ms (opens the connection), "
            f"then median {statistics.median(warm):.1f} ms, min {min(warm):.1f} ms, max {max(warm):.1f} ms")
