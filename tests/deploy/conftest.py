"""Fixtures of the deploy tests: a local AWS API (moto in server mode, with the
SageMaker hosting behaviour moto lacks, see local_aws.py) on a free loopback
port, and an environment that points boto3 at it with dummy credentials."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from deploy.cli import main
from tests.conftest import REPO_ROOT

ACCOUNT = "123456789012"
REGION = "us-east-1"
IMAGE_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/xgb-neo-serve:1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment without any AWS or xgb-deploy setting (so that no
    real credentials, profile or endpoint can leak into a test), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "XGB_DEPLOY_"))}
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def local_aws(tmp_path_factory):
    """URL of the local AWS API, started once for the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("local-aws") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.deploy.local_aws", "--port", str(port)],
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=clean_environ({"AWS_EC2_METADATA_DISABLED": "true"}))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/_local/calls", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the local AWS API did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def control(url: str, route: str, body: dict | None = None) -> dict:
    """Call one of local_aws's control routes (POST with ``body``, else GET)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{route}", data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"{}")


@pytest.fixture
def aws(local_aws, monkeypatch, tmp_path):
    """A fresh local AWS (reset), the environment pointing at it, cwd a temp folder.

    Returns an object with ``url``, ``client(service)`` (boto3 against the local
    API) and ``control(route, body)``.
    """
    control(local_aws, "/moto-api/reset", {})
    for key in list(os.environ):
        if key.startswith(("AWS_", "XGB_DEPLOY_")):
            monkeypatch.delenv(key)
    settings = {
        "AWS_ENDPOINT_URL": local_aws, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "XGB_DEPLOY_POLL_SECONDS": "0.05", "XGB_DEPLOY_MAX_ATTEMPTS": "2",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)

    class Local:
        url = local_aws

        @staticmethod
        def client(service: str):
            return boto3.client(service, endpoint_url=local_aws, region_name=REGION,
                                aws_access_key_id="testing", aws_secret_access_key="testing")

        @staticmethod
        def control(route: str, body: dict | None = None) -> dict:
            return control(local_aws, route, body)

        @staticmethod
        def calls() -> list[str]:
            return control(local_aws, "/_local/calls")["calls"]

    return Local


@pytest.fixture
def role_arn(aws) -> str:
    """A SageMaker execution role in the local IAM."""
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "sagemaker.amazonaws.com"}}]}
    role = aws.client("iam").create_role(RoleName="SageMakerExecution", AssumeRolePolicyDocument=json.dumps(trust))
    return role["Role"]["Arn"]


@pytest.fixture
def cli(capsys):
    """Run ``xgb-deploy ARGS`` in-process; returns (exit status, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return status, out, err
    return run


@pytest.fixture
def sample_archive(sample_model_dir) -> Path:
    return sample_model_dir("rtb-small") / "model.tar.gz"


@pytest.fixture(scope="session")
def compiled_archive(sample_model_dir, tmp_path_factory) -> Path:
    """rtb-small compiled by model_compile once for the session (about 2 s): the
    deployable model.tar.gz a user uploads."""
    from model_compile import compile_artifact

    out = tmp_path_factory.mktemp("compiled") / "rtb-small"
    out.mkdir()
    compile_artifact(sample_model_dir("rtb-small") / "model.tar.gz", out / "model.tar.gz", measure_speed=False)
    return out / "model.tar.gz"


@pytest.fixture
def model_data(aws, cli, sample_archive) -> str:
    """The sample model uploaded to the default bucket; its s3:// URL."""
    status, out, err = cli("upload", sample_archive)
    assert status == 0, err
    return out.strip()


@pytest.fixture
def deployed(aws, cli, model_data, role_arn):
    """Deploy ``bid-filter`` (or the name given) with the sample model; returns
    a function name, *extra flags -> the configuration name."""
    def deploy(name: str = "bid-filter", *extra: str) -> str:
        status, out, err = cli("endpoint", "--endpoint-name", name, "--image-uri", IMAGE_URI,
                               "--model-data", model_data, "--role-arn", role_arn,
                               "--instance-type", "ml.c5.xlarge", *extra)
        assert status == 0, err
        return out.strip()
    return deploy
