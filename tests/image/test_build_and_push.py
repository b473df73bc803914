"""build_and_push.sh: its arguments, its dry run, and a real push through a local ECR API
(moto in server mode) to a local registry (Debian's docker-registry), both on 127.0.0.1."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.image import engine as eng

SCRIPT = REPO_ROOT / "build_and_push.sh"
VENV_BIN = str(Path(sys.executable).parent)   # the AWS CLI and moto come with the dev extra
# Fake credentials for moto; nothing leaves loopback.
LOCAL_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1"}


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 1800):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_"))}
    base["PATH"] = f"{VENV_BIN}:{base.get('PATH', '')}"
    return subprocess.run(["bash", str(SCRIPT), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_help_and_bad_arguments():
    help_ = run_script("--help")
    assert help_.returncode == 0 and "IMAGE_NAME [TAG]" in help_.stdout
    assert "ECR_REGISTRY" in help_.stdout and "AWS_ENDPOINT_URL" in help_.stdout
    for args, message in [((), "expected IMAGE_NAME"),
                          (("a", "b", "c"), "expected IMAGE_NAME"),
                          (("Upper-Case",), "invalid repository name"),
                          (("ok-name", "bad:tag"), "invalid tag"),
                          (("--frobnicate", "ok-name"), "unknown option"),
                          (("--extra-ca", "/nonexistent.pem", "ok-name"), "no such file")]:
        proc = run_script(*args, env={"AWS_REGION": "us-east-1"})
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


def test_dry_run_prints_the_plan_and_calls_nothing():
    """Engine and AWS endpoints point at closed ports: any real call would fail."""
    dead = {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = run_script("--dry-run", "--platform", "linux/arm64", "team/bid-filter", "v7", env=dead)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    uri = "ACCOUNT_ID.dkr.ecr.eu-west-1.amazonaws.com/team/bid-filter:v7"
    assert lines[-1] == uri
    plan = "\n".join(lines)
    assert "aws ecr create-repository --region eu-west-1 --repository-name team/bid-filter" in plan
    assert "docker login --username AWS --password-stdin ACCOUNT_ID.dkr.ecr.eu-west-1" in plan
    assert "docker build --network host --platform linux/arm64 --target runtime" in plan
    assert f"docker push {uri}" in plan
    # The default platform is SageMaker's common one.
    default = run_script("--dry-run", "bid-filter", env={**dead, "AWS_ACCOUNT_ID": "111122223333"})
    assert "--platform linux/amd64" in default.stdout
    assert default.stdout.strip().splitlines()[-1] == \
        "111122223333.dkr.ecr.eu-west-1.amazonaws.com/bid-filter:latest"


def test_dry_run_builds_with_buildkit_and_the_machines_base_for_the_pip_stage():
    """Another platform's image takes the pip stage's image (BUILD_IMAGE) from this machine's
    base, so that pip runs natively; a build for this machine's platform needs none."""
    env = {"AWS_REGION": "eu-west-1", "AWS_ACCOUNT_ID": "111122223333", "DOCKER_HOST": "unix:///nonexistent/docker.sock",
           "BASE_IMAGE_AMD64": "local/amd64-base", "BASE_IMAGE_ARM64": "local/arm64-base",
           "DOCKER_BUILDKIT_CLI": "/opt/buildkit/docker"}
    proc = run_script("--dry-run", "--platform", "linux/amd64,linux/arm64", "bid-filter", "v1", env=env)
    assert proc.returncode == 0, proc.stderr
    builds = {line.split("--platform ")[1].split()[0]: line for line in proc.stdout.splitlines()
              if " build " in line}
    assert sorted(builds) == ["linux/amd64", "linux/arm64"]
    for line in builds.values():
        assert line.startswith("env DOCKER_BUILDKIT=1 /opt/buildkit/docker build "), line
    native = "arm64" if platform.machine() in ("aarch64", "arm64") else "amd64"
    foreign = {"amd64": "arm64", "arm64": "amd64"}[native]
    assert f"--build-arg BASE_IMAGE=local/{native}-base" in builds[f"linux/{native}"]
    assert "BUILD_IMAGE" not in builds[f"linux/{native}"]
    assert (f"--build-arg BASE_IMAGE=local/{foreign}-base --build-arg BUILD_IMAGE=local/{native}-base"
            in builds[f"linux/{foreign}"])


def _start(cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None):
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    if eng.wait_for_port(port, 30) is None:
        proc.kill()
        raise AssertionError(f"{cmd[0]} did not listen on 127.0.0.1:{port}: {log.read_text()[-2000:]}")
    return proc


@pytest.fixture
def moto_server(tmp_path):
    """moto's AWS API server on loopback; yields its URL."""
    port = eng.free_port()
    proc = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                  port, tmp_path / "moto.log")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def local_registry(tmp_path, engine):
    """Debian's docker-registry (installed by .ci/docker-host.sh) on loopback; yields host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is missing: .ci/docker-host.sh installs it (as root)")
    port = eng.free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = _start([binary, "serve", str(config)], port, tmp_path / "registry.log")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def _get_json(url: str, accept: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_pushes_through_local_ecr_api_to_local_registry(engine, moto_server, local_registry, tmp_path):
    name, tag = "bid-filter/test", "e2e"
    env = {**LOCAL_AWS, "AWS_ENDPOINT_URL": moto_server, "ECR_REGISTRY": local_registry,
           "DOCKER_HOST": engine.env.get("DOCKER_HOST", ""),
           "DOCKER_BUILDKIT_CLI": engine.env.get("DOCKER_BUILDKIT_CLI", "docker"),
           "DOCKER_CONFIG": str(tmp_path / "docker-config"), "BASE_IMAGE": engine.base_image}
    ca = eng.host_ca_bundle()
    extra = ["--extra-ca", str(ca)] if ca else []
    for attempt in ("creates the repository", "finds the repository"):
        proc = run_script(*extra, name, tag, env=env)
        assert proc.returncode == 0, f"{attempt}: {proc.stderr[-4000:]}"
        assert proc.stdout.strip().splitlines()[-1] == f"{local_registry}/{name}:{tag}"
        assert ("create-repository" in proc.stderr) == (attempt == "creates the repository")
    assert not (eng.BUILD_CA_DIR / eng.BUILD_CA_NAME).exists(), "the build CA copy was left behind"

    # The ECR API saw the repository (moto answers with ECR's real URI form).
    described = subprocess.run(
        [f"{VENV_BIN}/aws", "ecr", "describe-repositories", "--region", "us-east-1",
         "--endpoint-url", moto_server, "--output", "json"],
        env={**os.environ, **LOCAL_AWS}, capture_output=True, text=True, check=True)
    repos = json.loads(described.stdout)["repositories"]
    assert [r["repositoryName"] for r in repos] == [name]
    assert repos[0]["imageScanningConfiguration"]["scanOnPush"] is True

    # The registry holds exactly the image that was built: same config digest as the local image.
    assert tag in _get_json(f"http://{local_registry}/v2/{name}/tags/list")["tags"]
    manifest = _get_json(f"http://{local_registry}/v2/{name}/manifests/{tag}",
                         accept="application/vnd.docker.distribution.manifest.v2+json")
    assert manifest["config"]["digest"] == engine.inspect("{{.Id}}", f"{name}:{tag}")
    assert engine.inspect("{{.Architecture}}", f"{name}:{tag}") == "amd64"
    labels = json.loads(engine.inspect("{{json .Config.Labels}}", f"{name}:{tag}"))
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
