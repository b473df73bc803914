"""A local AWS API for the deploy tests: moto in server mode, plus the SageMaker
hosting behaviour that moto 5.2 lacks, so that the deploy code meets what real
AWS does over real HTTP.

    python -m tests.deploy.local_aws --port 5000 [--role NAME] [--container '.venv/bin/serve serve']

Added to moto (each mirrors the real service, as the SageMaker API reference
and developer guide describe it):

* ``UpdateEndpoint`` (moto has none), with ``RetainAllVariantProperties``, and
  SageMaker's refusal to change the instance type of, or remove, a variant that
  is still registered with Application Auto Scaling.
* Endpoint lifecycle: ``Creating`` / ``Updating`` / ``Deleting`` for a number of
  DescribeEndpoint calls (1 by default) before ``InService`` / gone; moto makes
  endpoints InService at once.
* Scripted endpoint failure: the next create of that endpoint ends ``Failed``
  with a FailureReason; the next update rolls back to the old configuration
  and stays ``InService`` with a FailureReason.
* Instance types from botocore's current SageMaker model (moto's list is old).
* ``CreateModel`` checks that the execution role exists and trusts
  sagemaker.amazonaws.com ("Could not assume role ...").
* Hosting, when a container command is set: as SageMaker does, each endpoint
  (re)start takes the model's ``ModelDataUrl`` from S3, extracts it into a
  folder (``/opt/ml/model`` there; ``SM_MODEL_DIR`` here), runs the command
  with the model's ``Environment`` plus ``SAGEMAKER_BIND_TO_PORT`` on a free
  loopback port, and waits for ``GET /ping``; a container that does not pass
  it fails the create (``Failed``) or the update (rolled back). The old
  container of an update is stopped (SIGTERM) once the new one is up.
* ``InvokeEndpoint`` checks that the endpoint exists and is InService, then
  forwards the request to its container (``POST <url>/invocations``), or to a
  URL registered for the endpoint; a container error becomes ``ModelError``.
  With neither, moto's canned answer.
* CloudWatch endpoint metrics from the requests the local endpoint really
  served, as SageMaker publishes them (namespace ``AWS/SageMaker``, dimensions
  ``EndpointName`` and ``VariantName``): ``Invocations``,
  ``InvocationsPerInstance``, ``Invocation4XXErrors``, ``Invocation5XXErrors``,
  ``ModelLatency`` (the container's round trip, microseconds) and
  ``OverheadLatency`` (the rest of the time spent here, microseconds); and
  ``GetMetricStatistics`` with ``ExtendedStatistics`` (percentiles such as
  ``p99``), which moto accepts but does not compute.
* Inference Recommender: ``CreateInferenceRecommendationsJob`` /
  ``DescribeInferenceRecommendationsJob`` with the job's states (``PENDING``,
  ``IN_PROGRESS``, ``COMPLETED`` or ``FAILED`` with a FailureReason). For each
  instance type (the job's, or the model package's first two for a Default
  job) the job really hosts the package's model in a container and sends it
  the package's sample payload rows from concurrent users (the first phase's
  users, at most 8) until MaxInvocations (default 300); the recommendation's
  MaxInvocations (per minute), ModelLatency (at the threshold's percentile,
  default P99) come from those requests, its cost from bench's price table.
  All instance types run on this one machine, so only the price tells them
  apart. ``DescribeModel`` of a model made from a package answers the package's
  instance types as instant ``DeploymentRecommendation``.
* Multi-model endpoints (``Mode=MultiModel``): the container runs with
  ``SAGEMAKER_MULTI_MODEL=true``; an ``InvokeEndpoint`` with ``TargetModel`` downloads
  that archive from under the ``ModelDataUrl`` prefix, loads it (``POST /models``) the
  first time, and forwards to ``POST /models/<name>/invoke``.
* Fault injection: the next N calls of an operation answer with a given error
  (throttling, quota), as AWS would.

Control routes (JSON bodies): ``POST /_local/settings {"polls": N,
"container_command": [...], "health_timeout": S}``,
``POST /_local/endpoint-failure {"endpoint", "reason"}``,
``POST /_local/job-failure {"job", "reason"}``,
``POST /_local/containers {"endpoint", "url"}``,
``POST /_local/faults {"operation", "code", "message", "status", "times"}``,
``GET /_local/calls`` (operations seen, in order). ``POST /moto-api/reset``
clears these too.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import botocore.session

from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.cloudwatch.models import MetricDatum, cloudwatch_backends
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.iam.models import iam_backends
from moto.s3.models import s3_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend, sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse
from werkzeug.serving import run_simple

DEFAULT_ACCOUNT = "123456789012"
_lock = threading.RLock()
_state: dict[str, Any] = {}


def _reset() -> None:
    with _lock:
        for running in _state.get("running", {}).values():
            running.stop()
        _state.clear()
        _state.update(polls=1, endpoints={}, failures={}, containers={}, faults=[], calls=[], jobs={},
                      job_failures={},
                      container_command=None, health_timeout=60.0, running={})


_reset()


def _ext(endpoint: FakeEndpoint) -> dict[str, Any]:
    """Lifecycle data kept beside moto's endpoint (not on it: moto puts every
    attribute of the object in its DescribeEndpoint answer)."""
    return _state["endpoints"].setdefault(endpoint.arn, {"polls_left": 0, "previous": None})


# --- SageMaker backend: lifecycle, role check, update -------------------------
_moto_create_endpoint = SageMakerModelBackend.create_endpoint
_moto_describe_endpoint = SageMakerModelBackend.describe_endpoint
_moto_delete_endpoint = SageMakerModelBackend.delete_endpoint
_moto_create_model = SageMakerModelBackend.create_model


def create_endpoint(self, endpoint_name, endpoint_config_name, tags):
    if endpoint_name in self.endpoints:
        raise ValidationError(message=f"Cannot create already existing endpoint "
                                      f"\"{self.endpoints[endpoint_name].arn}\".")
    endpoint = _moto_create_endpoint(self, endpoint_name, endpoint_config_name, tags)
    with _lock:
        endpoint.endpoint_status = "Creating"
        _state["endpoints"][endpoint.arn] = {"polls_left": _state["polls"], "previous": None}
    return endpoint


def describe_endpoint(self, endpoint_name):
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is not None:
        with _lock:
            ext = _ext(endpoint)
            if endpoint.endpoint_status in ("Creating", "Updating", "Deleting"):
                if ext["polls_left"] > 0:
                    ext["polls_left"] -= 1
                else:
                    _finish(self, endpoint, ext)
    return _moto_describe_endpoint(self, endpoint_name)


def _finish(backend, endpoint, ext) -> None:
    """End the endpoint's pending operation as scripted."""
    status = endpoint.endpoint_status
    if status == "Deleting":
        del backend.endpoints[endpoint.endpoint_name]
        _state["endpoints"].pop(endpoint.arn, None)
        return
    reason = _state["failures"].pop(endpoint.endpoint_name, None)
    if not reason and _state["container_command"]:
        reason = _start_container(backend, endpoint)
    if reason and status == "Creating":
        endpoint.endpoint_status, endpoint.failure_reason = "Failed", reason
    elif reason and status == "Updating":
        # SageMaker rolls a failed update back: InService on the old configuration, with the reason.
        endpoint.endpoint_config_name, endpoint.production_variants = ext["previous"]
        endpoint.endpoint_status, endpoint.failure_reason = "InService", reason
    else:
        endpoint.endpoint_status = "InService"
    ext["previous"] = None


