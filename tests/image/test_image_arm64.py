"""The linux/arm64 (Graviton) serving image, built here by build_and_push.sh and run under
user-mode emulation (binfmt_misc + qemu-aarch64, `.ci/docker-host.sh arm64`).

One build and one container per test session, which every check shares: the server starts
several times slower under emulation. The artifact carries an x86-64 and an arm64 library; the arm64
server must pick the arm64 one. Emulation checks behaviour, never speed: no figure here
says anything about Graviton's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import xgboost as xgb

from model_core.artifact import read_manifest, safe_extract
from tests.conftest import REPO_ROOT
from tests.image import engine as eng
from tests.image.conftest import FIGURES
from tests.image.test_build_and_push import LOCAL_AWS, _get_json, _start, run_script
from tests.image.test_image_serving import read_rows, request, wait_until_healthy

NAME, TAG = "bid-filter/arm", "e2e"
HEALTHY_UNDER_EMULATION_S = 300     # gunicorn + XGBoost start several times slower under qemu


def _unavailable(message: str):
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def arm64_base(engine) -> str:
    proc = subprocess.run([str(eng.DOCKER_HOST_SCRIPT), "arm64"], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        _unavailable(f"no arm64 emulation: .ci/docker-host.sh arm64 exited {proc.returncode}: "
                     f"{proc.stderr.strip()[-1500:]}")
    return re.search(r"^export BASE_IMAGE_ARM64=(\S+)$", proc.stdout, re.M).group(1)


@pytest.fixture(scope="module")
def pushed(engine, arm64_base, tmp_path_factory):
    """build_and_push.sh --platform linux/amd64,linux/arm64 through a local ECR API (moto) to a
    local registry: both images and the manifest list naming them. Returns the registry."""
    tmp = tmp_path_factory.mktemp("arm64-push")
    moto_port, registry_port = eng.free_port(), eng.free_port()
    moto = _start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                  moto_port, tmp / "moto.log")
    (tmp / "registry.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{registry_port}\n")
    registry = _start(["docker-registry", "serve", str(tmp / "registry.yml")], registry_port, tmp / "registry.log")
    local = f"127.0.0.1:{registry_port}"
    env = {**LOCAL_AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "ECR_REGISTRY": local,
           "DOCKER_HOST": engine.env.get("DOCKER_HOST", ""), "DOCKER_CONFIG": str(tmp / "docker-config"),
           "DOCKER_BUILDKIT_CLI": engine.env.get("DOCKER_BUILDKIT_CLI", "docker"),
           "BASE_IMAGE_AMD64": engine.base_image, "BASE_IMAGE_ARM64": arm64_base}
    ca = eng.host_ca_bundle()
    started = time.perf_counter()
    try:
        proc = run_script(*(["--extra-ca", str(ca)] if ca else []), "--platform", "linux/amd64,linux/arm64",
                          NAME, TAG, env=env, timeout=2400)
        assert proc.returncode == 0, proc.stderr[-4000:]
        FIGURES.append(f"build_and_push.sh --platform linux/amd64,linux/arm64: {time.perf_counter() - started:.0f} s "
                       f"(arm64: pip native, two small steps under emulation; layers from Docker's cache when "
                       f"the amd64 tests or an earlier run built them)")
        assert proc.stdout.strip().splitlines()[-1] == f"{local}/{NAME}:{TAG}"
        yield local
    finally:
        moto.terminate()
        registry.terminate()


@pytest.fixture(scope="module")
def two_target_model(tmp_path_factory, sample_model_dir):
    """rtb-small compiled here for linux-x86_64 and linux-aarch64 (verified under qemu), extracted."""
    source = sample_model_dir("rtb-small")
    out = tmp_path_factory.mktemp("arm64-model")
    proc = subprocess.run([sys.executable, "-m", "model_compile", str(source / "model.tar.gz"), "-o",
                           str(out / "model.tar.gz"), "--sample-data", str(source / "sample.csv"),
                           "--target", "linux-x86_64", "--target", "linux-aarch64", "--no-crossover", "-q"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    safe_extract(out / "model.tar.gz", out / "model")
    (out / "model").chmod(0o755)
    return {"model_dir": out / "model", "source_dir": source}


@pytest.fixture(scope="module")
def arm64_server(engine, pushed, two_target_model):
    image = f"{NAME}:{TAG}-arm64"
    container = eng.start_server(engine, image, two_target_model["model_dir"],
                                 env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    healthy_s = wait_until_healthy(container.port, HEALTHY_UNDER_EMULATION_S)
    if healthy_s is None:
        logs = eng.remove_container(engine, container.name)
        pytest.fail(f"the arm64 container never became healthy under emulation:\n{logs[-4000:]}")
    FIGURES.append(f"arm64 serving container under qemu: /ping 200 {healthy_s:.0f} s after start "
                   f"(emulation: says nothing about Graviton's speed)")
    yield container
    eng.remove_container(engine, container.name)


def test_the_manifest_list_names_both_architectures(pushed):
    index = _get_json(f"http://{pushed}/v2/{NAME}/manifests/{TAG}",
                      accept="application/vnd.docker.distribution.manifest.list.v2+json")
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert platforms == ["linux/amd64", "linux/arm64"]


def test_the_arm64_image_is_arm64_non_root_and_labelled(engine, pushed):
    image = f"{NAME}:{TAG}-arm64"
    assert engine.inspect("{{.Architecture}}", image) == "arm64"
    assert engine.inspect("{{.Config.User}}", image) == "10001:10001"
    labels = json.loads(engine.inspect("{{json .Config.Labels}}", image))
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    # The binaries inside really are arm64, run by the emulator.
    machine = engine.docker("run", "--rm", "--network", "host", image, "python3", "-c",
                            "import os, platform; print(platform.machine(), os.getuid())").stdout.split()
    assert machine == ["aarch64", "10001"]


def test_arm64_server_answers_pings_and_xgboosts_predictions(arm64_server, two_target_model):
    status, body, _ = request(arm64_server.port, "GET", "/ping")
    assert (status, body) == (200, b"")
    model_dir = two_target_model["model_dir"]
    manifest = read_manifest(model_dir)
    rows, csv_body = read_rows(two_target_model["source_dir"] / "sample.csv", 50)
    expected = xgb.Booster(model_file=str(model_dir / manifest.model.file)).inplace_predict(rows)
    status, body, _ = request(arm64_server.port, "POST", "/invocations", csv_body,
                              {"Content-Type": "text/csv", "Accept": "text/csv"}, timeout=60)
    assert status == 200, body
    answer = np.array(re.split(r"[,\n]", body.decode().strip()), dtype=np.float64)
    assert answer.shape == expected.shape and np.max(np.abs(answer - expected)) <= manifest.verification.tolerance


def test_arm64_server_loads_the_arm64_library(engine, arm64_server):
    logs = engine.docker("logs", arm64_server.name).stderr
    assert "COMPILED LIBRARY NOT USED" not in logs, logs[-3000:]
    assert re.search(r"serving predictor \S*compiled", logs), logs[-3000:]
