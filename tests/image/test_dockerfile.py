"""The Dockerfile and its build context, checked without building the images."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from tests.conftest import REPO_ROOT

# What the Dockerfile copies; anything else in the context only slows builds or leaks.
CONTEXT_ALLOWED = {"Dockerfile", "pyproject.toml", "constraints.txt", "README.md",
                   "model_core", "model_compile", "serve", "container"}


VENV_BIN = str(Path(sys.executable).parent)
SHELL_SCRIPTS = [".ci/docker-host.sh", ".ci/run", "build_and_push.sh", "container/entrypoint.sh"]


def dev_tool(name: str) -> str:
    path = shutil.which(name, path=VENV_BIN) or shutil.which(name)
    assert path, f"{name} is missing: it comes with the dev extra"
    return path


def test_dockerfile_is_hadolint_clean():
    """hadolint also runs shellcheck on every RUN line when shellcheck is on PATH."""
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([dev_tool("hadolint"), str(REPO_ROOT / "Dockerfile")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shell_scripts_are_shellcheck_clean():
    proc = subprocess.run([dev_tool("shellcheck"), *SHELL_SCRIPTS], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_context_holds_only_what_the_image_needs(engine):
    """.dockerignore keeps .venv, .git, artifacts and tests out of every build context."""
    assert (REPO_ROOT / "tests").is_dir() and (REPO_ROOT / ".git").exists()
    tag = f"xgb-neo-serve-context:{uuid.uuid4().hex[:8]}"
    probe = f"FROM {engine.base_image}\nCOPY . /context\n"
    engine.docker("build", "--network", "host", "-q", "-t", tag, "-f", "-", str(REPO_ROOT),
                  input=probe)
    try:
        listing = engine.docker("run", "--rm", "--network", "host", tag,
                                "find", "/context", "-mindepth", "1").stdout.split()
    finally:
        engine.docker("rmi", "-f", tag, check=False)
    top = {Path(p).relative_to("/context").parts[0] for p in listing}
    assert top <= CONTEXT_ALLOWED, f"unexpected in the build context: {top - CONTEXT_ALLOWED}"
    assert {"Dockerfile", "pyproject.toml", "container"} <= top
    assert not [p for p in listing if "__pycache__" in p or p.endswith(".pyc")]


def test_build_stage_evaluates_markers_for_the_target_machine(tmp_path):
    """The build stage's pip runs on the build machine for the target's platform, and pip would
    evaluate markers for itself: container/target_requirements.py evaluates them for the target."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "p"\ndependencies = [\n  "numpy>=2.0,<2.5",\n'
                         '  "tl2cgen>=1.0,<1.1; platform_machine != \'aarch64\'",\n'
                         '  "gunicorn[gevent]>=23.0,<28",\n]\n')

    def requirements(machine: str) -> list[str]:
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "container" / "target_requirements.py"),
                               str(pyproject), machine], capture_output=True, text=True, check=True)
        return proc.stdout.split()

    assert requirements("aarch64") == ["numpy<2.5,>=2.0", "gunicorn[gevent]<28,>=23.0"]
    assert requirements("x86_64") == ["numpy<2.5,>=2.0", "tl2cgen<1.1,>=1.0", "gunicorn[gevent]<28,>=23.0"]