def delete_endpoint(self, endpoint_name):
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is None:
        return _moto_delete_endpoint(self, endpoint_name)   # raises moto's "Could not find endpoint"
    with _lock:
        running = _state["running"].pop(endpoint_name, None)
        if running:
            running.stop()
        endpoint.endpoint_status = "Deleting"
        _ext(endpoint)["polls_left"] = _state["polls"]


class Container:
    """One running serving container: a process on a loopback port, its model folder."""

    def __init__(self, command: list[str], model_dir: str, environment: dict[str, str]):
        self.model_dir = model_dir
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(model_dir, "..", "container.log"), "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_", "SERVE_", "SM_"))}
        env.update(environment)
        env.update(SM_MODEL_DIR=model_dir, SAGEMAKER_BIND_TO_PORT=str(self.port), SERVE_BIND_HOST="127.0.0.1")
        self.proc = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def healthy_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after SageMaker's 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(os.path.dirname(self.model_dir), ignore_errors=True)


def _start_container(backend, endpoint) -> str | None:
    """Run the endpoint's model as SageMaker would; None when it passed /ping,
    else SageMaker's failure reason. On success it replaces the old container."""
    config = backend.describe_endpoint_config(endpoint.endpoint_config_name)
    variant = config["ProductionVariants"][0]
    model = backend._models[variant["ModelName"]]
    container = _resolved_container(backend, model.primary_container)
    if container.get("Mode") == "MultiModel":
        return _start_multi_model_container(endpoint, variant, container)
    url = container.get("ModelDataUrl", "")
    work = tempfile.mkdtemp(prefix="local-sagemaker-")
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir)
    try:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        data = s3_backends[backend.account_id]["aws"].get_object(bucket, key).value
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")
    except Exception as exc:
        shutil.rmtree(work, ignore_errors=True)
        return (f"Failed to download model data for container \"container_1\" from URL: \"{url}\". "
                f"Please ensure that there is an object located at the URL and that the role passed to "
                f"CreateModel has permissions to download the object. ({type(exc).__name__})")
    started = Container(_state["container_command"], model_dir, dict(container.get("Environment") or {}))
    if not started.healthy_within(_state["health_timeout"]):
        started.stop()
        return (f"The primary container for production variant {variant['VariantName']} did not pass the "
                f"ping health check. Please check CloudWatch logs for this endpoint.")
    old = _state["running"].get(endpoint.endpoint_name)
    _state["running"][endpoint.endpoint_name] = started
    if old:
        old.stop()
    return None


