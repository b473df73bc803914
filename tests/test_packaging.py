"""The dependency sets of pyproject.toml."""
import json
import subprocess
import sys
import tomllib

from tests.conftest import REPO_ROOT


def test_runtime_set_resolves_without_cuda_wheels(tmp_path):
    """`pip install .` (the runtime set alone) must not pull the CUDA stack that
    the plain `xgboost` wheel brings (nvidia-nccl-cu12, ~350 MB)."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "-c", str(REPO_ROOT / "constraints.txt"), "--report", str(report), str(REPO_ROOT)],
        check=True, capture_output=True, timeout=600)
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "xgboost-cpu" in names and "tl2cgen" in names
    assert "xgboost" not in names
    assert not [n for n in names if n.startswith("nvidia") or "cuda" in n]


def test_every_role_uses_xgboost_cpu_only():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    names = [d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
             for d in every]
    assert "xgboost-cpu" in names and "xgboost" not in names
