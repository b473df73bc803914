"""Fixtures shared by every test package."""
from __future__ import annotations

from pathlib import Path

import pytest

from sample_models.build import DEFAULT_OUT, build

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sample_model_dir():
    """Returns a function name -> folder of a built sample model.

    Models are built once into the repo's git-ignored cache and reused across
    runs and sessions (rtb-large takes seconds to train, not minutes).
    """
    def get(name: str) -> Path:
        build(name, REPO_ROOT / DEFAULT_OUT)
        return REPO_ROOT / DEFAULT_OUT / name

    return get


@pytest.fixture(scope="session")
def bare_model_dir(sample_model_dir, tmp_path_factory):
    """Returns name -> a folder as SageMaker extracts a training job's model.tar.gz (xgboost-model)."""
    from model_compile.artifact import safe_extract

    folders: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in folders:
            folder = tmp_path_factory.mktemp(f"bare-{name}")
            safe_extract(sample_model_dir(name) / "model.tar.gz", folder)
            folders[name] = folder
        return folders[name]

    return get