def _resolved_container(backend, container: dict) -> dict:
    """A model's container; one made from a model package takes the package's
    image and model data, with the model's own environment on top."""
    package = container.get("ModelPackageName")
    if not package:
        return container
    spec = backend.describe_model_package(package).inference_specification["Containers"][0]
    return {**spec, "Environment": {**(spec.get("Environment") or {}), **(container.get("Environment") or {})}}


# --- multi-model endpoints ------------------------------------------------------------
# As SageMaker runs them ("Custom Containers Contract for Multi-Model Endpoints"): the
# container starts with SAGEMAKER_MULTI_MODEL=true and no model; the first InvokeEndpoint
# naming a TargetModel downloads <ModelDataUrl prefix><TargetModel> from S3, extracts it
# into <models>/<model_name>/model and loads it with POST /models; each request then goes
# to POST /models/<model_name>/invoke with the X-Amzn-SageMaker-Target-Model header.

def _start_multi_model_container(endpoint, variant, container) -> str | None:
    work = tempfile.mkdtemp(prefix="local-sagemaker-")
    models = os.path.join(work, "models")
    os.makedirs(models)
    os.makedirs(os.path.join(work, "model"))   # SM_MODEL_DIR, empty: no model at start
    environment = {**dict(container.get("Environment") or {}), "SAGEMAKER_MULTI_MODEL": "true",
                   "SERVE_MODEL_ROOT": models}
    started = Container(_state["container_command"], os.path.join(work, "model"), environment)
    started.models_dir, started.prefix, started.loaded = models, container.get("ModelDataUrl", ""), {}
    if not started.healthy_within(_state["health_timeout"]):
        started.stop()
        return (f"The primary container for production variant {variant['VariantName']} did not pass the "
                f"ping health check. Please check CloudWatch logs for this endpoint.")
    old = _state["running"].get(endpoint.endpoint_name)
    _state["running"][endpoint.endpoint_name] = started
    if old:
        old.stop()
    return None


def _multi_model_path(backend, running, target: str) -> str:
    """The container path that answers ``target``, loading it first; ValueError with
    SageMaker's message when it cannot be downloaded or loaded."""
    if target in running.loaded:
        return running.loaded[target]
    name = hashlib.sha256(target.encode()).hexdigest()[:32]   # opaque, as SageMaker's model_name
    bucket, _, key = (running.prefix.removeprefix("s3://") + target).partition("/")
    try:
        data = s3_backends[backend.account_id]["aws"].get_object(bucket, key).value
    except Exception:
        raise ValueError(f"Failed to download model data(bucket: {bucket}, key: {key}). Please ensure that "
                         f"there is an object located at the URL and that the role has permission.") from None
    folder = os.path.join(running.models_dir, name, "model")
    os.makedirs(folder, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
    request = urllib.request.Request(f"{running.url}/models", method="POST",
                                     data=json.dumps({"model_name": name, "url": folder}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=60).read()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:   # 409: loaded already
            raise ValueError(f"Model {target} failed to load: {exc.read().decode(errors='replace')}") from None
    running.loaded[target] = f"/models/{name}/invoke"
    return running.loaded[target]


def create_model(self, model_name, execution_role_arn, primary_container, vpc_config, containers, tags):
    message = (f"Could not assume role {execution_role_arn}. Please ensure that the role exists and allows "
               f"principal 'sagemaker.amazonaws.com' to assume the role.")
    try:
        role = iam_backends[self.account_id]["global"].get_role_by_arn(execution_role_arn)
    except Exception:
        raise ValidationError(message=message) from None
    if "sagemaker.amazonaws.com" not in json.dumps(role.assume_role_policy_document):
        raise ValidationError(message=message)
    if (primary_container or {}).get("ModelPackageName"):
        self.describe_model_package(primary_container["ModelPackageName"])    # raises when missing
    return _moto_create_model(self, model_name, execution_role_arn, primary_container, vpc_config,
                              containers, tags)


def update_endpoint(self) -> ActionResult:
    """The UpdateEndpoint action, which moto lacks."""
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    config_name = self._get_param("EndpointConfigName")
    retain = bool(self._get_param("RetainAllVariantProperties", False))
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        raise ValidationError(message=f"Could not find endpoint \"{FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)}\".")
    if endpoint.endpoint_status != "InService":
        raise ValidationError(message=f"Cannot update in-progress endpoint \"{endpoint.arn}\".")
    config = backend.describe_endpoint_config(config_name)      # raises when missing
    old_config = backend.describe_endpoint_config(endpoint.endpoint_config_name)
    _refuse_autoscaled_changes(backend, name, old_config, config)
    new_variants = endpoint._process_production_variants(config["ProductionVariants"])
    if retain:
        current = {v["VariantName"]: v for v in endpoint.production_variants}
        for variant in new_variants:
            for key in ("CurrentInstanceCount", "DesiredInstanceCount", "CurrentWeight", "DesiredWeight"):
                if variant["VariantName"] in current and key in current[variant["VariantName"]]:
                    variant[key] = current[variant["VariantName"]][key]
    with _lock:
        ext = _ext(endpoint)
        ext["previous"] = (endpoint.endpoint_config_name, endpoint.production_variants)
        ext["polls_left"] = _state["polls"]
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = new_variants
        endpoint.endpoint_status = "Updating"
        endpoint.failure_reason = None
    return ActionResult({"EndpointArn": endpoint.arn})


def _refuse_autoscaled_changes(backend, endpoint_name, old_config, new_config) -> None:
    targets = applicationautoscaling_backends[backend.account_id][backend.region_name].targets
    registered = targets.get("sagemaker", {})
    new_types = {v["VariantName"]: v.get("InstanceType") for v in new_config["ProductionVariants"]}
    blocked = []
    for variant in old_config["ProductionVariants"]:
        rid = f"endpoint/{endpoint_name}/variant/{variant['VariantName']}"
        if rid in registered and new_types.get(variant["VariantName"]) != variant.get("InstanceType"):
            blocked.append(variant["VariantName"])
    if blocked:
        raise ValidationError(message=f"The variant(s) \"{blocked}\" must be deregistered as scalable targets "
                                      f"with AWS Application Auto Scaling before they can be removed or have "
                                      f"their instance type updated.")


def validate_instance_type(self, instance_type: str) -> None:
    """moto's list of instance types is years old (no c6i, c7i); use the one in
    botocore's SageMaker service model, which AWS keeps current."""
    if instance_type not in _HOSTING_INSTANCE_TYPES:
        raise ValidationError(message=f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint: "
                                      f"Member must satisfy enum value set: [{', '.join(_HOSTING_INSTANCE_TYPES)}]")


# --- Inference Recommender ------------------------------------------------------
def create_inference_recommendations_job(self) -> ActionResult:
    backend = self.sagemaker_backend
    name = self._get_param("JobName")
    config = self._get_param("InputConfig") or {}
    package = backend.describe_model_package(config.get("ModelPackageVersionArn", ""))   # raises when missing
    with _lock:
        if name in _state["jobs"]:
            raise ValidationError(message=f"Job name {name} already exists")
        arn = f"arn:aws:sagemaker:{backend.region_name}:{backend.account_id}:inference-recommendations-job/{name}"
        now = time.time()
        job = {"JobName": name, "JobArn": arn, "JobType": self._get_param("JobType"), "Status": "PENDING",
               "RoleArn": self._get_param("RoleArn"), "InputConfig": config, "CreationTime": now,
               "LastModifiedTime": now, "StoppingConditions": self._get_param("StoppingConditions") or {}}
        _state["jobs"][name] = job
    threading.Thread(target=_run_job, args=(backend, job, package), daemon=True).start()
    return ActionResult({"JobArn": arn})


def describe_inference_recommendations_job(self) -> ActionResult:
    name = self._get_param("JobName")
    with _lock:
        job = _state["jobs"].get(name)
        if job is None:
            raise ValidationError(message=f"Could not find inference recommendations job {name}")
        return ActionResult(json.loads(json.dumps(job)))


def _run_job(backend, job, package) -> None:
    """Benchmark the package on each instance type, as the job's load asks; set the outcome."""
    def update(**fields):
        with _lock:
            job.update(fields, LastModifiedTime=time.time())

    time.sleep(0.2)
    update(Status="IN_PROGRESS")
    try:
        reason = _state["job_failures"].pop(job["JobName"], None)
        if reason:
            raise RuntimeError(reason)
        if not _state["container_command"]:
            raise RuntimeError("the local API runs no containers: start it with --container")
        spec = package.inference_specification
        types = [c["InstanceType"] for c in job["InputConfig"].get("EndpointConfigurations") or []] or \
            spec["SupportedRealtimeInferenceInstanceTypes"][:2]
        rows = _sample_rows(backend, package.sample_payload_url)
        stopping = job["StoppingConditions"]
        limit = int(stopping.get("MaxInvocations") or 300)
        thresholds = stopping.get("ModelLatencyThresholds") or [{"Percentile": "P99"}]
        percentile = float(str(thresholds[0].get("Percentile", "P99")).lstrip("Pp"))
        phases = (job["InputConfig"].get("TrafficPattern") or {}).get("Phases") or [{"InitialNumberOfUsers": 4}]
        users = max(1, min(8, int(phases[0].get("InitialNumberOfUsers") or 4)))
        recommendations, performances = [], []
        for instance_type in types:
            container = _resolved_container(backend, {"ModelPackageName": package.arn})
            work = tempfile.mkdtemp(prefix="local-recommender-")
            model_dir = os.path.join(work, "model")
            os.makedirs(model_dir)
            bucket, _, key = container["ModelDataUrl"].removeprefix("s3://").partition("/")
            data = s3_backends[backend.account_id]["aws"].get_object(bucket, key).value
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(model_dir, filter="data")
            started = Container(_state["container_command"], model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
            try:
                if not started.healthy_within(_state["health_timeout"]):
                    raise RuntimeError(f"the container on {instance_type} did not pass the ping health check")
                began = time.time()
                latencies, seconds = _drive(started.url, rows, limit, users)
            finally:
                started.stop()
            per_minute = len(latencies) / seconds * 60
            latency_ms = sorted(latencies)[max(0, -(-len(latencies) * int(percentile) // 100) - 1)]
            price = _usd_per_hour(instance_type)
            metrics = {"MaxInvocations": int(per_minute), "ModelLatency": int(round(latency_ms)),
                       "CpuUtilization": 0.0, "MemoryUtilization": 0.0}
            if price is not None:
                metrics.update(CostPerHour=price, CostPerInference=price / (per_minute * 60))
            recommendations.append({
                "RecommendationId": f"{job['JobName']}/{instance_type}", "Metrics": metrics,
                "EndpointConfiguration": {"EndpointName": f"sm-epc-{instance_type.replace('.', '-')}",
                                          "VariantName": "AllTraffic", "InstanceType": instance_type,
                                          "InitialInstanceCount": 1},
                "ModelConfiguration": {"EnvironmentParameters": [
                    {"Key": "SAGEMAKER_MODEL_SERVER_WORKERS", "ValueType": "string", "Value": "1"}]},
                "InvocationStartTime": began, "InvocationEndTime": time.time()})
            performances.append({"Metrics": {"MaxInvocations": int(per_minute), "ModelLatency": int(round(latency_ms))},
                                 "EndpointInfo": {"EndpointName": f"sm-epc-{instance_type.replace('.', '-')}"}})
        update(Status="COMPLETED", CompletionTime=time.time(), InferenceRecommendations=recommendations,
               EndpointPerformances=performances)
    except Exception as exc:
        update(Status="FAILED", CompletionTime=time.time(), FailureReason=str(exc))


def _sample_rows(backend, url: str) -> list[bytes]:
    bucket, _, key = (url or "").removeprefix("s3://").partition("/")
    try:
        data = s3_backends[backend.account_id]["aws"].get_object(bucket, key).value
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = next(m for m in tar.getmembers() if m.isfile())
            rows = [line for line in tar.extractfile(member).read().splitlines() if line.strip()]
    except Exception:
        raise RuntimeError(f"could not read the sample payload {url!r}: give the model package a SamplePayloadUrl "
                           f"of a .tar.gz of request files") from None
    if not rows:
        raise RuntimeError(f"the sample payload {url} holds no row")
    return rows


def _drive(url: str, rows: list[bytes], limit: int, users: int) -> tuple[list[float], float]:
    """``limit`` requests of one row from ``users`` threads; latencies (ms) and the seconds taken."""
    latencies: list[float] = []
    counter = iter(range(limit))
    lock = threading.Lock()

    def user() -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            request = urllib.request.Request(f"{url}/invocations", data=rows[n % len(rows)] + b"\n",
                                             headers={"Content-Type": "text/csv"}, method="POST")
            sent = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()
            with lock:
                latencies.append((time.perf_counter() - sent) * 1000)

    began = time.perf_counter()
    threads = [threading.Thread(target=user) for _ in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - began


def _usd_per_hour(instance_type: str) -> float | None:
    from bench.capacity import load_prices

    return next((i.usd_per_hour for i in load_prices().instances if i.name == instance_type), None)


def describe_model_response(self) -> ActionResult:
    """DescribeModel, with instant deployment recommendations for a model made from a package."""
    backend = self.sagemaker_backend
    model = backend.describe_model(self._get_param("ModelName"))
    answer = dict(model.response_object)
    package = (model.primary_container or {}).get("ModelPackageName")
    if package:
        types = backend.describe_model_package(package).inference_specification.get(
            "SupportedRealtimeInferenceInstanceTypes", [])[:3]
        answer["DeploymentRecommendation"] = {"RecommendationStatus": "COMPLETED", "RealTimeInferenceRecommendations": [
            {"RecommendationId": f"{model.model_name}/{t}", "InstanceType": t, "Environment": {}} for t in types]}
    return ActionResult(answer)


SageMakerResponse.create_inference_recommendations_job = create_inference_recommendations_job
SageMakerResponse.describe_inference_recommendations_job = describe_inference_recommendations_job
SageMakerResponse.describe_model = describe_model_response


_HOSTING_INSTANCE_TYPES = botocore.session.get_session().get_service_model("sagemaker") \
    .shape_for("ProductionVariantInstanceType").enum

FakeEndpointConfig.validate_instance_type = validate_instance_type
SageMakerModelBackend.create_endpoint = create_endpoint
SageMakerModelBackend.describe_endpoint = describe_endpoint
SageMakerModelBackend.delete_endpoint = delete_endpoint
SageMakerModelBackend.create_model = create_model
SageMakerResponse.update_endpoint = update_endpoint


# --- CloudWatch: the endpoint's metrics, percentiles ------------------------------
def record_invocation(region: str, endpoint, started: float, model_seconds: float | None, status: int) -> None:
    """Publish one served request's metrics as SageMaker does (per endpoint and variant)."""
    variant = endpoint.production_variants[0]
    dims = [{"Name": "EndpointName", "Value": endpoint.endpoint_name},
            {"Name": "VariantName", "Value": variant["VariantName"]}]
    instances = max(1, int(variant.get("CurrentInstanceCount") or 1))
    now = utcnow()          # naive UTC, as moto keeps its timestamps
    values = {"Invocations": (1.0, "None"), "InvocationsPerInstance": (1.0 / instances, "None"),
              "Invocation4XXErrors": (float(400 <= status < 500), "None"),
              "Invocation5XXErrors": (float(status >= 500), "None")}
    if model_seconds is not None:
        total = time.perf_counter() - started
        values["ModelLatency"] = (model_seconds * 1e6, "Microseconds")
        values["OverheadLatency"] = (max(0.0, total - model_seconds) * 1e6, "Microseconds")
    backend = cloudwatch_backends[DEFAULT_ACCOUNT][region]
    with _lock:
        backend.metric_data += [MetricDatum("AWS/SageMaker", name, value, dims, now, unit)
                                for name, (value, unit) in values.items()]


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile, as CloudWatch's pNN."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def get_metric_statistics(self) -> ActionResult:
    """GetMetricStatistics with ExtendedStatistics computed over the data points' values."""
    extended = self._get_param("ExtendedStatistics") or []
    statistics = self._get_param("Statistics") or []
    if not extended:
        return _moto_get_metric_statistics(self)
    buckets = self.cloudwatch_backend.get_metric_statistics(
        self._get_param("Namespace"), self._get_param("MetricName"), self._get_param("StartTime"),
        self._get_param("EndTime"), self._get_int_param("Period"), statistics + ["SampleCount"],
        unit=self._get_param("Unit"), dimensions=self._get_param("Dimensions", []))
    points = []
    for bucket in buckets:
        values = bucket.metric_single_values_list
        point = {"Timestamp": bucket.timestamp, "Unit": bucket.unit or "None",
                 "ExtendedStatistics": {p: _percentile(values, float(p[1:])) for p in extended}}
        for stat in statistics:
            point[stat] = bucket.get_statistics_for_type(stat)
        points.append(point)
    return ActionResult({"Label": self._get_param("MetricName"), "Datapoints": points})


_moto_get_metric_statistics = CloudWatchResponse.get_metric_statistics
CloudWatchResponse.get_metric_statistics = get_metric_statistics


# --- HTTP: control routes, faults, InvokeEndpoint -------------------------------
INVOKE_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
RPC_V2_PATH = re.compile(r"^/service/[^/]+/operation/([^/]+)$")        # CloudWatch's CBOR protocol
REGION_IN_AUTH = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")


class LocalAws:
    """WSGI middleware in front of moto's app."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/_local/"):
            return self._control(path, method, environ, start_response)
        if path == "/moto-api/reset":
            _reset()
        invoke = INVOKE_PATH.match(path) if method == "POST" else None
        rpc = RPC_V2_PATH.match(path)
        operation = "InvokeEndpoint" if invoke else rpc.group(1) if rpc else \
            environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        if operation:
            with _lock:
                _state["calls"].append(operation)
                fault = next((f for f in _state["faults"] if f["operation"] == operation and f["times"] > 0), None)
                if fault:
                    fault["times"] -= 1
            if fault:
                return _error(start_response, fault.get("status", 400), fault["code"], fault.get("message", ""))
        if invoke:
            return self._invoke(urllib.parse.unquote(invoke.group(1)), environ, start_response)
        return self.app(environ, start_response)

    def _control(self, path, method, environ, start_response):
        if method == "GET" and path == "/_local/calls":
            with _lock:
                return _json(start_response, 200, {"calls": list(_state["calls"])})
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        with _lock:
            if path == "/_local/settings":
                for key in ("polls", "container_command", "health_timeout"):
                    if key in body:
                        _state[key] = body[key]
            elif path == "/_local/job-failure":
                _state["job_failures"][body["job"]] = body["reason"]
            elif path == "/_local/endpoint-failure":
                _state["failures"][body["endpoint"]] = body["reason"]
            elif path == "/_local/containers":
                _state["containers"][body["endpoint"]] = body["url"].rstrip("/")
            elif path == "/_local/faults":
                _state["faults"].append({"status": 400, "message": "", "times": 1, **body})
            else:
                return _json(start_response, 404, {"message": f"no control route {path}"})
        return _json(start_response, 200, {"ok": True})

    def _invoke(self, name, environ, start_response):
        started = time.perf_counter()
        region_match = REGION_IN_AUTH.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = region_match.group(1) if region_match else "us-east-1"
        backend = sagemaker_backends[DEFAULT_ACCOUNT][region]
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            return _error(start_response, 400, "ValidationError",
                          f"Endpoint {name} of account {DEFAULT_ACCOUNT} not found.")
        if endpoint.endpoint_status != "InService":
            return _error(start_response, 400, "ValidationError",
                          f"Endpoint {name} is not in service (status {endpoint.endpoint_status}).")
        running = _state["running"].get(name)
        url = running.url if running else _state["containers"].get(name)
        if url is None:
            return self.app(environ, start_response)   # moto's canned answer
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size)
        headers = {"Content-Type": environ.get("CONTENT_TYPE") or "application/octet-stream"}
        if environ.get("HTTP_ACCEPT"):
            headers["Accept"] = environ["HTTP_ACCEPT"]
        variant = endpoint.production_variants[0]["VariantName"]
        path = "/invocations"
        target = environ.get("HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL")
        if target and getattr(running, "prefix", None) is not None:
            try:
                with _lock:
                    path = _multi_model_path(backend, running, target)
            except ValueError as exc:
                return _error(start_response, 400, "ValidationError", str(exc))
            headers["X-Amzn-SageMaker-Target-Model"] = target
        elif getattr(running, "prefix", None) is not None:
            return _error(start_response, 400, "ValidationError",
                          "TargetModel is required for invoking a multi-model endpoint.")
        request = urllib.request.Request(f"{url}{path}", data=body, headers=headers, method="POST")
        sent = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                payload, content_type, status = answer.read(), answer.headers.get("Content-Type", ""), answer.status
        except urllib.error.HTTPError as exc:
            payload, content_type, status = exc.read(), exc.headers.get("Content-Type", ""), exc.code
        record_invocation(region, endpoint, started, time.perf_counter() - sent, status)
        if not 200 <= status < 300:
            message = payload.decode(errors="replace")
            return _json(start_response, 424, {
                "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if status < 500 else "SERVER_ERROR_FROM_MODEL",
                "Message": f"Received client error ({status}) from primary with message \"{message}\".",
                "OriginalStatusCode": status, "OriginalMessage": message,
                "LogStreamArn": f"arn:aws:logs:{region}:{DEFAULT_ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{name}",
            }, error_type="ModelError")
        start_response("200 OK", [("Content-Type", content_type or "application/octet-stream"),
                                  ("x-Amzn-Invoked-Production-Variant", variant),
                                  ("Content-Length", str(len(payload)))])
        return [payload]


def _json(start_response, status: int, data: dict, error_type: str | None = None):
    body = json.dumps(data).encode()
    headers = [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    start_response(f"{status} {'OK' if status < 300 else 'Error'}", headers)
    return [body]


def _error(start_response, status: int, code: str, message: str):
    return _json(start_response, status, {"__type": code, "message": message}, error_type=code)


def create_role(name: str) -> str:
    """Make a SageMaker execution role in the local IAM; returns its ARN."""
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    role = iam_backends[DEFAULT_ACCOUNT]["global"].create_role(
        role_name=name, assume_role_policy_document=json.dumps(trust), path="/", permissions_boundary=None,
        description="SageMaker execution role", tags=[], max_session_duration="3600", linked_service=None)
    return role.arn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1", "localhost"],
                        help="loopback only")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--role", help="create this SageMaker execution role at start")
    parser.add_argument("--container", help="command that runs the serving container, e.g. '.venv/bin/serve serve' "
                                            "(default: none, InvokeEndpoint gets moto's canned answer)")
    parser.add_argument("--health-timeout", type=float, default=60.0,
                        help="seconds a container has to pass /ping")
    args = parser.parse_args(argv)
    if args.role:
        print(f"execution role: {create_role(args.role)}", flush=True)
    if args.container:
        _state.update(container_command=shlex.split(args.container), health_timeout=args.health_timeout)
    def stop(signum, frame):            # stop the containers with the server, leave no orphan
        _reset()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    app = LocalAws(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
